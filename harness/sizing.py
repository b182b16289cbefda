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
   as the engine does (first free worker takes the next item), with the workers' waits on each other's creates,
   renames and unlinks in the folders they share, and never under the storage's bandwidth bounds;
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
from .results import resumed_items

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
    skipped = resumed_items(summary | {"_dir": str(run_dir)}, stage)  # done by an earlier run: no bytes, no time
    return {"stage": stage, "run_id": summary.get("run_id"), "source": src, "skipped": skipped,
            "storage": summary.get("storage", {}).get("profile"),
            "seconds": rec.get("work_seconds") or rec.get("seconds"), "items": (rec.get("items") or 0) - skipped,
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


def serialised_seconds(p: dict, costs: dict) -> float:
    """Seconds the stage's namespace operations (``patterns`` ``p``) take one after the other on a storage of
    these ``costs``: creates (and mkdirs), renames and unlinks, each at its measured cost."""
    return sum(p[k] * (_v(costs, c) or 0.0) for k, c in (("files_written", "create"), ("renames", "rename"),
                                                           ("unlinks", "unlink")))


def folder_shares(prof: dict) -> list[float] | None:
    """Each folder's share of a stage's namespace operations, from its io_profile (the folders it does not name
    share the rest equally); None for a profile that did not count them (recorded before they were)."""
    by, total = prof.get("namespace_operations_by_folder"), prof.get("namespace_operations")
    if by is None or not total:
        return None
    shares = [c / total for c in by.values()]
    rest, others = 1.0 - sum(shares), (prof.get("namespace_folders") or len(by)) - len(by)
    if rest > 1e-9 and others > 0:
        shares += [rest / others] * others
    return shares or None


def folder_contention(work: float, serial: float, shares: list[float], workers: int) -> float:
    """How much longer ``workers`` take over ``work`` seconds of their items (all workers' together) when
    ``serial`` of those seconds are namespace operations, each holding its folder's lock (the kernel holds a
    folder's lock through a create, rename or unlink in it, on every Linux file system, across the round trip to
    the file server), split over the folders by ``shares``; against the same work with no lock to wait for.
    Exact mean value analysis of a closed system: each worker alternates its own work (a delay) with an operation
    queued at one folder's lock. 1.0 for one worker. It models the workers of one host (one client's kernel):
    workers on several hosts meet only at the server's own lock, held for the server's part of each operation,
    so across hosts it over-states the wait."""
    if workers <= 1 or serial <= 0 or work <= 0:
        return 1.0
    z = max(work - serial, 0.0)
    d = [serial * f for f in shares]
    q = [0.0] * len(d)
    for n in range(1, workers + 1):
        r = [dk * (1 + qk) for dk, qk in zip(d, q)]
        x = n / (z + sum(r))
        q = [x * rk for rk in r]
    return (z + sum(r)) / (z + serial)


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of items taken in order by the first free of ``workers`` workers (the engines' scheduling)."""
    free = [0.0] * max(1, workers)
    for d in durations:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += d
    return max(free)


def predict_stage(demand: dict, measured_on: dict, target: dict, workers: int | None = None) -> dict:
    """The stage's time on ``target``, from its measured run and the two storages' pattern costs.

    Terms, per item (slide or shard): its measured seconds, plus its share (by patches, else equal) of what the
    stage's I/O patterns cost more on ``target`` than on the storage it was measured on (``extra_seconds``).
    Items are then taken in order by the first free of ``workers`` workers (default: those it ran with), as the
    engines do, scaled by what the measured stage took beyond its items (start of the pool, stragglers), and by
    the wait of the workers on each other's namespace operations in shared folders (``folder_contention``, from
    the folders the io_profile counted them in; taken out of the measured items first, put back at the target's
    costs: on slow metadata it grows); the result never falls under the target's bandwidth bounds (bytes / the
    bandwidth several streams reach). The measured
    run's CPU time and its waits for a core stay as they were: on a shared host they come mostly from the other
    processes (the run queue time of the workers and the passthrough, recorded with each run, did not fall on the
    slower storages). Returns the prediction with every term."""
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
    measured_makespan = makespan(secs, demand["workers"])
    scale = demand["seconds"] / measured_makespan if measured_makespan else 1.0  # pool start-up, stragglers
    folders = folder_shares(prof)
    serial = {"measured_on": serialised_seconds(p, measured_on), "target": serialised_seconds(p, target)}
    f_measured = folder_contention(sum(secs), serial["measured_on"], folders, demand["workers"]) if folders else 1.0
    items_target = [s / f_measured + extra["total"] * w for s, w in zip(secs, shares)]
    f_target = folder_contention(sum(items_target), serial["target"], folders, workers) if folders else 1.0
    chain = makespan(items_target, workers) * scale * f_target
    lock = {"folders": len(folders) if folders else None, "serialised_seconds": serial,
            "factor_measured_on": f_measured, "factor_target": f_target}
    bounds = {}
    for side, key in (("read", "bytes_read"), ("write", "bytes_written")):
        bw = _v(target, f"{side}_bandwidth")
        if bw and p[key]:
            bounds[f"{side}_bandwidth"] = p[key] / bw
    seconds = max([chain, *bounds.values()])
    binding = "per-worker latency chain (CPU + I/O one after the other)" if seconds == chain else \
        max(bounds, key=bounds.get)
    return {"stage": demand["stage"], "seconds": seconds, "workers": workers, "binding": binding,
            "measured_seconds": demand["seconds"], "extra_seconds": extra, "chain_seconds": chain, "folder_lock": lock,
            "bound_seconds": bounds, "patterns": p,
            "source": f"{demand['source']} ({demand['seconds']:.2f} s on {demand['workers']} workers), with the "
                      f"pattern costs of {_sources(measured_on)} and {_sources(target)}"
                      + (f"; waits on the locks of the folders created in ({len(folders)}): x{f_target:.2f} at "
                         f"{workers} workers (x{f_measured:.2f} as measured)" if folders else
                         "; folder-lock waits not modelled (the run's io_profile predates counting them per folder)")}


def _sources(costs: dict) -> str:
    srcs = sorted({c["source"].split(":")[0] for c in costs.values()})
    return "; ".join(srcs) or "no characterisation"


# --- feed: how many accelerators a storage keeps busy ---------------------------------------------------------

def feed_demand(summary: dict) -> dict:
    """What one emulated accelerator's input pipeline asked of the host and the storage, from a feed record:
    bytes and read requests per sample, CPU seconds per sample (the ranks' own, and the counting passthrough's),
    and the CPU-bound supply where a probe failed for want of CPU."""
    f = summary.get("feed") or {}
    probes = f.get("probes") or []
    if not probes:
        raise SizingError(f"run {summary.get('run_id')}: no feed probes in its record")
    src = f"feed run {summary.get('run_id')} ({(summary.get('storage') or {}).get('profile')})"
    per_sample = [p["bytes_per_sample"] for p in probes if p.get("bytes_per_sample")]
    cpu = [p["cpu_seconds_per_sample"] for p in probes if p.get("cpu_seconds_per_sample")]
    reads, server_cpu, samples = 0, 0.0, 0.0
    for p in probes:
        io = p.get("io_profile")
        if io and p.get("io_profile_samples"):  # the samples the ranks consumed while the profile counted
            reads += io["ops"]["read"]["count"]
            server_cpu += io.get("server_cpu_seconds") or 0.0
            samples += p["io_profile_samples"]
    failing = [p for p in probes if p.get("limit") == "cpu"]
    return {"source": src, "step_s": f.get("step_s"), "batch": f.get("batch"), "threshold": f.get("threshold", 0.9),
            "decode": f.get("decode", True), "max_accelerators": f.get("max_accelerators"),
            "bytes_per_sample": sorted(per_sample)[len(per_sample) // 2] if per_sample else None,
            "cpu_seconds_per_sample": sorted(cpu)[len(cpu) // 2] if cpu else None,
            "read_requests_per_sample": reads / samples if samples else None,
            "server_cpu_seconds_per_sample": server_cpu / samples if samples else None,
            "cpu_bound_samples_per_s": max((p["samples_per_s"] for p in failing), default=None),
            "probes": probes}


def predict_feed(demand: dict, target: dict, step_s: float | None = None, batch: int | None = None,
                 threshold: float | None = None, host_cpu: bool = True) -> dict:
    """The most accelerators (``batch`` samples every ``step_s``) whose AU stays >= ``threshold`` on ``target``: the
    samples/s it can supply, the least of its read bandwidth over the bytes of a sample and the host's CPU-bound
    supply measured by the feed (where a probe ran out of CPU), against threshold x accelerators x batch / step."""
    step_s, batch = step_s or demand["step_s"], batch or demand["batch"]
    threshold = threshold or demand["threshold"]
    need = batch / step_s  # samples/s of one accelerator at AU 1
    limits = {}
    bw = _v(target, "read_bandwidth")
    if bw and demand["bytes_per_sample"]:
        limits["storage read bandwidth"] = (bw / demand["bytes_per_sample"],
                                            f"{target['read_bandwidth']['source']} / {demand['bytes_per_sample']:.0f} B "
                                            f"a sample ({demand['source']})")
    if host_cpu and demand.get("cpu_bound_samples_per_s"):
        limits["host CPU"] = (demand["cpu_bound_samples_per_s"],
                              f"{demand['source']}: samples/s of its first probe that ran out of CPU")
    if not limits:
        raise SizingError(f"{demand['source']}: neither a read bandwidth for the storage nor a CPU-bound probe")
    binding = min(limits, key=lambda k: limits[k][0])
    supply = limits[binding][0]
    n = int(math.floor(supply / (threshold * need) + 1e-9))
    return {"max_accelerators": n, "samples_per_s": supply, "mib_per_s": supply * (demand["bytes_per_sample"] or 0) / MiB,
            "binding": binding, "limits": {k: {"samples_per_s": v, "source": s} for k, (v, s) in limits.items()},
            "per_accelerator_samples_per_s": need, "threshold": threshold}


# --- the cluster answer ---------------------------------------------------------------------------------------

PREPROCESS = ("masks", "patches", "tfrecords")


def _per_slide(demand: dict, key: str) -> float | None:
    v = demand.get(key)
    return v / demand["items"] if v is not None and demand.get("items") else None


def _pipeline_figures(summary: dict, stage: str) -> dict | None:
    """Per slide (per shard for tfrecords: per slide through the patches it packs) what a stage read, wrote,
    created and asked, with sources."""
    try:
        d = stage_demand(summary, stage)
    except SizingError:
        return None
    slides = d["items"]
    patches = (summary.get("stages") or {}).get("patches")
    if stage == "tfrecords" and patches:  # per slide: the slides it packed
        slides = ((patches.get("items") or 0) - resumed_items(summary, "patches")) or slides
    if not slides:
        return None
    prof = d["io_profile"] or {}
    ops = prof.get("operations")
    creates = prof.get("creates") if prof else d.get("files_written")
    how = (f"{d['source']}, " + ("counted by the FUSE passthrough" if prof else "the workers' /proc/<pid>/io counters"))
    return {"slides": slides, "seconds": d["seconds"], "workers": d["workers"], "demand": d,
            "read_bytes": figure((d["bytes_read"] or 0) / slides, "B per slide", how),
            "write_bytes": figure((d["bytes_written"] or 0) / slides, "B per slide", how),
            "operations": figure(ops / slides, "requests per slide", how) if ops is not None else None,
            "creates": figure((creates or 0) / slides, "files per slide", how),
            "cpu_seconds": figure((d["cpu_seconds"] or 0) / slides, "CPU s per slide",
                                  f"{d['source']}, the workers' own CPU time") if d.get("cpu_seconds") else None,
            "patches": (d.get("patches") or 0) / slides}


def size(runs: list[dict], accelerator: dict, storages: dict[str, dict], slides_per_day: float, gpus: int,
         epochs: int = 1, threshold: float = 0.9, dataset_slides: int | None = None,
         workers: int | None = None, measured_costs: dict | None = None) -> dict:
    """The sizing answer. ``runs``: run records (with ``_dir``), pipeline runs and feed runs; ``accelerator``:
    accelerators.profile(); ``storages``: {name: storage_costs()}; ``measured_costs``: {storage the runs were
    measured on: storage_costs()} for the latency predictions. Returns the sizing document."""
    pipeline = [s for s in runs if s.get("stages") and not s.get("feed")]
    feeds = [s for s in runs if s.get("feed")]
    if not pipeline and not feeds:
        raise SizingError("no measured run given: pass run folders (wsibench run, wsibench feed)")
    rate = slides_per_day / SECONDS_PER_DAY
    dataset_slides = dataset_slides or slides_per_day
    stages: dict[str, dict] = {}
    for stage in PREPROCESS + ("infer",):
        figs = [f for f in (_pipeline_figures(s, stage) for s in pipeline) if f and f["demand"]["items"]]
        figs = [f for f in figs if not f["demand"]["skipped"]] or figs  # wholly measured runs first
        if figs:  # the newest, preferring runs whose operations were counted
            stages[stage] = sorted(figs, key=lambda f: (bool(f["demand"]["io_profile"]), f["demand"]["run_id"]))[-1]
    out = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "target": {"slides_per_day": slides_per_day, "gpus": gpus, "epochs": epochs, "threshold": threshold,
                      "dataset_slides": dataset_slides, "accelerator": accelerator},
           "inputs": [{"run_id": s.get("run_id"), "storage": (s.get("storage") or {}).get("profile"),
                       "kind": "feed" if s.get("feed") else "pipeline",
                       "model": ((s.get("settings") or {}).get("train") or {}).get("model")} for s in runs],
           "notes": [f"the runs' workloads name model {m!r}; the accelerator's figures are for "
                     f"{accelerator.get('model')!r}: what is read per sample is the data's, the step time the "
                     "accelerator's" for m in sorted({((s.get("settings") or {}).get("train") or {}).get("model")
                                                      for s in runs} - {None, accelerator.get("model")})],
           "stages": {}, "storages": {}}
    for stage, f in stages.items():
        if stage == "infer":
            continue
        req = {"read_bytes_per_s": figure(rate * f["read_bytes"]["value"], "B/s", f"{slides_per_day:g} slides/day x "
                                          f"{f['read_bytes']['source']}"),
               "write_bytes_per_s": figure(rate * f["write_bytes"]["value"], "B/s", f"{slides_per_day:g} slides/day x "
                                           f"{f['write_bytes']['source']}"),
               "creates_per_s": figure(rate * f["creates"]["value"], "files/s", f"{slides_per_day:g} slides/day x "
                                       f"{f['creates']['source']}"),
               "capacity_bytes": figure(dataset_slides * f["write_bytes"]["value"], "B",
                                        f"{dataset_slides} slides x bytes written per slide ({f['write_bytes']['source']}); "
                                        "an upper bound of what the stage keeps")}
        if f["operations"]:
            req["operations_per_s"] = figure(rate * f["operations"]["value"], "requests/s",
                                             f"{slides_per_day:g} slides/day x {f['operations']['source']}")
        if f["cpu_seconds"]:
            req["host_cores"] = figure(rate * f["cpu_seconds"]["value"], "cores",
                                       f"{slides_per_day:g} slides/day x {f['cpu_seconds']['source']}")
        out["stages"][stage] = {"per_slide": {k: f[k] for k in ("read_bytes", "write_bytes", "operations", "creates",
                                                                 "cpu_seconds") if f[k]},
                                "required": req}
        if f["patches"]:  # the same per patch (cut, or packed into shards)
            out["stages"][stage]["per_patch"] = {
                k: figure(f[k]["value"] / f["patches"], f[k]["unit"].replace("per slide", "per patch"),
                          f"{f[k]['source']}, over its {f['patches'] * f['slides']:.0f} patches")
                for k in ("read_bytes", "write_bytes", "operations", "creates", "cpu_seconds") if f[k]}
    feed = feed_demand(feeds[-1]) if feeds else None
    train = _train_requirements(accelerator, gpus, epochs, threshold, feed, stages, dataset_slides, pipeline)
    if train:
        out["stages"]["train"] = train
    if "infer" in stages:
        out["stages"]["infer"] = _infer_requirements(accelerator, gpus, stages["infer"])
    for name, costs in storages.items():
        out["storages"][name] = _storage_answer(name, costs, stages, feed, accelerator, threshold, slides_per_day,
                                                workers, measured_costs)
    return out


def _train_requirements(acc: dict, gpus: int, epochs: int, threshold: float, feed: dict | None, stages: dict,
                        dataset_slides: int, pipeline: list[dict]) -> dict | None:
    per_gpu = acc["images_per_s"]
    bps, src = None, None
    if feed and feed.get("bytes_per_sample"):
        bps, src = feed["bytes_per_sample"], f"{feed['source']}: the ranks' reads per sample"
    else:
        for s in pipeline:
            t = (s.get("stages") or {}).get("tfrecords")
            if t and t.get("bytes") and t.get("patches"):
                bps, src = t["bytes"] / t["patches"], f"run {s['run_id']}: TFRecord bytes per record"
                break
    if bps is None:
        return None
    samples = gpus * per_gpu
    out = {"per_gpu": {"images_per_s": figure(per_gpu, "images/s", acc["source"]),
                       "read_bytes_per_s": figure(per_gpu * bps, "B/s", f"{acc['source']} x {bps:.0f} B a sample ({src})")},
           "required": {"read_bytes_per_s": figure(samples * bps, "B/s", f"{gpus} GPUs x {per_gpu:.0f} images/s "
                                                   f"({acc['source']}) x {bps:.0f} B a sample ({src})")}}
    if feed and feed.get("read_requests_per_sample"):
        out["required"]["operations_per_s"] = figure(samples * feed["read_requests_per_sample"], "requests/s",
                                                     f"{gpus} GPUs x {per_gpu:.0f} images/s x read requests per sample "
                                                     f"({feed['source']}, counted by the FUSE passthrough)")
    p = stages.get("patches")
    if p and p["patches"]:
        records = dataset_slides * p["patches"]
        out["required"]["capacity_bytes"] = figure(records * bps, "B", f"{dataset_slides} slides x {p['patches']:.0f} "
                                                   f"patches a slide ({p['read_bytes']['source'].split(',')[0]}) x {bps:.0f} B")
        out["epoch_seconds"] = figure(records / samples, "s", f"{records:.0f} records / ({gpus} GPUs x {per_gpu:.0f} images/s)")
        out["training_seconds"] = figure(epochs * records / samples, "s", f"{epochs} epochs")
    cores = []
    if feed and feed.get("cpu_seconds_per_sample") and feed.get("decode"):
        cores.append(figure(feed["cpu_seconds_per_sample"] * per_gpu * threshold, "cores per GPU",
                            f"{feed['source']}: the input pipeline's CPU per sample (decoding, this host) x "
                            f"{per_gpu:.0f} images/s x AU {threshold}"))
    ref = accelerators.HOST_DECODE["libjpeg-turbo-1core"]
    cores.append(figure(per_gpu * threshold / ref["images_per_s"], "cores per GPU",
                        f"{ref['source']} (decode alone) at {per_gpu:.0f} images/s x AU {threshold}"))
    au = accelerators.LOADER_AU
    need = min((k for k in au if isinstance(k, int) and au[k] >= threshold), default=None)
    if need:
        cores.append(figure(need, "decode workers per GPU", f"{au['source']}: the fewest with AU >= {threshold}"))
    out["decode_cores_per_gpu"] = cores
    out["bytes_per_sample"] = figure(bps, "B", src)
    return out


def _infer_requirements(acc: dict, gpus: int, f: dict) -> dict:
    per_patch = f["read_bytes"]["value"] / f["patches"] if f["patches"] else None
    rate = acc.get("infer_images_per_s")
    out = {"per_patch": {"read_bytes": figure(per_patch, "B per patch scored", f"{f['read_bytes']['source']} / patches")}}
    if rate and per_patch:
        out["per_gpu"] = {"read_bytes_per_s": figure(rate * per_patch, "B/s", f"{acc['source']} (inference "
                                                     f"{rate:.0f} images/s) x bytes read per patch scored")}
        out["required"] = {"read_bytes_per_s": figure(gpus * rate * per_patch, "B/s", f"{gpus} GPUs")}
    else:
        out["note"] = (f"no inference throughput measured for {acc['name']}: run wsibench calibrate on that GPU "
                       "(it times forward passes at the infer stage's batch)")
    return out


def _storage_answer(name: str, costs: dict, stages: dict, feed: dict | None, acc: dict, threshold: float,
                    slides_per_day: float, workers: int | None, measured: dict | None) -> dict:
    out = {"characterisation": _sources(costs), "stages": {}}
    read_bw, write_bw = costs.get("read_bandwidth"), costs.get("write_bandwidth")
    day_limits = {}
    for stage, f in stages.items():
        if stage == "infer":
            continue
        lim = {}
        if read_bw and f["read_bytes"]["value"]:
            lim["read bandwidth"] = figure(SECONDS_PER_DAY * read_bw["value"] / f["read_bytes"]["value"], "slides/day",
                                           f"{read_bw['source']} / {f['read_bytes']['source']}")
        if write_bw and f["write_bytes"]["value"]:
            lim["write bandwidth"] = figure(SECONDS_PER_DAY * write_bw["value"] / f["write_bytes"]["value"], "slides/day",
                                            f"{write_bw['source']} / {f['write_bytes']['source']}")
        rec = {"limits": lim}
        m = (measured or {}).get(f["demand"]["storage"])
        if m and f["demand"]["io_profile"]:
            w = workers or f["workers"]
            pred = predict_stage(f["demand"], m, costs, w)
            if pred["extra_seconds"]["not_characterised"]:
                rec["note"] = (f"no stage-time prediction: {name}'s characterisation lacks the cost of "
                               + ", ".join(pred["extra_seconds"]["not_characterised"]) + f" (run wsibench fio {name})")
            else:
                per_worker = SECONDS_PER_DAY * f["slides"] / (pred["seconds"] * w)
                rec["predicted_seconds"] = figure(pred["seconds"], "s", pred["source"])
                rec["per_worker"] = figure(per_worker, "slides/day per worker",
                                           f"{f['slides']} slides / {pred['seconds']:.2f} s predicted on {name} with "
                                           f"{w} workers ({pred['binding']}): {pred['source']}")
                rec["workers_needed"] = figure(math.ceil(slides_per_day / per_worker), "workers",
                                               f"{slides_per_day:g} slides/day / the per-worker figure")
                rec["prediction"] = pred
        if lim:
            binding = min(lim, key=lambda k: lim[k]["value"])
            rec["slides_per_day"] = dict(lim[binding], binding=binding)
            day_limits[stage] = rec["slides_per_day"]
        out["stages"][stage] = rec
    if day_limits:
        stage = min(day_limits, key=lambda k: day_limits[k]["value"])
        out["slides_per_day"] = dict(day_limits[stage], stage=stage)
    if feed:
        try:
            pf = predict_feed(feed, costs, acc["step_s"], acc["batch"], threshold, host_cpu=False)  # storage alone
            out["gpus_fed"] = figure(pf["max_accelerators"], "GPUs", f"{acc['name']} ({acc['images_per_s']:.0f} "
                                     f"images/s) at AU >= {threshold}, bound by {pf['binding']}: "
                                     + pf["limits"][pf["binding"]]["source"])
            out["feed"] = pf
        except SizingError as e:
            out["gpus_fed"] = {"value": None, "unit": "GPUs", "source": str(e)}
    return out


# --- presenting it ----------------------------------------------------------------------------------------------

def rows(doc: dict) -> list[dict]:
    """The document as flat rows (scope, quantity, value, unit, source): the CSV, and the report's tables."""
    out = []

    def walk(scope, d):
        for k, v in d.items():
            if isinstance(v, dict) and "value" in v and "source" in v:
                out.append({"scope": scope, "quantity": k, "value": v["value"], "unit": v["unit"], "source": v["source"]})
            elif isinstance(v, list):
                for x in v:
                    if isinstance(x, dict) and "value" in x:
                        out.append({"scope": scope, "quantity": k, "value": x["value"], "unit": x["unit"],
                                    "source": x["source"]})
            elif isinstance(v, dict) and k not in ("prediction", "feed", "accelerator"):
                walk(f"{scope}.{k}" if scope else k, v)
    walk("", {"stages": doc["stages"], "storages": doc["storages"]})
    return out


def _fmt(v, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("B/s", "B"):
        for scale, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B")):
            if abs(v) >= scale or scale == 1:
                return f"{v / scale:,.3g} {name}{'/s' if unit == 'B/s' else ''}"
    return f"{v:,.3g} {unit}" if abs(v) < 100 else f"{v:,.0f} {unit}"


def text(doc: dict) -> str:
    """The answer as a terminal table, every figure numbered with its source below."""
    t = doc["target"]
    acc = t["accelerator"]
    notes: list[str] = []

    def cell(f):
        if not f or f.get("value") is None:
            return "-"
        notes.append(f["source"])
        return f"{_fmt(f['value'], f['unit'])} [{len(notes)}]"

    lines = [f"Target: {t['slides_per_day']:g} slides/day preprocessed; {t['gpus']} x {acc['name']} "
             f"({acc['images_per_s']:,.0f} images/s each) training {t['epochs']} epoch(s); AU >= {t['threshold']}"]
    lines += [f"Note: {n}" for n in doc.get("notes", [])] + ["", "Required, per stage:"]
    for stage, st in doc["stages"].items():
        req = st.get("required") or {}
        parts = [f"{k.replace('_per_s', '/s').replace('_', ' ')} {cell(v)}" for k, v in req.items()]
        lines.append(f"  {stage:<10} " + "; ".join(parts))
        if stage == "train":
            for f in st.get("decode_cores_per_gpu", []):
                lines.append(f"  {'':<10} decode: {cell(f)}")
        if st.get("note"):
            lines.append(f"  {'':<10} {st['note']}")
    lines += ["", "Per storage:"]
    for name, s in doc["storages"].items():
        lines.append(f"  {name}:")
        if s.get("slides_per_day"):
            lines.append(f"    preprocesses at most {cell(s['slides_per_day'])} (binding: {s['slides_per_day']['stage']} "
                         f"stage, {s['slides_per_day']['binding']})")
        for stage, r in s["stages"].items():
            if r.get("per_worker"):
                lines.append(f"    {stage}: {cell(r['predicted_seconds'])} for the measured slides; "
                             f"{cell(r['per_worker'])}; {cell(r['workers_needed'])} for the target")
        if s.get("gpus_fed"):
            lines.append(f"    feeds {cell(s['gpus_fed'])}")
    lines += ["", "Sources:"] + [f"  [{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)


def save(results_dir: Path, doc: dict) -> Path:
    """Store a sizing under <results>/sizing/ (the report's Sizing section reads them), with its CSV beside it."""
    from .fsutil import atomic_path, write_json

    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    out = Path(results_dir) / "sizing" / f"sizing-{stamp}.json"
    write_json(out, doc)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        pd.DataFrame(rows(doc)).to_csv(tmp, index=False)
    return out


def load_all(paths) -> list[dict]:
    """Sizing documents under the folders given (<folder>/sizing/*.json), or named directly."""
    docs = []
    for p in map(Path, paths):
        files = [p] if p.suffix == ".json" and p.name.startswith("sizing-") else sorted((p / "sizing").glob("sizing-*.json"))
        for f in files:
            d = json.loads(f.read_text())
            d["_file"] = str(f)
            docs.append(d)
    return docs
