"""Dask: an embedded LocalCluster on loopback by default, or an existing cluster at ``address``.

Items are Dask tasks (one per slide or shard) with Dask's own retries; a worker that dies has its tasks
rescheduled by the scheduler. Failures after the retries become recorded errors.
"""
from __future__ import annotations

import sys

from .base import Engine, Outcome, error_text, measure, package_zip, warm_up


class DaskEngine(Engine):
    name = "dask"

    def __init__(self, workers: int = 1, retries: int = 0, address: str | None = None, **_):
        super().__init__(workers, retries)
        from dask.distributed import Client, LocalCluster

        self.address = address
        self._cluster = None
        if address:
            self.client = Client(address, timeout="30s")
            if not _has_harness(self.client):
                self.client.upload_file(package_zip())
        else:
            import logging

            import dask
            logging.getLogger("distributed").setLevel(logging.ERROR)
            # the statistical profiler samples every task's stack every 10 ms: measurable on CPU-bound tasks;
            # tasks wait on the scheduler, not queued on workers, so a worker that dies takes only its own task
            dask.config.set({"distributed.worker.profile.enabled": False,
                             "distributed.scheduler.worker-saturation": 1.0})
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                         host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=40)
            self.client = Client(self._cluster)
        self.workers = len(self.client.scheduler_info()["workers"]) or workers
        link = self.client.dashboard_link
        if link:
            print(f"[dask] dashboard: {link}", file=sys.stderr)

    def map(self, fn, items):
        from dask.distributed import as_completed

        futures = self.client.map(measure, [fn] * len(items), range(len(items)), items, retries=self.retries,
                                  pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
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
                again = self.client.submit(measure, fn, i, items[i], retries=self.retries, pure=False)
                index[again.key] = i
                done.add(again)
            else:
                yield Outcome(i, items[i], None, f"the cluster lost it {lost[i] + 1} times (status {fut.status})",
                              0.0, lost[i] + 1)
            fut.release()

    def warm(self, fn):
        return list(self.client.run(warm_up, fn).values())  # on every worker, outside the task queue

    def topology(self) -> dict:
        info = self.client.scheduler_info()
        return {"name": self.name, "workers": len(info["workers"]), "address": info.get("address"),
                "embedded": self._cluster is not None, "dashboard": self.client.dashboard_link,
                "threads": sum(w.get("nthreads", 1) for w in info["workers"].values())}

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
