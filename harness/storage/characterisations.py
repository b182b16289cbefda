"""Where ``wsibench fio`` characterisations are kept: <results>/fio/<profile>[.observed]-<stamp>.json; the newest of a
profile is attached to later runs on it (``storage.attached``)."""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from ..fsutil import write_json


def _stem(profile: str, observed: bool) -> str:
    return f"{profile}.observed" if observed else profile


def save(results_dir: Path, profile: str, doc: dict, observed: bool = False) -> Path:
    """Store a characterisation under <results>/fio/, where later runs on the profile find it (those observed
    through the counting passthrough find the one made through it, ``observed``)."""
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    doc = {"profile": profile, "created_at": stamp, "observed": observed, **doc}
    out = Path(results_dir) / "fio" / f"{_stem(profile, observed)}-{stamp}.json"
    write_json(out, doc)
    return out


def latest(results_dir: Path, profile: str, observed: bool = False) -> dict | None:
    """The newest fio characterisation of this profile under <results>/fio, if one was made (this profile's alone:
    ``nfs`` is not ``nfs-emulated``)."""
    stem = _stem(profile, observed)
    pattern = re.compile(re.escape(stem) + r"-\d{8}T\d{6}\.json")
    files = sorted(f for f in (Path(results_dir) / "fio").glob(f"{stem}-*.json") if pattern.fullmatch(f.name))
    return json.loads(files[-1].read_text()) if files else None
