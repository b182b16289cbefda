"""Spark: embedded ``local[N]`` by default, or a cluster master (spark://host:7077, yarn, k8s://...).

A map is one Spark job whose tasks each run a batch of items: about four batches per task slot, packed to equal
estimated work and the heaviest first (a Spark task costs ~30 ms of JVM time; a slide, a fraction of a second on
small data). Each item in a batch is measured on its own (its Outcome: seconds, I/O, worker, error) and retried
in place as configured; an error is recorded, never raised, so one bad item never aborts the job. Spark's own
mechanism reruns a task whose worker died (``spark.task.maxFailures`` attempts; a lost executor's tasks are
rescheduled): the item that killed it finds its in-flight marker and runs alone (``isolate``), the batch's other
items run again.

``nodes = N`` on a standalone cluster: executors on N workers, one each, with ``spark.executor.cores`` cores
(default: ``workers``) and ``spark.cores.max`` = N x cores; the master spreads them (its default
``spark.deploy.spreadOut``), and the engine waits for them and checks that they really are on N hosts.
"""
from __future__ import annotations

import functools
import os
import re
import sys
import threading
import time
import uuid
import warnings

from ..errors import RunError
from .base import Engine, batches, call, package_zip, route_address, warm_up

PER_SLOT = 4  # batches per task slot

# The driver JVM's own CPU, which on a host with as many task slots as cores comes out of the work. Measured with
# benchmarks/engine_scaling.py (CPU seconds of each JVM thread over the patch stage's map; docs/benchmarks.md):
# C2, the optimising JIT compiler, spent 0.25-0.76 s of a ~3 s map compiling Spark's scheduling code, and G1's
# concurrent and parallel GC threads up to 0.4 s; the executor task threads that do the JVM's real work, ~0.1 s.
# C1 only (TieredStopAtLevel=1) and the serial collector leave that work as fast and cost a fraction. The UI's
# threads and the heartbeats spent under 0.01 s each: left as they are. A JVM pyspark already started in this
# process keeps its own options; spark.driver.extraJavaOptions in engine.spark_conf replaces these.
JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


class SparkEngine(Engine):
    name = "spark"

    def __init__(self, workers: int = 1, retries: int = 0, master: str | None = None, conf: dict | None = None,
                 nodes: int | None = None, **_):
        local = master is None or master.startswith("local")
        self.cluster = not local
        super().__init__(workers, retries, nodes)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        # Python errors are retried inside the task; a task fails only when its worker dies. Each death in a batch
        # takes one attempt (the next runs that item alone), so a batch gets room for a few.
        attempts = max(4, retries + 2)
        self.master = master or f"local[{workers},{attempts}]"  # local mode takes its failure count here
        conf = dict(conf or {})
        driver = _driver_address(self.master, conf)
        if driver:  # the UI and the driver's services bind SPARK_LOCAL_IP (else every interface): loopback, or the
            os.environ["SPARK_LOCAL_IP"] = driver  # address this host reaches the cluster from
        cores = None
        if nodes:
            cores = int(conf.setdefault("spark.executor.cores", str(workers)))
            conf.setdefault("spark.cores.max", str(nodes * cores))
            conf.setdefault("spark.scheduler.minRegisteredResourcesRatio", "1.0")
        b = (SparkSession.builder.master(self.master).appName("wsibench")
             .config("spark.task.maxFailures", str(attempts))
             .config("spark.python.worker.reuse", "true")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.log.level", "ERROR")
             .config("spark.executorEnv.PYSPARK_PYTHON", os.environ["PYSPARK_PYTHON"])
             .config("spark.driver.extraJavaOptions", JVM_OPTIONS)
             # a warm-up that finds fewer free slots than it asked for falls back at once, not after 40 x 15 s
             .config("spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures", "1"))
        if driver:
            b = b.config("spark.driver.host", driver).config("spark.driver.bindAddress", driver)
        for k, v in conf.items():
            b = b.config(k, str(v))
        with warnings.catch_warnings():
            # Creating the context imports pyspark.testing.utils, whose import checks the pandas version and warns
            # that pandas >= 3 is "not yet fully supported". The engine maps Python functions over RDDs: no pandas
            # conversion, Arrow or pandas UDF path runs, and its tests pass under pandas 3 (the supported range is
            # pyproject's); the warning is about paths wsibench does not take.
            warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
            self.session = b.getOrCreate()
        self.sc = self.session.sparkContext
        self.sc.setLogLevel("ERROR")
        if not local:
            self.sc.addPyFile(package_zip())
        self.local = local
        self.max_failures = attempts
        if nodes:
            self._wait_for_executors(nodes)
        # task slots: local[N]'s N; N nodes' executors' cores; else what the cluster says (at least 2, by Spark's rule)
        self.slots = workers if local else nodes * cores if nodes else self.sc.defaultParallelism
        self.workers = workers if local else max(1, self.sc.defaultParallelism)
        if self.sc.uiWebUrl:
            print(f"[spark] UI: {self.sc.uiWebUrl} (master {self.master})", file=sys.stderr)

    def _executors(self) -> list[str]:
        """The hosts of the executors that registered, one entry per executor (the driver's block manager, on
        spark.driver.host, left out)."""
        status = self.sc._jsc.sc().getExecutorMemoryStatus()  # host:port of every block manager, the driver's too
        keys = status.keySet().iterator()
        hosts = []
        while keys.hasNext():
            hosts.append(keys.next().rsplit(":", 1)[0])
        driver = self.sc.getConf().get("spark.driver.host")
        if driver in hosts:
            hosts.remove(driver)
        elif hosts:
            hosts.pop()  # a driver known by another name
        return sorted(hosts)

    def _wait_for_executors(self, nodes: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while len(found := self._executors()) < nodes and time.monotonic() < deadline:
            time.sleep(0.5)
        hosts = sorted(set(found))
        if len(hosts) < nodes:
            self.session.stop()
            raise RunError(f"engine.nodes = {nodes}: the Spark cluster at {self.master} gave executors on "
                           f"{len(hosts)} host(s) ({', '.join(hosts) or 'none'}) in {timeout:.0f}s; it needs {nodes} "
                           "workers with spark.executor.cores free cores each")

    def map(self, fn, items):
        group = f"wsibench-{uuid.uuid4().hex[:8]}"
        parts = batches(items, self.slots, PER_SLOT)
        task = functools.partial(_batch, fn, self.retries)
        box: dict = {}

        def job():
            self.sc.setJobGroup(group, f"wsibench map of {len(items)} items in {len(parts)} batches")
            data = [[(i, items[i]) for i in p] for p in parts]
            try:  # one batch per partition, in order: the heaviest start first
                box["out"] = self.sc.parallelize(data, len(data)).map(task).collect()
            except Exception as e:  # noqa: BLE001 - the job itself failed (driver, cluster)
                box["error"] = python_error(e)

        t = threading.Thread(target=job, daemon=True)
        t.start()
        self._report_progress(t, group, len(parts))
        if "error" in box:
            raise RunError(f"Spark job failed: {box['error']}")
        for batch in box["out"]:
            yield from batch

    def _report_progress(self, thread, group: str, n: int) -> None:
        """A line every few seconds while the job runs (outcomes only come back when it ends)."""
        quiet = os.environ.get("WSIBENCH_QUIET")
        last, t0 = -1, time.perf_counter()
        while thread.is_alive():
            thread.join(5)
            if quiet or not thread.is_alive():
                continue
            tracker = self.sc.statusTracker()
            done = 0
            for jid in tracker.getJobIdsForGroup(group):
                job = tracker.getJobInfo(jid)
                for sid in job.stageIds if job else []:
                    info = tracker.getStageInfo(sid)
                    done += info.numCompletedTasks if info else 0
            if done != last:
                print(f"[spark] {done}/{n} batches done ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
                last = done

    def warm(self, fn):
        """One task per slot, launched together (barrier mode), so every Python worker warms up."""
        n = self.slots
        rdd = self.sc.parallelize(range(n), n)
        run = functools.partial(_warm_partition, fn)
        try:
            return rdd.barrier().mapPartitions(run).collect()
        except Exception:  # noqa: BLE001 - barrier mode needs n free slots at once; plain tasks then
            return rdd.mapPartitions(run).collect()

    def topology(self) -> dict:
        """Executors that really registered (a cluster's own count) and their hosts, or local[N]'s N slots."""
        executors = None if self.local else self._executors()
        hosts = sorted(set(executors)) if executors else [os.uname().nodename]
        return {"name": self.name, "workers": self.workers if self.local else max(1, len(executors)),
                "address": self.master, "ui": self.sc.uiWebUrl, "threads": self.slots,
                "max_failures": self.max_failures, "nodes": len(hosts), "node_addresses": hosts,
                "nodes_requested": self.nodes, "batches_per_slot": PER_SLOT}

    def close(self):
        self.session.stop()


def _batch(fn, retries: int, part: list) -> list:
    """A Spark task: its items one after the other, each measured on its own and retried in place (``call``);
    in a rerun of the task (its worker died), the items' attempts count the task's earlier ones."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    earlier = ctx.attemptNumber() if ctx else 0
    out = []
    for i, item in part:
        o = call(fn, i, item, retries)
        o.attempts += earlier
        out.append(o)
    return out


def _driver_address(master: str, conf: dict) -> str | None:
    """The address the driver binds: spark.driver.host if set; loopback for local mode and a master on loopback;
    for a standalone master elsewhere, this host's address on the route to it (the interface that faces the
    cluster); None (Spark's own choice) for other cluster managers."""
    if conf.get("spark.driver.host"):
        return conf["spark.driver.host"]
    if master.startswith("local"):
        return "127.0.0.1"
    m = re.match(r"spark://\[?([^\]/,]+?)\]?:(\d+)", master)
    if not m:
        return None
    if m.group(1) in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    try:
        return route_address(m.group(1), int(m.group(2)))
    except OSError as e:
        raise RunError(f"Spark master {master}: no route to it from this host ({e}); set spark.driver.host in "
                       "engine.spark_conf") from None


def _warm_partition(fn, _):
    yield warm_up(fn)


def python_error(e: Exception) -> str:
    """The Python exception inside a Spark job failure, as 'Type: message'."""
    text = str(e)
    found = re.findall(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", text, flags=re.M)
    found = [f for f in found if not f[0].startswith(("org.", "java.", "py4j", "scala."))]
    if found:
        name, msg = found[-1]
        return f"{name.rsplit('.', 1)[-1]}: {msg.strip()}"
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
