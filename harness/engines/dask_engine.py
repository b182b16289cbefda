"""Dask: an embedded LocalCluster on loopback by default, or an existing cluster at ``address``.

Items are Dask tasks (one per slide or shard, the heaviest first) with Dask's own retries; a worker that dies has
its tasks rescheduled by the scheduler. Failures after the retries become recorded errors. Each worker holds one
task queued behind the running one, so it never waits on a round trip to the scheduler between items.

``nodes = N`` on a cluster: only the workers of N hosts (the first N by address) receive tasks and warm-ups.
"""
from __future__ import annotations

import sys
import time

from ..errors import RunError
from .base import Engine, Outcome, error_text, heaviest_first, measure, package_zip, route_address, warm_up

# The embedded cluster's housekeeping, made rarer: by default its five processes wake 50 times a second (event-loop
# tick), sample psutil twice a second and the nanny polls memory ten times a second, ~7% of a core between them;
# on a small machine that is taken from the workers.
QUIET = {"distributed.admin.tick.interval": "1s", "distributed.admin.system-monitor.interval": "2s",
         "distributed.worker.memory.monitor-interval": "1s"}
# the statistical profiler samples every task's stack every 10 ms: measurable on CPU-bound tasks; saturation 2.0:
# each worker holds the next task while it runs one (no idle round trip between items; a worker that dies gives
# back at most the one it had not started). The clusters wsibench starts itself (embedded, and the MooseFS lab's
# scheduler and workers on its client hosts) all run so.
SETTINGS = {"distributed.worker.profile.enabled": False, "distributed.scheduler.worker-saturation": 2.0, **QUIET}


def settings_env() -> dict[str, str]:
    """SETTINGS as the environment variables a Dask process started apart reads them from (``DASK_A__B_C``)."""
    return {"DASK_" + k.upper().replace(".", "__").replace("-", "_"): str(v) for k, v in SETTINGS.items()}


NODES_WAIT_S = 30.0  # how long a cluster has to show workers on the hosts asked for


class DaskEngine(Engine):
    name = "dask"

    def __init__(self, workers: int = 1, retries: int = 0, address: str | None = None, nodes: int | None = None,
                 **_):
        self.cluster = bool(address)
        super().__init__(workers, retries, nodes)
        from dask.distributed import Client, LocalCluster

        self.address = address
        self._cluster = None
        self._workers: list[str] | None = None  # the workers that receive tasks (None: all)
        if address:
            self.client = Client(address, timeout="30s")
            if not _has_harness(self.client):
                self.client.upload_file(package_zip())
            if nodes:
                try:
                    self._workers = self._on_hosts(nodes)
                except RunError:
                    self.client.close()
                    raise
        else:
            import logging

            import dask
            logging.getLogger("distributed").setLevel(logging.ERROR)
            dask.config.set(SETTINGS)
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                         host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=40)
            self.client = Client(self._cluster)
        self.workers = len(self._workers or self.client.scheduler_info()["workers"]) or workers
        link = self.client.dashboard_link
        if link:
            print(f"[dask] dashboard: {link}", file=sys.stderr)

    def _on_hosts(self, nodes: int) -> list[str]:
        """The addresses of the workers on the first ``nodes`` hosts, waiting for that many hosts to join."""
        timeout = NODES_WAIT_S
        deadline = time.monotonic() + timeout
        while True:
            by_host: dict[str, list[str]] = {}
            for addr, w in self.client.scheduler_info(n_workers=-1)["workers"].items():
                by_host.setdefault(w["host"], []).append(addr)
            if len(by_host) >= nodes:
                hosts = sorted(by_host)[:nodes]
                return sorted(a for h in hosts for a in by_host[h])
            if time.monotonic() > deadline:
                raise RunError(f"engine.nodes = {nodes}: the Dask cluster at {self.address} has workers on "
                               f"{len(by_host)} host(s) ({', '.join(sorted(by_host)) or 'none'}) after {timeout:.0f}s")
            time.sleep(0.5)

    def by_host(self) -> dict[str, list[str]]:
        """The workers that receive tasks, by host address."""
        out: dict[str, list[str]] = {}
        for addr, w in self.client.scheduler_info(n_workers=-1)["workers"].items():
            if self._workers is None or addr in self._workers:
                out.setdefault(w["host"], []).append(addr)
        return {h: sorted(v) for h, v in sorted(out.items())}

    def driver_address(self) -> str:
        """This host's address facing the cluster (on the route to the scheduler)."""
        host, port = self.client.scheduler.address.split("://")[-1].rsplit(":", 1)
        return route_address(host.strip("[]"), int(port))

    def map(self, fn, items):
        from dask.distributed import as_completed

        order = heaviest_first(items)  # submitted (and so started) in this order
        futures = self.client.map(measure, [fn] * len(items), order, [items[i] for i in order],
                                  retries=self.retries, pure=False, workers=self._workers,
                                  allow_other_workers=False)
        index = {f.key: i for f, i in zip(futures, order)}
        lost = dict.fromkeys(range(len(items)), 0)
        done = as_completed(futures)
        for fut in done:
            i = index[fut.key]
            if fut.status == "finished":
                yield fut.result()
            elif fut.status == "error":
                yield Outcome(i, items[i], None, error_text(fut.exception()), 0.0, self.retries + 1)
            elif lost[i] < 3:  # cancelled or lost by the cluster (a worker or the connection went): again
                lost[i] += 1
                again = self.client.submit(measure, fn, i, items[i], retries=self.retries, pure=False,
                                           workers=self._workers, allow_other_workers=False)
                index[again.key] = i
                done.add(again)
            else:
                yield Outcome(i, items[i], None, f"the cluster lost it {lost[i] + 1} times (status {fut.status})",
                              0.0, lost[i] + 1)
            fut.release()

    def warm(self, fn):
        # on every worker that will run items, outside the task queue
        return list(self.client.run(warm_up, fn, workers=self._workers).values())

    def topology(self) -> dict:
        info = self.client.scheduler_info(n_workers=-1)
        workers = {a: w for a, w in info["workers"].items() if self._workers is None or a in self._workers}
        hosts = sorted({w["host"] for w in workers.values()})
        return {"name": self.name, "workers": len(workers), "address": info.get("address"),
                "embedded": self._cluster is not None, "dashboard": self.client.dashboard_link,
                "threads": sum(w.get("nthreads", 1) for w in workers.values()),
                "nodes": len(hosts), "node_addresses": hosts, "nodes_requested": self.nodes,
                "cluster_hosts": len({w["host"] for w in info["workers"].values()})}

    def close(self):
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _has_harness(client) -> bool:
    def probe():
        import importlib.util
        return importlib.util.find_spec("harness") is not None
    try:
        return all(client.run(probe).values())
    except Exception:  # noqa: BLE001
        return False
