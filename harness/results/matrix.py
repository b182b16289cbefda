"""Matrix runs: engines x workers x storage profiles x repetitions of a workload's measured stages."""
from __future__ import annotations

import itertools
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from ..config import STAGES, Workload
from ..fsutil import write_json
from . import HEADLINE, config_key

SPREAD_LIMIT = 0.05


def expand(w: Workload) -> list[dict]:
    m = w.matrix
    return [{"engine": e, "workers": n, "storage": s} for s, e, n in itertools.product(
        m.storage or [w.storage], m.engines or [w.engine.name], m.workers or [w.engine.workers])]


def aggregate(summaries: list[dict], measure: list[str]) -> list[dict]:
    """Per configuration and measured stage: mean, std, min, max of the stage's headline throughput."""
    groups: dict[str, list[dict]] = {}
    for s in summaries:
        groups.setdefault(config_key(s), []).append(s)
    out = []
    for key, runs in groups.items():
        for stage in measure:
            metric = HEADLINE[stage]
            vals = [v for v in ((r.get("stages", {}).get(stage) or {}).get(metric) for r in runs) if v is not None]
            if not vals:
                out.append({"config": key, "stage": stage, "metric": metric, "n": 0, "failed": len(runs)})
                continue
            a = np.asarray(vals, float)
            spread = float((a.max() - a.min()) / a.mean()) if a.mean() else 0.0
            out.append({"config": key, "stage": stage, "metric": metric, "n": len(a), "mean": float(a.mean()),
                        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "min": float(a.min()),
                        "max": float(a.max()), "spread": spread, "flagged": spread > SPREAD_LIMIT,
                        "runs": [r["run_id"] for r in runs], "failed": len(runs) - len(a)})
    return out


def run(w: Workload, results_dir: Path, measure: list[str] | None = None, repetitions: int | None = None,
        strict: bool = False, drop_caches: bool = False) -> dict:
    from .. import pipeline

    measure = [s for s in STAGES if s in (measure or w.matrix.measure)]
    reps = repetitions or w.matrix.repetitions
    last = max(STAGES.index(s) for s in measure)
    prepare = [s for s in STAGES[:last] if s not in measure]  # prerequisites, made once per storage root
    matrix_id = f"matrix-{time.strftime('%Y%m%dT%H%M%S')}-{w.name}-{uuid.uuid4().hex[:4]}"
    configs = expand(w)
    summaries, prepared = [], set()
    print(f"[matrix] {matrix_id}: {len(configs)} configurations x {reps} repetitions of {', '.join(measure)}",
          file=sys.stderr)
    for c in configs:
        if prepare and c["storage"] not in prepared:
            pipeline.run(w, prepare, c["storage"], results_dir, strict=strict,
                         tags={"matrix": matrix_id, "role": "prepare"})
            prepared.add(c["storage"])
        for rep in range(reps):
            tags = {"matrix": matrix_id, "role": "measure", "repetition": rep, **c}
            try:
                s = pipeline.run(w, measure, c["storage"], results_dir, c["engine"], c["workers"], strict,
                                 drop_caches, fresh=True, tags=tags)
            except Exception as e:  # recorded by the run itself; the matrix goes on
                print(f"[matrix] {c}: repetition {rep} failed: {e}", file=sys.stderr)
                continue
            summaries.append(s)
    doc = {"matrix_id": matrix_id, "workload": w.name, "measure": measure, "repetitions": reps,
           "configurations": configs, "runs": [s["run_id"] for s in summaries],
           "results": aggregate(summaries, measure), "spread_limit": SPREAD_LIMIT}
    write_json(Path(results_dir) / matrix_id / "matrix.json", doc)
    return doc
