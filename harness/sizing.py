"""Sizing: from one host's measured runs to a storage answer (``wsibench size``).

Plain functions, in three steps; every figure they return carries the measurement it came from (``source``).

1. **What a storage costs** (``storage_costs``): from a profile's ``wsibench fio`` characterisation, the cost of
   each I/O *pattern* the pipeline is made of, as fio measured it on that storage: a small file written whole
   (create, one write, close: ``jpeg_small_writes``), a small file read whole (open, read, close:
   ``jpeg_small_reads``), a read or a write request in an open file (a fixed cost from 4 KiB requests,
   ``read_latency``/``write_latency``, plus its bytes at the single-stream bandwidth of 1 MiB requests), a rename
   and an open (timed by ``wsibench fio``'s probe), an unlink (``file_delete``); and the bandwidths several
   streams reach (``tfrecord_stream``, ``checkpoint_write``). Patterns, not single requests: a file written whole
   is several requests (a lookup, the create, the write, a flush, a release), and on a slower storage every one
   of them costs more, the ones that do no I/O included. Without fio, a profile's vendor figures
   (``[reference]``) give bandwidth bounds only.
2. **What a stage asks** (``stage_demand``): from a run's record, per stage its operations by type (the
   ``io_profile`` the counting passthrough recorded: ``--observe``, or an emulated profile), bytes, CPU seconds,
   slides, patches and the per-item table; mapped onto the patterns above (``patterns``).
3. **Predictions**: a stage's time on another storage (``predict_stage``): each item's measured time plus what
   its patterns cost more (or less) there than on the storage it was measured on, scheduled over the workers
   as the engine does (first free worker takes the next item), and never under the storage's bandwidth bounds;
   ``feed``'s accelerators (``predict_feed``); and the cluster answer (``size``).
"""
from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd

from . import accelerators
from .errors import WsibenchError

MiB = 2 ** 20
SMALL_FILE_BYTES = 32 * 1024   # the size of the small files of ``wsibench fio``'s jpeg jobs
SECONDS_PER_DAY = 86400


class SizingError(WsibenchError, ValueError):
    """Sizing inputs that cannot answer the question asked (no measured run, no characterisation)."""


def figure(value, unit: str, source: str) -> dict:
    """A figure with its unit and the measurement it came from."""
    return {"value": value, "unit": unit, "source": source}


# --- 1. what a storage costs ---------------------------------------------------------------------------------

def storage_costs(fio_doc: dict | None, reference: dict | None = None, name: str = "") -> dict:
    """The cost of each I/O pattern on a storage, from its fio characterisation; bandwidths from its vendor
    figures where fio never ran. Keys: file_write, file_read, read_fixed, write_fixed (seconds), read_stream,
    write_stream (bytes/s, one stream), rename, open, unlink, create (seconds), read_bandwidth, write_bandwidth
    (bytes/s, several streams); each a ``figure``."""
    out = {}
    if fio_doc:
        j = fio_doc.get("jobs", {})
        when = f"wsibench fio {name or fio_doc.get('profile')}{' --observe' if fio_doc.get('observed') else ''} " \
               f"({fio_doc.get('created_at', '?')})"

        def get(job, key, scale=1.0):
            v = (j.get(job) or {}).get(key)
            return None if v is None else v * scale

        for key, job in (("file_write", "jpeg_small_writes"), ("file_read", "jpeg_small_reads")):
            fps = get(job, "files_per_s")
            if fps:
                out[key] = figure(1 / fps, "s per 32 KiB file", f"{when}: {job}, {fps:.0f} files/s one after the other")
        for side, fixed_job, bw_job in (("read", "read_latency", "slide_seq_read"),
                                        ("write", "write_latency", "checkpoint_write")):
            fixed = get(fixed_job, f"{side}_mean_latency_s")
            big = get(bw_job, f"{side}_mean_latency_s")
            if fixed:
                out[f"{side}_fixed"] = figure(fixed, "s per request", f"{when}: {fixed_job}, mean latency of 4 KiB {side}s")
            if fixed and big and big > fixed:
                out[f"{side}_stream"] = figure(MiB / (big - fixed), "B/s",
                                               f"{when}: {bw_job} (1 MiB requests, {big * 1e3:.2f} ms) less {fixed_job}")
            bw = get("tfrecord_stream" if side == "read" else "checkpoint_write", f"{side}_bw_bytes_per_s")
            if bw:
                out[f"{side}_bandwidth"] = figure(bw, "B/s", f"{when}: " + (
                    "tfrecord_stream (parallel 1 MiB streams)" if side == "read" else "checkpoint_write (1 MiB, fsync)"))
        for key, job in (("rename", "file_rename"), ("open", "file_open"), ("unlink", "file_delete"),
                         ("create", "file_create")):
            v = get(job, "mean_latency_s")
            if v is not None:
                out[key] = figure(v, "s", f"{when}: {job} ({(j.get(job) or {}).get('tool', 'fio')}), mean")
        iops = max((get(k, "read_iops") or 0) for k in ("read_latency", "slide_tile_read"))
        if iops:
            out["read_iops"] = figure(iops, "requests/s", f"{when}: the most read requests/s of its read jobs")
    for key, unit_key in (("read_bandwidth", "read"), ("write_bandwidth", "write")):
        if key not in out and reference:
            gib = next((v for k, v in reference.items() if k.startswith(unit_key) and "gib_s" in k
                        and isinstance(v, (int, float))), None)
            if gib:
                out[key] = figure(gib * 2**30, "B/s", f"vendor figure in the profile: {reference.get('source', '')}")
    return out


# --- 2. what a stage asks -------------------------------------------------------------------------------------

def stage_demand(summary: dict, stage: str, run_dir: str | Path | None = None) -> dict:
    """A stage's measured demand: its io_profile's operations and bytes, CPU seconds, items, patches, workers,
    time, and its per-item table (from the run folder) where there is one."""
    rec = (summary.get("stages") or {}).get(stage)
    if not rec:
        raise SizingError(f"run {summary.get('run_id')}: no {stage} stage in its record")
    run_dir = Path(run_dir or summary.get("_dir") or "")
    table = run_dir / f"{stage}.parquet"
    items = pd.read_parquet(table) if table.is_file() else None
    if items is not None and "skipped" in items:
        items = items[~items["skipped"].fillna(False).astype(bool)]
    prof = rec.get("io_profile")
    src = f"run {summary.get('run_id')} ({summary.get('storage', {}).get('profile')}), {stage} stage"
    return {"stage": stage, "run_id": summary.get("run_id"), "source": src,
            "storage": summary.get("storage", {}).get("profile"),
            "observed": bool(summary.get("storage", {}).get("observe")) or bool(summary.get("storage", {}).get("emulated")),
            "seconds": rec.get("work_seconds") or rec.get("seconds"), "items": rec.get("items"),
            "patches": rec.get("patches") or rec.get("images"), "workers": rec.get("workers_used") or
            (summary.get("engine") or {}).get("workers") or 1, "cpu_seconds": rec.get("cpu_seconds"),
            "bytes_read": (prof or rec).get("bytes_read"), "bytes_written": (prof or rec).get("bytes_written"),
            "files_written": rec.get("files_written"), "io_profile": prof, "item_table": items}


def patterns(prof: dict) -> dict:
    """A stage's FUSE operations as the I/O patterns whose costs fio measures: small files written whole
    (creates, with the bytes each carried), files opened and read (opens), further read and write requests,
    renames and unlinks. Lookups, flushes and releases are part of the file patterns."""
    ops = {k: (v or {}).get("count", 0) for k, v in prof["ops"].items()}
    sizes = prof.get("request_sizes") or {}
    creates = ops.get("create", 0) + ops.get("mkdir", 0)
    writes, reads = ops.get("write", 0), ops.get("read", 0)
    opens = ops.get("open", 0)
    extra_writes = max(0, writes - creates)
    extra_reads = max(0, reads - opens)
    mean_w = (sizes.get("write") or {}).get("mean_bytes") or 0.0
    mean_r = (sizes.get("read") or {}).get("mean_bytes") or 0.0
    return {"files_written": creates, "file_bytes": mean_w, "files_read": opens, "extra_writes": extra_writes,
            "write_bytes": mean_w, "extra_reads": extra_reads, "read_bytes": mean_r,
            "renames": ops.get("rename", 0), "unlinks": ops.get("unlink", 0) + ops.get("rmdir", 0),
            "bytes_read": prof.get("bytes_read", 0), "bytes_written": prof.get("bytes_written", 0)}


def _v(costs: dict, key: str) -> float | None:
    return (costs.get(key) or {}).get("value")


def pattern_seconds(p: dict, costs: dict) -> dict:
    """Seconds each pattern of ``p`` (``patterns``) takes one after the other on a storage of these ``costs``;
    None for a pattern the characterisation does not cover."""
    def request(side: str, nbytes: float) -> float | None:
        fixed, stream = _v(costs, f"{side}_fixed"), _v(costs, f"{side}_stream")
        return None if fixed is None or not stream else fixed + nbytes / stream

    w_stream = _v(costs, "write_stream")
    fw = _v(costs, "file_write")
    fr = _v(costs, "file_read")
    out = {
        # a file written whole: the 32 KiB pattern, its bytes adjusted at the write stream's speed
        "files_written": None if fw is None or not w_stream else
        p["files_written"] * max(0.0, fw + (p["file_bytes"] - SMALL_FILE_BYTES) / w_stream),
        "files_read": None if fr is None else p["files_read"] * fr,
        "extra_reads": None if request("read", p["read_bytes"]) is None else p["extra_reads"] * request("read", p["read_bytes"]),
        "extra_writes": None if request("write", p["write_bytes"]) is None else p["extra_writes"] * request("write", p["write_bytes"]),
        "renames": None if _v(costs, "rename") is None else p["renames"] * _v(costs, "rename"),
        "unlinks": None if _v(costs, "unlink") is None else p["unlinks"] * _v(costs, "unlink"),
    }
    return out


def extra_seconds(p: dict, measured_on: dict, target: dict) -> dict:
    """What the patterns of ``p`` cost more (or less) on ``target`` than on the storage they were measured on,
    per pattern, in seconds of one worker's time; patterns either characterisation lacks count 0 (named)."""
    a, b = pattern_seconds(p, measured_on), pattern_seconds(p, target)
    out, missing = {}, []
    for k in a:
        if a[k] is None or b[k] is None:
            if p.get(k):
                missing.append(k)
            out[k] = 0.0
        else:
            out[k] = b[k] - a[k]
    return {"by_pattern": out, "total": sum(out.values()), "not_characterised": missing}


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of items taken in order by the first free of ``workers`` workers (the engines' scheduling)."""
    free = [0.0] * max(1, workers)
    for d in durations:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += d
    return max(free)


def predict_stage(demand: dict, measured_on: dict, target: dict, workers: int | None = None) -> dict:
    """The stage's time on ``target``, from its measured run and the two storages' pattern costs.

    Terms, per item (slide or shard): its measured seconds; plus its share (by patches, else equal) of what the
    stage's I/O patterns cost more on ``target`` (``extra_seconds``); less the CPU contention that no longer
    applies: the measured run's time waiting for a core (the workers' and the passthrough's run-queue time)
    shrinks with the CPU's utilisation, which falls as the same CPU work spreads over a longer stage (it is
    scaled by measured time / predicted time). Items are then taken in order by the first free of ``workers``
    workers (default: those it ran with), as the engines do; the result never falls under the target's
    bandwidth bounds (bytes / the bandwidth several streams reach). Returns the prediction with every term."""
    prof = demand.get("io_profile")
    if not prof:
        raise SizingError(f"{demand['source']}: no io_profile (run it with --observe, or on an emulated profile)")
    workers = workers or demand["workers"]
    p = patterns(prof)
    extra = extra_seconds(p, measured_on, target)
    items = demand.get("item_table")
    if items is None or not len(items):
        items = pd.DataFrame({"seconds": [demand["seconds"] * demand["workers"]]})
    secs = list(items["seconds"].astype(float))
    weight = items["patches"].astype(float) if "patches" in items and items["patches"].sum() else \
        pd.Series([1.0] * len(items))
    shares = list(weight / weight.sum())
    server_queue = prof.get("server_runqueue_seconds") or 0.0
    queue = [(float(q) if q == q else 0.0) + server_queue * w  # NaN-safe
             for q, w in zip(items["runqueue_seconds"] if "runqueue_seconds" in items else [0.0] * len(items), shares)]
    measured_makespan = makespan(secs, demand["workers"])
    scale = demand["seconds"] / measured_makespan if measured_makespan else 1.0  # pool start-up, stragglers
    t_measured = demand["seconds"]
    chain = t_measured
    for _ in range(50):  # the contention term depends on the predicted time: a fixed point
        relief = 1 - min(1.0, t_measured / chain) if chain > 0 else 0.0
        new = makespan([s + extra["total"] * w - q * relief for s, w, q in zip(secs, shares, queue)], workers) * scale
        if abs(new - chain) < 1e-6:
            break
        chain = new
    bounds = {}
    for side, key in (("read", "bytes_read"), ("write", "bytes_written")):
        bw = _v(target, f"{side}_bandwidth")
        if bw and p[key]:
            bounds[f"{side}_bandwidth"] = p[key] / bw
    seconds = max([chain, *bounds.values()])
    binding = "per-worker latency chain (CPU + I/O one after the other)" if seconds == chain else \
        max(bounds, key=bounds.get)
    return {"stage": demand["stage"], "seconds": seconds, "workers": workers, "binding": binding,
            "measured_seconds": t_measured, "extra_seconds": extra, "chain_seconds": chain,
            "contention_seconds": sum(queue), "contention_relief_fraction": relief,
            "bound_seconds": bounds, "patterns": p,
            "source": f"{demand['source']} ({t_measured:.2f} s on {demand['workers']} workers), with the "
                      f"pattern costs of {_sources(measured_on)} and {_sources(target)}"}


def _sources(costs: dict) -> str:
    srcs = sorted({c["source"].split(":")[0] for c in costs.values()})
    return "; ".join(srcs) or "no characterisation"
