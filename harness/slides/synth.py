"""Synthetic CAMELYON16-like slides: pyramidal, tiled, JPEG-compressed TIFFs with lesion annotations.

The slide layout is vector geometry (tissue islands, lesions inside them, holes inside lesions). Each pyramid
level is written tile by tile: a tile wholly inside one class (background, normal tissue, tumor) is taken,
already JPEG-encoded, from a small bank of texture tiles made once per slide and level; only the tiles that a
boundary crosses are composed pixel by pixel and encoded. The cost therefore grows with the perimeter of
the tissue, not its area, which is what makes 100k x 100k slides take seconds instead of hours.

Lower levels are rendered from the same layout with textures of their own scale (each bank tile of level l is
an area-downsampled mosaic of four level l-1 bank tiles), not by downsampling level 0 pixel by pixel.
"""
from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import tifffile

from ..errors import RunError
from .annotations import polygon_area, rasterize, smooth_blob, write_asap

VERSION = 3       # bump when the output of a given seed changes
TILE = 256
BANK = 12          # texture tiles per class and level
BG, NORMAL, TUMOR = 0, 1, 2


@dataclass
class Layout:
    size: int
    islands: list[np.ndarray]
    lesions: list[np.ndarray]
    holes: list[np.ndarray]

    def to_json(self) -> dict:
        return {"size": self.size, **{k: [p.round(2).tolist() for p in getattr(self, k)]
                                      for k in ("islands", "lesions", "holes")}}

    @classmethod
    def from_json(cls, d: dict) -> "Layout":
        return cls(d["size"], *[[np.asarray(p, float) for p in d[k]] for k in ("islands", "lesions", "holes")])

    def label(self, shape: tuple[int, int], downsample: float, origin=(0.0, 0.0)) -> np.ndarray:
        """Class of each pixel (BG / NORMAL / TUMOR) of a raster at ``downsample`` from ``origin``."""
        tissue = rasterize(self.islands, [], shape, downsample, origin)
        tumor = rasterize(self.lesions, self.holes, shape, downsample, origin)
        return np.where(tumor & tissue, TUMOR, tissue.astype(np.uint8)).astype(np.uint8)


def make_layout(rng: np.random.Generator, size: int, tumor: bool) -> Layout:
    islands, lesions, holes = [], [], []
    for _ in range(rng.integers(2, 4)):
        for _try in range(50):
            r = size * rng.uniform(0.12, 0.21)
            cx, cy = rng.uniform(r * 1.3, size - r * 1.3, 2)
            if all(math.hypot(cx - c[0], cy - c[1]) > r + rr + size * 0.02 for c, rr in
                   [(isl.mean(0), np.linalg.norm(isl - isl.mean(0), axis=1).max()) for isl in islands]):
                islands.append(smooth_blob(rng, cx, cy, r, n=128, roughness=0.12))
                break
    if tumor:
        hosts = rng.permutation(len(islands))[: rng.integers(1, 3)]
        for h in hosts:
            isl = islands[h]
            c = isl.mean(0)
            rmin = np.linalg.norm(isl - c, axis=1).min()
            rl = rmin * rng.uniform(0.45, 0.65)
            off = rng.uniform(0, max(0.0, rmin * 0.85 - rl * 1.2)) * np.array([math.cos(a := rng.uniform(0, 6.3)), math.sin(a)])
            les = smooth_blob(rng, *(c + off), rl, n=96, roughness=0.15)
            lesions.append(les)
            if rng.random() < 0.5:
                holes.append(smooth_blob(rng, *(c + off), rl * 0.25, n=48, roughness=0.1))
    return Layout(size, islands, lesions, holes)


# --- textures ------------------------------------------------------------------------------------------

def _stain(rng: np.random.Generator) -> dict:
    """Per-slide stain: slides differ in colour, as real ones do, so colour alone does not tell classes apart."""
    j = lambda s: rng.normal(0, s, 3)
    return {"stroma": np.array([232, 160, 200]) + j(10), "nucleus": np.array([95, 55, 150]) + j(12),
            "background": np.array([245, 244, 246]) + rng.normal(0, 2)}


def _texture(rng: np.random.Generator, cls: int, stain: dict, pale: float = 3.0) -> np.ndarray:
    """One level-0 TILE x TILE texture tile of normal tissue or tumor."""
    n = TILE
    low = cv2.resize(rng.normal(0, 1, (n // 16, n // 16)).astype(np.float32), (n, n), interpolation=cv2.INTER_CUBIC)
    fib = cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), sigmaX=6, sigmaY=1)
    tone = rng.normal(0, 6)  # tile-level intensity jitter shared by both classes
    if cls == TUMOR:  # tumor stroma is paler, so more nuclei do not simply mean a darker tile
        tone += pale
    base = stain["stroma"] + tone + 6 * low[..., None] + 10 * fib[..., None]
    img = np.clip(base, 0, 255).astype(np.uint8)
    if cls == NORMAL:
        count, rad, dark, irregular = rng.integers(22, 40), (3.0, 5.0), 0.0, 0.1
    else:
        count, rad, dark, irregular = rng.integers(30, 50), (4.5, 7.0), 15.0, 0.35
    nuc = np.clip(stain["nucleus"] - dark + rng.normal(0, 6), 0, 255)
    for _ in range(count):
        cx, cy = rng.uniform(-4, n + 4, 2)
        r = rng.uniform(*rad)
        k = 12
        t = np.linspace(0, 2 * math.pi, k, endpoint=False)
        rr = r * (1 + irregular * rng.uniform(-1, 1, k)) * np.where(np.arange(k) % 2, 1, rng.uniform(0.6, 1.0))
        ang = rng.uniform(0, math.pi)
        pts = np.stack([cx + rr * np.cos(t + ang), cy + rr * 0.75 * np.sin(t + ang)], 1)
        colour = tuple(float(c) for c in np.clip(nuc + rng.normal(0, 10), 0, 255))
        cv2.fillPoly(img, [np.round(pts * 4).astype(np.int32)], colour, lineType=cv2.LINE_AA, shift=2)
    return cv2.GaussianBlur(img, (0, 0), 0.7)


def _background(rng: np.random.Generator, stain: dict) -> np.ndarray:
    noise = rng.normal(0, 1.5, (TILE, TILE, 1))
    return np.clip(stain["background"] + noise, 0, 255).astype(np.uint8)


class _Bank:
    """Per level and class, BANK texture tiles (pixels and their JPEG bytes)."""

    def __init__(self, rng: np.random.Generator, levels: int, stain: dict, quality: int):
        self.quality = quality
        pix = {BG: [_background(rng, stain)], NORMAL: [_texture(rng, NORMAL, stain) for _ in range(BANK)],
               TUMOR: [_texture(rng, TUMOR, stain) for _ in range(BANK)]}
        self.pixels = [pix]
        for _ in range(1, levels):
            prev, cur = self.pixels[-1], {}
            for cls, tiles in prev.items():
                cur[cls] = []
                for _ in range(len(tiles)):
                    idx = rng.integers(len(tiles), size=4)
                    mosaic = np.vstack([np.hstack([tiles[idx[0]], tiles[idx[1]]]),
                                        np.hstack([tiles[idx[2]], tiles[idx[3]]])])
                    cur[cls].append(cv2.resize(mosaic, (TILE, TILE), interpolation=cv2.INTER_AREA))
            self.pixels.append(cur)
        self.jpeg = [{c: [self.encode(t) for t in ts] for c, ts in lv.items()} for lv in self.pixels]

    def encode(self, tile: np.ndarray) -> bytes:
        return imagecodecs.jpeg8_encode(tile, level=self.quality)


def level_count(size: int, smallest: int = 1024) -> int:
    n = 1
    while math.ceil(size / 2 ** (n - 1)) > smallest:
        n += 1
    return n


def write_slide(path: str | Path, layout: Layout, rng: np.random.Generator, mpp: float = 0.25,
                quality: int = 85) -> dict:
    """Write one pyramidal slide. Returns a small record (levels, tiles encoded, bytes)."""
    size = layout.size
    levels = level_count(size)
    stain = _stain(rng)
    bank = _Bank(rng, levels, stain, quality)
    # class map on a coarse grid: `cell` level-0 pixels per cell, a power of two dividing TILE
    cell = int(min(64, max(4, 2 ** math.ceil(math.log2(size / 2048)))))
    ncell = math.ceil(size / (TILE * 2 ** (levels - 1))) * TILE * 2 ** (levels - 1) // cell
    coarse = layout.label((ncell, ncell), cell)
    # a cell is "edge" when any neighbour differs; tiles containing an edge cell are composed pixel by pixel
    pad = np.pad(coarse, 1, mode="edge")
    edge = np.zeros_like(coarse, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            edge |= pad[1 + dy: 1 + dy + ncell, 1 + dx: 1 + dx + ncell] != coarse
    encoded = 0
    tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=size > 30000) as tw:
            for lvl in range(levels):
                ds = 2 ** lvl
                dim = math.ceil(size / ds)
                per = TILE * ds // cell  # cells per tile side at this level
                nt = math.ceil(dim / TILE)
                blocks = lambda a, f: f(a[: nt * per, : nt * per].reshape(nt, per, nt, per), axis=(1, 3))
                mixed = blocks(edge, np.any) | (blocks(coarse, np.max) != blocks(coarse, np.min))
                cls_of = blocks(coarse, np.max)
                pick = rng.integers(BANK, size=(nt, nt))
                lv_pix, lv_jpg = bank.pixels[lvl], bank.jpeg[lvl]

                def tiles():
                    nonlocal encoded
                    for ty in range(nt):
                        for tx in range(nt):
                            k = pick[ty, tx]
                            if not mixed[ty, tx]:
                                c = int(cls_of[ty, tx])
                                yield lv_jpg[c][k % len(lv_jpg[c])]
                                continue
                            lab = layout.label((TILE, TILE), ds, (tx * TILE * ds, ty * TILE * ds))
                            img = np.where((lab == TUMOR)[..., None], lv_pix[TUMOR][k], lv_pix[NORMAL][k])
                            img = np.where((lab == BG)[..., None], lv_pix[BG][0], img)
                            encoded += 1
                            yield bank.encode(img)

                res = 1e4 / (mpp * ds)  # pixels per centimetre
                tw.write(tiles(), shape=(dim, dim, 3), dtype="uint8", tile=(TILE, TILE), compression="jpeg",
                         photometric="rgb", subfiletype=0 if lvl == 0 else 1, resolution=(res, res),
                         resolutionunit="CENTIMETER", metadata=None,
                         description=f"wsibench synthetic slide |MPP = {mpp}" if lvl == 0 else None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"levels": levels, "tiles_encoded": encoded, "bytes": os.path.getsize(path)}


# --- datasets ------------------------------------------------------------------------------------------

def plan(slides: int, tumor_fraction: float, test_fraction: float) -> list[tuple[str, str, bool]]:
    """(split, name, is_tumor) for every slide, in CAMELYON16 naming."""
    n_tumor = round(slides * tumor_fraction)
    out, counters = [], {"normal": 0, "tumor": 0, "test": 0}
    for cls, n in (("normal", slides - n_tumor), ("tumor", n_tumor)):
        n_test = round(n * test_fraction)
        if n >= 2 and test_fraction > 0:
            n_test = max(1, n_test)
        for i in range(n):
            if i < n - n_test:
                counters[cls] += 1
                out.append(("training", f"{cls}_{counters[cls]:03d}", cls == "tumor"))
            else:
                counters["test"] += 1
                out.append(("testing", f"test_{counters['test']:03d}", cls == "tumor"))
    return out


def slide_seed(seed: int, name: str) -> int:
    return seed * 1_000_003 + zlib.crc32(name.encode())


def generate_one(out: str, split: str, name: str, tumor: bool, size: int, seed: int, mpp: float) -> dict:
    """Generate one slide, its annotation (tumor slides) and its ground-truth layout."""
    out = Path(out)
    rng = np.random.default_rng(slide_seed(seed, name))
    layout = make_layout(rng, size, tumor)
    img_dir = out / split / ("images" if split == "testing" else ("tumor" if tumor else "normal"))
    ann_dir = out / split / "lesion_annotations"
    truth_dir = out / "ground_truth"
    for d in (img_dir, ann_dir, truth_dir):
        d.mkdir(parents=True, exist_ok=True)
    if tumor:
        groups = [(f"_{i % 2}", p) for i, p in enumerate(layout.lesions)] + [("_2", h) for h in layout.holes]
        write_asap(ann_dir / f"{name}.xml", groups)
    (truth_dir / f"{name}.json").write_text(json.dumps(layout.to_json()))
    rec = write_slide(img_dir / f"{name}.tif", layout, rng, mpp)
    tumor_area = sum(polygon_area(p) for p in layout.lesions) - sum(polygon_area(p) for p in layout.holes)
    return {"slide": name, "split": split, "tumor": tumor, "path": str(img_dir / f"{name}.tif"),
            "tumor_fraction": tumor_area / size ** 2, **rec}


def generate(out: str | Path, slides: int, size: int, seed: int, tumor_fraction: float = 0.5,
             test_fraction: float = 0.25, mpp: float = 0.25, engine=None, progress=None) -> list[dict]:
    """Generate a CAMELYON16-layout dataset under ``out``; slides in parallel through ``engine``."""
    from ..engines import make_engine, run_all

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = [(str(out), split, name, tumor, size, seed, mpp) for split, name, tumor in
             plan(slides, tumor_fraction, test_fraction)]
    own = engine is None
    engine = engine or make_engine("multiprocessing", workers=min(len(items), os.cpu_count() or 1))
    try:
        results = run_all(engine, _generate_item, items, label="synth", progress=progress)
    finally:
        if own:
            engine.close()
    failed = [r for r in results if r.error]
    if failed:
        raise RunError(f"synthetic generation failed: {failed[0].item[2]}: {failed[0].error}")
    records = [r.value for r in results]
    rows = [f"{r['slide']},{'Tumor' if r['tumor'] else 'Normal'}" for r in records if r["split"] == "testing"]
    (out / "testing").mkdir(exist_ok=True)
    (out / "testing" / "reference.csv").write_text("".join(row + "\n" for row in rows))
    return records


def _generate_item(item):
    return generate_one(*item)
