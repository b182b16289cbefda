"""Lesion-level FROC as in the CAMELYON16 evaluation (its ``Evaluation_FROC.py``), written from its definition.

- The evaluation mask of a tumor slide: its tumour mask at level 5 (downsample 32), every pixel closer than
  75 / (mpp * 32 * 2) pixels to tumour added (the script's "75 um, five tumour cells" margin, with its factor 2),
  holes filled, regions labelled with 8-connectivity. Each region is a lesion.
- Isolated tumour cells: regions whose major axis (4 sqrt of the largest eigenvalue of the region's pixel
  covariance, as scikit-image measures it) is under 275 um (200 um plus the margin). They are not lesions to
  find; a detection inside one is neither a true nor a false positive.
- Detections are (probability, x, y) at level 0. On a tumor slide, a detection outside every region is a false
  positive; inside a lesion it marks the lesion found with (the highest of) its probability. On a normal slide
  every detection is a false positive.
- The FROC curve: for each threshold t over the detection probabilities, (false positives with p >= t per slide,
  share of lesions found with p >= t). Sensitivities at 1/4, 1/2, 1, 2, 4 and 8 false positives per slide are
  linear interpolations on that curve, and the FROC score is their mean.

One departure from the script, on purpose: it skips its lowest threshold (``all_probs[1:]``), so a detector
with no false positive scores 0 there; here every threshold counts, so a perfect detector scores 1.0. Where
several thresholds give the same false-positive rate, the curve keeps the highest sensitivity among them.

Detections from a heatmap (``detections``): the connected regions (8-connectivity) of the heatmap at or above a
threshold, one detection per region at its highest value (ties: the pixel nearest the region's centroid).
"""
from __future__ import annotations

import cv2
import numpy as np

FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
EVAL_DOWNSAMPLE = 32.0    # level 5
MARGIN_UM = 75.0
ITC_UM = 275.0
CAMELYON16_MPP = 0.243    # the script's fixed resolution, used where a slide records none


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


def evaluation_mask(tumor: np.ndarray, mpp: float, downsample: float = EVAL_DOWNSAMPLE) -> tuple[np.ndarray, set[int]]:
    """(labelled evaluation mask, labels of isolated tumour cells) from a bool tumour mask at ``downsample``."""
    tumor = np.asarray(tumor, bool)
    if not tumor.any():
        return np.zeros(tumor.shape, np.int32), set()
    dist = cv2.distanceTransform((~tumor).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    binary = dist < MARGIN_UM / (mpp * downsample * 2)
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
    """False-positive probabilities and, per lesion, the highest probability that found it (0: missed).
    ``labels`` None: a normal slide."""
    fp: list[float] = []
    if labels is None:
        return {"fp": [float(p) for p, _, _ in dets], "lesions": [], "itc": 0}
    n = int(labels.max()) + 1
    found = np.zeros(n)
    h, w = labels.shape
    for p, x, y in dets:
        r, c = min(max(int(y / downsample), 0), h - 1), min(max(int(x / downsample), 0), w - 1)
        lab = labels[r, c]
        if lab == 0:
            fp.append(float(p))
        elif lab not in itc:
            found[lab] = max(found[lab], p)
    return {"fp": fp, "lesions": [float(found[i]) for i in range(1, n) if i not in itc], "itc": len(itc)}


def froc(slides: list[dict], rates=FP_RATES) -> dict:
    """The FROC of scored slides (``score_slide``): sensitivity at each false-positive rate and their mean."""
    fps = np.array([p for s in slides for p in s["fp"]], float)
    found = np.array([p for s in slides for p in s["lesions"]], float)
    n_slides, n_lesions = len(slides), len(found)
    out = {"slides": n_slides, "lesions": n_lesions, "false_positives": int(len(fps)),
           "itc": int(sum(s.get("itc", 0) for s in slides))}
    if not n_slides or not n_lesions:
        return out | {"froc": None, "sensitivities": None, "curve": None}
    thresholds = np.unique(np.r_[fps, found[found > 0]])[::-1]
    fp_rate = np.r_[0.0, [(fps >= t).sum() / n_slides for t in thresholds]]
    sens = np.r_[0.0, [((found >= t) & (found > 0)).sum() / n_lesions for t in thresholds]]
    xs = np.unique(fp_rate)
    ys = np.array([sens[fp_rate == x].max() for x in xs])
    at = np.interp(rates, xs, ys)
    return out | {"froc": float(at.mean()), "sensitivities": {f"{r:g}": float(s) for r, s in zip(rates, at)},
                  "curve": {"fp_per_slide": xs.tolist(), "sensitivity": ys.tolist()}}
