"""wsibench runs: the recorded runs with their headline figures."""
from __future__ import annotations

import sys

from .options import parents


def add(sub):
    s = sub.add_parser("runs", parents=parents("results"), help="list recorded runs with their headline figures",
                       description="List the runs under a results folder: id, workload, engine, workers, storage, "
                                   "status (with the error of failed runs) and headline figures. Storage is marked (emulated) for a throttled "
                                   "FUSE passthrough and (LAB) for the MooseFS lab (a real file system whose servers "
                                   "and clients share this one machine). Records of schema "
                                   "version 1 and 2 are read (docs/run-record.md); a record of another version is "
                                   "named on stderr, with what to run, and the others are listed.")
    return s


def run(a) -> int:
    import pandas as pd

    from ..results import load_all, table, unrecorded

    runs, unreadable = load_all([a.results])
    runs += unrecorded([a.results])
    for line in unreadable:  # records of another schema version: named, with what to run; the others are listed
        print(f"warning: {line}", file=sys.stderr)
    if not runs:
        print(f"no {'readable ' if unreadable else ''}runs under {a.results}")
        return 1 if unreadable else 0
    df = table(runs)
    head = ["run_id", "workload", "engine", "workers", "nodes", "storage", "status"]
    extra = [c for c in ("patches_patches_per_s", "train_images_per_s", "train_input_wait_fraction",
                         "train_val_auc", "infer_slide_auc") if c in df]
    out = df[head + extra].copy()
    out["storage"] = [f"{s} (emulated)" if e else f"{s} (LAB)" if lab else s  # LAB: a real file system, one machine
                      for s, e, lab in zip(df.storage, df.emulated, df.get("lab", [False] * len(df)))]
    out["status"] = [f"{st}: {err}" if st != "ok" and isinstance(err, str) else st for st, err in zip(df.status, df.error)]
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(out.rename(columns=lambda c: c.replace("_patches_per_s", " patches/s").replace("_images_per_s", " images/s"))
              .to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0
