"""The patch grid of one synthetic tumor slide with its lesions as drawn (~100 vertices each) and with the same
lesions densified to many collinear vertices (freehand strokes), in one process: grid seconds and their ratio,
and how much of the dense case is parsing the XML (linear in its size).

Usage: python benchmarks/dense_annotations.py [--vertices 100000] [--size 8192]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from harness.config import Masks, Patches
    from harness.slides import synth
    from harness.slides.annotations import read_asap, write_asap
    from harness.slides.reader import open_slide
    from harness.stages import masks, patches

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vertices", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=8192, help="slide side, px")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(3)
        layout = synth.make_layout(rng, a.size, tumor=True)
        slide = work / "tumor.tif"
        synth.write_slide(slide, layout, rng)
        simple = work / "simple.xml"
        write_asap(simple, [("_0", p) for p in layout.lesions])
        dense = []
        for p in layout.lesions:
            f = np.linspace(0, 1, a.vertices // len(layout.lesions) // len(p) + 1, endpoint=False)
            dense.append(("_0", (p[:, None] + (np.roll(p, -1, 0) - p)[:, None] * f[None, :, None]).reshape(-1, 2)))
        write_asap(work / "dense.xml", dense)
        item = {"slide": "tumor", "path": str(slide), "split": "training", "label": "tumor", "annotation": str(simple),
                "tumor_groups": Masks().tumor_groups, "exclusion_groups": Masks().exclusion_groups}
        masks.run_slide(item, Masks(), str(work / "masks"))
        rec, tumor_m, tissue_m = masks.load(work / "masks", "tumor")
        cfg = Patches(stride=56)
        with open_slide(slide) as s:
            times = {}
            for name, xml in (("simple", simple), ("dense", work / "dense.xml")):
                t0 = time.perf_counter()
                g = patches.grid(dict(item, annotation=str(xml)), cfg, rec, tumor_m, tissue_m, s)
                times[name] = time.perf_counter() - t0
            t0 = time.perf_counter()
            read_asap(work / "dense.xml")
            parse = time.perf_counter() - t0
        border = int(((g["tumor"] > 0) & (g["tumor"] < 1)).sum())
        n = sum(len(p) for _, p in dense)
        print(f"border patches: {border}; lesion vertices: simple {sum(len(p) for p in layout.lesions)}, dense {n}")
        print(f"grid seconds: simple {times['simple']:.3f}, dense {times['dense']:.3f} (of which XML parsing "
              f"{parse:.3f}); dense / simple = {times['dense'] / times['simple']:.1f}x")


if __name__ == "__main__":
    main()
