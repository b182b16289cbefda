"""The embedded engines: in-process (local) and a pool of processes on this host (multiprocessing)."""
from __future__ import annotations

from .base import Engine, call


class LocalEngine(Engine):
    """In-process, one item after the other: for debugging and for the smallest runs."""
    name = "local"

    def __init__(self, workers: int = 1, retries: int = 0, **kw):
        super().__init__(1, retries)

    def map(self, fn, items):
        for i, item in enumerate(items):
            yield call(fn, i, item, self.retries)


class ProcessEngine(Engine):
    """A pool of worker processes on this machine (spawned, so nothing leaks from the driver)."""
    name = "multiprocessing"

    def __init__(self, workers: int = 1, retries: int = 0, **kw):
        super().__init__(workers, retries)
        self._pool = None

    def map(self, fn, items):
        import concurrent.futures as cf
        import multiprocessing as mp

        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        futures = [self._pool.submit(call, fn, i, item, self.retries) for i, item in enumerate(items)]
        for fut in cf.as_completed(futures):
            yield fut.result()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
