"""Step 3, predictions: a stage's time on another storage (``predict_stage``), and the accelerators a storage keeps
busy (``predict_feed``)."""
from __future__ import annotations

import math

import pandas as pd

from .contention import folder_contention, folder_shares, makespan, serialised_seconds
from .costs import cost, extra_seconds, read_ahead, sources
from .demand import patterns
from .figures import MiB, SizingError


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
    ahead = read_ahead(p, target) or (0.0, 0.0)  # the client's read-ahead from the start of the files it opens
    for side, key in (("read", "bytes_read"), ("write", "bytes_written")):
        bw = cost(target, f"{side}_bandwidth")
        if bw and p[key]:
            bounds[f"{side}_bandwidth"] = (p[key] + (ahead[0] if side == "read" else 0.0)) / bw
    seconds = max([chain, *bounds.values()])
    binding = "per-worker latency chain (CPU + I/O one after the other)" if seconds == chain else \
        max(bounds, key=bounds.get)
    return {"stage": demand["stage"], "seconds": seconds, "workers": workers, "binding": binding,
            "measured_seconds": demand["seconds"], "extra_seconds": extra, "chain_seconds": chain, "folder_lock": lock,
            "bound_seconds": bounds, "patterns": p,
            "source": f"{demand['source']} ({demand['seconds']:.2f} s on {demand['workers']} workers), with the "
                      f"pattern costs of {sources(measured_on)} and {sources(target)}"
                      + (f"; waits on the locks of the folders created in ({len(folders)}): x{f_target:.2f} at "
                         f"{workers} workers (x{f_measured:.2f} as measured)" if folders else
                         "; folder-lock waits not modelled (the run's io_profile predates counting them per folder)")}


def predict_feed(demand: dict, target: dict, step_s: float | None = None, batch: int | None = None,
                 threshold: float | None = None, host_cpu: bool = True) -> dict:
    """The most accelerators (``batch`` samples every ``step_s``) whose AU stays >= ``threshold`` on ``target``: the
    samples/s it can supply, the least of its read bandwidth over the bytes of a sample and the host's CPU-bound
    supply measured by the feed (where a probe ran out of CPU), against threshold x accelerators x batch / step."""
    step_s, batch = step_s or demand["step_s"], batch or demand["batch"]
    threshold = threshold or demand["threshold"]
    need = batch / step_s  # samples/s of one accelerator at AU 1
    limits = {}
    bw = cost(target, "read_bandwidth")
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
