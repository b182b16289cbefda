"""Synthetic CAMELYON16-like slides: pyramidal, tiled (512 px), JPEG-compressed TIFFs with lesion annotations.

The slide layout is vector geometry: tissue islands, lesions inside them (main lesions and, with ``difficulty``,
micro-metastases and isolated tumour cells), holes inside lesions. Pixels follow the Beer-Lambert model of H&E:
a hematoxylin and an eosin optical-density map, turned into RGB with stain vectors drawn per slide, so slides
differ in colour as real ones do.

Per slide and class, two texture atlases are drawn once: A (eosin stroma or cytoplasm, fibres, gaps, half the
nuclei) and B (the other nuclei). Every level-0 tissue tile is the darker (``cv2.min``) of an A crop and a B crop
taken at independent random offsets, then JPEG-encoded: no two tiles share their pixels, so no two patches
repeat (two patches agree only where both offsets coincide). Tiles that a class boundary crosses are composed
from a tile of each class through a label raster. Levels >= 1 hold a small bank of pre-encoded tiles per class
(area-downsampled mosaics of the level above), so their cost is the boundary tiles alone.

What makes the task harder (``difficulty``, 0 to 1): more stain variation between slides, tumour nuclei closer
to normal ones (darkness and coverage first, then size, outline and nucleoli), and more micro-metastases and
isolated tumour cells.
Class colour is balanced per slide: the mean colour of tumour tissue is moved to that of normal tissue, so
colour alone does not tell the classes apart.
"""
from __future__ import annotations

import json
import math
import os
import sys
import zlib
from dataclasses import dataclass, fields
from statistics import NormalDist
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import tifffile

from ..errors import RunError
from ..fsutil import remove
from .annotations import polygon_area, rasterize, smooth_blob, write_asap

VERSION = 4        # bump when the output of a given seed changes
TILE = 512         # as in the CAMELYON16 TIFFs
BANK = 12          # pre-encoded tiles per class for levels >= 1
ATLAS = 2048       # side of a texture atlas, level-0 pixels (smaller for small slides)
DIFFICULTY = 0.55  # the default, tuned on the quickstart: its classifier starts low and learns
BLUR = 0.55        # optics: Gaussian sigma in level-0 pixels; with the grain and the noise it sets
NOISE = 6          # sensor noise, +- grey levels                     the bytes per patch and per tile
BG, NORMAL, TUMOR = 0, 1, 2
# optical density of one unit of stain per R, G, B (Ruifrok & Johnston's H&E vectors)
H_OD = np.array([0.65, 0.70, 0.29])
E_OD = np.array([0.07, 0.99, 0.11])


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


def _inside(pts: np.ndarray, poly: np.ndarray, margin: float = 0.0) -> bool:
    """Every point of pts inside poly, at least ``margin`` from its border."""
    c = poly.astype(np.float32).reshape(-1, 1, 2)
    return all(cv2.pointPolygonTest(c, (float(x), float(y)), True) >= margin for x, y in pts)


def make_layout(rng: np.random.Generator, size: int, tumor: bool, difficulty: float = DIFFICULTY,
                mpp: float = 0.25) -> Layout:
    """Islands of tissue; on tumor slides, one or two main lesions and (with difficulty) small ones: micro-
    metastases (0.2-2 mm, within the island's size) and isolated tumour cells (clusters under 0.2 mm)."""
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
        um = 1.0 / mpp  # pixels per micron
        small = [("micro", r) for r in rng.uniform(100, 1000, rng.binomial(3, difficulty)) * um] + \
                [("itc", r) for r in rng.uniform(15, 90, rng.binomial(4, difficulty)) * um]
        for _kind, r in small:
            for _try in range(30):
                isl = islands[rng.integers(len(islands))]
                lo, hi = isl.min(0), isl.max(0)
                c = rng.uniform(lo, hi)
                blob = smooth_blob(rng, *c, r, n=32 if r < 100 * um else 64, roughness=0.2)
                if _inside(blob, isl, margin=r * 0.2) and all(
                        np.linalg.norm(c - les.mean(0)) > r + np.linalg.norm(les - les.mean(0), axis=1).max() + 50 * um
                        for les in lesions):
                    lesions.append(blob)
                    break
    return Layout(size, islands, lesions, holes)


# --- stains and textures ----------------------------------------------------------------------------------

@dataclass
class Stain:
    h: np.ndarray            # optical density per unit hematoxylin, R G B
    e: np.ndarray            # the same for eosin
    background: np.ndarray   # RGB of bare glass


def make_stain(rng: np.random.Generator, difficulty: float = DIFFICULTY) -> Stain:
    """Per-slide stain vectors: hue and strength vary more between slides as difficulty rises."""
    sd = 0.04 + 0.08 * difficulty
    h = H_OD * rng.lognormal(0, sd / 2, 3) * rng.lognormal(0, sd)
    e = E_OD * rng.lognormal(0, sd / 2, 3) * rng.lognormal(0, sd)
    return Stain(h, e, np.array([241, 240, 243]) + rng.normal(0, 2, 3))


@dataclass(frozen=True)
class Texture:
    radius_um: float      # nucleus radius
    irregular: float      # outline roughness
    darkness: float       # hematoxylin density of a nucleus, 0-255
    coverage: float       # share of the area under nuclei
    nucleoli: float       # share of nuclei with a visible nucleolus
    eosin: float          # eosin density of stroma or cytoplasm, 0-255
    gaps: float           # share of white gaps


NORMAL_TEXTURE = Texture(3.3, 0.08, 205, 0.50, 0.0, 100, 0.08)
TUMOR_TEXTURE = Texture(6.2, 0.35, 135, 0.42, 0.8, 125, 0.05)  # at difficulty 0


def textures(difficulty: float) -> dict[int, Texture]:
    """Normal and tumour textures. With difficulty, tumour moves towards normal: first what any filter sees
    (nuclear darkness, coverage, eosin, gaps: equal from difficulty 0.5), then shape (nuclear size, outline,
    nucleoli: eight tenths of the way at difficulty 1), which takes a model longer to learn."""
    simple, shape = min(1.0, 2 * difficulty), 0.8 * difficulty
    mix = {f.name: shape if f.name in ("radius_um", "irregular", "nucleoli") else simple for f in fields(Texture)}
    tumor = Texture(*[(1 - mix[f.name]) * getattr(TUMOR_TEXTURE, f.name) + mix[f.name] * getattr(NORMAL_TEXTURE, f.name)
                      for f in fields(Texture)])
    return {NORMAL: NORMAL_TEXTURE, TUMOR: tumor}


def _lowfreq(rng: np.random.Generator, side: int, cell: float) -> np.ndarray:
    n = max(2, int(side / cell))
    return cv2.resize(rng.standard_normal((n, n), dtype=np.float32), (side, side), interpolation=cv2.INTER_CUBIC)


def _nuclei(rng: np.random.Generator, dens: np.ndarray, n: int, tex: Texture, um: float) -> None:
    """Draw n nuclei into a hematoxylin density map (uint8), with nucleoli."""
    h, w = dens.shape
    k = 10
    r = tex.radius_um * um
    t = np.linspace(0, 2 * math.pi, k, endpoint=False)
    cx, cy = rng.uniform(-r, w + r, n), rng.uniform(-r, h + r, n)
    rr = (r * rng.lognormal(0, 0.2, n))[:, None] * (1 + tex.irregular * rng.uniform(-1, 1, (n, k)))
    ecc, ang = rng.uniform(0.65, 1.0, (n, 1)), rng.uniform(0, math.pi, (n, 1))
    x, y = rr * np.cos(t), rr * ecc * np.sin(t)
    px = cx[:, None] + x * np.cos(ang) - y * np.sin(ang)
    py = cy[:, None] + x * np.sin(ang) + y * np.cos(ang)
    pts = np.round(np.stack([px, py], -1) * 16).astype(np.int32)
    vals = np.clip(tex.darkness + 30 * rng.standard_normal(n), 30, 255)
    for i in range(n):
        cv2.fillPoly(dens, [pts[i]], float(vals[i]), lineType=cv2.LINE_AA, shift=4)
    for i in np.nonzero(rng.random(n) < tex.nucleoli)[0]:
        c = (int((cx[i] + rng.normal(0, r / 4)) * 16), int((cy[i] + rng.normal(0, r / 4)) * 16))
        cv2.circle(dens, c, int(rng.uniform(0.6, 1.1) * um * 16), 255.0, -1, lineType=cv2.LINE_AA, shift=4)


def _fibres(rng: np.random.Generator, dens: np.ndarray, um: float) -> None:
    """Wavy collagen fibres into an eosin density map."""
    h, w = dens.shape
    for _ in range(int(h * w / (35 * um) ** 2)):
        m = 6
        a = rng.uniform(0, math.pi) + np.cumsum(rng.normal(0, 0.25, m))
        step = rng.uniform(8, 30) * um
        xs = rng.uniform(0, w) + np.cumsum(np.cos(a) * step)
        ys = rng.uniform(0, h) + np.cumsum(np.sin(a) * step)
        pts = np.round(np.stack([xs, ys], 1) * 16).astype(np.int32)
        cv2.polylines(dens, [pts], False, float(rng.uniform(150, 255)), thickness=max(1, int(rng.uniform(0.4, 1.2) * um)),
                      lineType=cv2.LINE_AA, shift=4)


def _rgb(hema: np.ndarray, eosin: np.ndarray | None, stain: Stain) -> np.ndarray:
    """RGB of density maps by Beer-Lambert: 255 * exp(-(h * H + e * E)), through per-channel lookup tables."""
    v = np.arange(256, dtype=np.float64)[:, None] / 255
    lut_h = np.clip(255 * np.exp(-2.0 * v * stain.h), 0, 255).astype(np.uint8).reshape(256, 1, 3)
    img = cv2.LUT(cv2.merge([hema] * 3), lut_h)
    if eosin is not None:
        lut_e = np.clip(255 * np.exp(-1.6 * v * stain.e), 0, 255).astype(np.uint8).reshape(256, 1, 3)
        img = cv2.multiply(img, cv2.LUT(cv2.merge([eosin] * 3), lut_e), scale=1 / 255)
    return img


class Atlas:
    """The two texture layers of one class on one slide; ``tile`` composes a fresh tile from them."""

    def __init__(self, rng: np.random.Generator, tex: Texture, stain: Stain, mpp: float, side: int = ATLAS):
        um = 1.0 / mpp
        self.side = side
        n = int(tex.coverage * side * side / (math.pi * (tex.radius_um * um) ** 2))
        eosin = np.clip(tex.eosin + 30 * _lowfreq(rng, side, 6 * um), 0, 255)  # no coarser variation: tiles would show
        eosin = eosin.astype(np.uint8)
        _fibres(rng, eosin, um)
        gaps = _lowfreq(rng, side, 15 * um) > _gap_threshold(tex.gaps)
        eosin[gaps] //= 8
        h1, h2 = np.zeros((side, side), np.uint8), np.zeros((side, side), np.uint8)
        _nuclei(rng, h1, n // 2, tex, um)
        _nuclei(rng, h2, n - n // 2, tex, um)
        grain = rng.integers(110, 256, (side, side), dtype=np.uint8)  # chromatin and fine texture
        h1, h2 = (cv2.GaussianBlur(cv2.multiply(h, grain, scale=1 / 255), (0, 0), BLUR) for h in (h1, h2))
        eosin = cv2.GaussianBlur(cv2.multiply(eosin, rng.integers(130, 256, (side, side), dtype=np.uint8),
                                              scale=1 / 255), (0, 0), BLUR)
        self.a = _rgb(h1, eosin, stain)
        self.b = _rgb(h2, None, stain)
        noise = rng.integers(0, 2 * NOISE + 1, self.a.shape, dtype=np.uint8)  # sensor noise
        self.a = cv2.subtract(cv2.add(self.a, noise), (NOISE, NOISE, NOISE, 0.0))

    def tile(self, rng: np.random.Generator, n: int = TILE, out: np.ndarray | None = None) -> np.ndarray:
        ya, xa, yb, xb = rng.integers(0, self.side - n + 1, 4)
        return cv2.min(self.a[ya:ya + n, xa:xa + n], self.b[yb:yb + n, xb:xb + n], dst=out)

    def mean_colour(self, rng: np.random.Generator, samples: int = 8) -> np.ndarray:
        return np.mean([self.tile(rng).reshape(-1, 3).mean(0) for _ in range(samples)], axis=0)

    def scale_colour(self, gain: np.ndarray) -> None:
        lut = np.clip(np.arange(256)[:, None] * gain[None, :], 0, 255).astype(np.uint8).reshape(256, 1, 3)
        self.a, self.b = cv2.LUT(self.a, lut), cv2.LUT(self.b, lut)


def _gap_threshold(share: float) -> float:
    """The level of a unit-variance smooth field above which ``share`` of the area lies (about)."""
    return NormalDist(0, 0.8).inv_cdf(1 - min(max(share, 1e-4), 0.5))


def _background(rng: np.random.Generator, stain: Stain, n: int = TILE) -> np.ndarray:
    noise = rng.integers(-2, 3, (n, n, 1))
    return np.clip(stain.background + noise, 0, 255).astype(np.uint8)


def make_atlases(rng: np.random.Generator, stain: Stain, difficulty: float, mpp: float,
                 side: int = ATLAS) -> dict[int, Atlas]:
    tex = textures(difficulty)
    atl = {cls: Atlas(rng, tex[cls], stain, mpp, side) for cls in (NORMAL, TUMOR)}
    gain = atl[NORMAL].mean_colour(rng) / np.maximum(atl[TUMOR].mean_colour(rng), 1)
    atl[TUMOR].scale_colour(np.clip(gain, 0.7, 1.4))
    return atl


# --- writing a slide ----------------------------------------------------------------------------------------

def level_count(size: int, smallest: int = 1024) -> int:
    n = 1
    while math.ceil(size / 2 ** (n - 1)) > smallest:
        n += 1
    return n


def _fill(polys: list[np.ndarray], shape, origin, ds: float, value: int, img: np.ndarray) -> None:
    """Paint polygons (level-0 coordinates) whose box meets the raster (pixel centres decide)."""
    h, w = shape
    x0, y0 = origin
    for p in polys:
        lo, hi = p.min(0), p.max(0)
        if hi[0] < x0 or hi[1] < y0 or lo[0] > x0 + w * ds or lo[1] > y0 + h * ds:
            continue
        xy = np.round(((p - (x0, y0)) / ds - 0.5) * 16).astype(np.int32)
        cv2.fillPoly(img, [xy], value, shift=4)


def _labels(layout: Layout, shape, ds: float, origin) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    _fill(layout.islands, shape, origin, ds, NORMAL, lab)
    tumor = np.zeros(shape, np.uint8)
    _fill(layout.lesions, shape, origin, ds, 1, tumor)
    _fill(layout.holes, shape, origin, ds, 0, tumor)
    lab[(tumor > 0) & (lab > 0)] = TUMOR
    return lab


def write_slide(path: str | Path, layout: Layout, rng: np.random.Generator, mpp: float = 0.25,
                quality: int = 85, difficulty: float = DIFFICULTY) -> dict:
    """Write one pyramidal slide. Returns a small record (levels, tiles encoded, bytes)."""
    size = layout.size
    levels = level_count(size)
    stain = make_stain(rng, difficulty)
    atlases = make_atlases(rng, stain, difficulty, mpp, side=int(min(ATLAS, max(2 * TILE, size // 4))))
    enc = lambda img: imagecodecs.jpeg8_encode(img, level=quality)
    # banks for levels >= 1: level l tiles are area-downsampled 2x2 mosaics of level l-1 tiles
    background = _background(rng, stain)
    bank = {BG: [background]}
    bank.update({c: [atlases[c].tile(rng) for _ in range(BANK)] for c in (NORMAL, TUMOR)})
    pixels, jpegs = [bank], [{BG: [enc(background)]}]
    half = TILE // 2
    for _ in range(1, levels):
        cur = {BG: [background]}
        for c in (NORMAL, TUMOR):
            cur[c] = []
            for _ in range(BANK):
                t = np.empty((TILE, TILE, 3), np.uint8)
                for q, k in enumerate(rng.integers(BANK, size=4)):
                    y, x = divmod(q, 2)
                    t[y * half:(y + 1) * half, x * half:(x + 1) * half] = cv2.resize(
                        pixels[-1][c][k], (half, half), interpolation=cv2.INTER_AREA)
                cur[c].append(t)
        pixels.append(cur)
        jpegs.append({c: ([jpegs[0][BG][0]] if c == BG else [enc(t) for t in ts]) for c, ts in cur.items()})
    # class map on a coarse grid: `cell` level-0 pixels per cell, a power of two dividing TILE
    cell = int(min(64, max(8, 2 ** math.ceil(math.log2(size / 2048)))))
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
    buf = {c: np.empty((TILE, TILE, 3), np.uint8) for c in (NORMAL, TUMOR)}
    bg0 = bank[BG][0]
    try:
        with tifffile.TiffWriter(tmp, bigtiff=size > 30000) as tw:
            for lvl in range(levels):
                ds = 2 ** lvl
                dim = math.ceil(size / ds)
                per = TILE * ds // cell  # cells per tile side at this level
                nt = math.ceil(dim / TILE)
                blocks = lambda a, f: f(a[: nt * per, : nt * per].reshape(nt, per, nt, per), axis=(1, 3))
                mixed = (blocks(edge, np.any) | (blocks(coarse, np.max) != blocks(coarse, np.min))).tolist()
                cls_of = blocks(coarse, np.max).tolist()
                pick = rng.integers(BANK, size=(nt, nt)).tolist()
                lv_pix, lv_jpg = pixels[lvl], jpegs[lvl]

                def tiles():
                    nonlocal encoded
                    for ty in range(nt):
                        for tx in range(nt):
                            c = cls_of[ty][tx]
                            if not mixed[ty][tx]:
                                if c == BG or lvl > 0:
                                    yield lv_jpg[c][pick[ty][tx] % len(lv_jpg[c])]
                                else:
                                    encoded += 1
                                    yield enc(atlases[c].tile(rng, out=buf[c]))
                                continue
                            lab = _labels(layout, (TILE, TILE), ds, (tx * TILE * ds, ty * TILE * ds))
                            if lvl == 0:
                                img = atlases[NORMAL].tile(rng, out=buf[NORMAL])
                                if (lab == TUMOR).any():
                                    cv2.copyTo(atlases[TUMOR].tile(rng, out=buf[TUMOR]), (lab == TUMOR).view(np.uint8), img)
                                cv2.copyTo(bg0, (lab == BG).view(np.uint8), img)
                            else:
                                k = pick[ty][tx]
                                img = lv_pix[NORMAL][k].copy()
                                cv2.copyTo(lv_pix[TUMOR][k], (lab == TUMOR).view(np.uint8), img)
                                cv2.copyTo(lv_pix[BG][0], (lab == BG).view(np.uint8), img)
                            encoded += 1
                            yield enc(img)

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


def lesion_category(layout: Layout, mpp: float) -> str | None:
    """CAMELYON16's reference column: Macro (largest lesion >= 2 mm), Micro (>= 0.2 mm), else ITC."""
    if not layout.lesions:
        return None
    longest = max(float(np.max(np.linalg.norm(p[:, None] - p[None], axis=-1))) for p in layout.lesions) * mpp
    return "Macro" if longest >= 2000 else "Micro" if longest >= 200 else "ITC"


def generate_one(out: str, split: str, name: str, tumor: bool, size: int, seed: int, mpp: float,
                 difficulty: float = DIFFICULTY) -> dict:
    """Generate one slide, its annotation (tumor slides) and its ground-truth layout."""
    out = Path(out)
    rng = np.random.default_rng(slide_seed(seed, name))
    layout = make_layout(rng, size, tumor, difficulty, mpp)
    img_dir = out / split / ("images" if split == "testing" else ("tumor" if tumor else "normal"))
    ann_dir = out / split / "lesion_annotations"
    truth_dir = out / "ground_truth"
    for d in (img_dir, ann_dir, truth_dir):
        d.mkdir(parents=True, exist_ok=True)
    if tumor:
        groups = [(f"_{i % 2}", p) for i, p in enumerate(layout.lesions)] + [("_2", h) for h in layout.holes]
        write_asap(ann_dir / f"{name}.xml", groups)
    (truth_dir / f"{name}.json").write_text(json.dumps(layout.to_json()))
    rec = write_slide(img_dir / f"{name}.tif", layout, rng, mpp, difficulty=difficulty)
    tumor_area = sum(polygon_area(p) for p in layout.lesions) - sum(polygon_area(p) for p in layout.holes)
    return {"slide": name, "split": split, "tumor": tumor, "path": str(img_dir / f"{name}.tif"),
            "tumor_fraction": tumor_area / size ** 2, "category": lesion_category(layout, mpp), **rec}


def generate(out: str | Path, slides: int, size: int, seed: int, tumor_fraction: float = 0.5,
             test_fraction: float = 0.25, mpp: float = 0.25, engine=None, progress=None,
             difficulty: float = DIFFICULTY) -> list[dict]:
    """Generate a CAMELYON16-layout dataset under ``out``; slides in parallel through ``engine``."""
    from ..engines import make_engine, run_all

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = [(str(out), split, name, tumor, size, seed, mpp, difficulty) for split, name, tumor in
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
    # the release's reference.csv: slide, class, and for tumor slides the lesion category and "Primary"
    rows = [f"{r['slide']},Tumor,{r['category']},Primary" if r["tumor"] else f"{r['slide']},Normal"
            for r in records if r["split"] == "testing"]
    (out / "testing").mkdir(exist_ok=True)
    (out / "testing" / "reference.csv").write_text("".join(row + "\n" for row in rows))
    return records


def zip_annotations(out: str | Path) -> list[Path]:
    """Pack each split's lesion_annotations/ into lesion_annotations.zip, as the CAMELYON16 release ships them."""
    import zipfile

    made = []
    for folder in sorted(Path(out).glob("*/lesion_annotations")):
        if not folder.is_dir():
            continue
        archive = folder.with_suffix(".zip")
        tmp = archive.with_name(f".{archive.name}.tmp{os.getpid()}")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for xml in sorted(folder.glob("*.xml")):
                z.write(xml, xml.name)
        os.replace(tmp, archive)
        for xml in folder.glob("*.xml"):
            xml.unlink()
        folder.rmdir()
        made.append(archive)
    return made


def _generate_item(item):
    return generate_one(*item)


def prepare(workload, data: Path, engine) -> Path:
    """The dataset's folder: the workload's dataset path, or synthetic slides under ``data``/dataset, made
    once per specification (a marker file records it) with ``engine``."""
    ds = workload.dataset
    if ds.kind != "synthetic":
        return Path(ds.path)
    spec = ds.synthetic.model_dump() | {"generator": VERSION}
    out = data / "dataset"
    marker = out / ".complete.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return out
    if out.exists():
        remove(out, data)
    print(f"[dataset] synthesising {spec['slides']} slides of {spec['size']} px under {out}", file=sys.stderr)
    generate(out, spec["slides"], spec["size"], spec["seed"], spec["tumor_fraction"], spec["test_fraction"],
             spec["mpp"], engine=engine(), difficulty=spec["difficulty"])
    marker.write_text(json.dumps(spec))
    return out
