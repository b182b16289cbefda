"""Masks stage, per slide: a tumor mask from the lesion annotations and a tissue mask from the pixels.

Both are PNGs under <data>/masks/, beside a per-slide JSON record. The tumor mask is rasterised at the level
nearest a 32x downsample by default, using the slide's real level_downsamples; exclusion groups are painted last.
Where that level is more than 4x finer than the target (a one-level slide), both masks are made at the target
downsample itself (the tissue from the level's pixels reduced by area), as the reference does with a thumbnail.
The tissue mask is HSV saturation, median blur, then an Otsu threshold (with a floor, so a blank slide has none).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import cv2
import numpy as np

from ..config import Masks
from ..errors import StageInputError
from ..fsutil import write_bytes, write_json
from ..slides.annotations import read_asap, rasterize
from ..slides.reader import SlideError, load_codecs, nearest_level, open_slide, read_level
from .common import StageContext, stage_record

prepare_worker = load_codecs  # run by the workers' warm-up (engines.base.import_module): no import in a first item


def tissue_mask(rgb: np.ndarray, median_blur: int = 7, min_saturation: int = 20) -> np.ndarray:
    sat = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[..., 1]
    if median_blur > 1:
        sat = cv2.medianBlur(sat, median_blur)
    otsu, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return sat > max(otsu, min_saturation)


def _level(slide, requested: int | None, target: float, path: str) -> int:
    if requested is None:
        return nearest_level(slide, target)
    if requested >= slide.level_count:
        raise SlideError(f"{path}: level {requested} requested, the slide has {slide.level_count}")
    return requested


def _too_fine(ds: float, target: float) -> bool:
    """The nearest level is more than 4x finer than the target downsample (a slide without a pyramid, or a sparse
    one): masks are then computed at the target, as the reference computes them on a thumbnail, instead of at the
    level's resolution (a one-level slide's masks were 1,024x the pixels of 32x masks, read back by the patch
    stage). A pyramid that reaches within 4x of the target keeps its level, as before."""
    return ds * 4 < target


def _reduce(rgb: np.ndarray, factor: float) -> np.ndarray:
    """The image reduced by ``factor`` (area averaging), padded white to whole output pixels first, so that output
    pixel (i, j) stands for exactly the input square starting at (i, j) x factor, as mask pixels do."""
    h, w = rgb.shape[:2]
    oh, ow = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    ph, pw = int(round(oh * factor)), int(round(ow * factor))
    if (ph, pw) != (h, w):
        padded = np.full((ph, pw, 3), 255, np.uint8)
        padded[:min(h, ph), :min(w, pw)] = rgb[:ph, :pw]
        rgb = padded
    return cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA)


def paths(out: Path, slide: str) -> dict[str, Path]:
    return {"tumor": out / f"{slide}_tumor.png", "tissue": out / f"{slide}_tissue.png",
            "record": out / f"{slide}.json"}


def run_slide(item: dict, cfg: Masks, out: str) -> dict:
    out = Path(out)
    slide = open_slide(item["path"])
    try:
        level = _level(slide, cfg.level, cfg.target_downsample, item["path"])
        tlevel = _level(slide, cfg.tissue_level, cfg.target_downsample, item["path"])
        ds = float(slide.level_downsamples[level])
        w, h = slide.level_dimensions[level]
        if cfg.level is None and _too_fine(ds, cfg.target_downsample):  # e.g. a one-level slide: masks at the target
            ds = float(cfg.target_downsample)
            w, h = (int(np.ceil(v / ds)) for v in slide.dimensions)
        tumor = np.zeros((h, w), bool)
        dots = 0
        if item.get("annotation"):
            ann = read_asap(item["annotation"], slide.dimensions)
            tumor = rasterize(ann.regions(cfg.tumor_groups), ann.regions(cfg.exclusion_groups), (h, w), ds)
            dots = len(ann.dots())
        warnings = [] if item.get("decode_warnings") == "record" else None
        pixels = read_level(slide, tlevel, item["path"], warnings)
        tds = float(slide.level_downsamples[tlevel])
        if cfg.tissue_level is None and _too_fine(tds, cfg.target_downsample):
            pixels, tds = _reduce(pixels, cfg.target_downsample / tds), float(cfg.target_downsample)
        tissue = tissue_mask(pixels, cfg.median_blur, cfg.min_saturation)
    finally:
        slide.close()
    p = paths(out, item["slide"])
    write_bytes(p["tumor"], cv2.imencode(".png", tumor.astype(np.uint8) * 255)[1].tobytes())
    write_bytes(p["tissue"], cv2.imencode(".png", tissue.astype(np.uint8) * 255)[1].tobytes())
    rec = {"slide": item["slide"], "split": item["split"], "label": item.get("label"),
           "path": item["path"], "annotation": item.get("annotation"),
           "level": level, "downsample": ds, "width": w, "height": h,
           "tissue_level": tlevel, "tissue_downsample": tds,
           "tumor_fraction": float(tumor.mean()), "tissue_fraction": float(tissue.mean()), "dots": dots,
           "tumor_mask": str(p["tumor"]), "tissue_mask": str(p["tissue"]), "files_written": 3,
           "warnings": warnings or []}
    write_json(p["record"], rec)  # last: its presence says the slide's masks are complete
    return rec


def load(out: str | Path, slide: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """The record, tumor mask and tissue mask (bool arrays) of one slide."""
    p = paths(Path(out), slide)
    try:
        p["record"].stat()  # not is_file(): an I/O error (a storage that lost its master) is no missing file
    except FileNotFoundError:
        raise StageInputError(f"{p['record']}: no masks for slide {slide!r} (the masks stage failed for it, or has not run)") from None
    rec = json.loads(_read(p["record"]))
    return rec, _mask(p["tumor"]), _mask(p["tissue"])


def _read(path: Path) -> bytes:
    """The file's bytes; an error reading it names the file (a read's OSError does not: an EIO of a storage that
    lost the file's data would name nothing)."""
    try:
        return path.read_bytes()
    except OSError as e:
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e


def _mask(path: Path) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(_read(path), np.uint8), cv2.IMREAD_GRAYSCALE)  # cv2.imread: None on any error
    if img is None:
        raise StageInputError(f"{path}: not a readable mask image")
    return img > 0


def drive(ctx: StageContext) -> dict:
    """Masks of every slide, training and testing."""
    fn = functools.partial(run_slide, cfg=ctx.workload.masks, out=str(ctx.data / "masks"))
    return stage_record(ctx, "masks", ctx.map("masks", fn, ctx.items()))
