"""Spark: embedded ``local[N]`` by default, or a cluster master (spark://host:7077, yarn, k8s://...).

Each item is its own Spark job with one task, submitted from a pool of driver threads, so that Spark's own
retry mechanism (``spark.task.maxFailures``) applies per item and an item that still fails ends only its job:
the others complete, and its error is recorded.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import re
import sys

from . import Engine, Outcome, measure, package_zip


class SparkEngine(Engine):
    name = "spark"

    def __init__(self, workers: int = 1, retries: int = 0, master: str | None = None, conf: dict | None = None, **_):
        super().__init__(workers, retries)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        local = master is None or master.startswith("local")
        self.master = master or f"local[{workers},{retries + 1}]"  # local mode takes its failure count here
        b = (SparkSession.builder.master(self.master).appName("wsibench")
             .config("spark.task.maxFailures", str(retries + 1))
             .config("spark.python.worker.reuse", "true")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.log.level", "ERROR")
             .config("spark.executorEnv.PYSPARK_PYTHON", os.environ["PYSPARK_PYTHON"]))
        if local or "127.0.0.1" in self.master or "localhost" in self.master:
            b = b.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        for k, v in (conf or {}).items():
            b = b.config(k, str(v))
        self.session = b.getOrCreate()
        self.sc = self.session.sparkContext
        self.sc.setLogLevel("ERROR")
        if not local:
            self.sc.addPyFile(package_zip())
        self.workers = workers if local else max(1, self.sc.defaultParallelism)
        if self.sc.uiWebUrl:
            print(f"[spark] UI: {self.sc.uiWebUrl} (master {self.master})", file=sys.stderr)

    def _one(self, fn, i, item) -> Outcome:
        try:
            return self.sc.parallelize([(i, item)], 1).map(lambda iv: measure(fn, iv[0], iv[1])).collect()[0]
        except Exception as e:  # noqa: BLE001 - the job failed after spark.task.maxFailures attempts
            return Outcome(i, item, None, python_error(e), 0.0, self.retries + 1)

    def map(self, fn, items):
        with cf.ThreadPoolExecutor(max(1, self.workers) * 2) as pool:
            futures = [pool.submit(self._one, fn, i, item) for i, item in enumerate(items)]
            for fut in cf.as_completed(futures):
                yield fut.result()

    def topology(self) -> dict:
        return {"name": self.name, "workers": self.workers, "address": self.master, "ui": self.sc.uiWebUrl,
                "default_parallelism": self.sc.defaultParallelism, "max_failures": self.retries + 1}

    def close(self):
        self.session.stop()


def python_error(e: Exception) -> str:
    """The Python exception inside a Spark job failure, as 'Type: message'."""
    text = str(e)
    found = re.findall(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", text, flags=re.M)
    found = [f for f in found if not f[0].startswith(("org.", "java.", "py4j", "scala."))]
    if found:
        name, msg = found[-1]
        return f"{name.rsplit('.', 1)[-1]}: {msg.strip()}"
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
