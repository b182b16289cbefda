"""wsibench synth: a synthetic CAMELYON16-like dataset."""
from __future__ import annotations

import json
import time

from ..config import ENGINES
from .options import unit_interval


def add(sub):
    s = sub.add_parser("synth", help="generate a synthetic CAMELYON16-like dataset (pyramidal TIFFs + ASAP XML)",
                       description="Generate pyramidal, tiled, JPEG-compressed slides with lesion annotations in the "
                                   "CAMELYON16 folder layout. Deterministic for a seed.")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--slides", type=int, default=8, help="number of slides in all (default 8)")
    s.add_argument("--size", type=int, default=8192, help="level-0 width and height in pixels (default 8192)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--tumor-fraction", type=float, default=0.5, help="share of slides with lesions (default 0.5)")
    s.add_argument("--test-fraction", type=float, default=0.25,
                   help="share of each class kept for testing/ (default 0.25)")
    s.add_argument("--mpp", type=float, default=0.25, help="microns per pixel at level 0 (default 0.25)")
    s.add_argument("--difficulty", type=unit_interval, default=0.55,
                   help="0 (easy) to 1 (hard): stain variation between slides, tumour texture closer to normal, "
                        "micro-metastases and isolated tumour cells (default 0.55)")
    s.add_argument("--zip-annotations", action="store_true",
                   help="ship the annotations as lesion_annotations.zip per split, as the CAMELYON16 release does")
    s.add_argument("--engine", default="multiprocessing", choices=ENGINES,
                   help="engine that generates slides in parallel")
    s.add_argument("--workers", type=int, default=2, help="parallel slide writers (default 2)")
    return s


def run(a) -> int:
    from ..engines import make_engine
    from ..slides import synth

    t0 = time.perf_counter()
    with make_engine(a.engine, a.workers) as eng:
        recs = synth.generate(a.out, a.slides, a.size, a.seed, a.tumor_fraction, a.test_fraction, a.mpp, engine=eng,
                              difficulty=a.difficulty)
    if a.zip_annotations:
        synth.zip_annotations(a.out)
    dt = time.perf_counter() - t0
    mp = len(recs) * a.size ** 2 / 1e6  # level-0 megapixels
    print(json.dumps({"out": a.out, "slides": len(recs), "seconds": round(dt, 2),
                      "megapixels_per_s": round(mp / dt, 1), "bytes": sum(r["bytes"] for r in recs)}))
    return 0
