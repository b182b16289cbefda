"""One run of a workload: prepare the dataset, run the chosen stages through the engine, write the run record."""
from __future__ import annotations

import functools
import json
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .config import STAGES, StorageProfile, Workload, load_profile
from .engines import Engine, Outcome, make_engine, run_all
from .fsutil import remove_temporaries
from .results import record
from .slides import synth
from .storage import attach, drop_caches, folder_bytes
from .slides.dataset import list_slides
from .stages import masks, patches, tfrecords


@dataclass
class Context:
    workload: Workload
    profile: StorageProfile
    root: Path          # the storage root
    data: Path          # this workload's folder under the root
    run_dir: Path
    engine_override: str | None = None
    workers_override: int | None = None
    dataset: Path | None = None
    slides: list[dict] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    engines: dict[str, Engine] = field(default_factory=dict)

    def engine(self, stage: str | None = None) -> Engine:
        """The engine of a stage (started on first use, shared by the stages that name it)."""
        e = self.workload.engine
        name = self.engine_override or (e.stages.get(stage) if stage else None) or e.name
        if name not in self.engines:
            self.engines[name] = make_engine(name, self.workers_override or e.workers, e.retries,
                                             address=e.address, master=e.master, conf=e.spark_conf)
        eng = self.engines[name]
        if stage:
            self.summary["engine"].setdefault("stages", {})[stage] = eng.topology()
        return eng

    def map(self, stage: str, fn, items: list) -> tuple[list[Outcome], float]:
        eng = self.engine(stage)
        t0 = time.perf_counter()
        outcomes = run_all(eng, fn, items, label=stage)
        return outcomes, time.perf_counter() - t0

    def close(self):
        for eng in self.engines.values():
            eng.close()


def prepare_dataset(ctx: Context) -> Path:
    ds = ctx.workload.dataset
    if ds.kind == "camelyon16":
        return Path(ds.path)
    spec = ds.synthetic.model_dump() | {"generator": synth.VERSION}
    out = ctx.data / "dataset"
    marker = out / ".complete.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return out
    if out.exists():
        shutil.rmtree(out)
    print(f"[dataset] synthesising {spec['slides']} slides of {spec['size']} px under {out}", file=sys.stderr)
    synth.generate(out, spec["slides"], spec["size"], spec["seed"], spec["tumor_fraction"], spec["test_fraction"],
                   spec["mpp"], engine=ctx.engine())
    marker.write_text(json.dumps(spec))
    return out


# --- stage drivers: each maps its per-item function through the engine and returns its stage record ------

def _stage_record(outcomes: list[Outcome], seconds: float, **extra) -> dict:
    io = {k: sum(o.io.get(k, 0) for o in outcomes) for k in ("bytes_read", "bytes_written", "read_calls", "write_calls")}
    ok = [o for o in outcomes if not o.error]
    rec = {"seconds": seconds, "items": len(outcomes), "items_per_s": len(outcomes) / seconds if seconds else None,
           **io, "files_written": sum((o.value or {}).get("files_written", 0) for o in ok),
           "errors": [{"item": _item_name(o.item), "error": o.error} for o in outcomes if o.error],
           "status": "ok" if len(ok) == len(outcomes) else ("failed" if not ok else "partial"), **extra}
    return rec


def _item_name(item) -> str:
    return item.get("slide") or item.get("shard") if isinstance(item, dict) else str(item)


def _table(outcomes: list[Outcome]) -> pd.DataFrame:
    rows = []
    for o in outcomes:
        row = {"item": _item_name(o.item), "seconds": o.seconds, "error": o.error, "attempts": o.attempts,
               "worker": o.worker, **o.io}
        row.update({k: v for k, v in (o.value or {}).items() if isinstance(v, (int, float, str, bool)) and k not in row})
        rows.append(row)
    return pd.DataFrame(rows)


def stage_masks(ctx: Context) -> tuple[dict, list[Outcome]]:
    fn = functools.partial(masks.run_slide, cfg=ctx.workload.masks, out=str(ctx.data / "masks"))
    outcomes, secs = ctx.map("masks", fn, ctx.slides)
    return _stage_record(outcomes, secs), outcomes


def _items(ctx: Context, split: str) -> list[dict]:
    """The slides of a split, each with the annotation groups the stages label by."""
    m = ctx.workload.masks
    return [dict(s, tumor_groups=m.tumor_groups, exclusion_groups=m.exclusion_groups)
            for s in ctx.slides if s["split"] == split]


def stage_patches(ctx: Context) -> tuple[dict, list[Outcome]]:
    out = ctx.data / "patches"
    if out.exists():
        remove_temporaries(out)
    fn = functools.partial(patches.run_slide, cfg=ctx.workload.patches, masks_dir=str(ctx.data / "masks"),
                           out=str(out))
    outcomes, secs = ctx.map("patches", fn, _items(ctx, "training"))
    n = sum(o.value["patches"] for o in outcomes if not o.error)
    return _stage_record(outcomes, secs, patches=n, patches_per_s=n / secs if secs else None,
                         skipped=sum(bool(o.value and o.value.get("skipped")) for o in outcomes)), outcomes


def stage_tfrecords(ctx: Context) -> tuple[dict, list[Outcome]]:
    src, out = ctx.data / "patches", ctx.data / "tfrecords"
    frames = []
    for s in _items(ctx, "training"):
        mp = patches.manifest_path(src, s["slide"])
        if not mp.is_file():
            print(f"[tfrecords] {s['slide']}: no patch manifest (slide failed or not cut); left out", file=sys.stderr)
            continue
        frames.append(pd.read_parquet(mp))
    if not frames:
        raise RuntimeError(f"tfrecords: no patch manifests under {src / 'manifests'}; run the patches stage first")
    manifests = pd.concat(frames, ignore_index=True)
    classes = {s["slide"]: s.get("label") for s in ctx.slides}
    items = tfrecords.plan(manifests, classes, ctx.workload.tfrecords, out, ctx.workload.patches.size)
    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)
    planned = {Path(i[k]).name for i in items for k in ("path", "index")} | {"splits.json"}
    for p in out.iterdir():  # shards of an earlier, different plan
        if p.name not in planned:
            p.unlink()
    (out / "splits.json").unlink(missing_ok=True)
    outcomes, secs = ctx.map("tfrecords", tfrecords.write_shard, items)
    n = sum(o.value["records"] for o in outcomes if not o.error)
    rec = _stage_record(outcomes, secs, patches=n, patches_per_s=n / secs if secs else None,
                        shards=len(items), bytes=sum(o.value["bytes"] for o in outcomes if not o.error))
    if not rec["errors"]:
        doc = tfrecords.write_split_manifest(out, [o.value for o in outcomes], ctx.workload.tfrecords)
        rec["records"] = {k: v["records"] for k, v in doc["splits"].items()}
    return rec, outcomes


def stage_train(ctx: Context) -> tuple[dict, list[Outcome]]:
    tfr = ctx.data / "tfrecords"
    if not (tfr / "splits.json").is_file():
        raise RuntimeError(f"train: {tfr / 'splits.json'} not found; run the tfrecords stage first")
    cfg = ctx.workload.train
    t0 = time.perf_counter()
    if cfg.accelerator or cfg.step_time_s or cfg.distribution != "none":
        figures = _train_processes(ctx, tfr, cfg)
    else:
        from .stages import train

        figures, steps = train.run(tfr, ctx.data / "train", cfg, log_name=ctx.run_dir.name,
                                   progress=lambda m: print(m, file=sys.stderr, flush=True))
        ctx.tables["train_steps"] = pd.DataFrame(steps)
        ctx.tables["train_epochs"] = pd.DataFrame(figures.pop("epochs"))
    ctx.summary["train"] = figures
    secs = time.perf_counter() - t0
    rec = {"seconds": secs, "items": figures["steps"], "items_per_s": figures["steps"] / secs,
           "images": figures["images"], "images_per_s": figures["images_per_s"], "bytes_read": figures["bytes_read"],
           "files_written": 0 if figures.get("emulated") else 1, "errors": [], "status": "ok"}
    return rec, []


def emulated_step(cfg, results_dir: Path) -> tuple[float, int, str] | None:
    """(step seconds, batch, source) of the emulated accelerator, or None when training is real."""
    from .stages.distributed import ACCELERATORS

    if cfg.step_time_s:
        return cfg.step_time_s, cfg.batch_size, "step_time_s in the workload"
    if cfg.accelerator == "calibrated":
        found = sorted((results_dir / "calibration").glob(f"{cfg.model}-b{cfg.batch_size}-*.json"))
        if not found:
            raise RuntimeError(f"train.accelerator = 'calibrated' but no calibration of {cfg.model} at batch "
                               f"{cfg.batch_size} under {results_dir / 'calibration'}; run `wsibench calibrate` first")
        c = json.loads(found[-1].read_text())
        return c["step_s"], c["batch"], f"wsibench calibrate: {found[-1].name}"
    if cfg.accelerator:
        if cfg.accelerator not in ACCELERATORS:
            raise ValueError(f"unknown accelerator {cfg.accelerator!r}; known: {', '.join(ACCELERATORS)}, calibrated")
        a = ACCELERATORS[cfg.accelerator]
        return a["step_s"], a["batch"], a["source"]
    return None


def _train_processes(ctx: Context, tfr: Path, cfg) -> dict:
    """Distributed training, or emulated accelerators, in cfg.processes processes."""
    from .stages import distributed

    splits = json.loads((tfr / "splits.json").read_text())["splits"]
    files = [str(tfr / s["path"]) for s in splits["train"]["shards"]]
    emu = emulated_step(cfg, ctx.run_dir.parent)
    if emu:
        cfg = cfg.model_copy(update={"batch_size": emu[1], "augment": False})
    steps = (cfg.steps_per_epoch or max(1, splits["train"]["records"] // (cfg.batch_size * cfg.processes))) * cfg.epochs
    mode = "emulated" if emu else cfg.distribution
    print(f"[train] {mode}: {cfg.processes} processes x {steps} steps"
          + (f", step {emu[0]} s ({emu[2]})" if emu else ""), file=sys.stderr)
    res = distributed.run(files, ctx.data / "train", cfg, mode, cfg.processes, steps, emu[0] if emu else None)
    ctx.tables["train_steps"] = pd.DataFrame(res.pop("steps_table"))
    figures = {"model": cfg.model, "mode": mode, "emulated": bool(emu), "steps": steps * cfg.processes,
               "bytes_read": sum(r["bytes_read"] for r in res["ranks"]), **res}
    if emu:
        figures["accelerator"] = {"step_s": emu[0], "batch": emu[1], "source": emu[2], "name": cfg.accelerator}
    else:
        from .metrics import auc
        from .stages import train
        import tensorflow as tf

        figures["model_path"] = str(ctx.data / "train" / "model.keras")
        model = tf.keras.models.load_model(figures["model_path"], compile=False)
        val = [str(tfr / s["path"]) for s in splits.get("val", {}).get("shards", [])]
        if val:
            probs, labels = train.predict(model, train.dataset(val, cfg, training=False))
            figures["val_auc"] = auc(probs, labels)
    return figures


def stage_infer(ctx: Context) -> tuple[dict, list[Outcome]]:
    from .metrics import auc, roc_curve
    from .stages import infer, train

    model = ctx.data / "train" / "model.keras"
    if not model.is_file():
        raise RuntimeError(f"infer: no model at {model}; run the train stage first")
    items = _items(ctx, "testing")
    if not items:
        raise RuntimeError(f"infer: no test slides under {ctx.dataset / 'testing' / 'images'}")
    fn = functools.partial(infer.run_slide, model_path=str(model), image_size=train.image_size(ctx.workload.train),
                           patches=ctx.workload.patches, cfg=ctx.workload.infer, masks_dir=str(ctx.data / "masks"),
                           out=str(ctx.data / "infer"))
    outcomes, secs = ctx.map("infer", fn, items)
    ok = [o.value for o in outcomes if not o.error]
    n = sum(v["patches"] for v in ok)
    rec = _stage_record(outcomes, secs, patches=n, patches_per_s=n / secs if secs else None,
                        input_seconds=sum(v["input_seconds"] for v in ok), model_seconds=sum(v["model_seconds"] for v in ok))
    # patch AUC: patches of slides whose truth is known (annotated, or a normal slide), labelled as in training
    thr = ctx.workload.patches.tumor_threshold
    known = [pd.read_parquet(v["table"]) for v in ok if v["annotated"] or v["label"] == "normal"]
    patch_auc = roc = None
    if known:
        t = pd.concat(known)
        t = t[(t.tumor_fraction >= thr) | (t.tumor_fraction == 0)]
        patch_auc = auc(t.prob, t.tumor_fraction >= thr)
        roc = roc_curve(t.prob, t.tumor_fraction >= thr) if patch_auc is not None else None
    scored = [v for v in ok if v["label"] in ("tumor", "normal")]
    slide_auc = auc([v["score"] for v in scored], [v["label"] == "tumor" for v in scored]) if scored else None
    ctx.summary["infer"] = {"patches": n, "patches_per_s": rec["patches_per_s"], "patch_auc": patch_auc,
                            "slide_auc": slide_auc, "input_seconds": rec["input_seconds"],
                            "model_seconds": rec["model_seconds"],
                            "input_fraction": rec["input_seconds"] / max(rec["input_seconds"] + rec["model_seconds"], 1e-9),
                            "heatmaps": [v["overlay"] for v in ok], "roc": roc,
                            "slides": [{k: v[k] for k in ("slide", "label", "score", "patches")} for v in ok]}
    return rec, outcomes


DRIVERS = {"masks": stage_masks, "patches": stage_patches, "tfrecords": stage_tfrecords, "train": stage_train,
           "infer": stage_infer}


def run(workload: Workload, stages: list[str] | None = None, storage: str | None = None,
        results_dir: str | Path = "results", engine: str | None = None, workers: int | None = None,
        strict: bool = False, drop_caches: bool = False, fresh: bool = False, tags: dict | None = None) -> dict:
    """Run the workload; return the summary (also written to <results>/<run_id>/summary.json).

    fresh: remove the outputs of the stages run before running them (a measurement, not a resume).
    tags: recorded as they are (matrix id, configuration, repetition)."""
    stages = list(stages or workload.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; expected some of {', '.join(STAGES)}")
    results_dir = Path(results_dir).resolve()
    profile = load_profile(storage or workload.storage)
    with attach(profile, results_dir, strict) as (root, storage_record):
        return _run(workload, stages, profile, root, storage_record, results_dir, engine, workers, drop_caches,
                    fresh, tags or {})


def _run(workload, stages, profile, root, storage_record, results_dir, engine, workers, drop, fresh, tags) -> dict:
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{workload.name}-{uuid.uuid4().hex[:6]}"
    run_dir = results_dir / run_id
    run_dir.mkdir(parents=True)
    ecfg = workload.engine
    ctx = Context(workload, profile, root, root / workload.name, run_dir, engine, workers)
    summary = ctx.summary = record.new_summary(run_id, workload, storage_record, {
        "name": engine or ecfg.name, "workers": workers or ecfg.workers,
        "address": ecfg.address or ecfg.master, "per_stage": dict(ecfg.stages) if not engine else {}})
    summary["storage"]["fio"] = latest_fio(results_dir, profile.name)
    summary["tags"] = tags
    print(f"[run] {run_id}: stages {', '.join(stages)} on {profile.name} ({root}"
          f"{', emulated' if profile.emulated else ''}) with {engine or ecfg.name} x{workers or ecfg.workers}",
          file=sys.stderr)
    dropped = []
    try:
        t0 = time.perf_counter()
        ctx.dataset = prepare_dataset(ctx)
        summary["dataset"] = {"path": str(ctx.dataset), "kind": workload.dataset.kind,
                              "seconds": time.perf_counter() - t0}
        ctx.slides = list_slides(ctx.dataset)
        summary["dataset"]["slides"] = len(ctx.slides)
        for stage in [s for s in STAGES if s in stages]:
            if fresh:
                shutil.rmtree(ctx.data / stage, ignore_errors=True)  # each stage's outputs: <data>/<stage>/
            if drop:
                dropped.append(drop_caches())
            rec, outcomes = DRIVERS[stage](ctx)
            summary["stages"][stage] = rec
            if outcomes:
                ctx.tables[stage] = _table(outcomes)
            print(f"[{stage}] {rec['status']}: {rec['items']} items in {rec['seconds']:.1f}s"
                  + (f", {rec['patches']} patches ({rec['patches_per_s']:.0f}/s)" if rec.get("patches") else "")
                  + (f", {len(rec['errors'])} failed" if rec["errors"] else ""), file=sys.stderr)
        statuses = [r["status"] for r in summary["stages"].values()]
        summary["status"] = "ok" if all(s == "ok" for s in statuses) else "partial"
    except Exception as e:  # recorded, then raised
        summary["status"], summary["error"] = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        ctx.close()
        summary["page_cache"] = page_cache(ctx, bool(dropped) and all(dropped))
        record.write(run_dir, summary, ctx.tables)
        print(f"[run] {summary['status']}: record in {run_dir}", file=sys.stderr)
    return summary


def page_cache(ctx: Context, dropped: bool) -> dict:
    """MLPerf Storage's rule: a dataset under 5x RAM may be served from the page cache unless caches are dropped."""
    data = folder_bytes(ctx.dataset) if ctx.dataset and ctx.dataset.exists() else 0
    data += folder_bytes(ctx.data / "tfrecords")
    mem = ctx.summary["environment"]["memory_bytes"]
    return {"dataset_bytes": data, "memory_bytes": mem, "dataset_to_memory": data / mem if mem else None,
            "caches_dropped": dropped, "emulated_direct_io": ctx.profile.emulate is not None,
            "potential_caching": data < 5 * mem and not dropped and ctx.profile.emulate is None}


def latest_fio(results_dir: Path, profile: str) -> dict | None:
    """The newest fio characterisation of this profile under results/fio, if one was made."""
    files = sorted((results_dir / "fio").glob(f"{profile}-*.json"))
    return json.loads(files[-1].read_text()) if files else None


def feed(workload: Workload, storage: str | None = None, results_dir: str | Path = "results", threshold: float = 0.9,
         max_accelerators: int = 16, steps: int = 30, strict: bool = False) -> dict:
    """How many emulated accelerators does this storage keep busy? Records the AU curve as a run."""
    from .stages import distributed

    results_dir = Path(results_dir).resolve()
    cfg = workload.train
    emu = emulated_step(cfg, results_dir)
    if emu is None:
        raise ValueError(f"{workload.source}: feed needs train.accelerator or train.step_time_s (the emulated step)")
    profile = load_profile(storage or workload.storage)
    with attach(profile, results_dir, strict) as (root, storage_record):
        tfr = root / workload.name / "tfrecords"
        if not (tfr / "splits.json").is_file():
            print(f"[feed] preparing TFRecords on {profile.name}", file=sys.stderr)
            _run(workload, ["masks", "patches", "tfrecords"], profile, root, storage_record, results_dir, None, None,
                 False, False, {"role": "prepare"})
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{workload.name}-feed-{uuid.uuid4().hex[:6]}"
        run_dir = results_dir / run_id
        run_dir.mkdir(parents=True)
        summary = record.new_summary(run_id, workload, storage_record, {"name": "emulated-accelerators",
                                                                        "workers": None, "address": None})
        summary["storage"]["fio"] = latest_fio(results_dir, profile.name)
        splits = json.loads((tfr / "splits.json").read_text())["splits"]
        files = [str(tfr / s["path"]) for s in splits["train"]["shards"]]
        ecfg = cfg.model_copy(update={"batch_size": emu[1], "augment": False})
        try:
            result = distributed.feed(files, root / workload.name / "feed", ecfg, emu[0], threshold, max_accelerators,
                                      steps, progress=lambda m: print(m, file=sys.stderr, flush=True))
            summary["status"] = "ok"
        except Exception as e:
            summary["status"], summary["error"] = "failed", f"{type(e).__name__}: {e}"
            raise
        finally:
            summary["feed"] = locals().get("result") or {}
            summary["feed"]["accelerator"] = {"name": cfg.accelerator, "step_s": emu[0], "batch": emu[1], "source": emu[2]}
            tables = {"feed_probes": pd.DataFrame(summary["feed"].get("probes", []))}
            record.write(run_dir, summary, tables)
    print(f"[feed] {profile.name}: at most {result['max_accelerators']} accelerators at AU >= {threshold} "
          f"(record {run_dir})", file=sys.stderr)
    return summary
