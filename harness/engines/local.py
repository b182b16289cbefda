"""The embedded engines: a pool of worker processes on this host (multiprocessing), and local: one worker, one
item after the other (``WSIBENCH_IN_PROCESS=1`` runs local's items in the driver itself, for a debugger, at the
price of a native crash taking the run with it).

A worker that dies (a native crash) breaks the pool: the pool is rebuilt and the items not yet done are submitted
again; the one that crashed finds its in-flight marker and runs alone (``isolate``)."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from ..registry import ENGINE_CLASSES
from .base import Engine, Outcome, call, heaviest_first, warm_up


class ProcessEngine(Engine):
    """A pool of worker processes on this machine (spawned, so nothing leaks from the driver)."""
    name = "multiprocessing"

    def __init__(self, workers: int = 1, retries: int = 0, **kw):
        super().__init__(workers, retries, **kw)
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
        from concurrent.futures.process import BrokenProcessPool

        pending = {i: items[i] for i in heaviest_first(items)}  # the longest first: the last to finish are short
        for _ in range(len(items) + 1):  # each break takes at least the crashing item out of the running
            futures = {self._ensure().submit(call, fn, i, item, self.retries): i for i, item in pending.items()}
            broken = False
            for fut in cf.as_completed(futures):
                try:
                    o = fut.result()
                except BrokenProcessPool:  # a worker died: every unfinished item goes round again
                    broken = True
                    continue
                del pending[futures[fut]]
                yield o
            if not broken:
                return
            print(f"[{self.name}] a worker process died; {len(pending)} unfinished items go to fresh workers",
                  file=sys.stderr, flush=True)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for i, item in pending.items():
            yield Outcome(i, item, None, "RuntimeError: the worker pool kept breaking", 0.0, 0)

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


class LocalEngine(ProcessEngine):
    """One worker, one item after the other: for the smallest runs (and, in-process, for debugging)."""
    name = "local"

    def __init__(self, workers: int = 1, retries: int = 0, **kw):
        super().__init__(ENGINE_CLASSES["local"].fixed_workers, retries, **kw)
        self.in_process = bool(os.environ.get("WSIBENCH_IN_PROCESS"))

    def warm(self, fn):
        return [warm_up(fn)] if self.in_process else super().warm(fn)

    def map(self, fn, items):
        if not self.in_process:
            yield from super().map(fn, items)
            return
        for i, item in enumerate(items):
            yield call(fn, i, item, self.retries)
