"""Recorded runs: finding them, reading them (older schema versions upgraded), flattening them into one
comparison table."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

HEADLINE = {"masks": "items_per_s", "patches": "patches_per_s", "tfrecords": "patches_per_s",
            "train": "images_per_s", "infer": "patches_per_s"}
UNITS = {"masks": "slides/s", "patches": "patches/s", "tfrecords": "patches/s", "train": "images/s",
         "infer": "patches/s"}  # what each stage's headline figure counts
THROUGHPUT = ("items_per_s", "patches_per_s", "images_per_s")


def find_runs(paths) -> list[Path]:
    """Run folders named directly, or found (with their summary.json) under the folders given."""
    out = []
    for p in map(Path, paths):
        if (p / "summary.json").is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(q.parent for q in p.glob("*/summary.json"))
    return out


RUN_FOLDER = re.compile(r"\d{8}T\d{6}-")


def load(run_dir: Path) -> dict:
    """A run's record in the current schema version (older versions upgraded; RecordError for the others).
    A record still ``running`` whose process is gone is ``incomplete`` (the run was killed)."""
    from .record import read, still_running

    s = read(run_dir)
    s["_dir"] = str(run_dir)
    if s.get("status") == "running" and still_running(s) is False:
        s["status"] = "incomplete"
        s["error"] = (f"its process ended without finishing the record (killed?) during the "
                      f"{s.get('running_stage', 'start-up')}")
    return s


def unrecorded(paths) -> list[dict]:
    """Run folders holding no record at all (a run killed before it wrote one): listed as incomplete."""
    out = []
    for p in map(Path, paths):
        for d in sorted(p.iterdir()) if p.is_dir() else []:
            if d.is_dir() and RUN_FOLDER.match(d.name) and not (d / "summary.json").exists():
                out.append({"run_id": d.name, "status": "incomplete", "error": "no record (killed before writing one?)",
                            "_dir": str(d)})
    return out


def load_all(paths) -> tuple[list[dict], list[str]]:
    """The records of the runs under paths that this version can read, and one line for each it cannot."""
    from .schema import RecordError

    runs, unreadable = [], []
    for p in find_runs(paths):
        try:
            runs.append(load(p))
        except RecordError as e:
            unreadable.append(str(e))
    return runs, unreadable


def nodes_label(e: dict) -> str:
    """' on N nodes' for a run whose engine was given a node count (a cluster), else ''."""
    n = e.get("nodes") if e.get("nodes_requested") else None
    return f" on {n} node{'s' if n != 1 else ''}" if n else ""


def config_key(s: dict) -> str:
    e = s.get("engine", {})
    per = e.get("per_stage") or {}
    name = e.get("name", "?") + ("+" + ",".join(f"{k}={v}" for k, v in sorted(per.items())) if per else "")
    workers = f" x{e['workers']}" if e.get("workers") else ""
    return f"{name}{workers}{nodes_label(e)} @ {s.get('storage', {}).get('profile')}"


def resumed_items(s: dict, stage: str) -> int:
    """Items of a stage that an earlier run had completed (skipped, not redone): from the stage record, or from
    the run's per-item table where the record does not count them."""
    rec = (s.get("stages") or {}).get(stage) or {}
    if rec.get("skipped") is not None:
        return int(rec["skipped"])
    path = Path(s.get("_dir", "")) / f"{stage}.parquet"
    if s.get("_dir") and path.is_file() and "skipped" in pq.read_schema(path).names:
        return int(pd.read_parquet(path, columns=["skipped"])["skipped"].fillna(False).astype(bool).sum())
    return 0


def row(s: dict) -> dict:
    """One flat row of a run's headline figures (absent where they do not apply)."""
    st = s.get("storage", {})
    r = {"run_id": s["run_id"], "workload": s.get("workload"), "status": s.get("status"), "error": s.get("error"),
         "created_at": s.get("created_at"), "engine": s.get("engine", {}).get("name"),
         "workers": s.get("engine", {}).get("workers"), "nodes": s.get("engine", {}).get("nodes"),
         "storage": st.get("profile"), "fstype": st.get("fstype"),
         "emulated": bool(st.get("emulated")), "lab": bool(st.get("lab")), "config": config_key(s),
         "matrix": s.get("tags", {}).get("matrix"), "repetition": s.get("tags", {}).get("repetition"),
         "role": s.get("tags", {}).get("role")}
    for name, rec in s.get("stages", {}).items():
        resumed = resumed_items(s, name)
        for k in ("seconds", "items", "items_per_s", "patches_per_s", "images_per_s", "bytes_read", "bytes_written",
                  "files_written", "status"):
            if rec.get(k) is not None and not (resumed and k in ("seconds", *THROUGHPUT)):  # resumed: not measured
                r[f"{name}_{k}"] = rec[k]
        if resumed:
            r[f"{name}_resumed"] = resumed
    for k in ("images_per_s", "input_wait_fraction", "accelerator_utilization", "val_auc", "steps"):
        if (s.get("train") or {}).get(k) is not None:
            r[f"train_{k}"] = s["train"][k]
    if (s.get("feed") or {}).get("max_accelerators") is not None:
        r["feed_max_accelerators"] = s["feed"]["max_accelerators"]
    for k in ("patch_auc", "slide_auc", "froc", "pn_kappa", "patches_per_s", "input_fraction"):
        if (s.get("infer") or {}).get(k) is not None:
            r[f"infer_{k}"] = s["infer"][k]
    for rate, v in ((s.get("infer") or {}).get("froc_sensitivities") or {}).items():
        r[f"infer_froc_sensitivity_{rate}"] = v  # lesion sensitivity at `rate` false positives per slide
    return r


def table(runs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row(s) for s in runs])
