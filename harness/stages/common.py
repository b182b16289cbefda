"""What stage drivers share: the context a driver gets, and the stage record and per-item table it returns.

A driver (``drive(ctx) -> stage record``, one per stage module) lists its work items, asks ``ctx.map`` to run
its per-item function over them through the stage's engine, and turns the outcomes into a stage record with
``stage_record``; ``ctx.tables`` collects the per-item tables that the run record stores as Parquet.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..engines import Engine, Outcome, make_engine, run_all


@dataclass
class StageContext:
    workload: object             # config.Workload
    profile: object              # config.StorageProfile
    root: Path                   # the storage root
    data: Path                   # this workload's folder under the root
    run_dir: Path                # results/<run_id>
    summary: dict                # the run record being written
    engine_override: str | None = None
    workers_override: int | None = None
    dataset: Path | None = None
    slides: list[dict] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    engines: dict[str, Engine] = field(default_factory=dict)

    def engine(self, stage: str | None = None) -> Engine:
        """The engine of a stage (started on first use, shared by the stages that name it)."""
        e = self.workload.engine
        name = self.engine_override or (e.stages.get(stage) if stage else None) or e.name
        if name not in self.engines:
            self.engines[name] = make_engine(name, self.workers_override or e.workers, e.retries,
                                             address=e.address, master=e.master, conf=e.spark_conf)
        eng = self.engines[name]
        if stage:
            self.summary["engine"].setdefault("stages", {})[stage] = eng.topology()
        return eng

    def map(self, stage: str, fn, items: list) -> tuple[list[Outcome], float]:
        """Run fn over items through the stage's engine: (outcomes in item order, seconds)."""
        eng = self.engine(stage)
        t0 = time.perf_counter()
        outcomes = run_all(eng, fn, items, label=stage)
        return outcomes, time.perf_counter() - t0

    def items(self, split: str) -> list[dict]:
        """The slides of a split, each with the annotation groups the stages label by."""
        m = self.workload.masks
        return [dict(s, tumor_groups=m.tumor_groups, exclusion_groups=m.exclusion_groups)
                for s in self.slides if s["split"] == split]

    def close(self):
        for eng in self.engines.values():
            eng.close()


def item_name(item) -> str:
    return item.get("slide") or item.get("shard") if isinstance(item, dict) else str(item)


def stage_record(ctx: StageContext, stage: str, outcomes: list[Outcome], seconds: float, **extra) -> dict:
    """The stage's record from its outcomes (I/O summed over workers, errors by item); keeps its per-item table."""
    io = {k: sum(o.io.get(k, 0) for o in outcomes) for k in ("bytes_read", "bytes_written", "read_calls", "write_calls")}
    ok = [o for o in outcomes if not o.error]
    if outcomes:
        ctx.tables[stage] = table(outcomes)
    return {"seconds": seconds, "items": len(outcomes), "items_per_s": len(outcomes) / seconds if seconds else None,
            **io, "files_written": sum((o.value or {}).get("files_written", 0) for o in ok),
            "errors": [{"item": item_name(o.item), "error": o.error} for o in outcomes if o.error],
            "status": "ok" if len(ok) == len(outcomes) else ("failed" if not ok else "partial"), **extra}


def table(outcomes: list[Outcome]) -> pd.DataFrame:
    """One row per item: seconds, error, attempts, worker, I/O and the item's own scalar figures."""
    rows = []
    for o in outcomes:
        row = {"item": item_name(o.item), "seconds": o.seconds, "error": o.error, "attempts": o.attempts,
               "worker": o.worker, **o.io}
        row.update({k: v for k, v in (o.value or {}).items() if isinstance(v, (int, float, str, bool)) and k not in row})
        rows.append(row)
    return pd.DataFrame(rows)
