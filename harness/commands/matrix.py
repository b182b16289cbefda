"""wsibench matrix: engines x workers x nodes x storage x repetitions of a workload's measured stages."""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import load_workload
from .options import parents


def add(sub):
    s = sub.add_parser("matrix", parents=parents("workload", "results", "strict", "drop_caches"),
                       help="run engines x workers x nodes x storage x repetitions of a workload's measured stages",
                       description="Run the product of the workload's [matrix] (engines, workers, nodes of the "
                                   "cluster engines, storage, repetitions). Stages not under measurement are "
                                   "prepared once per storage root and reused; the measured stages start fresh each "
                                   "time. Repetitions give mean, std, min and max; configurations spreading by more "
                                   "than 5%% are flagged.")
    s.add_argument("--measure", help="comma-separated stages to measure (default: the workload's matrix.measure)")
    s.add_argument("--repetitions", type=int, help="repetitions per configuration (default: the workload's)")
    return s


def run(a) -> int:
    from .. import matrix

    w = load_workload(a.workload)
    measure = [x.strip() for x in a.measure.split(",")] if a.measure else None
    doc = matrix.run(w, Path(a.results), measure, a.repetitions, a.strict, a.drop_caches)
    print(f"{'configuration':<44} {'stage':<10} {'n':>2} {'mean':>10} {'std':>8} {'min':>10} {'max':>10}  spread")
    for r in doc["results"]:
        if r["n"]:
            print(f"{r['config']:<44} {r['stage']:<10} {r['n']:>2} {r['mean']:>10.1f} {r['std']:>8.1f} "
                  f"{r['min']:>10.1f} {r['max']:>10.1f}  {r['spread']:.1%}{'  FLAGGED: > 5%' if r['flagged'] else ''}")
        for f in r["errors"]:
            print(f"{r['config']:<44} {r['stage']:<10}  FAILED repetition {f.get('repetition')}: {f['error']}")
    print(f"[matrix] {Path(a.results) / doc['matrix_id'] / 'matrix.json'}", file=sys.stderr)
    return 0 if not doc["failed"] else 3
