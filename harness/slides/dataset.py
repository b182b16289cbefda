"""Slides of a dataset in the CAMELYON16 layout.

training/normal/*.tif, training/tumor/*.tif, training/lesion_annotations/<slide>.xml,
testing/images/*.tif, testing/lesion_annotations/<slide>.xml, testing/reference.csv (slide, class).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ..errors import DataError
from ..fsutil import remove

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".bif")
FOLDERS = {("training", "normal"): "normal", ("training", "tumor"): "tumor", ("testing", "images"): None}


def reference(root: Path) -> dict[str, str]:
    """testing/reference.csv as {slide: 'tumor' | 'normal'} (a header row, if any, is skipped)."""
    ref = {}
    f = root / "testing" / "reference.csv"
    if f.is_file():
        for row in csv.reader(f.read_text().splitlines()):
            if len(row) >= 2 and row[1].strip().lower() in ("tumor", "normal"):
                ref[Path(row[0].strip()).stem] = row[1].strip().lower()
    return ref


def list_slides(root: str | Path) -> list[dict]:
    """Every slide with its split, class (None where unknown) and annotation file (None where absent)."""
    root = Path(root)
    ref = reference(root)
    out = []
    for (split, sub), label in FOLDERS.items():
        folder = root / split / sub
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in SLIDE_SUFFIXES:
                continue
            ann = root / split / "lesion_annotations" / f"{p.stem}.xml"
            out.append({"slide": p.stem, "path": str(p), "split": split,
                        "label": label if label else ref.get(p.stem),
                        "annotation": str(ann) if ann.is_file() else None})
    if not out:
        raise DataError(f"{root}: no slides in the CAMELYON16 layout (training/normal, training/tumor, testing/images)")
    return out


def prepare(workload, data: Path, engine) -> Path:
    """The dataset's folder: the workload's CAMELYON16 folder, or synthetic slides under ``data``/dataset, made
    once per specification (a marker file records it) with ``engine``."""
    from . import synth

    ds = workload.dataset
    if ds.kind == "camelyon16":
        return Path(ds.path)
    spec = ds.synthetic.model_dump() | {"generator": synth.VERSION}
    out = data / "dataset"
    marker = out / ".complete.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return out
    if out.exists():
        remove(out, data)
    print(f"[dataset] synthesising {spec['slides']} slides of {spec['size']} px under {out}", file=sys.stderr)
    synth.generate(out, spec["slides"], spec["size"], spec["seed"], spec["tumor_fraction"], spec["test_fraction"],
                   spec["mpp"], engine=engine())
    marker.write_text(json.dumps(spec))
    return out
