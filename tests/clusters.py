"""Real clusters on 127.0.0.1 for tests: a Spark standalone master with workers, a Dask scheduler with workers.

Started with the projects' own launchers (spark-daemon.sh, the dask CLI), torn down after.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, logs: list[Path] = ()):
    """Until check() is true; else TimeoutError with the last exception and the tails of ``logs``."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - not up yet
            last = e
        time.sleep(0.3)
    tails = "".join(f"\n--- {p.name}:\n{p.read_text()[-1500:]}" for p in logs if p.exists())
    raise TimeoutError(f"{what} did not come up in {timeout:.0f}s ({last}){tails}")


class Master(str):
    """The master's URL, with the pids of the cluster's daemons."""
    pids: list[int]


@contextlib.contextmanager
def spark_standalone(tmp: Path, workers: int = 2):
    import pyspark

    home = Path(pyspark.__file__).parent
    daemon = str(home / "sbin" / "spark-daemon.sh")
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=str(tmp / "logs"),
               SPARK_PID_DIR=str(tmp / "pids"), SPARK_WORKER_DIR=str(tmp / "work"), PYSPARK_PYTHON=sys.executable,
               SPARK_IDENT_STRING=f"wsibench{os.getpid()}")
    port, ui = free_port(), free_port()
    master = f"spark://127.0.0.1:{port}"
    started = []
    try:
        subprocess.run([daemon, "start", "org.apache.spark.deploy.master.Master", "1", "--host", "127.0.0.1",
                        "--port", str(port), "--webui-port", str(ui)], env=env, check=True, capture_output=True)
        started.append(("org.apache.spark.deploy.master.Master", "1"))
        for i in range(1, workers + 1):
            subprocess.run([daemon, "start", "org.apache.spark.deploy.worker.Worker", str(i), "--host", "127.0.0.1",
                            "--webui-port", str(free_port()), "--cores", "1", "--memory", "2g", master],
                           env=env, check=True, capture_output=True)
            started.append(("org.apache.spark.deploy.worker.Worker", str(i)))

        def alive():
            doc = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2))
            return sum(w["state"] == "ALIVE" for w in doc["workers"]) == workers
        wait_for(alive, 90, "Spark standalone cluster")
        m = Master(master)
        m.pids = [int(p.read_text()) for p in (tmp / "pids").glob("*.pid")]
        yield m
    finally:
        for cls, i in reversed(started):
            subprocess.run([daemon, "stop", cls, i], env=env, capture_output=True)


@contextlib.contextmanager
def dask_cluster(tmp: Path, workers: int = 2):
    from dask.distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = [open(tmp / f"dask-{n}.log", "w") for n in range(workers + 1)]
    procs = [subprocess.Popen([str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", f"127.0.0.1:{free_port()}"], stdout=logs[0], stderr=logs[0])]
    try:
        for n in range(workers):
            procs.append(subprocess.Popen([str(VENV_BIN / "dask"), "worker", address, "--host", "127.0.0.1",
                                           "--nworkers", "1", "--nthreads", "1", "--dashboard-address", "127.0.0.1:0",
                                           "--local-directory", str(tmp / f"w{n}")],
                                          stdout=logs[n + 1], stderr=logs[n + 1]))

        def ready():
            with Client(address, timeout=5) as c:
                return len(c.scheduler_info()["workers"]) == workers
        wait_for(ready, 60, "Dask cluster")
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()
