"""Infer stage, per test slide: the patch grid over tissue, classified in batches, as a heatmap.

No JPEG files are made: regions come from the same TileReader as the patch stage and go to the model in
batches. Time is split into input (read, decode, resize) and model. Per slide: the heatmap (probabilities
at mask resolution, .npy, and a PNG overlay on the slide at that level), a Parquet table of patch
probabilities with their true tumor shares, and a slide score (mean of the top-k probabilities).
"""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..config import Infer, Patches
from ..errors import StageInputError
from ..fsutil import atomic_path, write_bytes
from ..metrics import auc, camelyon17 as c17, froc, roc_curve
from ..models import image_size
from ..slides.annotations import read_asap, sample_points
from ..slides.reader import TileReader, mpp, open_slide, read_level
from . import masks as masks_stage
from .common import StageContext, stage_record
from .patches import grid

_MODELS: dict = {}


def load_model(path: str):
    """The model, loaded once per worker process."""
    if path not in _MODELS:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        _MODELS[path] = tf.keras.models.load_model(path, compile=False)
    return _MODELS[path]


def run_slide(item: dict, model_path: str, image_size: int, patches: Patches, cfg: Infer, masks_dir: str,
              out: str) -> dict:
    out = Path(out)
    model = load_model(model_path)
    mask_rec, tumor_m, tissue_m = masks_stage.load(masks_dir, item["slide"])
    slide = open_slide(item["path"])
    t_input = t_model = 0.0
    try:
        g = grid(item, patches, mask_rec, tumor_m, tissue_m, slide, stride=cfg.stride)
        iy, ix = np.nonzero(g["tissue"] >= cfg.tissue_threshold)
        warnings = [] if item.get("decode_warnings") == "record" else None
        with TileReader(item["path"], g["level"], slide, item.get("decode_warnings", "error")) as reader:
            read, ds = g["read"], g["downsample"]
            probs = np.zeros(len(iy), np.float32)
            for start in range(0, len(iy), cfg.batch_size):
                t0 = time.perf_counter()
                batch = []
                for a, b in zip(iy[start:start + cfg.batch_size], ix[start:start + cfg.batch_size]):
                    y, x = int(g["gy"][a]), int(g["gx"][b])
                    reader.forget_above(y)
                    px = reader.region(x, y, read, read)
                    if read != image_size:
                        px = cv2.resize(px, (image_size, image_size), interpolation=cv2.INTER_AREA)
                    batch.append(px)
                x_batch = np.stack(batch).astype(np.float32) / 255.0
                t1 = time.perf_counter()
                probs[start:start + len(batch)] = np.asarray(model(x_batch, training=False)).reshape(-1)
                t2 = time.perf_counter()
                t_input += t1 - t0
                t_model += t2 - t1
            if warnings is not None:
                warnings += reader.warnings
        thumb = read_level(slide, mask_rec["level"], item["path"], warnings)
        slide_mpp, (width, height) = mpp(slide), slide.dimensions
    finally:
        slide.close()
    xs0, ys0 = g["gx"][ix] * ds, g["gy"][iy] * ds
    table = pd.DataFrame({"slide": item["slide"], "x": np.round(xs0).astype(np.int64), "y": np.round(ys0).astype(np.int64),
                          "prob": probs, "tumor_fraction": g["tumor"][iy, ix].astype(np.float32),
                          "tissue_fraction": g["tissue"][iy, ix].astype(np.float32)})
    heat = heatmap(probs, xs0, ys0, read * ds, mask_rec["downsample"], tumor_m.shape)
    paths = {"table": out / f"{item['slide']}.parquet", "heatmap": out / f"{item['slide']}_heatmap.npy",
             "overlay": out / f"{item['slide']}_heatmap.png"}
    with atomic_path(paths["heatmap"]) as tmp, open(tmp, "wb") as f:
        np.save(f, heat)
    write_bytes(paths["overlay"], cv2.imencode(".png", overlay(thumb, heat, tissue_m))[1].tobytes())
    with atomic_path(paths["table"]) as tmp:
        table.to_parquet(tmp, index=False)
    k = min(cfg.top_k, len(probs))
    score = float(np.sort(probs)[-k:].mean()) if k else 0.0
    return {"slide": item["slide"], "label": item.get("label"), "annotated": bool(item.get("annotation")),
            "patches": int(len(probs)), "input_seconds": t_input, "model_seconds": t_model, "score": score,
            "heatmap": str(paths["heatmap"]), "overlay": str(paths["overlay"]), "table": str(paths["table"]),
            "heatmap_downsample": float(mask_rec["downsample"]), "mpp": slide_mpp, "width": width, "height": height,
            "files_written": 3, "warnings": warnings or []}


def heatmap(probs, xs0, ys0, size0: float, mask_ds: float, shape) -> np.ndarray:
    """Probabilities painted over each patch footprint at mask resolution (the maximum where they overlap)."""
    heat = np.zeros(shape, np.float32)
    h, w = shape
    for p, x, y in zip(probs, xs0, ys0):
        x0, y0 = int(x // mask_ds), int(y // mask_ds)
        x1, y1 = min(w, int(np.ceil((x + size0) / mask_ds))), min(h, int(np.ceil((y + size0) / mask_ds)))
        np.maximum(heat[y0:y1, x0:x1], p, out=heat[y0:y1, x0:x1])
    return heat


def overlay(thumb_rgb: np.ndarray, heat: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """A BGR image: the slide at mask level with the heatmap (jet colours) blended over tissue."""
    h, w = heat.shape
    base = cv2.cvtColor(cv2.resize(thumb_rgb, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    t = cv2.resize(tissue.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool) | (heat > 0)
    out = base.copy()
    out[t] = (0.5 * base[t] + 0.5 * colour[t]).astype(np.uint8)
    return out


def drive(ctx: StageContext) -> dict:
    """Heatmaps of the test slides; patch AUC against the masks, slide AUC against the reference labels, and the
    CAMELYON16 lesion-level FROC, all over the evaluated slides (the record names those kept out)."""
    model = ctx.data / "train" / "model.keras"
    if not model.is_file():
        raise StageInputError(f"infer: no model at {model}; run the train stage first")
    splits = ctx.data / "tfrecords" / "splits.json"
    if splits.is_file() and model.stat().st_mtime < splits.stat().st_mtime and not ctx.workload.infer.allow_stale_model:
        raise StageInputError(f"infer: the model {model} is older than the shards {splits} (a training that failed "
                              "since?); run the train stage, or set infer.allow_stale_model = true to judge it anyway")
    items = ctx.items("testing")
    if not items:
        raise StageInputError(f"infer: no test slides under {ctx.dataset / 'testing' / 'images'}")
    fn = functools.partial(run_slide, model_path=str(model), image_size=image_size(ctx.workload.train),
                           patches=ctx.workload.patches, cfg=ctx.workload.infer, masks_dir=str(ctx.data / "masks"),
                           out=str(ctx.data / "infer"))
    mapped = ctx.map("infer", fn, items, warm=functools.partial(load_model, str(model)))  # TensorFlow and the model
    ok = [o.value for o in mapped.outcomes if not o.error]
    n = sum(v["patches"] for v in ok)
    rec = stage_record(ctx, "infer", mapped, patches=n, patches_per_s=mapped.rate(n),
                       input_seconds=sum(v["input_seconds"] for v in ok),
                       model_seconds=sum(v["model_seconds"] for v in ok))
    # evaluation: slides with a label, less those kept out of it (the release's problem slides, by default)
    evaluated = {s["slide"] for s in items if s.get("evaluate", True)}
    not_evaluated = [{"slide": s["slide"], "reason": s.get("not_evaluated", "")} for s in items
                     if not s.get("evaluate", True)]
    ok_eval = [v for v in ok if v["slide"] in evaluated]
    # patch AUC: patches of slides whose truth is known (annotated, or a normal slide), labelled as in training
    thr = ctx.workload.patches.tumor_threshold
    known = [pd.read_parquet(v["table"]) for v in ok_eval if v["annotated"] or v["label"] == "normal"]
    patch_auc = roc = None
    if known:
        t = pd.concat(known)
        t = t[(t.tumor_fraction >= thr) | (t.tumor_fraction == 0)]
        patch_auc = auc(t.prob, t.tumor_fraction >= thr)
        roc = roc_curve(t.prob, t.tumor_fraction >= thr) if patch_auc is not None else None
    scored = [v for v in ok_eval if v["label"] in ("tumor", "normal")]
    slide_auc = auc([v["score"] for v in scored], [v["label"] == "tumor" for v in scored]) if scored else None
    lesion = lesion_froc(scored, {s["slide"]: s for s in items}, ctx.workload)
    # CAMELYON17: every inferred slide classed and every patient staged, labelled or not; kappa where truth is known
    staging = pn_staging(ok, items, ctx.workload.infer) if ctx.summary.get("dataset", {}).get("layout") == "camelyon17" \
        else None
    ctx.summary["infer"] = {"patches": n, "patches_per_s": rec["patches_per_s"], "patch_auc": patch_auc,
                            "slide_auc": slide_auc, "froc": lesion["froc"],
                            "froc_sensitivities": lesion["sensitivities"], "froc_detail": lesion,
                            "evaluated_slides": len(scored), "not_evaluated": not_evaluated,
                            "input_seconds": rec["input_seconds"],
                            "model_seconds": rec["model_seconds"],
                            "input_fraction": rec["input_seconds"] / max(rec["input_seconds"] + rec["model_seconds"], 1e-9),
                            "heatmaps": [v["overlay"] for v in ok], "roc": roc,
                            "slides": [{k: v[k] for k in ("slide", "label", "score", "patches")} for v in ok]}
    if staging is not None:
        ctx.summary["infer"] |= {"pn_kappa": staging["kappa"], "pn_detail": staging}
    return rec


def lesion_froc(scored: list[dict], items: dict[str, dict], workload) -> dict:
    """The CAMELYON16 lesion-level FROC of the evaluated slides, from their heatmaps (harness.metrics.froc).

    Evaluation masks are the slides' annotations at level 5 as the official script reads them from a mask TIFF
    (``sample_points``: the level-0 point (32 j, 32 i) for pixel (i, j)); the margin and the ITC rule at 0.243
    um/px (``infer.froc_resolution = "official"``) or at each slide's own mpp (``"slide_mpp"``). Detections are
    the heatmap regions at or above ``infer.froc_threshold``. A tumor slide without an annotation cannot be scored
    and is named in ``unscored``."""
    m, mode = workload.masks, workload.infer.froc_resolution
    slides, unscored = [], []
    for v in scored:
        item = items[v["slide"]]
        heat = np.load(v["heatmap"])
        dets = froc.detections(heat, v["heatmap_downsample"], workload.infer.froc_threshold)
        if v["label"] == "normal":
            slides.append(froc.score_slide(dets, None))
            continue
        if not item.get("annotation"):
            unscored.append(v["slide"])
            continue
        ann = read_asap(item["annotation"], (v["width"], v["height"]))
        ds = froc.EVAL_DOWNSAMPLE
        shape = (int(v["height"] // ds), int(v["width"] // ds))  # a pyramid's level 5: floor(side / 32)
        tumor = sample_points(ann.regions(m.tumor_groups), ann.regions(m.exclusion_groups), shape, ds)
        mpp = froc.CAMELYON16_MPP if mode == "official" else (v["mpp"] or froc.CAMELYON16_MPP)
        labels, itc = froc.evaluation_mask(tumor, mpp, ds)
        slides.append(froc.score_slide(dets, labels, itc, ds))
    out = froc.froc(slides)
    return out | {"threshold": workload.infer.froc_threshold, "resolution": mode, "unscored": unscored}


def pn_staging(inferred: list[dict], items: list[dict], cfg: Infer) -> dict:
    """CAMELYON17's metric (harness.metrics.camelyon17) over the inferred test slides.

    Each slide's class from its heatmap: the regions at or above ``infer.pn_threshold``, the longest one's longest
    diameter at the slide's mpp (0.243 um/px where it records none). Each patient's pN stage from its nodes'
    classes, when every node of the patient was inferred (else none: the stage would miss a node). The quadratic
    weighted kappa over the patients whose stage the stage-labels CSV gives; test patients without one are
    staged and listed, not scored."""
    got, by_name = {v["slide"]: v for v in inferred}, {i["slide"]: i for i in items}
    nodes: dict[str, list[dict]] = {}
    for it in items:
        if it.get("patient"):
            nodes.setdefault(it["patient"], []).append(it)
    slides, predicted = [], {}
    for v in inferred:
        it = by_name.get(v["slide"], {})
        heat = np.load(v["heatmap"])
        cls, longest = c17.slide_class(heat, v["heatmap_downsample"], v["mpp"] or froc.CAMELYON16_MPP, cfg.pn_threshold)
        truth = it.get("lesion") or ("negative" if it.get("label") == "normal" else None)
        predicted[v["slide"]] = cls
        slides.append({"slide": v["slide"], "patient": it.get("patient"), "class": truth, "predicted": cls,
                       "longest_um": longest})
    patients = []
    for who, its in sorted(nodes.items()):
        complete = all(i["slide"] in got for i in its)
        patients.append({"patient": who, "stage": its[0].get("patient_stage"), "nodes": len(its),
                         "inferred": sum(i["slide"] in got for i in its),
                         "predicted": c17.pn_stage(predicted[i["slide"]] for i in its) if complete else None})
    scored = [p for p in patients if p["stage"] and p["predicted"]]
    kappa = c17.quadratic_kappa([p["stage"] for p in scored], [p["predicted"] for p in scored]) if scored else None
    known = [s for s in slides if s["class"]]
    return {"kappa": kappa, "patients_scored": len(scored), "threshold": cfg.pn_threshold,
            "slide_accuracy": (sum(s["class"] == s["predicted"] for s in known) / len(known)) if known else None,
            "patients": patients, "slides": slides}
