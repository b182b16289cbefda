"""How many emulated accelerators does a storage keep busy? The AU curve of ``wsibench feed``, recorded as a run.

Prepares the workload's TFRecords on the storage when they are missing (a run of its own), then probes with
``stages.distributed.feed``: doubling the number of emulated accelerators until AU falls below the threshold,
then bisecting.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pandas as pd

from . import accelerators
from .config import ConfigError, Workload, load_profile
from .fsutil import check_name, workload_lock
from .pipeline import RunOptions, run_attached
from .results import record
from .storage import attach, drop_caches, fio, iostats


def feed(workload: Workload, storage: str | None = None, results_dir: str | Path = "results",
         threshold: float = 0.9, max_accelerators: int = 16, steps: int = 30, strict: bool = False,
         repetitions: int = 1, observe: bool = False) -> dict:
    from .stages import distributed

    results_dir = Path(results_dir).resolve()
    cfg = workload.train
    emu = accelerators.resolve(cfg, results_dir)
    if emu is None:
        raise ConfigError(f"{workload.source}: feed needs train.accelerator or train.step_time_s (the emulated step)")
    profile = load_profile(storage or workload.storage)
    with attach(profile, results_dir, strict) as (root, storage_record), contextlib.ExitStack() as stack:
        stack.enter_context(workload_lock(root / check_name(workload.name, "workload"),
                                          announce=lambda m: print(m, file=sys.stderr)))
        if observe and profile.emulate is None:  # count the readers' requests (emulated profiles always do)
            real = root
            root = stack.enter_context(iostats.observed(real, results_dir, profile.name))
            storage_record = dict(storage_record, observe={"mountpoint": str(root), "root": str(real)})
        tfr = root / workload.name / "tfrecords"
        if not (tfr / "splits.json").is_file():
            print(f"[feed] preparing TFRecords on {profile.name}", file=sys.stderr)
            run_attached(workload, RunOptions(stages=("masks", "patches", "tfrecords"), results_dir=results_dir,
                                              tags={"role": "prepare"}), profile, root, storage_record)
        engine = {"name": "emulated-accelerators", "workers": None, "address": None}
        with record.recording(results_dir, workload, storage_record, engine, kind="feed") as rec:
            summary = rec.summary
            summary["storage"]["fio"] = fio.latest(results_dir, profile.name, observed="observe" in storage_record)
            summary["feed"] = {"accelerator": {"name": cfg.accelerator, "step_s": emu.step_s, "batch": emu.batch,
                                               "source": emu.source}}
            splits = json.loads((tfr / "splits.json").read_text())["splits"]
            files = [str(tfr / s["path"]) for s in splits["train"]["shards"]]
            ecfg = cfg.model_copy(update={"batch_size": emu.batch, "augment": False})
            data = sum(Path(f).stat().st_size for f in files)
            memory = summary["environment"]["memory_bytes"]
            summary["feed"]["dataset"] = {  # MLPerf Storage's rule: under 5x RAM the page cache may serve it
                "bytes": data, "memory_bytes": memory, "fits_in_memory": data < memory,
                "potential_caching": data < 5 * memory and profile.emulate is None}
            dropper = drop_caches if os.geteuid() == 0 else None  # before every probe, where that is allowed
            try:
                result = distributed.feed(files, root / workload.name / "feed", ecfg, emu.step_s, threshold,
                                          max_accelerators, steps, repetitions, dropper,
                                          progress=lambda m: print(m, file=sys.stderr, flush=True),
                                          io_snapshot=lambda: iostats.snapshot(root),
                                          storage_bandwidth=_stream_bandwidth(summary["storage"]["fio"]))
                summary["feed"] = result | summary["feed"]
            finally:
                rec.tables["feed_probes"] = pd.DataFrame([{k: v for k, v in p.items() if k != "io_profile"}
                                                          for p in summary["feed"].get("probes", [])])
                if "observe" in storage_record:
                    rec.summary = iostats.rebase(summary, str(root), storage_record["observe"]["root"])
                    rec.summary["storage"]["observe"] = storage_record["observe"]
                    summary = rec.summary
    print(f"[feed] {profile.name}: at most {result['max_accelerators']} accelerators at AU >= {threshold}, "
          f"bound by {result['bound_by']} (record {rec.dir})", file=sys.stderr)
    return summary


def _stream_bandwidth(fio_doc: dict | None) -> float | None:
    """The storage's parallel read bandwidth as ``wsibench fio`` measured it (its TFRecord streaming job), B/s."""
    return (((fio_doc or {}).get("jobs") or {}).get("tfrecord_stream") or {}).get("read_bw_bytes_per_s")
