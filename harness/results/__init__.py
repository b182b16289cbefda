"""Recorded runs: finding them, reading them, flattening them into one comparison table."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

HEADLINE = {"masks": "items_per_s", "patches": "patches_per_s", "tfrecords": "patches_per_s",
            "train": "images_per_s", "infer": "patches_per_s"}


def find_runs(paths) -> list[Path]:
    """Run folders named directly, or found (with their summary.json) under the folders given."""
    out = []
    for p in map(Path, paths):
        if (p / "summary.json").is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(q.parent for q in p.glob("*/summary.json"))
    return out


def load(run_dir: Path) -> dict:
    s = json.loads((Path(run_dir) / "summary.json").read_text())
    s["_dir"] = str(run_dir)
    return s


def config_key(s: dict) -> str:
    e = s.get("engine", {})
    per = e.get("per_stage") or {}
    name = e.get("name", "?") + ("+" + ",".join(f"{k}={v}" for k, v in sorted(per.items())) if per else "")
    return f"{name} x{e.get('workers')} @ {s.get('storage', {}).get('profile')}"


def row(s: dict) -> dict:
    """One flat row of a run's headline figures (absent where they do not apply)."""
    st = s.get("storage", {})
    r = {"run_id": s["run_id"], "workload": s.get("workload"), "status": s.get("status"), "error": s.get("error"),
         "created_at": s.get("created_at"), "engine": s.get("engine", {}).get("name"),
         "workers": s.get("engine", {}).get("workers"), "storage": st.get("profile"), "fstype": st.get("fstype"),
         "emulated": bool(st.get("emulated")), "config": config_key(s),
         "matrix": s.get("tags", {}).get("matrix"), "repetition": s.get("tags", {}).get("repetition")}
    for name, rec in s.get("stages", {}).items():
        for k in ("seconds", "items_per_s", "patches_per_s", "images_per_s", "bytes_read", "bytes_written",
                  "files_written", "status"):
            if rec.get(k) is not None:
                r[f"{name}_{k}"] = rec[k]
    for k in ("images_per_s", "input_wait_fraction", "accelerator_utilization", "val_auc", "steps"):
        if (s.get("train") or {}).get(k) is not None:
            r[f"train_{k}"] = s["train"][k]
    if (s.get("feed") or {}).get("max_accelerators") is not None:
        r["feed_max_accelerators"] = s["feed"]["max_accelerators"]
    for k in ("patch_auc", "slide_auc", "patches_per_s", "input_fraction"):
        if (s.get("infer") or {}).get(k) is not None:
            r[f"infer_{k}"] = s["infer"][k]
    return r


def table(runs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row(s) for s in runs])
