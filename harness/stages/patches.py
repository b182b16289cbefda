"""Patch stage, per slide: a labelled grid over the masks, then the selected patches cut and JPEG-encoded.

Labels use the whole patch footprint: the tissue share from the tissue mask; the tumor share from the tumor
mask where the footprint (with a one-pixel margin) is all tumor or all not, and otherwise from the lesion
polygons themselves, rasterised over the patch, so a patch near a lesion border is labelled exactly.
Pixels come from a TileReader: the source tiles under selected patches are decoded once each, in a row-major
sweep; background that no patch needs is never decoded.

Outputs: JPEG files ``patches/{tumor,normal}/<slide>_<x>_<y>.jpg`` or one TFRecord file per slide
``patches/records/<slide>.tfrecord``, then the manifest ``patches/manifests/<slide>.parquet`` (written
last, atomically: its presence and verification mean the slide is complete). Manifest paths are relative
to the workload's data folder, so the data stays valid wherever the storage is mounted.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import zlib
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import tfrecord_format
from ..config import Patches
from ..fsutil import atomic_path, remove_temporaries, write_bytes
from ..slides.annotations import rasterize, read_asap, sample_points
from ..slides.reader import SlideError, TileReader, load_codecs, mpp, open_slide
from . import masks as masks_stage
from .common import StageContext, stage_record

LABELS = {"normal": 0, "tumor": 1}

prepare_worker = load_codecs  # run by the workers' warm-up (engines.base.import_module): no import in a first item


def manifest_path(out: Path, slide: str) -> Path:
    return out / "manifests" / f"{slide}.parquet"


def _params(cfg: Patches, mask_rec: dict) -> str:
    """What the outputs depend on; a manifest made with other settings is not reused."""
    d = cfg.model_dump()
    d["masks"] = {k: mask_rec[k] for k in ("level", "downsample", "tumor_fraction", "tissue_fraction")}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def verify(manifest: Path, params: str | None = None) -> bool:
    """True when the manifest exists, matches params, and every patch it lists is on disk, intact."""
    base = manifest.parent.parent.parent  # paths are relative to the workload's data folder
    if not manifest.is_file():
        return False
    try:
        table = pq.read_table(manifest)
    except (OSError, pa.ArrowException):
        return False
    meta = table.schema.metadata or {}
    if params is not None and meta.get(b"params", b"").decode() != params:
        return False
    rows = table.to_pylist()
    try:
        for r in rows:
            path = base / r["path"]
            with open(path, "rb") as f:
                if r["offset"]:
                    f.seek(r["offset"])
                data = f.read(r["bytes"])
            if len(data) != r["bytes"] or zlib.crc32(data) != r["crc32"]:
                return False
            if not r["offset"] and os.path.getsize(path) != r["bytes"]:
                return False
    except OSError:
        return False
    return True


def _sat(mask: np.ndarray) -> np.ndarray:
    """Summed-area table of a bool mask (one row and column of zeros in front)."""
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int32)
    np.cumsum(mask, axis=0, dtype=np.int32, out=sat[1:, 1:])
    np.cumsum(sat[1:, 1:], axis=1, out=sat[1:, 1:])
    return sat


def _fractions(sat: np.ndarray, ds: float, xs: np.ndarray, ys: np.ndarray, size0: float, margin: int = 0):
    """Share of True mask pixels under each footprint (level-0 x, y, side size0) of the grid ys x xs.

    ``sat`` is the summed-area table of a mask at downsample ds; every mask pixel the footprint touches counts,
    plus ``margin`` pixels around.
    """
    h, w = sat.shape[0] - 1, sat.shape[1] - 1
    x0 = np.clip(np.floor(xs / ds).astype(int) - margin, 0, w)
    y0 = np.clip(np.floor(ys / ds).astype(int) - margin, 0, h)
    x1 = np.clip(np.ceil((xs + size0) / ds).astype(int) + margin, 0, w)
    y1 = np.clip(np.ceil((ys + size0) / ds).astype(int) + margin, 0, h)
    total = sat[y1[:, None], x1] - sat[y0[:, None], x1] - sat[y1[:, None], x0] + sat[y0[:, None], x0]
    return total / (np.maximum(y1 - y0, 1)[:, None] * np.maximum(x1 - x0, 1)[None, :])


BLOCK = 4096  # level px: border patches are rasterised together in blocks of about this side


def _border_shares(xs: np.ndarray, ys: np.ndarray, read: int, ds: float, inc: list[np.ndarray],
                   exc: list[np.ndarray]) -> np.ndarray:
    """The tumor share of each patch at level position (xs[i], ys[i]), side ``read`` at downsample ``ds``.

    The patches are grouped in blocks of about BLOCK level px; each block is rasterised once, from only the
    polygons whose bounding boxes reach it, and each patch's share read from its part of the block. So the cost
    grows with vertices x blocks, not vertices x patches (a 10^5-vertex lesion took 30 s a slide, patch by patch).
    The block's origin is on the patches' level-pixel grid, so pixels are those of a patch-by-patch rasterisation
    except where a polygon crossed a lone patch's edge: there Pillow painted a few pixels wrongly."""
    boxes = [[(p.min(0), p.max(0)) for p in polys] for polys in (inc, exc)]
    out = np.empty(len(xs))
    keys = (ys // BLOCK) * (int(xs.max()) // BLOCK + 1) + xs // BLOCK
    for key in np.unique(keys):
        sel = np.nonzero(keys == key)[0]
        x0, y0 = int(xs[sel].min()), int(ys[sel].min())
        x1, y1 = int(xs[sel].max()) + read, int(ys[sel].max()) + read
        lo, hi = np.array([x0 - 1, y0 - 1]) * ds, np.array([x1 + 1, y1 + 1]) * ds
        near = [[p for p, (a, b) in zip(polys, bb) if (a <= hi).all() and (b >= lo).all()]
                for polys, bb in zip((inc, exc), boxes)]
        m = rasterize(near[0], near[1], (y1 - y0, x1 - x0), ds, (x0 * ds, y0 * ds))
        for i in sel:
            x, y = int(xs[i]) - x0, int(ys[i]) - y0
            out[i] = m[y:y + read, x:x + read].mean()
    return out


def geometry(item: dict, cfg: Patches, slide) -> tuple[int, float]:
    """(pyramid level, scale): the level patches are cut from and the size of a patch's pixel in that level's
    pixels (1.0 unless patches.mpp asks for a resolution between levels)."""
    if cfg.mpp is not None:
        smpp = mpp(slide)
        if smpp is None:
            raise SlideError(f"{item['path']}: patches.mpp is set but the slide records no microns per pixel")
        lmpp = smpp * np.asarray(slide.level_downsamples)
        level = int(np.argmin(np.where(lmpp <= cfg.mpp * 1.01, cfg.mpp / lmpp, np.inf)))  # finest level not coarser
        return level, cfg.mpp / lmpp[level]
    if cfg.level >= slide.level_count:
        raise SlideError(f"{item['path']}: patch level {cfg.level} requested, the slide has {slide.level_count}")
    return cfg.level, 1.0


def grid(item: dict, cfg: Patches, mask_rec: dict, tumor_m: np.ndarray, tissue_m: np.ndarray, slide,
         stride: int | None = None) -> dict:
    """The patch grid of one slide with each footprint's tissue and tumor shares (arrays of shape (rows, cols))."""
    level, scale = geometry(item, cfg, slide)
    ds = float(slide.level_downsamples[level])
    read = max(1, round(cfg.size * scale))
    stride = max(1, round((stride or cfg.stride or cfg.size) * scale))
    W, H = slide.level_dimensions[level]
    gx = np.arange(0, W - read + 1, stride)
    gy = np.arange(0, H - read + 1, stride)
    xs0, ys0, size0 = gx * ds, gy * ds, read * ds  # level-0 footprint
    tissue = _fractions(_sat(tissue_m), mask_rec["tissue_downsample"], xs0, ys0, size0)
    mds = mask_rec["downsample"]
    if tumor_m.any():
        tumor_sat = _sat(tumor_m)
        tumor = _fractions(tumor_sat, mds, xs0, ys0, size0)
        near = _fractions(tumor_sat, mds, xs0, ys0, size0, margin=1)
    else:  # a slide without lesions
        tumor = near = np.zeros((len(ys0), len(xs0)))
    any_near, all_near = near > 0, near >= 1
    tumor = np.where(any_near, tumor, 0.0)
    tumor = np.where(all_near, 1.0, tumor)
    border = any_near & ~all_near
    if border.any():  # exact shares from the polygons, at the patch's own resolution
        ann = read_asap(item["annotation"], slide.dimensions)
        iy, ix = np.nonzero(border)
        tumor[iy, ix] = _border_shares(gx[ix], gy[iy], read, ds, ann.regions(item["tumor_groups"]),
                                       ann.regions(item["exclusion_groups"]))
    return {"level": level, "downsample": ds, "read": read, "gx": gx, "gy": gy, "tissue": tissue, "tumor": tumor}


def _point_fractions(sat: np.ndarray, ds: float, xs: np.ndarray, ys: np.ndarray, size0: float) -> np.ndarray:
    """Share of True mask pixels under the footprint of each point (level-0 xs[i], ys[i], side size0): as
    ``_fractions``, point by point instead of over a grid."""
    h, w = sat.shape[0] - 1, sat.shape[1] - 1
    x0, y0 = np.clip(np.floor(xs / ds).astype(int), 0, w), np.clip(np.floor(ys / ds).astype(int), 0, h)
    x1 = np.clip(np.ceil((xs + size0) / ds).astype(int), 0, w)
    y1 = np.clip(np.ceil((ys + size0) / ds).astype(int), 0, h)
    total = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    return total / (np.maximum(y1 - y0, 1) * np.maximum(x1 - x0, 1))


def reference_candidates(mask: np.ndarray, stride: int) -> np.ndarray:
    """The reference pipeline's candidate points (mask pixel x, y) of one mask, in its order: for each external
    contour of the mask (OpenCV's findContours order), the points of its bounding box, x in range(x, x + w,
    stride) outer, y in range(y, y + h, stride) inner. Where bounding boxes overlap, a point comes more than once,
    as it did there."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = [np.zeros((0, 2), np.int64)]
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        xx, yy = np.meshgrid(np.arange(x, x + w, stride), np.arange(y, y + h, stride), indexing="ij")
        out.append(np.c_[xx.ravel(), yy.ravel()])
    return np.concatenate(out)


def reference_accept(cands: np.ndarray, mask: np.ndarray, limit: int) -> tuple[np.ndarray, int]:
    """(indices of the accepted candidates, candidates looked at), as the reference: every q-th candidate
    (q = floor(candidates / limit) + 1: the q-th, the 2q-th, ...), accepted when the mask pixel at the point (its
    patch's top-left corner) is set, stopping once ``limit`` are accepted."""
    q = len(cands) // limit + 1
    looked = np.arange(q - 1, len(cands), q)
    accepted = looked[mask[cands[looked, 1], cands[looked, 0]]][:limit]
    stop = int(np.searchsorted(looked, accepted[-1]) + 1) if len(accepted) == limit else len(looked)
    return accepted, stop


def plan_reference(item: dict, cfg: Patches, mask_rec: dict, tumor_m: np.ndarray, tissue_m: np.ndarray,
                   slide) -> dict:
    """``patches.sampling = "reference"``: the patches the reference pipeline cut from one slide.

    Tumor patches: candidates on the tumour mask's contours' bounding boxes, a stride of stride_tumor level px
    (64 at level 0: 2 pixels of the 32x mask); normal patches likewise on the tissue mask with stride_normal (320:
    10 pixels). Each class: every q-th candidate, accepted when its mask pixel is set, at most max_per_class
    (``reference_accept``). A candidate's mask pixel (x, y) is the patch at level 0 (x, y) x the mask's
    downsample (the reference's 2^5). The tumour mask is the one the reference read, level 5 of an ASAP mask TIFF:
    pixel (x, y) is the annotation at that level-0 point, the patch's corner (``sample_points``), not at the
    pixel's centre as the masks stage paints it. Normal patches of a tumor slide (normal_from_tumor_slides) come
    from its tissue without the tumour. The recorded tumour and tissue shares are the masks' over the footprint,
    at mask resolution."""
    level, scale = geometry(item, cfg, slide)
    ds = float(slide.level_downsamples[level])
    read = max(1, round(cfg.size * scale))
    size0 = read * ds
    mds, tds = mask_rec["downsample"], mask_rec["tissue_downsample"]
    tumor_sat, tissue_sat = _sat(tumor_m), _sat(tissue_m)
    if item.get("annotation"):  # the corner-sampled tumour mask, as the reference's mask TIFF held it
        ann = read_asap(item["annotation"], slide.dimensions)
        tumor_m = sample_points(ann.regions(item["tumor_groups"]), ann.regions(item["exclusion_groups"]),
                                tumor_m.shape, mds)
    chosen, stats = [], {"candidates": 0, "looked_at": 0, "duplicates": 0}
    for name in ("tumor", "normal"):
        if name == "normal" and item.get("label") == "tumor" and not cfg.normal_from_tumor_slides:
            continue
        stride = (cfg.stride_tumor if name == "tumor" else cfg.stride_normal) or cfg.stride or cfg.size
        if name == "tumor":
            mask, mask_ds = tumor_m, mds
        else:
            mask, mask_ds = tissue_m, tds
            if tumor_m.any():  # a tumor slide's normal patches: its tissue less the tumour
                mask = mask & ~(cv2.resize(tumor_m.astype(np.uint8), mask.shape[::-1],
                                           interpolation=cv2.INTER_NEAREST) > 0)
        step = max(1, round(stride * scale * ds / mask_ds))  # the stride in mask pixels
        cands = reference_candidates(mask, step)
        if not len(cands):
            continue
        accepted, looked = reference_accept(cands, mask, cfg.max_per_class)
        pts = cands[accepted]
        stats["candidates"] += len(cands)
        stats["looked_at"] += looked
        stats["duplicates"] += len(pts) - len(np.unique(pts, axis=0))
        xs0, ys0 = pts[:, 0] * mask_ds, pts[:, 1] * mask_ds
        tumor = _point_fractions(tumor_sat, mds, xs0, ys0, size0)
        tissue = _point_fractions(tissue_sat, tds, xs0, ys0, size0)
        chosen += [(int(round(y / ds)), int(round(x / ds)), name, float(a), float(b))
                   for x, y, a, b in zip(xs0, ys0, tumor, tissue)]
    chosen.sort()
    return {"level": level, "downsample": ds, "read": read, "patches": chosen, **stats}


def plan(item: dict, cfg: Patches, mask_rec: dict, tumor_m: np.ndarray, tissue_m: np.ndarray, slide) -> dict:
    """Grid, labels and the seeded per-class selection for one slide; each class on its own stride when
    ``stride_tumor`` / ``stride_normal`` are set (one grid when they agree). ``patches.sampling = "reference"``:
    the reference pipeline's rule instead (``plan_reference``)."""
    if cfg.sampling == "reference":
        return plan_reference(item, cfg, mask_rec, tumor_m, tissue_m, slide)
    rng = np.random.default_rng([cfg.seed, zlib.crc32(item["slide"].encode())])
    grids: dict = {}
    chosen = []
    for name in ("tumor", "normal"):
        stride = (cfg.stride_tumor if name == "tumor" else cfg.stride_normal) or cfg.stride
        if name == "tumor" and not tumor_m.any():
            continue  # no lesion: no tumor patch, and no fine grid to compute
        if name == "normal" and item.get("label") == "tumor" and not cfg.normal_from_tumor_slides:
            continue
        if stride not in grids:
            grids[stride] = grid(item, cfg, mask_rec, tumor_m, tissue_m, slide, stride=stride)
        g = grids[stride]
        gx, gy, tumor, tissue = g["gx"], g["gy"], g["tumor"], g["tissue"]
        sel = tumor >= cfg.tumor_threshold if name == "tumor" else (tumor == 0) & (tissue >= cfg.tissue_threshold)
        iy, ix = np.nonzero(sel)
        if len(iy) > cfg.max_per_class:
            keep = np.sort(rng.choice(len(iy), cfg.max_per_class, replace=False))
            iy, ix = iy[keep], ix[keep]
        chosen += [(int(gy[a]), int(gx[b]), name, float(tumor[a, b]), float(tissue[a, b])) for a, b in zip(iy, ix)]
    chosen.sort()
    if not grids:  # nothing to cut: the level and size still come from the grid of the default stride
        grids[None] = grid(item, cfg, mask_rec, tumor_m, tissue_m, slide)
    g = next(iter(grids.values()))
    return {"level": g["level"], "downsample": g["downsample"], "read": g["read"], "patches": chosen,
            "candidates": int(sum(v["gx"].size * v["gy"].size for v in grids.values()))}


def run_slide(item: dict, cfg: Patches, masks_dir: str, out: str) -> dict:
    out = Path(out)
    slide_name = item["slide"]
    mask_rec, tumor_m, tissue_m = masks_stage.load(masks_dir, slide_name)
    params = _params(cfg, mask_rec)
    manifest = manifest_path(out, slide_name)
    if verify(manifest, params):
        t = pq.read_table(manifest, columns=["label", "bytes"]).to_pandas()
        return {"slide": slide_name, "skipped": True, "patches": len(t), "bytes": int(t.bytes.sum()),
                **_by_class(t.to_dict("records")), "files_written": 0}
    slide = open_slide(item["path"])
    try:
        p = plan(item, cfg, mask_rec, tumor_m, tissue_m, slide)
        with TileReader(item["path"], p["level"], slide, item.get("decode_warnings", "error")) as reader:
            rows = _extract(reader, p, cfg, item, out)
            decoded, warnings = reader.tiles_decoded, reader.warnings
    finally:
        slide.close()
    table = pa.Table.from_pylist(rows, schema=_SCHEMA).replace_schema_metadata({"params": params})
    with atomic_path(manifest) as tmp:
        pq.write_table(table, tmp)
    files = (len(rows) if cfg.output == "jpeg" else 1) + 1
    extra = {k: p[k] for k in ("looked_at", "duplicates") if k in p}  # the reference sampling's
    return {"slide": slide_name, "skipped": False, "patches": len(rows), **_by_class(rows),
            "candidates": p["candidates"], **extra, "tiles_decoded": decoded, "bytes": sum(r["bytes"] for r in rows),
            "files_written": files, "warnings": warnings}


def _by_class(rows) -> dict:
    """Patches and their bytes per class: ``tumor``, ``normal``, ``tumor_bytes``, ``normal_bytes``."""
    out = {}
    for label in LABELS:
        mine = [r["bytes"] for r in rows if r["label"] == label]
        out[label], out[f"{label}_bytes"] = len(mine), int(sum(mine))
    return out


_SCHEMA = pa.schema([("slide", pa.string()), ("x", pa.int64()), ("y", pa.int64()), ("level", pa.int32()),
                     ("label", pa.string()), ("tumor_fraction", pa.float32()), ("tissue_fraction", pa.float32()),
                     ("bytes", pa.int64()), ("path", pa.string()), ("offset", pa.int64()), ("crc32", pa.int64())])


def _extract(reader: TileReader, p: dict, cfg: Patches, item: dict, out: Path) -> list[dict]:
    ds, read, level = p["downsample"], p["read"], p["level"]
    slide = item["slide"]
    rows = []
    written: list[str] = []
    folder = {label: os.path.join(out, label) for label in LABELS}
    buf = np.empty((read, read, 3), np.uint8)  # reused: no allocation per patch
    seen: dict[tuple, int] = {}  # the reference sampling can cut the same patch twice: each is its own file
    try:
        with contextlib.ExitStack() as stack:
            records = None
            if cfg.output == "tfrecord":
                path = out / "records" / f"{slide}.tfrecord"
                records = stack.enter_context(open(stack.enter_context(atomic_path(path)), "wb",
                                                   buffering=tfrecord_format.RECORD_BUFFER))
                end = 0  # bytes written to the records file
            for y, x, label, tfrac, tisfrac in p["patches"]:
                reader.forget_above(y)
                px = reader.region(x, y, read, read, out=buf)
                if read != cfg.size:
                    px = cv2.resize(px, (cfg.size, cfg.size), interpolation=cv2.INTER_AREA)
                jpeg = imagecodecs.jpeg8_encode(px, level=cfg.jpeg_quality)
                x0, y0 = round(x * ds), round(y * ds)
                if records is None:
                    copy = seen[label, x0, y0] = seen.get((label, x0, y0), -1) + 1
                    name = f"{slide}_{x0}_{y0}.jpg" if not copy else f"{slide}_{x0}_{y0}_{copy}.jpg"
                    write_bytes(os.path.join(folder[label], name), jpeg)
                    written.append(os.path.join(folder[label], name))
                    rel, data, offset = f"patches/{label}/{name}", jpeg, 0
                else:
                    data = tfrecord_format.patch_example(jpeg, LABELS[label], slide, x0, y0, cfg.size, cfg.size)
                    offset = end + 12  # the data follows the 12-byte record header
                    end += tfrecord_format.write_record(records, data)
                    rel = f"patches/records/{slide}.tfrecord"
                rows.append({"slide": slide, "x": x0, "y": y0, "level": level, "label": label,
                             "tumor_fraction": tfrac, "tissue_fraction": tisfrac, "bytes": len(data),
                             "path": rel, "offset": offset, "crc32": zlib.crc32(data)})
    except BaseException:
        for f in written:  # a failed slide leaves none of its patches behind
            os.unlink(f)
        raise
    return rows


def drive(ctx: StageContext) -> dict:
    """Patches of the training slides."""
    out = ctx.data / "patches"
    if out.exists():
        remove_temporaries(out, ctx.data)
    fn = functools.partial(run_slide, cfg=ctx.workload.patches, masks_dir=str(ctx.data / "masks"), out=str(out))
    mapped = ctx.map("patches", fn, ctx.items("training"))
    done = [o.value for o in mapped.outcomes if not o.error]
    cut = [v for v in done if not v["skipped"]]  # slides found complete are resumed work, not throughput
    n = sum(v["patches"] for v in cut)
    cfg = ctx.workload.patches
    # what the patch folders hold per class (resumed slides included), to set beside the reference's totals
    per_class = {label: {"patches": sum(v[label] for v in done), "bytes": sum(v[f"{label}_bytes"] for v in done),
                         "files": sum(v[label] for v in done) if cfg.output == "jpeg" else 0,
                         "slides": sum(bool(v[label]) for v in done)} for label in LABELS}
    return stage_record(ctx, "patches", mapped, patches=n, patches_per_s=mapped.rate(n),
                        skipped=len(done) - len(cut), skipped_patches=sum(v["patches"] for v in done if v["skipped"]),
                        sampling=cfg.sampling, per_class=per_class)
