"""Storing sizing answers under <results>/sizing/ (JSON, and CSV beside it) and finding them again."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from ..fsutil import atomic_path, write_json
from .render import rows


def save(results_dir: Path, doc: dict) -> Path:
    """Store a sizing under <results>/sizing/ (the report's Sizing section reads them), with its CSV beside it."""
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    out = Path(results_dir) / "sizing" / f"sizing-{stamp}.json"
    write_json(out, doc)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        pd.DataFrame(rows(doc)).to_csv(tmp, index=False)
    return out


def load_sizings(paths) -> list[dict]:
    """Sizing documents under the folders given (<folder>/sizing/*.json), or named directly."""
    docs = []
    for p in map(Path, paths):
        files = [p] if p.suffix == ".json" and p.name.startswith("sizing-") else sorted((p / "sizing").glob("sizing-*.json"))
        for f in files:
            d = json.loads(f.read_text())
            d["_file"] = str(f)
            docs.append(d)
    return docs
