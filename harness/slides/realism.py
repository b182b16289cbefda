"""How much synthetic slides behave like real ones: bytes of patches and of source tiles, and repetition.

The same measurements run on real slides and synthetic ones (tests/test_synth.py compares them):

- ``patch_bytes``: 224-px tissue patches cut with OpenSlide's read_region and saved by PIL, the reference
  pipeline's own approach, at a JPEG quality (75, Pillow's default, is the reference's; 90 wsibench's default);
  bytes per patch.
- ``tile_bytes_per_pixel``: tissue regions of 512 x 512 px encoded as the synthetic writer encodes its tiles
  (libjpeg-turbo, quality 85, 4:2:0), bytes per pixel; for a synthetic slide, its stored level-0 tissue tiles.
- ``max_similarity``: the highest correlation between any two patches (grayscale, 8x area-downsampled,
  standardised): 1.0 means a repeated patch.

Tissue: HSV saturation above 20 over at least 90% of the region, at the region's own resolution.

``python -m harness.slides.realism [SLIDE ...]`` prints these figures for the real slides of ../shared/data (or the
slides given) and for a freshly generated synthetic slide.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import openslide
from PIL import Image

PATCH = 224
QUALITIES = (75, 90)  # patch qualities measured: the reference pipeline's (Pillow's default) and wsibench's default
QUALITY = 90          # wsibench's default patch quality (config.Patches.jpeg_quality)
TILE_QUALITY = 85     # the synthetic writer's source-tile quality


def _tissue(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[..., 1] > 20


def tissue_regions(slide: openslide.OpenSlide, size: int, limit: int | None = None, seed: int = 0,
                   min_tissue: float = 0.9) -> list[tuple[int, int]]:
    """Level-0 positions of a grid of ``size`` px regions that are mostly tissue (at most ``limit``, drawn with
    a seed)."""
    w, h = slide.dimensions
    level = slide.get_best_level_for_downsample(8)
    ds = slide.level_downsamples[level]
    thumb = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB"))
    t = _tissue(thumb)
    out = []
    for y in range(0, h - size + 1, size):
        for x in range(0, w - size + 1, size):
            sub = t[int(y / ds): int(np.ceil((y + size) / ds)), int(x / ds): int(np.ceil((x + size) / ds))]
            if sub.size and sub.mean() >= min_tissue:
                out.append((x, y))
    if limit is not None and len(out) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(len(out), limit, replace=False))
        out = [out[i] for i in idx]
    return out


def read(slide: openslide.OpenSlide, x: int, y: int, size: int) -> np.ndarray:
    return np.asarray(slide.read_region((x, y), 0, (size, size)).convert("RGB"))


def pil_jpeg_bytes(rgb: np.ndarray, quality: int = QUALITY) -> int:
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=quality)
    return len(b.getvalue())


def patch_bytes(path: str | Path, limit: int | None = 200, seed: int = 0, quality: int = QUALITY) -> np.ndarray:
    """Bytes of 224-px tissue patches at a JPEG quality (read_region + PIL, as the reference pipeline)."""
    s = openslide.OpenSlide(str(path))
    try:
        return np.array([pil_jpeg_bytes(p, quality) for p in (read(s, x, y, PATCH) for x, y in tissue_regions(s, PATCH, limit, seed))
                         if _tissue(p).mean() >= 0.9])
    finally:
        s.close()


def tile_bytes_per_pixel(path: str | Path, stored: bool = False, limit: int | None = 60) -> np.ndarray:
    """Bytes per pixel of 512-px tissue tiles: re-encoded at quality 85 (``stored`` False), or as stored in the
    file's level-0 JPEG tiles (``stored`` True: for slides whose tiles are 512 px and JPEG)."""
    import tifffile

    s = openslide.OpenSlide(str(path))
    try:
        regions = tissue_regions(s, 512, limit)
        if not stored:
            return np.array([len(imagecodecs.jpeg8_encode(read(s, x, y, 512), level=TILE_QUALITY)) / 512 ** 2
                             for x, y in regions])
        with tifffile.TiffFile(str(path)) as tf:
            page = tf.pages[0]
            cols = -(-page.imagewidth // page.tilewidth)
            return np.array([page.databytecounts[(y // 512) * cols + x // 512] / 512 ** 2 for x, y in regions])
    finally:
        s.close()


def patch_grid(path: str | Path, limit: int | None = None) -> np.ndarray:
    """Every 224-px tissue patch of the slide's grid (n, 224, 224, 3)."""
    s = openslide.OpenSlide(str(path))
    try:
        return np.stack([read(s, x, y, PATCH) for x, y in tissue_regions(s, PATCH, limit)])
    finally:
        s.close()


def max_similarity(patches: np.ndarray) -> tuple[float, tuple[int, int]]:
    """The highest correlation between two different patches, and which two."""
    small = np.stack([cv2.resize(cv2.cvtColor(p, cv2.COLOR_RGB2GRAY), (PATCH // 8, PATCH // 8),
                                 interpolation=cv2.INTER_AREA).astype(np.float64).ravel() for p in patches])
    small -= small.mean(1, keepdims=True)
    small /= np.maximum(np.linalg.norm(small, axis=1, keepdims=True), 1e-9)
    corr = small @ small.T
    np.fill_diagonal(corr, -1)
    i, j = np.unravel_index(np.argmax(corr), corr.shape)
    return float(corr[i, j]), (int(i), int(j))


def main(argv=None) -> int:
    import tempfile

    from . import synth

    argv = sys.argv[1:] if argv is None else argv
    real = [Path(a) for a in argv if not a.startswith("--")] or sorted((Path(__file__).resolve().parents[3] / "shared" / "data" / "slides").glob("*.svs"))
    rows, pooled_b, pooled_t = [], {q: [] for q in QUALITIES}, []
    median_kib = lambda b: [np.median(b[q]) / 1024 for q in QUALITIES]
    for p in real:
        b, t = {q: patch_bytes(p, None, quality=q) for q in QUALITIES}, tile_bytes_per_pixel(p)
        for q in QUALITIES:
            pooled_b[q].append(b[q])
        pooled_t.append(t)
        rows.append((p.name, len(b[QUALITY]), median_kib(b), np.median(t) if len(t) else float("nan"), None))
    if len(real) > 1:
        b, t = {q: np.concatenate(pooled_b[q]) for q in QUALITIES}, np.concatenate(pooled_t)
        rows.append(("real, pooled", len(b[QUALITY]), median_kib(b), np.median(t) if len(t) else float("nan"), None))
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(1)
        path = Path(tmp) / "synthetic.tif"
        synth.write_slide(path, synth.make_layout(rng, 8192, True), rng)
        b, t = {q: patch_bytes(path, None, quality=q) for q in QUALITIES}, tile_bytes_per_pixel(path, stored=True)
        rows.append((f"synthetic v{synth.VERSION} (8192 px)", len(b[QUALITY]), median_kib(b), np.median(t),
                     max_similarity(patch_grid(path))[0]))
    heads = "".join(f"{f'median KiB (q{q})':>17}" for q in QUALITIES)
    print(f"{'slide':<36} {'patches':>7}{heads} {'tile B/px (q85)':>15} {'max similarity':>14}")
    for name, n, kib, bpp, sim in rows:
        cells = "".join(f"{k:>17.1f}" for k in kib)
        print(f"{name:<36} {n:>7}{cells} {bpp:>15.3f} {'' if sim is None else f'{sim:.3f}':>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
