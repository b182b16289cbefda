"""What stage drivers share: the context a driver gets, and the stage record and per-item table it returns.

A driver (``drive(ctx) -> stage record``, one per stage module) lists its work items, asks ``ctx.map`` to run
its per-item function over them through the stage's engine, and turns the outcomes into a stage record with
``stage_record``; ``ctx.tables`` collects the per-item tables that the run record stores as Parquet.

Start-up is kept apart from throughput: ``ctx.map`` starts the engine if the stage is its first user, warms
every worker up (imports, a model load) and only then times the map. Rates (``items_per_s`` and the stage's
own, such as ``patches_per_s``) are over ``work_seconds``; ``startup_seconds`` and the whole ``seconds`` are
recorded beside them.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..config import EnginePlan
from ..engines import Engine, Outcome, make_engine, run_all
from ..engines.base import import_module
from ..engines.isolate import guarded
from ..fsutil import remove, remove_temporaries

if TYPE_CHECKING:  # the tables' type, named in annotations only
    import pandas as pd


@dataclass
class Mapped:
    """The outcomes of a stage's map and how its time divides."""
    outcomes: list[Outcome]
    work_seconds: float       # the timed map of the items
    startup_seconds: float    # engine start (when this stage started it) and the workers' warm-up
    measured: dict = field(default_factory=dict)  # the machine's and a lab's figures over the timed map (Attached.during)

    def rate(self, n: float) -> float | None:
        return n / self.work_seconds if self.work_seconds > 0 else None


@dataclass
class StageContext:
    workload: object             # config.Workload
    profile: object              # config.StorageProfile
    root: Path                   # the storage root
    data: Path                   # this workload's folder under the root
    run_dir: Path                # results/<run_id>
    summary: dict                # the run record being written
    plan: EnginePlan             # the engine of each stage, its workers and nodes (config.plan_engines)
    dataset: Path | None = None
    slides: list[dict] = field(default_factory=list)
    tables: dict[str, "pd.DataFrame"] = field(default_factory=dict)
    engines: dict[str, Engine] = field(default_factory=dict)
    engine_start_seconds: dict[str, float] = field(default_factory=dict)
    storage: object = None       # storage.Attached: what the machine and a lab did is counted over each timed map

    def engine_name(self, stage: str | None = None) -> str:
        return self.plan.for_stage(stage).name

    def engine(self, stage: str | None = None) -> Engine:
        """The engine of a stage (started on first use, shared by the stages that name it)."""
        e = self.plan.for_stage(stage)
        if e.name not in self.engines:
            t0 = time.perf_counter()
            self.engines[e.name] = make_engine(e.name, e.workers, e.retries, address=e.address, master=e.master,
                                               conf=dict(e.conf), nodes=e.nodes)
            self.engine_start_seconds[e.name] = time.perf_counter() - t0
        return self.engines[e.name]

    def map(self, stage: str, fn, items: list, warm: Callable | None = None) -> Mapped:
        """Run fn over items through the stage's engine, after warming every worker up with ``warm`` (default:
        importing fn's module). The engine's topology, as it ran, goes into the run record."""
        name = self.engine_name(stage)
        started_here = name not in self.engines
        eng = self.engine(stage)
        startup = self.engine_start_seconds[name] if started_here else 0.0
        t0 = time.perf_counter()
        if warm is None:
            module = (fn.func if isinstance(fn, functools.partial) else fn).__module__
            warm = functools.partial(import_module, module)
        eng.warm(warm)
        startup += time.perf_counter() - t0
        inflight = self.data / ".inflight" / stage  # markers of items running now (a crash leaves its marker)
        remove(inflight, self.data)  # nobody else runs in this workload folder (the run holds its lock)
        c0 = self.storage.counters() if self.storage else None
        t0 = time.perf_counter()
        outcomes = run_all(eng, functools.partial(guarded, functools.partial(cpu_timed, fn), str(inflight)), items,
                           label=stage)
        mapped = Mapped(outcomes, time.perf_counter() - t0, startup,
                        self.storage.during(c0) if c0 is not None else {})
        if (self.data / stage).is_dir():  # every item is done: a temporary left now is a killed writer's
            remove_temporaries(self.data / stage, self.data)
        self.summary["engine"].setdefault("stages", {})[stage] = eng.topology()
        return mapped

    def items(self, split: str | None = None) -> list[dict]:
        """The slides of a split (default: all), each with the annotation groups the stages label by and what a
        corrupt tile does."""
        m = self.workload.masks
        return [dict(s, tumor_groups=m.tumor_groups, exclusion_groups=m.exclusion_groups,
                     decode_warnings=self.workload.dataset.decode_warnings)
                for s in self.slides if split is None or s["split"] == split]

    def close(self):
        for eng in self.engines.values():
            eng.close()


def cpu_timed(fn, item):
    """fn(item), with what the worker process spent on it added to a dict result: ``cpu_seconds`` (its threads'
    CPU time) and ``runqueue_seconds`` (their time ready to run but waiting for a core: the CPU contention)."""
    t0, q0 = time.process_time(), runqueue_seconds()
    value = fn(item)
    if isinstance(value, dict):
        value = {**value, "cpu_seconds": time.process_time() - t0}
        if q0 is not None:
            value["runqueue_seconds"] = runqueue_seconds() - q0
    return value


def runqueue_seconds() -> float | None:
    """Seconds this process's threads have waited on a run queue (/proc/self/task/*/schedstat); None where the
    kernel does not say."""
    total = 0
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return total / 1e9


def item_name(item) -> str:
    return item.get("slide") or item.get("shard") if isinstance(item, dict) else str(item)


def stage_record(ctx: StageContext, stage: str, mapped: Mapped, **extra) -> dict:
    """The stage's record from its outcomes (I/O summed over workers, errors by item, the workers that really
    executed items); keeps its per-item table. ``seconds`` is set by the pipeline: the stage's whole wall time."""
    outcomes = mapped.outcomes
    io = {k: sum(o.io.get(k, 0) for o in outcomes) for k in ("bytes_read", "bytes_written", "read_calls", "write_calls")}
    ok = [o for o in outcomes if not o.error]
    if outcomes:
        ctx.tables[stage] = table(outcomes)
    workers = sorted({o.worker for o in outcomes if o.worker})
    per_host = hosts(outcomes)
    return {"items": len(outcomes), "items_per_s": mapped.rate(len(outcomes)),
            "work_seconds": mapped.work_seconds, "startup_seconds": mapped.startup_seconds,
            **io, "files_written": sum((o.value or {}).get("files_written", 0) for o in ok),
            "cpu_seconds": sum((o.value or {}).get("cpu_seconds", 0.0) for o in ok),
            "runqueue_seconds": sum((o.value or {}).get("runqueue_seconds", 0.0) for o in ok),
            "workers_used": len(workers), "hosts_used": len(per_host), "hosts": per_host,
            "errors": [{"item": item_name(o.item), "error": o.error} for o in outcomes if o.error],
            "warnings": [{"item": item_name(o.item), "warning": w} for o in ok for w in (o.value or {}).get("warnings", [])],
            "status": "ok" if len(ok) == len(outcomes) else ("failed" if not ok else "partial"), **mapped.measured,
            **extra}


def hosts(outcomes: list[Outcome]) -> dict[str, dict]:
    """Every host that executed items (from each outcome's worker, host:pid): its items, their seconds, the bytes
    its workers read and wrote for them, and how many of its worker processes ran them."""
    out: dict[str, dict] = {}
    for o in outcomes:
        if not o.worker:
            continue
        host, pid = o.worker.rsplit(":", 1)
        h = out.setdefault(host, {"items": 0, "seconds": 0.0, "bytes_read": 0, "bytes_written": 0, "errors": 0,
                                  "workers": set()})
        h["items"] += 1
        h["seconds"] += o.seconds
        h["bytes_read"] += o.io.get("bytes_read", 0)
        h["bytes_written"] += o.io.get("bytes_written", 0)
        h["errors"] += bool(o.error)
        h["workers"].add(pid)
    return {k: dict(v, workers=len(v["workers"])) for k, v in sorted(out.items())}


def table(outcomes: list[Outcome]) -> "pd.DataFrame":
    """One row per item: seconds, error, attempts, worker, I/O and the item's own scalar figures."""
    import pandas as pd  # here, not at the top: workers import this module, and pandas costs them 0.2 s each
    rows = []
    for o in outcomes:
        row = {"item": item_name(o.item), "seconds": o.seconds, "error": o.error, "attempts": o.attempts,
               "worker": o.worker, **o.io}
        row.update({k: v for k, v in (o.value or {}).items() if isinstance(v, (int, float, str, bool)) and k not in row})
        rows.append(row)
    return pd.DataFrame(rows)
