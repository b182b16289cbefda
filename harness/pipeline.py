"""One run of a workload: plan the engines, attach the storage, prepare the dataset, run the chosen stages, write
the run record.

The stages themselves (their items, engines and records) are in ``harness.stages``; this module only orders
them and owns the run around them.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import LAB_ADDRESS, STAGES, ConfigError, EnginePlan, Workload, load_profile, plan_engines
from .errors import UnknownName
from .fsutil import check_name, remove
from .registry import STAGE_DRIVERS, load
from .results import record
from .slides.dataset import load as load_dataset
from .slides.synth import prepare
from .stages.common import StageContext
from .storage import Attached, attached, drop_caches as drop_page_cache, folder_bytes, iostats
from .storage.lab import LabError, cause as lab_cause


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


def run(workload: Workload, opts: RunOptions | None = None, **options) -> dict:
    """Run the workload; return the summary (also written to <results>/<run_id>/summary.json). Options: a
    ``RunOptions``, or its fields as keywords (``stages`` as any sequence)."""
    if opts is None:
        if options.get("stages"):
            options["stages"] = tuple(options["stages"])
        options["results_dir"] = Path(options.get("results_dir") or "results")
        options["tags"] = dict(options.get("tags") or {})
        opts = RunOptions(**options)
    unknown = [s for s in (opts.stages or ()) if s not in STAGES]
    if unknown:
        raise UnknownName(f"unknown stage {unknown[0]!r}; expected some of {', '.join(STAGES)}")
    plan = plan_engines(workload, opts.engine, opts.workers, opts.nodes)  # checked before any storage is touched
    if opts.observe and any(e.address == LAB_ADDRESS for e in (plan.default, *dict(plan.per_stage).values())):
        raise ConfigError(f"{workload.source}: --observe counts the requests of this host's mount; stages on a lab's "
                          "client hosts (engine.address = \"lab\") use their own mounts, which it cannot see. Observe "
                          "a run on this host (another engine), or leave --observe out")
    profile = load_profile(opts.storage or workload.storage)
    with attached(profile, opts.results_dir, opts.strict, opts.observe, workload.name, opts.wait_if_busy) as storage:
        return run_stages(workload, opts, storage, plan.on_lab(storage.lab_dask, workload.source))


def run_stages(workload: Workload, opts: RunOptions, storage: Attached, plan: EnginePlan | None = None) -> dict:
    """The run itself, on storage already attached (``feed`` prepares its data this way)."""
    stages = [s for s in STAGES if s in (opts.stages or workload.stages)]
    plan = plan or plan_engines(workload, opts.engine, opts.workers, opts.nodes).on_lab(storage.lab_dask,
                                                                                        workload.source)
    results_dir = opts.results_dir.resolve()
    engine = plan.record()
    root, profile = storage.root, storage.profile
    data = root / check_name(workload.name, "workload")
    with record.recording(results_dir, workload, storage.record, engine, opts.tags) as rec:
        summary = rec.summary
        ctx = StageContext(workload, profile, root, data, rec.dir, summary, plan, tables=rec.tables, storage=storage)
        print(f"[run] {rec.run_id}: stages {', '.join(stages)} on {profile.name} ({storage.real_root}"
              f"{', emulated' if profile.emulated else ''}{', LAB' if profile.kind == 'lab' else ''}) with {engine['name']} x{engine['workers']}",
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
            for bad in info["unreadable"]:
                print(f"[dataset] unreadable, fails in each stage: {bad}", file=sys.stderr)
            for stage in stages:
                began = time.time()  # Unix seconds: a lab server lost from here on is the stage's
                summary["running_stage"] = stage
                rec.save()
                if opts.fresh:
                    remove(ctx.data / stage, ctx.data)  # each stage's outputs: <data>/<stage>/
                if opts.drop_caches:
                    dropped.append(drop_page_cache())
                t0 = time.perf_counter()
                drive = load(STAGE_DRIVERS, "stage", stage)  # train and infer import TensorFlow here
                imported = time.perf_counter() - t0
                io0 = iostats.snapshot(root)
                rec_ = drive(ctx)
                lost = storage.servers_lost(began)
                if lost:  # a lab's server ended during the stage: said, and named as the cause of I/O errors
                    rec_["servers_lost"] = lost
                    rec_["errors"] = [dict(e, error=lab_cause(e["error"], lost)) for e in rec_["errors"]]
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
        except Exception as e:
            lost = storage.servers_lost(storage.attached_at)
            if lost:  # a lab's server gone: the cause, with the error
                raise LabError(lab_cause(f"{type(e).__name__}: {e}", lost, always=True)) from e
            raise
        finally:
            if engine["name"] in ctx.engines:  # the workers and hosts it really had, not those asked for
                engine.update(ran_topology(engine, ctx.engines[engine["name"]].topology()))
            ctx.close()
            try:
                summary["page_cache"] = page_cache(ctx, bool(dropped) and all(dropped))
            except OSError as e:  # the storage failed under the run: left out, the run's own error is the one to tell
                print(f"[run] page-cache figures left out: {e}", file=sys.stderr)
            rec.summary = summary = storage.finish(summary)  # paths out of the passthrough, what a lab did
    return summary


def ran_topology(engine: dict, live: dict) -> dict:
    """The run's workers and nodes: the engine's at the run's end (``live``), or, where it had none left (a Ctrl-C
    reaches an embedded cluster's workers too, before the record is written: 0 workers on 0 nodes, which no run
    has), what the last stage that used it recorded."""
    if live.get("workers"):
        return {"workers": live["workers"], "nodes": live.get("nodes", 1)}
    seen = [t for t in (engine.get("stages") or {}).values() if t.get("name") == engine["name"] and t.get("workers")]
    if seen:
        return {"workers": seen[-1]["workers"], "nodes": seen[-1].get("nodes", 1)}
    return {}  # it never ran a stage: the plan's figures stay


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
            "caches_dropped": dropped, "emulated_direct_io": ctx.profile.emulated,
            "potential_caching": data < 5 * mem and not dropped and not ctx.profile.emulated
            and not (ctx.profile.kind == "lab" and ctx.profile.lab.cache_mode == "DIRECT")}  # mfsmount's DIRECT
