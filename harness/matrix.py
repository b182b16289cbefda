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
from .results.matrix import SPREAD_LIMIT, aggregate, expand, label, measured_stages


def run(w: Workload, results_dir: Path, measure: list[str] | None = None, repetitions: int | None = None,
        strict: bool = False, drop_caches: bool = False) -> dict:
    measure = measured_stages(measure or w.matrix.measure)
    reps = repetitions or w.matrix.repetitions
    prepare = list(STAGES[:STAGES.index(measure[0])])  # prerequisites, made once per storage root
    matrix_id = f"matrix-{time.strftime('%Y%m%dT%H%M%S')}-{w.name}-{uuid.uuid4().hex[:4]}"
    configs = expand(w)
    groups, prepared = [], {}
    print(f"[matrix] {matrix_id}: {len(configs)} configurations x {reps} repetitions of {', '.join(measure)}",
          file=sys.stderr)
    for c in configs:
        if prepare and c["storage"] not in prepared:
            try:
                pipeline.run(w, stages=prepare, storage=c["storage"], results_dir=results_dir, strict=strict,
                             tags={"matrix": matrix_id, "role": "prepare"})
                prepared[c["storage"]] = None
            except Exception as e:  # noqa: BLE001 - every repetition on this storage fails with it
                prepared[c["storage"]] = f"preparing {', '.join(prepare)} failed: {type(e).__name__}: {e}"
        group = {"config": c, "runs": [], "failures": []}
        groups.append(group)
        if prepared.get(c["storage"]):
            group["failures"] = [{"repetition": rep, "error": prepared[c["storage"]]} for rep in range(reps)]
            continue
        for rep in range(reps):
            tags = {"matrix": matrix_id, "role": "measure", "repetition": rep, **c}
            try:
                group["runs"].append(pipeline.run(w, stages=measure, storage=c["storage"], results_dir=results_dir,
                                                  engine=c["engine"], workers=c["workers"], nodes=c.get("nodes"),
                                                  strict=strict,
                                                  drop_caches=drop_caches, fresh=True, tags=tags))
            except Exception as e:  # noqa: BLE001 - recorded by the run itself, and here; the matrix goes on
                print(f"[matrix] {label(c)}: repetition {rep} failed: {e}", file=sys.stderr)
                group["failures"].append({"repetition": rep, "error": f"{type(e).__name__}: {e}"})
    results = aggregate(groups, measure)
    doc = {"matrix_id": matrix_id, "workload": w.name, "measure": measure, "repetitions": reps,
           "configurations": configs, "runs": [s["run_id"] for g in groups for s in g["runs"]],
           "results": results, "failed": sum(r["failed"] for r in results), "spread_limit": SPREAD_LIMIT}
    write_json(Path(results_dir) / matrix_id / "matrix.json", doc)
    return doc
