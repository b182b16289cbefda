"""The cluster answer (``wsibench size``): the runs' per-slide demands and the storages' costs, put together into
what a target needs per stage and what each storage can take (``size``); ``answer`` finds the runs and the
characterisations first."""
from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path

from .. import accelerators
from ..config import load_profile
from ..results import find_runs, load
from ..storage.characterisations import latest
from .costs import sources, storage_costs
from .demand import PREPROCESS, feed_demand, pipeline_figures
from . import budget
from .figures import SECONDS_PER_DAY, SizingError, figure
from .predict import predict_stage
from .slides import CAMELYON16, measured_slides, scale_figures, target_slides


def size(runs: list[dict], accelerator: dict, storages: dict[str, dict], slides_per_day: float, gpus: int,
         epochs: int = 1, threshold: float = 0.9, dataset_slides: int | None = None,
         workers: int | None = None, measured_costs: dict | None = None, hosts: int = 1,
         workers_per_host: int | None = None, cores_per_host: float | None = None, window_hours: float = 24.0,
         slide_size="camelyon16") -> dict:
    """The sizing answer. ``runs``: run records (with ``_dir``), pipeline runs and feed runs; ``accelerator``:
    accelerators.profile(); ``storages``: {name: storage_costs()}; ``measured_costs``: {storage the runs were
    measured on: storage_costs()} for the latency predictions. The cluster: ``hosts`` client hosts of
    ``workers_per_host`` workers (default: as measured) and ``cores_per_host`` cores (default: this host's), a
    batch window of ``window_hours``, slides of ``slide_size`` (``slides.target_slides``). Returns the document."""
    pipeline = [s for s in runs if s.get("stages") and not s.get("feed")]
    feeds = [s for s in runs if s.get("feed")]
    if not pipeline and not feeds:
        raise SizingError("no measured run given: pass run folders (wsibench run, wsibench feed)")
    rate = slides_per_day / SECONDS_PER_DAY
    window = window_hours * 3600.0
    day_given = dataset_slides is not None
    dataset_slides = dataset_slides or slides_per_day
    target = target_slides(slide_size, measured_slides(runs))
    cores = figure(float(cores_per_host), "cores", "--cores-per-host") if cores_per_host else \
        figure(float(os.cpu_count() or 1), "cores", "this host's (os.cpu_count)")
    stages: dict[str, dict] = {}
    for stage in PREPROCESS + ("infer",):
        figs = [f for f in (pipeline_figures(s, stage) for s in pipeline) if f and f["demand"]["items"]]
        figs = [f for f in figs if not f["demand"]["skipped"]] or figs  # wholly measured runs first
        if figs:  # the newest, preferring runs whose operations were counted
            f = sorted(figs, key=lambda f: (bool(f["demand"]["io_profile"]), f["demand"]["run_id"]))[-1]
            stages[stage] = scale_figures(f, stage, target)
    on_storage = runs_on_targets(pipeline, stages, storages)
    out = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "target": {"slides_per_day": slides_per_day, "gpus": gpus, "epochs": epochs, "threshold": threshold,
                      "dataset_slides": dataset_slides, "accelerator": accelerator},
           "cluster": {"hosts": hosts, "workers_per_host": workers_per_host, "cores_per_host": cores,
                       "window_seconds": window, "slides": _slides_doc(target, stages)},
           "inputs": [{"run_id": s.get("run_id"), "storage": (s.get("storage") or {}).get("profile"),
                       "kind": "feed" if s.get("feed") else "pipeline",
                       "model": ((s.get("settings") or {}).get("train") or {}).get("model")} for s in runs],
           "notes": [f"the runs' workloads name model {m!r}; the accelerator's figures are for "
                     f"{accelerator.get('model')!r}: what is read per sample is the data's, the step time the "
                     "accelerator's" for m in sorted({((s.get("settings") or {}).get("train") or {}).get("model")
                                                      for s in runs} - {None, accelerator.get("model")})]
                    + ([target["note"]] if target.get("note") else []),
           "stages": {}, "storages": {}}
    for stage, f in stages.items():
        if stage == "infer":
            continue
        per = f"{slides_per_day:g} slides/day x "
        req = {"read_bytes_per_s": figure(rate * f["read_bytes"]["value"], "B/s", per + f["read_bytes"]["source"]),
               "write_bytes_per_s": figure(rate * f["write_bytes"]["value"], "B/s", per + f["write_bytes"]["source"]),
               "creates_per_s": figure(rate * f["creates"]["value"], "files/s", per + f["creates"]["source"]),
               "capacity_bytes": figure(dataset_slides * f["write_bytes"]["value"], "B",
                                        f"{dataset_slides:g} slides x bytes written per slide ({f['write_bytes']['source']}); "
                                        "an upper bound of what the stage keeps")}
        if f["operations"]:
            req["operations_per_s"] = figure(rate * f["operations"]["value"], "requests/s", per + f["operations"]["source"])
        if f["cpu_seconds"]:
            req["host_cores"] = figure(rate * f["cpu_seconds"]["value"], "cores", per + f["cpu_seconds"]["source"])
        out["stages"][stage] = {"per_slide": {k: f[k] for k in ("read_bytes", "write_bytes", "operations", "creates",
                                                                 "cpu_seconds") if f[k]},
                                "required": req}
        if f["patches"]:  # the same per patch (cut, or packed into shards)
            out["stages"][stage]["per_patch"] = {
                k: figure(f[k]["value"] / f["patches"], f[k]["unit"].replace("per slide", "per patch"),
                          f"{f[k]['source']}, over its {f['patches']:,.0f} patches a slide")
                for k in ("read_bytes", "write_bytes", "operations", "creates", "cpu_seconds") if f[k]}
    feed = feed_demand(feeds[-1]) if feeds else None
    train = _train_requirements(accelerator, gpus, epochs, threshold, feed, stages, dataset_slides, pipeline)
    if train:
        out["stages"]["train"] = train
    if "infer" in stages:
        out["stages"]["infer"] = _infer_requirements(accelerator, gpus, stages["infer"])
    out["capacity"] = budget.capacity(stages, target, dataset_slides, dict(train or {}, epochs=epochs), runs,
                                      accelerator)
    feeds_on: dict[str, list[dict]] = {}
    for s in feeds:  # the feed runs on each storage, oldest first: gpus_fed measured there (budget.gpus_fed)
        feeds_on.setdefault((s.get("storage") or {}).get("profile"), []).append(s)
    for name, costs in storages.items():
        if not costs:  # nothing measured of it, no vendor figures: no answer (``answer`` says why) but a feed's
            out["storages"][name] = {"characterisation": sources(costs), "stages": {}}
            fed = budget.gpus_fed(None, feeds_on, name, costs, hosts, accelerator, threshold)
            if fed:
                out["storages"][name]["gpus_fed"] = fed
            continue
        out["storages"][name] = _storage_answer(name, costs, stages, feed, accelerator, threshold, slides_per_day,
                                                workers, measured_costs)
        out["storages"][name].update(_cluster_answer(
            name, costs, stages | on_storage.get(name, {}), out["stages"], feed, feeds_on, accelerator, gpus, epochs,
            threshold, slides_per_day, dataset_slides, day_given, hosts, workers_per_host, cores, window, target))
    return out


def runs_on_targets(pipeline: list[dict], stages: dict, storages: dict) -> dict[str, dict]:
    """{storage: {stage: figures}} for the storages a given run was made on (one client host, the newest such run):
    the chosen run's figures (``stages``: its operations, as counted) with each item as the run on that storage
    measured it (its seconds, the machine's busy CPU, a lab's link bytes: ``cluster.item_demands``). Only for the
    same workload on as many slides: the items must be the same ones."""
    out: dict[str, dict] = {}
    for s in sorted(pipeline, key=lambda s: s.get("run_id") or ""):
        name = (s.get("storage") or {}).get("profile")
        if name not in storages or ((s.get("engine") or {}).get("nodes") or 1) != 1 \
                or "observe" in (s.get("storage") or {}):  # through the counting passthrough: not as the storage is
            continue
        for stage, g in stages.items():
            f = pipeline_figures(s, stage)
            if not f or f["demand"].get("machine_cpu_seconds") is None or f["slides"] != g["slides"] \
                    or s.get("workload") != g["demand"].get("workload"):
                continue
            items = f["demand"]["item_table"]
            if items is None or not len(items):
                continue
            demand = dict(g["demand"], item_table=items,
                          source=f"{g['demand']['source']}; each item as {f['demand']['source']} measured it")
            out.setdefault(name, {})[stage] = dict(g, demand=demand, on_target=f"run {s.get('run_id')}")
    return out


def _slides_doc(target: dict, stages: dict) -> dict:
    """The target's slides as the document shows them: what they are, and each stage's factor with its source."""
    out = {"described": target["described"], "name": target["name"]}
    if target.get("side_px"):
        out["side_px"] = figure(target["side_px"], "px", target["factors"]["area"]["source"]
                                if target["name"] != "measured" else "the measured slides")
    if target.get("patches_per_slide"):
        out["patches_per_slide"] = figure(target["patches_per_slide"], "patches",
                                          target["factors"]["patches"]["source"])
    out["factors"] = {stage: f["factor"] for stage, f in stages.items()}
    return out


def _cluster_answer(name: str, costs: dict, stages: dict, needs: dict, feed: dict | None, feeds_on: dict, acc: dict,
                    gpus: int, epochs: int, threshold: float, slides: float, dataset_slides: float, day_given: bool,
                    hosts: int, workers_per_host: int | None, cores: dict, window: float, target: dict) -> dict:
    """Per storage: each stage on the cluster (``budget.stage_answer``), training, inference, one budget, the
    metadata server against the patch stage's creates, and the GPUs fed (bound or measured)."""
    per_stage = {}
    for stage in PREPROCESS:
        f = stages.get(stage)
        if f:
            w = workers_per_host or f["workers"]
            per_stage[stage] = dict(budget.stage_answer(f, stage, costs, hosts, w, cores, slides), workers_per_host=w)
    records = (stages["patches"]["patches"] * (dataset_slides if day_given else slides)) if "patches" in stages else None
    train = budget.train_answer(needs.get("train"), gpus, acc, costs, hosts, epochs, records)
    infer = budget.infer_answer(needs.get("infer"), gpus, acc, costs, hosts,
                                stages["infer"]["patches"] if "infer" in stages else None, slides)
    out = {"cluster": {"stages": per_stage, "train": train, "infer": infer,
                       "notes": budget.server_notes(name, costs, hosts),
                       "budget": budget.budget(per_stage, train, infer, slides, window, train_is_per_slide=not day_given),
                       "metadata": budget.metadata_answer(stages.get("patches"), per_stage.get("patches"), costs, slides,
                                                          window, hosts, dataset_slides,
                                                          dict(target, patch_folders=CAMELYON16["patch_folders"]))}}
    b = out["cluster"]["budget"]
    if b:
        top = b["largest"]
        part = per_stage.get(top) or {"train": train, "infer": infer}.get(top) or {}
        out["slides_per_day"] = dict(b["slides_per_day"], stage=top, binding=part.get("binding_what", ""))
    fed = budget.gpus_fed(feed, feeds_on, name, costs, hosts, acc, threshold, needs.get("train"))
    if fed:
        out["gpus_fed"] = fed
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
        out["required"]["capacity_bytes"] = figure(records * bps, "B", f"{dataset_slides:g} slides x {p['patches']:.0f} "
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
    """Per stage the measured run's time predicted on this storage (its own slides and workers, one host), and what
    one worker takes a day of the target's slides; the workers the target needs where the workers' chains bind,
    else a statement that storage binds."""
    out = {"characterisation": sources(costs), "stages": {}}
    for stage, f in stages.items():
        if stage == "infer":
            continue
        rec = {}
        m = (measured or {}).get(f["demand"]["storage"])
        if m and f["demand"]["io_profile"]:
            w = workers or f["workers"]
            pred = predict_stage(f["demand"], m, costs, w)
            if pred["extra_seconds"]["not_characterised"]:
                rec["note"] = (f"no stage-time prediction: {name}'s characterisation lacks the cost of "
                               + ", ".join(pred["extra_seconds"]["not_characterised"]) + f" (run wsibench fio {name})")
            else:
                x = f["factor"]["value"]
                per_worker = SECONDS_PER_DAY * f["slides"] / (pred["seconds"] * w * x)
                rec["predicted_seconds"] = figure(pred["seconds"], "s", pred["source"])
                rec["per_worker"] = figure(per_worker, "slides/day per worker",
                                           f"{f['slides']} slides / {pred['seconds']:.2f} s predicted on {name} with "
                                           f"{w} workers ({pred['binding']}), / x{x:.3g} for the target's slides: "
                                           f"{pred['source']}")
                if pred["binding"].endswith("_bandwidth"):
                    rec["storage_binds"] = (f"{name}'s {pred['binding'].replace('_', ' ')} binds this stage: more "
                                            "workers will not shorten it")
                else:
                    rec["workers_needed"] = figure(math.ceil(slides_per_day / per_worker), "workers",
                                                   f"{slides_per_day:g} slides/day / the per-worker figure")
                rec["prediction"] = pred
        out["stages"][stage] = rec
    return out


def characterisation_folders(run_paths, results_dir: Path | None) -> list[Path]:
    """Where to look for ``wsibench fio`` characterisations (``<folder>/fio/``): the results folder, then each folder
    given (a results folder, or a run folder's own results folder above it), each once."""
    out = []
    for p in ([results_dir] if results_dir else []) + [Path(p) for p in run_paths]:
        p = Path(p)
        for q in (p, p.parent) if (p / "summary.json").is_file() else (p,):
            if q not in out and (q / "fio").is_dir():
                out.append(q)
    return out


def newest_characterisation(folders: list[Path], profile: str) -> tuple[dict | None, str | None]:
    """The newest fio characterisation of ``profile`` in any of ``folders``: the plain one first; else one made
    through the counting passthrough (``--observe``), with a note saying its costs include the passthrough's."""
    for observed in (False, True):
        docs = [d for d in (latest(f, profile, observed=observed) for f in folders) if d]
        if docs:
            doc = max(docs, key=lambda d: str(d.get("created_at", "")))
            return doc, (f"{profile} is characterised only through the counting passthrough (wsibench fio {profile} "
                         "--observe): its costs include the passthrough's, so it is answered as somewhat slower than "
                         "it is") if observed else None
    return None, None


def answer(run_paths, results_dir: Path, accelerator: str, storages: list[str] | None, slides_per_day: float,
           gpus: int, epochs: int = 1, threshold: float = 0.9, dataset_slides: int | None = None,
           workers: int | None = None, **cluster) -> dict:
    """``wsibench size``: the runs under ``run_paths`` (those that ended ok or partial), the accelerator by name, the
    fio characterisations of the storages the runs were measured on and of ``storages`` (default: the runs' own),
    found under ``results_dir`` and the folders given (``characterisation_folders``), put through ``size`` (with
    ``cluster``: hosts, workers_per_host, cores_per_host, window_hours, slide_size)."""
    runs = [load(p) for p in find_runs(run_paths)]
    runs = [s for s in runs if s.get("status") in ("ok", "partial")]
    acc = accelerators.profile(accelerator, results_dir)
    folders = characterisation_folders(run_paths, results_dir)
    measured = {}
    for s in runs:
        st = s.get("storage") or {}
        if not st.get("profile") or st["profile"] in measured:
            continue
        doc = None
        if st.get("observe"):  # measured through the passthrough: its costs are the passthrough's too
            docs = [d for d in (latest(f, st["profile"], observed=True) for f in folders) if d]
            doc = max(docs, key=lambda d: str(d.get("created_at", ""))) if docs else None
        doc = doc or newest_characterisation(folders, st["profile"])[0] or st.get("fio")
        if doc:
            measured[st["profile"]] = storage_costs(doc, st.get("reference"), st.get("profile"))
    names = storages or sorted({(s.get("storage") or {}).get("profile") for s in runs} - {None})
    costs, notes = {}, {}
    for name in names:
        prof = load_profile(name)
        doc, note = newest_characterisation(folders, prof.name)
        costs[prof.name] = storage_costs(doc, dict(prof.reference), prof.name)
        if note:
            notes[prof.name] = note
        elif not costs[prof.name]:
            where = ", ".join(str(f) for f in folders) or f"{results_dir} (no fio/ folder there)"
            notes[prof.name] = (f"no fio characterisation of {prof.name} under {where}, and no vendor figures in its "
                                f"profile: nothing to answer with (run wsibench fio {prof.name} --results "
                                f"{results_dir})")
    doc = size(runs, acc, costs, slides_per_day, gpus, epochs, threshold, dataset_slides, workers, measured, **cluster)
    for name, note in notes.items():
        doc["storages"][name]["note"] = note
    return doc
