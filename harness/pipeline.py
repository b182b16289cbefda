"""One run of a workload: attach the storage, prepare the dataset, run the chosen stages, write the run record.

The stages themselves (their items, engines and records) are in ``harness.stages``; this module only orders
them and owns the run around them.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import STAGES, ConfigError, StorageProfile, Workload, load_profile
from .errors import UnknownName
from .fsutil import check_name, remove, workload_lock
from .registry import STAGES as STAGE_REGISTRY, load
from .results import record
from .slides.dataset import load as load_dataset, prepare
from .stages.common import StageContext
from .storage import attach, drop_caches as drop_page_cache, fio, folder_bytes, iostats


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run a workload; every field has the workload's own choice as its default."""
    stages: tuple[str, ...] | None = None   # a subset of the stages, run in pipeline order
    storage: str | None = None              # storage profile name or path
    results_dir: Path = Path("results")
    engine: str | None = None               # one engine for every stage
    workers: int | None = None
    nodes: int | None = None                # hosts of the cluster engines (embedded engines: one)
    strict: bool = False                    # refuse a root whose type differs from the profile's claim
    drop_caches: bool = False               # drop the page cache before each stage (root only)
    fresh: bool = False                     # remove the outputs of the stages run first: a measurement, not a resume
    observe: bool = False                   # count every I/O request through the unthrottled FUSE passthrough
    tags: dict = field(default_factory=dict)  # recorded as they are (matrix id, configuration, repetition)
    wait_if_busy: bool = True               # another run holds the workload's folder: wait for it, or fail


def run(workload: Workload, *, stages=None, storage: str | None = None, results_dir: str | Path = "results",
        engine: str | None = None, workers: int | None = None, nodes: int | None = None, strict: bool = False,
        drop_caches: bool = False, fresh: bool = False, observe: bool = False, tags: dict | None = None,
        wait_if_busy: bool = True) -> dict:
    """Run the workload; return the summary (also written to <results>/<run_id>/summary.json)."""
    return run_with(workload, RunOptions(stages=tuple(stages) if stages else None, storage=storage,
                                         results_dir=Path(results_dir), engine=engine, workers=workers, nodes=nodes,
                                         strict=strict, drop_caches=drop_caches, fresh=fresh, observe=observe,
                                         tags=dict(tags or {}), wait_if_busy=wait_if_busy))


def run_with(workload: Workload, opts: RunOptions) -> dict:
    stages = list(opts.stages or workload.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UnknownName(f"unknown stage {unknown[0]!r}; expected some of {', '.join(STAGES)}")
    results_dir = opts.results_dir.resolve()
    ecfg = workload.engine
    used = {opts.engine} if opts.engine else {ecfg.name, *ecfg.stages.values()}
    if opts.nodes and opts.nodes > 1 and not any(ecfg.is_cluster(n) for n in used):
        raise ConfigError(f"{workload.source}: {opts.nodes} nodes need a cluster engine (engine.address for dask, "
                          f"engine.master for spark); {', '.join(sorted(used))} would run on this one host")
    profile = load_profile(opts.storage or workload.storage)
    with attach(profile, results_dir, opts.strict) as (root, storage_record):
        if opts.observe and profile.emulate is None:  # emulated profiles count on their own
            lock = workload_lock(root / check_name(workload.name, "workload"), opts.wait_if_busy,
                                 lambda m: print(m, file=sys.stderr, flush=True))  # on the real folder
            with lock, iostats.observed(root, results_dir, profile.name) as mnt:
                storage_record = dict(storage_record, observe={
                    "mountpoint": str(mnt), "root": str(root),
                    "how": "every request through an unthrottled FUSE passthrough of the root (direct I/O: no page "
                           "cache above it), counted; paths in the record name the root, not the passthrough"})
                return run_attached(workload, opts, profile, mnt, storage_record)
        if opts.observe:
            print(f"[storage] {profile.name} is an emulated (counting) passthrough already: --observe adds nothing",
                  file=sys.stderr)
        return run_attached(workload, opts, profile, root, storage_record)


def run_attached(workload: Workload, opts: RunOptions, profile: StorageProfile, root: Path,
                 storage_record: dict) -> dict:
    """The run itself, on a storage root already attached (``feed`` prepares its data this way)."""
    stages = [s for s in STAGES if s in (opts.stages or workload.stages)]
    results_dir = opts.results_dir.resolve()
    ecfg = workload.engine
    name = opts.engine or ecfg.name
    engine = {"name": name, "workers": opts.workers or ecfg.workers,
              "workers_requested": opts.workers or ecfg.workers,
              "address": ecfg.address or ecfg.master, "per_stage": dict(ecfg.stages) if not opts.engine else {},
              "nodes_requested": opts.nodes or ecfg.nodes,
              "nodes": (opts.nodes or ecfg.nodes or 1) if ecfg.is_cluster(name) else 1}
    data = root / check_name(workload.name, "workload")
    lock = workload_lock(data, opts.wait_if_busy, lambda m: print(m, file=sys.stderr, flush=True))
    with lock, record.recording(results_dir, workload, storage_record, engine, opts.tags) as rec:
        summary = rec.summary
        summary["storage"]["fio"] = fio.latest(results_dir, profile.name, observed="observe" in storage_record)
        ctx = StageContext(workload, profile, root, data, rec.dir, summary, opts.engine, opts.workers, opts.nodes,
                           tables=rec.tables)
        print(f"[run] {rec.run_id}: stages {', '.join(stages)} on {profile.name} ({root}"
              f"{', emulated' if profile.emulated else ''}) with {engine['name']} x{engine['workers']}",
              file=sys.stderr)
        dropped = []
        try:
            t0, io0 = time.perf_counter(), iostats.snapshot(root)
            ctx.dataset = prepare(workload, ctx.data, ctx.engine)
            summary["dataset"] = {"path": str(ctx.dataset), "kind": workload.dataset.kind,
                                  "seconds": time.perf_counter() - t0}
            io_profile(ctx, "dataset", summary["dataset"], io0, root)
            ctx.slides, info = load_dataset(ctx.dataset, workload.dataset)  # layout, counts, exclusions
            summary["dataset"].update(info)
            for stage in stages:
                summary["running_stage"] = stage
                rec.save()
                if opts.fresh:
                    remove(ctx.data / stage, ctx.data)  # each stage's outputs: <data>/<stage>/
                if opts.drop_caches:
                    dropped.append(drop_page_cache())
                t0 = time.perf_counter()
                drive = load(STAGE_REGISTRY, "stage", stage)  # train and infer import TensorFlow here
                imported = time.perf_counter() - t0
                io0 = iostats.snapshot(root)
                rec_ = drive(ctx)
                io_profile(ctx, stage, rec_, io0, root)
                rec_["startup_seconds"] = rec_.get("startup_seconds", 0.0) + imported
                rec_["seconds"] = time.perf_counter() - t0  # the whole wall time of the stage
                summary["stages"][stage] = rec_
                del summary["running_stage"]
                rec.save()
                print(f"[{stage}] {rec_['status']}: {rec_['items']} items in {rec_['seconds']:.1f}s"
                      + (f", {rec_['patches']} patches ({rec_['patches_per_s']:.0f}/s)" if rec_.get("patches") else "")
                      + (f", {len(rec_['errors'])} failed" if rec_["errors"] else ""), file=sys.stderr)
            statuses = [r["status"] for r in summary["stages"].values()]
            summary["status"] = "ok" if all(s == "ok" for s in statuses) else "partial"
        finally:
            if engine["name"] in ctx.engines:  # the workers and hosts it really had, not those asked for
                topo = ctx.engines[engine["name"]].topology()
                engine["workers"], engine["nodes"] = topo["workers"], topo.get("nodes", 1)
            ctx.close()
            summary["page_cache"] = page_cache(ctx, bool(dropped) and all(dropped))
            if "observe" in storage_record:  # the passthrough is gone after the run: name the root itself
                observe = storage_record["observe"]
                rec.summary = iostats.rebase(summary, observe["mountpoint"], observe["root"])
                rec.summary["storage"]["observe"] = observe
                summary = rec.summary
    return summary


def io_profile(ctx: StageContext, stage: str, rec: dict, before: dict | None, root: Path) -> None:
    """The stage's I/O profile, where the root is a counting passthrough: ``io_profile`` in its record, and its
    histograms and timeline as rows of the run's ``io_*`` tables."""
    d = iostats.delta(before, iostats.snapshot(root))
    if d is None:
        return
    rec["io_profile"] = iostats.profile(d)
    import pandas as pd

    new = iostats.rows(stage, d) | {"io_ops": iostats.op_rows(stage, rec["io_profile"])}
    for name, rows in new.items():
        if rows:
            df = pd.DataFrame(rows)
            ctx.tables[name] = pd.concat([ctx.tables[name], df], ignore_index=True) if name in ctx.tables else df


def page_cache(ctx: StageContext, dropped: bool) -> dict:
    """MLPerf Storage's rule: a dataset under 5x RAM may be served from the page cache unless caches are dropped."""
    data = folder_bytes(ctx.dataset) if ctx.dataset and ctx.dataset.exists() else 0
    data += folder_bytes(ctx.data / "tfrecords")
    mem = ctx.summary["environment"]["memory_bytes"]
    return {"dataset_bytes": data, "memory_bytes": mem, "dataset_to_memory": data / mem if mem else None,
            "caches_dropped": dropped, "emulated_direct_io": ctx.profile.emulate is not None,
            "potential_caching": data < 5 * mem and not dropped and ctx.profile.emulate is None}
