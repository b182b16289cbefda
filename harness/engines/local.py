"""The embedded engines: in-process (local) and a pool of processes on this host (multiprocessing)."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ..registry import ENGINES
from .base import Engine, call, warm_up


class LocalEngine(Engine):
    """In-process, one item after the other: for debugging and for the smallest runs."""
    name = "local"

    def __init__(self, workers: int = 1, retries: int = 0, **kw):
        super().__init__(ENGINES["local"].fixed_workers, retries)

    def map(self, fn, items):
        for i, item in enumerate(items):
            yield call(fn, i, item, self.retries)


class ProcessEngine(Engine):
    """A pool of worker processes on this machine (spawned, so nothing leaks from the driver)."""
    name = "multiprocessing"

    def __init__(self, workers: int = 1, retries: int = 0, **kw):
        super().__init__(workers, retries)
        self._pool = None

    def _ensure(self):
        import concurrent.futures as cf
        import multiprocessing as mp

        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        return self._pool

    def warm(self, fn):
        """One warm-up per worker: each waits until all have started, so no worker takes two."""
        with tempfile.TemporaryDirectory(prefix="wsibench-warm-") as barrier:
            futures = [self._ensure().submit(_warm_behind_barrier, fn, barrier, self.workers)
                       for _ in range(self.workers)]
            return [f.result() for f in futures]

    def map(self, fn, items):
        import concurrent.futures as cf

        futures = [self._ensure().submit(call, fn, i, item, self.retries) for i, item in enumerate(items)]
        for fut in cf.as_completed(futures):
            yield fut.result()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _warm_behind_barrier(fn, barrier: str, n: int, timeout: float = 120.0) -> str:
    worker = warm_up(fn)
    Path(barrier, str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while len(os.listdir(barrier)) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return worker
