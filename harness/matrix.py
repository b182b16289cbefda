"""Matrix runs: engines x workers x storage profiles x repetitions of a workload's measured stages.

Stages before the measured ones are prepared once per storage root and reused; the measured stages start fresh
every time (their outputs removed first, so nothing is resumed). Expansion and statistics are in
``harness.results.matrix``.
"""
from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from . import pipeline
from .config import STAGES, Workload
from .fsutil import write_json
from .results.matrix import SPREAD_LIMIT, aggregate, expand


def run(w: Workload, results_dir: Path, measure: list[str] | None = None, repetitions: int | None = None,
        strict: bool = False, drop_caches: bool = False) -> dict:
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
            pipeline.run(w, stages=prepare, storage=c["storage"], results_dir=results_dir, strict=strict,
                         tags={"matrix": matrix_id, "role": "prepare"})
            prepared.add(c["storage"])
        for rep in range(reps):
            tags = {"matrix": matrix_id, "role": "measure", "repetition": rep, **c}
            try:
                s = pipeline.run(w, stages=measure, storage=c["storage"], results_dir=results_dir, engine=c["engine"],
                                 workers=c["workers"], strict=strict, drop_caches=drop_caches, fresh=True, tags=tags)
            except Exception as e:  # recorded by the run itself; the matrix goes on
                print(f"[matrix] {c}: repetition {rep} failed: {e}", file=sys.stderr)
                continue
            summaries.append(s)
    doc = {"matrix_id": matrix_id, "workload": w.name, "measure": measure, "repetitions": reps,
           "configurations": configs, "runs": [s["run_id"] for s in summaries],
           "results": aggregate(summaries, measure), "spread_limit": SPREAD_LIMIT}
    write_json(Path(results_dir) / matrix_id / "matrix.json", doc)
    return doc
