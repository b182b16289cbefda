"""wsibench command line: thin commands over the harness."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .config import ENGINES, STAGES, ConfigError, load_workload

EPILOG = "Run 'wsibench COMMAND --help' for the options of each command."


def cmd_synth(a) -> int:
    from .engines import make_engine
    from .slides import synth

    t0 = time.perf_counter()
    with make_engine(a.engine, a.workers) as eng:
        recs = synth.generate(a.out, a.slides, a.size, a.seed, a.tumor_fraction, a.test_fraction, a.mpp, engine=eng)
    dt = time.perf_counter() - t0
    mp = len(recs) * a.size ** 2 / 1e6  # level-0 megapixels
    print(json.dumps({"out": a.out, "slides": len(recs), "seconds": round(dt, 2),
                      "megapixels_per_s": round(mp / dt, 1), "bytes": sum(r["bytes"] for r in recs)}))
    return 0


def cmd_validate(a) -> int:
    w = load_workload(a.workload)
    print(f"{a.workload}: ok (workload {w.name!r}: stages {', '.join(w.stages)}, dataset {w.dataset.kind}, "
          f"engine {w.engine.name} x{w.engine.workers}, storage {w.storage})")
    return 0


def cmd_run(a) -> int:
    from . import pipeline

    w = load_workload(a.workload)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()] if a.stages else None
    summary = pipeline.run(w, stages, a.storage, a.results, a.engine, a.workers)
    print(json.dumps({"run_id": summary["run_id"], "status": summary["status"],
                      "record": f"{a.results}/{summary['run_id']}",
                      "stages": {k: {f: v.get(f) for f in ("seconds", "items", "patches", "status")}
                                 for k, v in summary["stages"].items()}}, indent=1))
    return 0 if summary["status"] == "ok" else 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wsibench", epilog=EPILOG,
                                description="Benchmark the whole digital-pathology pipeline (annotations -> masks -> "
                                            "patches -> TFRecords -> training -> inference) on real engines and storage.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("synth", help="generate a synthetic CAMELYON16-like dataset (pyramidal TIFFs + ASAP XML)",
                       description="Generate pyramidal, tiled, JPEG-compressed slides with lesion annotations in the "
                                   "CAMELYON16 folder layout. Deterministic for a seed.")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--slides", type=int, default=8, help="number of slides in all (default 8)")
    s.add_argument("--size", type=int, default=8192, help="level-0 width and height in pixels (default 8192)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--tumor-fraction", type=float, default=0.5, help="share of slides with lesions (default 0.5)")
    s.add_argument("--test-fraction", type=float, default=0.25, help="share of each class kept for testing/ (default 0.25)")
    s.add_argument("--mpp", type=float, default=0.25, help="microns per pixel at level 0 (default 0.25)")
    s.add_argument("--engine", default="multiprocessing", choices=ENGINES, help="engine that generates slides in parallel")
    s.add_argument("--workers", type=int, default=2, help="parallel slide writers (default 2)")
    s.set_defaults(fn=cmd_synth)

    s = sub.add_parser("validate", help="check a workload file and report every problem",
                       description="Parse and validate a workload TOML; errors name the file, the key and what was expected.")
    s.add_argument("workload", help="workload TOML file")
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("run", help="run a workload's stages and write a run record",
                       description=f"Run the pipeline stages ({', '.join(STAGES)}) of a workload and record "
                                   "throughput, I/O and errors per stage under the results folder.")
    s.add_argument("workload", help="workload TOML file")
    s.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)} (default: the workload's)")
    s.add_argument("--storage", help="storage profile name (storage_profiles/NAME.toml) or path (default: the workload's)")
    s.add_argument("--results", default="results", help="results folder (default ./results)")
    s.add_argument("--engine", choices=ENGINES,
                   help="engine for every stage, overriding the workload's (and its per-stage choices)")
    s.add_argument("--workers", type=int, help="worker processes of embedded engines (default: the workload's)")
    s.set_defaults(fn=cmd_run)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line; WSIBENCH_TRACEBACK=1 for the stack
        import os
        if os.environ.get("WSIBENCH_TRACEBACK"):
            raise
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
