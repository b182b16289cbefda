"""Patch stage throughput under each engine and worker count, in one session (ratios are what to read).

Prepares a synthetic dataset and its masks once, then for each configuration starts the engine, warms its
workers up (imports), and times the patch stage's map over the training slides (best of --repeat, runs
interleaved). Reports patches/s, each engine relative to multiprocessing at the same worker count, and the
scaling from 1 to 2 workers.

Usage: python benchmarks/engine_scaling.py [--slides 8] [--size 12000] [--repeat 2] [--out DIR]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from harness.config import Masks, Patches
from harness.engines import make_engine, run_all  # noqa: E402
from harness.slides import synth
from harness.slides.dataset import list_slides
from harness.stages import masks, patches

CONFIGS = [("multiprocessing", 1), ("multiprocessing", 2), ("dask", 1), ("dask", 2), ("spark", 1), ("spark", 2)]


def _warm(_):
    import harness.stages.patches  # noqa: F401 - the imports a worker pays once
    return os.getpid()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=16, help="training slides")
    ap.add_argument("--size", type=int, default=12000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", help="working folder (default: a temporary one)")
    ap.add_argument("--patches-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where patches are written (default /dev/shm: engine and CPU scaling, not the disk)")
    a = ap.parse_args(argv)
    os.environ["WSIBENCH_QUIET"] = "1"
    work = Path(a.out or tempfile.mkdtemp(prefix="wsibench-engines-"))
    ds = work / "dataset"
    if not (ds / "testing" / "reference.csv").exists():
        synth.generate(ds, a.slides, a.size, seed=3, tumor_fraction=0.5, test_fraction=0.0)
    mcfg = Masks()
    items = [dict(s, tumor_groups=mcfg.tumor_groups, exclusion_groups=mcfg.exclusion_groups)
             for s in list_slides(ds) if s["split"] == "training"]
    for it in items:
        masks.run_slide(it, mcfg, str(work / "masks"))
    cfg = Patches(max_per_class=100000)
    best: dict[str, float] = {}
    count = None
    out = Path(a.patches_dir or work) / "patches"
    for _ in range(a.repeat):
        for name, w in CONFIGS:  # one engine alive at a time: idle clusters would steal CPU from the measured one
            with make_engine(name, workers=w) as eng:
                run_all(eng, _warm, list(range(eng.workers * 2)), progress=False)
                shutil.rmtree(out, ignore_errors=True)
                fn = functools.partial(patches.run_slide, cfg=cfg, masks_dir=str(work / "masks"), out=str(out))
                t0 = time.perf_counter()
                res = run_all(eng, fn, items, progress=False)
                dt = time.perf_counter() - t0
            assert not any(r.error for r in res), [r.error for r in res if r.error]
            n = sum(r.value["patches"] for r in res)
            assert count in (None, n)
            count = n
            key = f"{name}x{w}"
            best[key] = min(best.get(key, float("inf")), dt)
    shutil.rmtree(out, ignore_errors=True)
    rate = {k: count / v for k, v in best.items()}
    result = {"slides": len(items), "slide_px": a.size, "patches": count, "cpus": os.cpu_count(),
              "patches_dir": str(out.parent),
              "patches_per_s": {k: round(v, 1) for k, v in rate.items()},
              "vs_multiprocessing_2_workers": {e: round(rate[f"{e}x2"] / rate["multiprocessingx2"], 2) for e in ("dask", "spark")},
              "scaling_1_to_2_workers": {e: round(rate[f"{e}x2"] / rate[f"{e}x1"], 2) for e in ("multiprocessing", "dask", "spark")}}
    print(json.dumps(result, indent=1))
    if not a.out:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":  # spawned workers re-import this file: the guard keeps them from running it
    main()
