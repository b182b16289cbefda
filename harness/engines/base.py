"""What every engine shares: the interface (map a function over items, report topology, close) and the
per-item wrapper that runs in the worker.

A stage never knows which engine runs it. ``call`` runs in the worker: it times the item, measures the
worker's own I/O (/proc/self/io) around it, retries it, and turns an exception into a recorded error.
"""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import WsibenchError, describe
from ..procs import mark_driver, watch_driver
from ..progress import Progress

IO_KEYS = {"rchar": "bytes_read", "wchar": "bytes_written", "syscr": "read_calls", "syscw": "write_calls"}


class WorkerCrashed(WsibenchError, RuntimeError):
    """An item whose worker process died running it, twice: recorded with how it died; never retried again."""


@dataclass
class Outcome:
    index: int
    item: Any
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    attempts: int = 1
    io: dict = field(default_factory=dict)
    worker: str = ""


def proc_io() -> dict:
    """This process's I/O counters (/proc/self/io): bytes and calls read and written; {} where unavailable."""
    try:
        with open("/proc/self/io") as f:
            raw = dict(line.split(": ") for line in f.read().splitlines())
        return {v: int(raw[k]) for k, v in IO_KEYS.items()}
    except OSError:
        return {}


def worker_id() -> str:
    """This worker process: host:pid."""
    return f"{os.uname().nodename}:{os.getpid()}"


def route_address(host: str, port: int) -> str:
    """This machine's address on the route to host:port (a UDP "connect" sends nothing): the interface that faces
    a cluster, for services the cluster must reach (and nothing else)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((socket.gethostbyname(host), port))
        return s.getsockname()[0]


def import_module(name: str) -> None:
    """The default warm-up: import the module of the function about to be mapped, and what it and its libraries
    import only on first use: the module's ``prepare_worker()`` if it has one (a stage's codecs), and pyarrow's
    pandas. pyarrow imports pandas (about 360 modules, ~0.5 CPU seconds) the first time it builds a
    table: a stage that writes a Parquet manifest paid that inside its worker's first item, counted as work, and
    left the modules out of the frozen heap (Spark's Python workers then scanned them at every task's collection)."""
    import importlib
    import sys

    module = importlib.import_module(name)
    if callable(getattr(module, "prepare_worker", None)):
        module.prepare_worker()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].table({"warm": [0]})


def warm_up(fn: Callable) -> str:
    """Run the warm-up, then move every object it left (modules, a model) out of the garbage collector's sight:
    a collection then scans only what items allocate. (Spark's Python workers collect after every task: with a
    pipeline's imports, that full scan costs ~0.1 s per task; frozen, microseconds.)"""
    import gc

    watch_driver()  # a worker of an embedded engine dies with its driver
    fn()
    gc.collect()
    gc.freeze()
    return worker_id()


def measure(fn: Callable, index: int, item: Any) -> Outcome:
    """Run fn(item) in the worker, timing it and measuring the worker's own I/O. Raises what fn raises."""
    watch_driver()  # a worker of an embedded engine dies with its driver (once per process; cheap after)
    t0, io0 = time.perf_counter(), proc_io()
    value = fn(item)
    io1 = proc_io()
    return Outcome(index, item, value, None, time.perf_counter() - t0, 1,
                   {k: io1[k] - io0[k] for k in io1}, worker_id())


def call(fn: Callable, index: int, item: Any, retries: int = 0) -> Outcome:
    """measure() with up to ``retries`` retries; a last failure becomes a recorded error. Never raises."""
    t0 = time.perf_counter()
    for attempt in range(1, retries + 2):
        try:
            o = measure(fn, index, item)
            o.attempts = attempt
            return o
        except Exception as e:  # noqa: BLE001 - recorded, not swallowed
            err = error_text(e)
            if os.environ.get("WSIBENCH_TRACEBACK"):
                traceback.print_exc()
            if isinstance(e, WorkerCrashed):  # it killed its worker twice: a third time helps nobody
                break
    return Outcome(index, item, None, err, time.perf_counter() - t0, attempt, {}, worker_id())


def echo(x):
    """The trivial work item: for warm-ups and for measuring an engine's own overhead."""
    return x


def error_text(e: BaseException) -> str:
    return describe(e)  # "Type: message"; TensorFlow's without its internals


def item_cost(item) -> float:
    """A cheap estimate of an item's work, to start the heaviest first and to pack batches of equal work: a
    shard's record count, a slide's file size (tissue compresses worse than background), else 1."""
    if isinstance(item, dict):
        if isinstance(item.get("rows"), list):
            return float(len(item["rows"]) or 1)
        if item.get("path"):
            try:
                return float(os.path.getsize(item["path"]) or 1)
            except (OSError, TypeError):
                pass
    return 1.0


def heaviest_first(items: list, costs: list[float] | None = None) -> list[int]:
    """Item indices, the heaviest estimated work first (ties in item order): the longest items start first, so the
    last ones to finish are short and the workers finish together."""
    costs = costs or [item_cost(x) for x in items]
    return sorted(range(len(items)), key=lambda i: (-costs[i], i))


def batches(items: list, slots: int, per_slot: int) -> list[list[int]]:
    """Item indices packed into at most ``slots * per_slot`` batches of about equal estimated work (each item, the
    heaviest first, into the lightest batch so far); the heaviest batch first. Several batches per slot let the
    engine even out what the estimates missed."""
    import heapq

    costs = [item_cost(x) for x in items]
    n = min(len(items), max(1, slots) * per_slot)
    heap = [(0.0, j, []) for j in range(n)]
    for i in heaviest_first(items, costs):  # each slide's size read once
        total, j, members = heapq.heappop(heap)
        members.append(i)
        heapq.heappush(heap, (total + costs[i], j, members))
    return [sorted(m) for _, _, m in sorted(heap, key=lambda b: (-b[0], b[1])) if m]


class Engine:
    name = "base"
    cluster = False  # embedded engines run on this one host

    def __init__(self, workers: int = 1, retries: int = 0, nodes: int | None = None, **_):
        self.workers, self.retries = workers, retries
        if nodes and nodes > 1 and not self.cluster:
            from ..config import ConfigError
            raise ConfigError(f"engine.nodes = {nodes}: the {self.name} engine runs on this one host; several nodes "
                              "need a cluster (engine.address for dask, engine.master for spark)")
        self.nodes = nodes
        if not self.cluster:  # the workers it starts on this host die with this process (harness.procs)
            mark_driver()

    def map(self, fn: Callable, items: list) -> Iterator[Outcome]:
        raise NotImplementedError

    def warm(self, fn: Callable) -> list[str]:
        """Run ``fn()`` once in every worker (imports, a model load), so that start-up stays out of the measured
        map; returns the workers that ran it."""
        return [warm_up(fn)]

    def topology(self) -> dict:
        """The engine as it really runs: ``workers`` counts the worker processes (executors) it has; ``nodes`` the
        hosts they run on (embedded engines: this one)."""
        return {"name": self.name, "workers": self.workers, "address": None, "nodes": 1,
                "node_addresses": [os.uname().nodename]}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def package_zip() -> str:
    """The harness package as a zip, for clusters whose workers do not have wsibench installed."""
    import tempfile
    import zipfile
    from pathlib import Path

    pkg = Path(__file__).resolve().parent.parent
    path = Path(tempfile.mkdtemp(prefix="wsibench-pkg-")) / "wsibench_harness.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in pkg.rglob("*.py"):
            z.write(f, f.relative_to(pkg.parent))
    return str(path)


def run_all(engine: Engine, fn: Callable, items: list, label: str = "", progress: bool | None = None) -> list[Outcome]:
    """Map fn over items, showing progress (``harness.progress``: a bar on a terminal, a line per item done
    elsewhere; ``progress=False``: failures only); return outcomes in item order."""
    out: list[Outcome | None] = [None] * len(items)
    with Progress(len(items), label, quiet=None if progress is None else not progress) as progress:
        for o in engine.map(fn, items):
            out[o.index] = o
            progress.done(_name(o.item), o.seconds, o.error)
    return out  # type: ignore[return-value]


def _name(item) -> str:
    if isinstance(item, dict):
        return str(item.get("slide") or item.get("name") or item.get("shard") or "")
    if isinstance(item, (tuple, list)):
        return str(item[2] if len(item) > 2 else item[0])
    return str(item)
