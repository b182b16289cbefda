"""Scale beyond memory: masks -> patches -> TFRecords over a CAMELYON16-sized slice, with each worker's peak memory.

Synthesises the slides (CAMELYON16 layout, pyramidal JPEG TIFFs; 100k x 100k px by default, ~0.8 GB each), then
runs each stage as its own run of the pipeline (reference caps: 3,000 patches per class and slide) on the `local`
storage profile under --out, and reports per stage its throughput (over the timed map, start-up apart) and the
peak resident memory of each worker process: the kernel's high-water mark (VmHWM in /proc/PID/status), read every
0.2 s while the stage runs, so a peak between two reads is not missed (only the last 0.2 s of a worker's life).
The driver's own peak is reported beside. Runs at each --scale (SLIDESxSIZE, default a small one and the large
one) so that the peaks can be compared: a worker holds one slide's tiles (a band of decoded tiles in the patch
stage), the masks of one slide, or one shard's records, never the dataset, so its peak must not grow with the
number of slides or their size beyond those.

Disk: checked first (about 0.08 bytes a pixel for the slides, plus patches and shards); a scale that does not fit
is shrunk to the slides that do, and the result says so. The data is removed afterwards unless --keep.

Usage: python benchmarks/scale_beyond_memory.py [--scale 4x25000 --scale 32x100000] [--engine multiprocessing]
       [--workers 2] [--out DIR] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from harness import pipeline
from harness.config import parse_workload
from harness.engines import make_engine
from harness.slides import synth

BYTES_PER_PIXEL = 0.131     # a synthetic (v4) slide's pyramid, measured: 41.8 GB for 32 slides of 100k x 100k
BYTES_PER_SLIDE = 2 * 6000 * 12_000  # its patches as JPEG files, then again in shards (reference caps, ~12 KB each)
STAGES = ("masks", "patches", "tfrecords")


def hwm_kib(pid: int) -> int | None:
    """A process's peak resident set (VmHWM) in KiB, None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Peaks:
    """Every descendant process's VmHWM, read every ``interval`` seconds; keeps each pid's largest reading."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak: dict[int, int] = {}
        self.name: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.wait(self.interval):
            try:
                kids = me.children(recursive=True)
            except psutil.Error:
                continue
            for p in kids:
                kib = hwm_kib(p.pid)
                if kib is None:
                    continue
                if p.pid not in self.name:
                    try:
                        cmd = " ".join(p.cmdline())
                    except psutil.Error:
                        continue
                    self.name[p.pid] = ("resource_tracker" if "resource_tracker" in cmd else
                                        "java" if p.name() == "java" else "worker")
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), kib)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def workers_mib(self) -> list[float]:
        return sorted((kib / 1024 for pid, kib in self.peak.items() if self.name.get(pid) == "worker"), reverse=True)


def fits(slides: int, size: int, folder: Path) -> int:
    """How many of ``slides`` slides of size x size px (and their patches and shards) fit on folder's disk, with
    10% to spare."""
    per_slide = size * size * BYTES_PER_PIXEL + BYTES_PER_SLIDE
    free = shutil.disk_usage(folder).free
    return min(slides, int(free * 0.9 // per_slide))


def run_scale(slides: int, size: int, engine: str, workers: int, folder: Path) -> dict:
    ds = folder / "dataset"
    t0 = time.perf_counter()
    with make_engine("multiprocessing", workers=workers) as eng:  # generation is not what is measured
        synth.generate(ds, slides, size, seed=16, tumor_fraction=0.4, test_fraction=0.0, engine=eng)
    generated = time.perf_counter() - t0
    wl = parse_workload({"name": "scale", "stages": list(STAGES), "dataset": {"kind": "camelyon16", "path": str(ds)},
                         "engine": {"name": engine, "workers": workers}, "tfrecords": {"val_fraction": 0.05}})
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(folder / "data")
    out = {"slides": slides, "size_px": size, "dataset_bytes": sum(f.stat().st_size for f in ds.rglob("*.tif")),
           "generate_seconds": round(generated, 1), "stages": {}}
    try:
        for stage in STAGES:
            me0 = hwm_kib(os.getpid())
            with Peaks() as peaks:
                s = pipeline.run(wl, stages=[stage], results_dir=folder / "results", fresh=True)
            rec = s["stages"][stage]
            if rec["status"] != "ok":
                raise SystemExit(f"{stage} {rec['status']}: {rec['errors'][:3]}")
            rate = rec.get("patches_per_s") or rec.get("items_per_s")
            w = peaks.workers_mib()
            out["stages"][stage] = {
                "items": rec["items"], "patches": rec.get("patches"),
                "throughput": round(rate, 1), "unit": "patches/s" if rec.get("patches_per_s") else "slides/s",
                "work_seconds": round(rec["work_seconds"], 1), "startup_seconds": round(rec["startup_seconds"], 1),
                "bytes_read": rec["bytes_read"], "bytes_written": rec["bytes_written"],
                "peak_worker_rss_mib": {"max": round(max(w), 1) if w else None, "all": [round(x, 1) for x in w]},
                "driver_peak_rss_mib": round(hwm_kib(os.getpid()) / 1024, 1),
                "driver_peak_grew_mib": round((hwm_kib(os.getpid()) - me0) / 1024, 1)}
            print(f"[scale] {slides} x {size:,} px, {stage}: {rate:.1f} {out['stages'][stage]['unit']}, "
                  f"peak worker RSS {max(w) if w else 0:.0f} MiB", file=sys.stderr, flush=True)
    finally:
        del os.environ["WSIBENCH_LOCAL_ROOT"]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", action="append", help="SLIDESxSIZE, repeatable (default: 4x25000 and 32x100000)")
    ap.add_argument("--engine", default="multiprocessing")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", help="working folder (default: a temporary one under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the slides, patches and shards")
    a = ap.parse_args(argv)
    os.environ.setdefault("WSIBENCH_QUIET", "1")
    scales = [tuple(map(int, s.lower().split("x"))) for s in (a.scale or ["4x25000", "32x100000"])]
    root = Path(a.out or tempfile.mkdtemp(prefix="wsibench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    result = {"engine": a.engine, "workers": a.workers, "cpus": os.cpu_count(),
              "memory_bytes": psutil.virtual_memory().total, "scales": []}
    for slides, size in scales:
        folder = root / f"{slides}x{size}"
        n = fits(slides, size, root)
        free = shutil.disk_usage(root).free
        if n < 1:
            result["scales"].append({"slides": slides, "size_px": size, "skipped": "does not fit on the disk"})
            continue
        r = run_scale(n, size, a.engine, a.workers, folder)
        if n < slides:
            r["shrunk_from_slides"] = slides
            r["why"] = f"{free / 1e9:.0f} GB free on {root}'s disk, about {slides * (size * size * BYTES_PER_PIXEL + BYTES_PER_SLIDE) / 1e9:.0f} GB needed"
        result["scales"].append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
        if not a.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=1))
    for r in result["scales"]:
        for stage, st in r.get("stages", {}).items():
            print(f"{r['slides']:>4} x {r['size_px']:>7,} px  {stage:<9} {st['throughput']:>9.1f} {st['unit']:<9} "
                  f"peak worker RSS {st['peak_worker_rss_mib']['max']:>6.0f} MiB  driver {st['driver_peak_rss_mib']:>5.0f} MiB",
                  file=sys.stderr)
    if not a.keep and not a.out:
        shutil.rmtree(root, ignore_errors=True)
    return result


if __name__ == "__main__":  # spawned workers re-import this file: the guard keeps them from running it
    main()
