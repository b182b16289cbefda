"""Spark: embedded ``local[N]`` by default, or a cluster master (spark://host:7077, yarn, k8s://...).

A map is one Spark job with one task per item. Spark's own mechanism retries a failing task
(``spark.task.maxFailures`` attempts; a lost executor's tasks are rescheduled); on its last attempt the task
returns the error instead of raising it, so one bad item never aborts the job: the others complete, and its
error is recorded.
"""
from __future__ import annotations

import functools
import os
import re
import sys
import threading
import time
import uuid

from ..errors import RunError
from .base import Engine, Outcome, WorkerCrashed, error_text, measure, package_zip, warm_up, worker_id


class SparkEngine(Engine):
    name = "spark"

    def __init__(self, workers: int = 1, retries: int = 0, master: str | None = None, conf: dict | None = None, **_):
        super().__init__(workers, retries)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        local = master is None or master.startswith("local")
        # a task gets at least two attempts: after a worker crash the second runs the item alone (isolate)
        attempts = max(2, retries + 1)
        self.master = master or f"local[{workers},{attempts}]"  # local mode takes its failure count here
        loopback = local or "127.0.0.1" in self.master or "localhost" in self.master
        if loopback:  # the UI and the driver's services bind SPARK_LOCAL_IP, else every interface
            os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
        b = (SparkSession.builder.master(self.master).appName("wsibench")
             .config("spark.task.maxFailures", str(attempts))
             .config("spark.python.worker.reuse", "true")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.log.level", "ERROR")
             .config("spark.executorEnv.PYSPARK_PYTHON", os.environ["PYSPARK_PYTHON"]))
        if loopback:
            b = b.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        for k, v in (conf or {}).items():
            b = b.config(k, str(v))
        self.session = b.getOrCreate()
        self.sc = self.session.sparkContext
        self.sc.setLogLevel("ERROR")
        if not local:
            self.sc.addPyFile(package_zip())
        self.local = local
        self.workers = workers if local else max(1, self.sc.defaultParallelism)
        if self.sc.uiWebUrl:
            print(f"[spark] UI: {self.sc.uiWebUrl} (master {self.master})", file=sys.stderr)

    def map(self, fn, items):
        group = f"wsibench-{uuid.uuid4().hex[:8]}"
        task = functools.partial(_task, fn, self.retries + 1)  # Python errors: retried as configured
        box: dict = {}

        def job():
            self.sc.setJobGroup(group, f"wsibench map of {len(items)} items")
            try:
                box["out"] = self.sc.parallelize(list(enumerate(items)), max(1, len(items))).map(task).collect()
            except Exception as e:  # noqa: BLE001 - the job itself failed (driver, cluster)
                box["error"] = python_error(e)

        t = threading.Thread(target=job, daemon=True)
        t.start()
        self._report_progress(t, group, len(items))
        if "error" in box:
            raise RunError(f"Spark job failed: {box['error']}")
        yield from box["out"]

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
                print(f"[spark] {done}/{n} tasks done ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
                last = done

    def warm(self, fn):
        """One task per slot, launched together (barrier mode), so every Python worker warms up."""
        n = self.sc.defaultParallelism
        rdd = self.sc.parallelize(range(n), n)
        run = functools.partial(_warm_partition, fn)
        try:
            return rdd.barrier().mapPartitions(run).collect()
        except Exception:  # noqa: BLE001 - barrier mode needs n free slots at once; plain tasks then
            return rdd.mapPartitions(run).collect()

    def topology(self) -> dict:
        """Executors that really registered (a cluster's own count), or local[N]'s N slots."""
        executors = None if self.local else self.sc._jsc.sc().getExecutorMemoryStatus().size() - 1  # minus the driver
        return {"name": self.name, "workers": self.workers if self.local else max(1, executors),
                "address": self.master, "ui": self.sc.uiWebUrl, "threads": self.sc.defaultParallelism,
                "max_failures": max(2, self.retries + 1)}

    def close(self):
        self.session.stop()


def _task(fn, attempts: int, iv) -> Outcome:
    """One item in a Spark task: raise to let Spark retry it, but return the error on its last attempt (a
    WorkerCrashed, the item having killed its worker twice, is final at once)."""
    from pyspark import TaskContext

    i, item = iv
    try:
        return measure(fn, i, item)
    except Exception as e:  # noqa: BLE001
        ctx = TaskContext.get()
        attempt = ctx.attemptNumber() + 1 if ctx else attempts
        if attempt < attempts and not isinstance(e, WorkerCrashed):
            raise
        return Outcome(i, item, None, error_text(e), 0.0, attempt, {}, worker_id())


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
