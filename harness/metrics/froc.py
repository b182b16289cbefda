"""Lesion-level FROC exactly as the CAMELYON16 evaluation computes it (its ``Evaluation_FROC.py``), written from
the published algorithm.

- The evaluation mask of a tumor slide: its tumour mask at level 5 (downsample 2**5 = 32) as the script reads it
  from the mask TIFF, every pixel closer than 75 / (mpp * 32 * 2) pixels to tumour added (the script's "75 um,
  five tumour cells" margin, with its factor 2), holes filled, regions labelled with 8-connectivity. Each region
  is a lesion. The tumour mask itself: ``harness.slides.annotations.sample_points`` (level-5 pixel (j, i) is the
  level-0 point (32 j, 32 i), as in a mask pyramid written by ASAP).
- Isolated tumour cells: regions whose major axis (4 sqrt of the largest eigenvalue of the region's pixel
  covariance, as scikit-image measures it) is under 275 / (mpp * 32) pixels (200 um plus the margin). They are not
  lesions to find; a detection inside one is neither a true nor a false positive.
- The resolution: the script uses 0.243 um/px for every slide (``CAMELYON16_MPP``, the official mode); each
  slide's own mpp is another mode (``infer.froc_resolution = "slide_mpp"``), not the challenge's score.
- Detections are (probability, x, y) at level 0, looked up at (int(y / 32), int(x / 32)). On a tumor slide, a
  detection outside every region is a false positive; inside a lesion it marks the lesion found with the highest
  of its probabilities, kept in float32 as the script keeps them. On a normal slide every detection is a false
  positive.
- The curve, as ``computeFROC``: thresholds are the sorted set of all false-positive and lesion probabilities
  (missed lesions and ITCs add a 0), the lowest skipped; per threshold, false positives >= it per slide and lesions
  found >= it over all lesions; a final point (0, 0). Sensitivities at 1/4, 1/2, 1, 2, 4 and 8 false positives
  per slide: ``np.interp`` over that raw curve in threshold order (repeated false-positive rates kept); the FROC
  score is their mean. So, as in the script, a detector with no false positive and no ITC or missed lesion loses
  its lowest threshold: its weakest lesion does not count.

One departure, to keep a run alive: a detection outside the mask's bounds is looked up at the nearest edge pixel
(the script would fail on it).

Detections from a heatmap (``detections``): the connected regions (8-connectivity) of the heatmap at or above a
threshold, one detection per region at its highest value (ties: the pixel nearest the region's centroid).
"""
from __future__ import annotations

import cv2
import numpy as np

FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
EVAL_LEVEL = 5
EVAL_DOWNSAMPLE = 2.0 ** EVAL_LEVEL  # the script's pow(2, level), whatever the slide's own level 5 is
MARGIN_UM = 75.0
ITC_UM = 275.0
CAMELYON16_MPP = 0.243    # the script's fixed resolution, for every slide
RESOLUTIONS = ("official", "slide_mpp")


def fill_holes(binary: np.ndarray) -> np.ndarray:
    """Background regions that do not reach the border (4-connected, as scipy's binary_fill_holes) filled."""
    h, w = binary.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = binary
    reach = pad.copy()
    cv2.floodFill(reach, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2, flags=4)
    return (reach[1:-1, 1:-1] != 2)


def region_axes(labels: np.ndarray, n: int) -> np.ndarray:
    """Major axis length of regions 1..n-1 (index 0 unused), from their pixel coordinates' covariance."""
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    cnt = np.bincount(lab, minlength=n).astype(float)
    safe = np.maximum(cnt, 1)
    mx, my = np.bincount(lab, xs, n) / safe, np.bincount(lab, ys, n) / safe
    dx, dy = xs - mx[lab], ys - my[lab]
    sxx, syy, sxy = (np.bincount(lab, v, n) / safe for v in (dx * dx, dy * dy, dx * dy))
    l1 = (sxx + syy) / 2 + np.sqrt(((sxx - syy) / 2) ** 2 + sxy ** 2)
    return 4 * np.sqrt(l1)


def evaluation_mask(tumor: np.ndarray, mpp: float = CAMELYON16_MPP,
                    downsample: float = EVAL_DOWNSAMPLE) -> tuple[np.ndarray, set[int]]:
    """(labelled evaluation mask, labels of isolated tumour cells) from a bool tumour mask at ``downsample``.

    Within the margin: the Euclidean distance to the nearest tumour pixel under 75 / (mpp * downsample * 2),
    compared as whole squared pixel distances (so a float32 distance cannot land on the wrong side)."""
    tumor = np.asarray(tumor, bool)
    if not tumor.any():
        return np.zeros(tumor.shape, np.int32), set()
    dist = cv2.distanceTransform((~tumor).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    squared = np.rint(dist.astype(np.float64) ** 2)  # exact integers where it matters (near the margin)
    binary = squared < (MARGIN_UM / (mpp * downsample * 2)) ** 2
    n, labels = cv2.connectedComponents(fill_holes(binary).astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    axes = region_axes(labels, n)
    itc = {i for i in range(1, n) if axes[i] < ITC_UM / (mpp * downsample)}
    return labels, itc


def detections(heat: np.ndarray, downsample: float, threshold: float) -> list[tuple[float, float, float]]:
    """(probability, x, y at level 0) per connected region of ``heat >= threshold``, at its maximum."""
    mask = (np.asarray(heat) >= threshold).astype(np.uint8)
    n, labels, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    out = []
    for i in range(1, n):
        x, y, w, h = stats[i, :4]
        sub = np.where(labels[y:y + h, x:x + w] == i, heat[y:y + h, x:x + w], -np.inf)
        top = sub.max()
        ry, rx = np.nonzero(sub == top)
        j = np.argmin((rx + x - cents[i, 0]) ** 2 + (ry + y - cents[i, 1]) ** 2)
        out.append((float(top), (rx[j] + x + 0.5) * downsample, (ry[j] + y + 0.5) * downsample))
    return out


def score_slide(dets, labels: np.ndarray | None, itc: set[int] = frozenset(),
                downsample: float = EVAL_DOWNSAMPLE) -> dict:
    """False-positive probabilities and, per lesion (ITCs left out), the highest probability that found it
    (0: missed), in float32 as the script's TP_probs; ``itc`` counts the ITC regions. ``labels`` None: a normal
    slide."""
    fp: list[float] = []
    if labels is None:
        return {"fp": [float(p) for p, _, _ in dets], "lesions": [], "itc": 0}
    n = int(labels.max()) + 1
    found = np.zeros(n, np.float32)
    h, w = labels.shape
    for p, x, y in dets:
        r, c = min(max(int(y / downsample), 0), h - 1), min(max(int(x / downsample), 0), w - 1)
        lab = labels[r, c]
        if lab == 0:
            fp.append(float(p))
        elif lab not in itc and p > found[lab]:
            found[lab] = p
    return {"fp": fp, "lesions": [float(found[i]) for i in range(1, n) if i not in itc], "itc": len(itc)}


def froc(slides: list[dict], rates=FP_RATES) -> dict:
    """The FROC of scored slides (``score_slide``) as ``computeFROC`` and the script's ``np.interp``: sensitivity
    at each false-positive rate and their mean; ``curve`` is the raw curve the interpolation runs over."""
    fps = np.array([p for s in slides for p in s["fp"]], float)
    found = np.array([p for s in slides for p in s["lesions"]], float)
    n_itc = int(sum(s.get("itc", 0) for s in slides))
    n_slides, n_lesions = len(slides), len(found)
    out = {"slides": n_slides, "lesions": n_lesions, "false_positives": int(len(fps)), "itc": n_itc}
    if not n_slides or not n_lesions:
        return out | {"froc": None, "sensitivities": None, "curve": None}
    # the script's TP list holds one entry per region: the lesions' probabilities, 0 for each ITC
    tps = np.r_[found, np.zeros(n_itc)]
    thresholds = np.unique(np.r_[fps, tps])[1:]  # sorted, the lowest skipped
    at_least = lambda v: len(v) - np.searchsorted(np.sort(v), thresholds, side="left")  # count of v >= t
    fp_rate = np.r_[at_least(fps), 0] / n_slides
    sens = np.r_[at_least(tps), 0] / n_lesions
    xs, ys = fp_rate[::-1], sens[::-1]
    at = np.interp(rates, xs, ys)
    return out | {"froc": float(at.mean()), "sensitivities": {f"{r:g}": float(s) for r, s in zip(rates, at)},
                  "curve": {"fp_per_slide": xs.tolist(), "sensitivity": ys.tolist()}}
