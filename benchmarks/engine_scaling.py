"""Patch stage throughput under each engine and worker count, in one session (ratios are what to read).

Prepares a synthetic dataset and its masks once, then for each configuration starts the engine, warms its
workers up as a stage does (``Engine.warm``: imports), and times the patch stage's map over the training slides.
Configurations run interleaved, one engine alive at a time, the order reversed every other round, --repeat
rounds. Reports, per configuration, patches/s (min / median / max over the rounds) and the CPU seconds that the
engine's processes (driver, scheduler, JVM, workers) spent on the map: on a shared machine wall time swings with
the neighbours' load; the CPU an engine spends beside the work itself does not. Ratios (each engine against
multiprocessing at the same worker count; 1 -> 2 workers) are taken within each round, then min / median / max.

Usage: python benchmarks/engine_scaling.py [--slides 16] [--size 12000] [--repeat 3] [--out DIR]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from harness.config import Masks, Patches
from harness.engines import make_engine, run_all  # noqa: E402
from harness.engines.base import import_module
from harness.slides import synth
from harness.slides.dataset import list_slides
from harness.stages import masks, patches

CONFIGS = [("multiprocessing", 1), ("multiprocessing", 2), ("dask", 1), ("dask", 2), ("spark", 1), ("spark", 2)]


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process and all its descendants alive now (JVM, workers, nannies)."""
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def spread(values: list[float]) -> dict:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=16, help="training slides")
    ap.add_argument("--size", type=int, default=12000)
    ap.add_argument("--repeat", type=int, default=3, help="rounds (every configuration once per round)")
    ap.add_argument("--configs", default=",".join(f"{e}x{w}" for e, w in CONFIGS),
                    help="comma-separated ENGINExWORKERS (default: all six)")
    ap.add_argument("--out", help="working folder (default: a temporary one)")
    ap.add_argument("--patches-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where patches are written (default /dev/shm: engine and CPU scaling, not the disk)")
    a = ap.parse_args(argv)
    os.environ["WSIBENCH_QUIET"] = "1"
    configs = [(c.rsplit("x", 1)[0], int(c.rsplit("x", 1)[1])) for c in a.configs.split(",")]
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
    out = Path(a.patches_dir or work) / "patches"
    fn = functools.partial(patches.run_slide, cfg=cfg, masks_dir=str(work / "masks"), out=str(out))
    seconds: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    count = None
    loads = [os.getloadavg()[0]]
    for r in range(a.repeat):
        for name, w in configs if r % 2 == 0 else configs[::-1]:  # one engine alive at a time: an idle cluster
            with make_engine(name, workers=w) as eng:               # would take CPU from the measured one
                eng.warm(functools.partial(import_module, patches.__name__))
                shutil.rmtree(out, ignore_errors=True)
                c0, t0 = tree_cpu(), time.perf_counter()
                res = run_all(eng, fn, items, progress=False)
                dt, c1 = time.perf_counter() - t0, tree_cpu()
            assert not any(o.error for o in res), [o.error for o in res if o.error]
            n = sum(o.value["patches"] for o in res)
            assert count in (None, n)
            count = n
            seconds.setdefault(f"{name}x{w}", []).append(dt)
            cpu.setdefault(f"{name}x{w}", []).append(c1 - c0)
            loads.append(os.getloadavg()[0])
            print(f"[engines] round {r + 1}/{a.repeat} {name} x{w}: {n / dt:.0f} patches/s, {c1 - c0:.2f} CPU s, "
                  f"load {loads[-1]:.1f}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    rate = {k: [count / s for s in v] for k, v in seconds.items()}

    def ratios(a_key: str, b_key: str) -> dict | None:
        if a_key in rate and b_key in rate:
            return spread([x / y for x, y in zip(rate[a_key], rate[b_key])])
        return None

    engines = sorted({e for e, _ in configs}, key=[e for e, _ in CONFIGS].index)
    result = {"slides": len(items), "slide_px": a.size, "patches": count, "cpus": os.cpu_count(), "rounds": a.repeat,
              "patches_dir": str(out.parent), "load_average_1min": spread(loads),
              "patches_per_s": {k: spread(v) for k, v in rate.items()},
              "engine_cpu_seconds": {k: spread(v) for k, v in cpu.items()},
              "vs_multiprocessing_2_workers": {e: ratios(f"{e}x2", "multiprocessingx2") for e in engines
                                               if e != "multiprocessing"},
              "scaling_1_to_2_workers": {e: ratios(f"{e}x2", f"{e}x1") for e in engines}}
    print(json.dumps(result, indent=1))
    if not a.out:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":  # spawned workers re-import this file: the guard keeps them from running it
    main()
