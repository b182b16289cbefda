"""What observing costs: the patch and TFRecord stages on ``local`` directly and through the counting passthrough
(``--observe``), back to back in each repetition (the machine is shared: read the ratios, min / median / max).
Root and /dev/fuse needed.

  python benchmarks/observe_overhead.py --slides 6 --size 8192 --repetitions 5 --out /tmp/observe-overhead

Prints, per stage, the work seconds directly and observed and their ratio (observed / direct).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

STAGES = ("patches", "tfrecords")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/observe-overhead")
    ap.add_argument("--slides", type=int, default=6)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    from harness import pipeline  # here, not at the top: asv imports every module under benchmarks/
    from harness.config import parse_workload

    res = Path(a.out).resolve()
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(res / "data")
    os.environ.setdefault("WSIBENCH_QUIET", "1")
    wl = parse_workload({"name": "overhead", "stages": ["masks", *STAGES],
                         "dataset": {"kind": "synthetic", "synthetic": {"slides": a.slides, "size": a.size, "seed": 5,
                                                                        "test_fraction": 0.2}},
                         "engine": {"name": "multiprocessing", "workers": a.workers},
                         "patches": {"max_per_class": 400}, "tfrecords": {"shard_mb": 4, "val_fraction": 0.2}})
    pipeline.run(wl, stages=["masks"], results_dir=res)
    seconds = {(s, o): [] for s in STAGES for o in (False, True)}
    for rep in range(a.repetitions):
        for observe in (False, True) if rep % 2 == 0 else (True, False):  # alternate who goes first
            out = pipeline.run(wl, stages=list(STAGES), results_dir=res, fresh=True, observe=observe)
            for s in STAGES:
                seconds[s, observe].append(out["stages"][s]["work_seconds"])
            print(f"[overhead] repetition {rep + 1}, {'observed' if observe else 'direct'}: "
                  + ", ".join(f"{s} {out['stages'][s]['work_seconds']:.2f} s" for s in STAGES), file=sys.stderr)
    rows = {}
    print(f"{'stage':<10} {'direct s (min/median/max)':>28} {'observed s':>22} {'ratio (min/median/max)':>24}")
    for s in STAGES:
        d, o = seconds[s, False], seconds[s, True]
        ratios = [y / x for x, y in zip(d, o)]
        rows[s] = {"direct_seconds": d, "observed_seconds": o, "ratios": ratios}
        f = lambda v: f"{min(v):.2f}/{statistics.median(v):.2f}/{max(v):.2f}"  # noqa: E731
        print(f"{s:<10} {f(d):>28} {f(o):>22} {f(ratios):>24}")
    (res / "overhead.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
