"""Step 2, what a stage asks: from a run's record, per stage its operations, bytes, CPU seconds, items and per-item
table (``stage_demand``), mapped onto the I/O patterns fio measures (``patterns``); per slide
(``pipeline_figures``); and what a feed's accelerators asked (``feed_demand``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results import resumed_items
from .figures import SizingError, figure


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
    if items is not None and len(items):
        items = with_machine_columns(items, rec)
    skipped = resumed_items(summary | {"_dir": str(run_dir)}, stage)  # done by an earlier run: no bytes, no time
    return {"stage": stage, "run_id": summary.get("run_id"), "source": src, "skipped": skipped,
            "workload": summary.get("workload"),
            "storage": summary.get("storage", {}).get("profile"),
            "seconds": rec.get("work_seconds") or rec.get("seconds"), "items": (rec.get("items") or 0) - skipped,
            "patches": rec.get("patches") or rec.get("images"), "workers": rec.get("workers_used") or
            (summary.get("engine") or {}).get("workers") or 1, "cpu_seconds": rec.get("cpu_seconds"),
            "bytes_read": (prof or rec).get("bytes_read"), "bytes_written": (prof or rec).get("bytes_written"),
            "files_written": rec.get("files_written"), "io_profile": prof, "item_table": items,
            "machine_cpu_seconds": rec.get("machine_cpu_seconds")}


def with_machine_columns(items: pd.DataFrame, rec: dict) -> pd.DataFrame:
    """The per-item table with each item's share of what the stage's record measured for the whole machine and a
    lab's links: ``machine_cpu_seconds`` (by the items' seconds: the engine's, the storage's and the kernel's work
    goes on while an item runs) and ``wire_read_bytes`` / ``wire_written_bytes`` (what the lab's clients received
    and sent, by the items' bytes read and written). Absent where the record has no such figure."""
    items = items.copy()
    total = items["seconds"].fillna(0).astype(float).sum() if "seconds" in items else 0.0
    if rec.get("machine_cpu_seconds") is not None and total > 0:
        items["machine_cpu_seconds"] = items["seconds"].fillna(0).astype(float) / total * rec["machine_cpu_seconds"]
    links = ((rec.get("lab") or {}).get("link_bytes") or {}).get("client")
    for col, key, by in (("wire_read_bytes", "received_bytes", "bytes_read"),
                         ("wire_written_bytes", "sent_bytes", "bytes_written")):
        if links and by in items and items[by].fillna(0).sum() > 0:
            items[col] = items[by].fillna(0).astype(float) / float(items[by].fillna(0).sum()) * links[key]
    return items


def scale_starts(prof: dict, scale: float) -> dict:
    """``prof``'s ``read_runs`` with its opens from a file's start x ``scale`` (a profile scaled to other slides)."""
    runs = prof.get("read_runs")
    if not runs or not runs.get("from_start"):
        return runs
    return dict(runs, from_start={kind: {"opens": h["opens"] * scale, "unread_histogram": {
        lo: n * scale for lo, n in h["unread_histogram"].items()}} for kind, h in runs["from_start"].items()})


def patterns(prof: dict) -> dict:
    """A stage's FUSE operations as the I/O patterns whose costs fio measures: small files written whole
    (creates, with the bytes each carried), files opened and read (opens), further read and write requests,
    renames and unlinks, and the opens that read from a file's start (``from_start``; ``read_ahead``: those that
    left bytes of the file unread). Lookups, flushes and releases are part of the file patterns."""
    ops = {k: (v or {}).get("count", 0) for k, v in prof["ops"].items()}
    sizes = prof.get("request_sizes") or {}
    creates = ops.get("create", 0) + ops.get("mkdir", 0)
    writes, reads = ops.get("write", 0), ops.get("read", 0)
    opens = ops.get("open", 0)
    extra_writes = max(0, writes - creates)
    extra_reads = max(0, reads - opens)
    mean_w = (sizes.get("write") or {}).get("mean_bytes") or 0.0
    mean_r = (sizes.get("read") or {}).get("mean_bytes") or 0.0
    starts = from_start(prof)
    return {"files_written": creates, "file_bytes": mean_w, "files_read": opens, "extra_writes": extra_writes,
            "write_bytes": mean_w, "extra_reads": extra_reads, "read_bytes": mean_r,
            "renames": ops.get("rename", 0), "unlinks": ops.get("unlink", 0) + ops.get("rmdir", 0),
            "bytes_read": prof.get("bytes_read", 0), "bytes_written": prof.get("bytes_written", 0),
            "from_start": starts, "read_ahead": sum(n for _, unread, n in starts if unread)}


def from_start(prof: dict) -> tuple[tuple[str, float, float], ...]:
    """The opens that read from a file's start (``read_runs.from_start``), as (kind, bytes of the file they did
    not read: their bucket's lower bound, opens); empty where the run did not count them."""
    starts = (prof.get("read_runs") or {}).get("from_start") or {}
    return tuple((kind, float(lo), n) for kind, h in sorted(starts.items())
                 for lo, n in sorted((h.get("unread_histogram") or {}).items(), key=lambda kv: int(kv[0])))


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
            "decode": f.get("decode", True), "max_accelerators": f.get("max_accelerators"), "mode": f.get("mode"),
            "bytes_per_sample": sorted(per_sample)[len(per_sample) // 2] if per_sample else None,
            "cpu_seconds_per_sample": sorted(cpu)[len(cpu) // 2] if cpu else None,
            "read_requests_per_sample": reads / samples if samples else None,
            "server_cpu_seconds_per_sample": server_cpu / samples if samples else None,
            "cpu_bound_samples_per_s": max((p["samples_per_s"] for p in failing), default=None),
            "probes": probes}


PREPROCESS = ("masks", "patches", "tfrecords")  # the stages sized per slide


def pipeline_figures(summary: dict, stage: str) -> dict | None:
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
