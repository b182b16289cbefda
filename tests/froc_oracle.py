"""An independent CAMELYON16 lesion-level FROC, for tests: from a heatmap and the generator's ground truth (lesion
polygons at level 0), in NumPy alone, with none of harness.metrics.froc's code or its level-5 raster.

The definition (as harness/metrics/froc.py states it, from the challenge's Evaluation_FROC.py): a lesion is a
tumour region grown by 75 / 2 um and hole-filled (lesions whose grown regions touch are one); a region whose major
axis (4 sqrt of the largest eigenvalue of its area's covariance) is under 275 um is an isolated tumour cell
cluster (ITC), neither found nor missed. Detections: one per 8-connected region of heat >= threshold, at its
highest value (of several such pixels, the one nearest the region's centroid). On a tumour slide a detection
inside a lesion finds it with its probability, inside an ITC counts for nothing, elsewhere it is a false positive;
on a normal slide every detection is one. The curve, as the script builds it (``froc``): every probability as a
threshold but the lowest, (false positives per slide, share of lesions found) per threshold, then (0, 0);
sensitivities at 1/4 ... 8 false positives per slide interpolated over it in threshold order, the FROC their mean.

Where the exact geometry and a raster of it may disagree (a detection within ``band`` level-0 pixels of a lesion's
edge, or several pixels of a region's highest value equally near its centroid, on both sides of one), the
detection is ambiguous: ``froc_bounds``
scores each ambiguous detection at its worst and at its best and returns both FROCs, between which any correct
rasterisation must fall (turning a false positive into a hit never lowers the FROC).
"""
from __future__ import annotations

from collections import deque

import numpy as np

RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MARGIN_UM, ITC_UM = 75.0 / 2, 275.0
FP, NEITHER = "fp", "itc"  # outcomes of a detection besides a lesion's index


def inside_polygon(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule (ray casting) for points (px, py) against a closed polygon of (x, y) vertices."""
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    px, py = px[:, None], py[:, None]
    crosses = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    return ((crosses & (px < xs)).sum(1) % 2) == 1


def distance_to_edges(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Each point's distance to the polygon's boundary."""
    a, b = poly, np.roll(poly, -1, axis=0)
    d = b - a
    t = ((px[:, None] - a[:, 0]) * d[:, 0] + (py[:, None] - a[:, 1]) * d[:, 1]) / np.maximum((d ** 2).sum(1), 1e-12)
    t = np.clip(t, 0, 1)
    cx, cy = a[:, 0] + t * d[:, 0], a[:, 1] + t * d[:, 1]
    return np.sqrt((px[:, None] - cx) ** 2 + (py[:, None] - cy) ** 2).min(1)


def signed_depth(px, py, polys: list[np.ndarray], margin: float) -> np.ndarray:
    """How far each point lies inside the union of the polygons grown by ``margin`` (negative: outside)."""
    best = np.full(len(px), -np.inf)
    for poly in polys:
        dist = distance_to_edges(px, py, poly)
        inside = inside_polygon(px, py, poly)
        best = np.maximum(best, np.where(inside, margin + dist, margin - dist))
    return best


class Lesions:
    """The evaluation regions of one tumour slide: ground-truth lesion polygons (level 0), grown and grouped."""

    def __init__(self, polygons: list[np.ndarray], mpp: float, cells: int = 150):
        self.margin = MARGIN_UM / mpp  # level-0 pixels
        polys = [np.asarray(p, float) for p in polygons]
        # lesions whose grown regions touch are one region (union-find on the polygons' distances)
        parent = list(range(len(polys)))

        def root(i):
            while parent[i] != i:
                i = parent[i]
            return i
        for i in range(len(polys)):
            for j in range(i + 1, len(polys)):
                if distance_to_edges(polys[j][:, 0], polys[j][:, 1], polys[i]).min() < 2 * self.margin or \
                        inside_polygon(polys[j][:1, 0], polys[j][:1, 1], polys[i])[0]:
                    parent[root(j)] = root(i)
        groups: dict[int, list[np.ndarray]] = {}
        for i, p in enumerate(polys):
            groups.setdefault(root(i), []).append(p)
        self.regions = list(groups.values())
        # each region's major axis, from its area sampled on a grid of ``cells`` points across its longer side
        self.axes_um = []
        for polys_ in self.regions:
            pts = np.concatenate(polys_)
            lo, hi = pts.min(0) - self.margin, pts.max(0) + self.margin
            step = (hi - lo).max() / cells
            gx, gy = np.meshgrid(np.arange(lo[0], hi[0], step), np.arange(lo[1], hi[1], step))
            gx, gy = gx.ravel(), gy.ravel()
            keep = signed_depth(gx, gy, polys_, self.margin) > 0
            cov = np.cov(np.vstack([gx[keep], gy[keep]]), bias=True)
            self.axes_um.append(4 * np.sqrt(np.linalg.eigvalsh(cov).max()) * mpp)
        self.itc = [a < ITC_UM for a in self.axes_um]
        self.lesions = sum(not i for i in self.itc)

    def outcomes(self, x: float, y: float, band: float) -> set:
        """What a detection at level-0 (x, y) can be, allowing ``band`` px of disagreement at a region's edge:
        a lesion's index, NEITHER (an ITC) or FP."""
        out = set()
        for k, polys in enumerate(self.regions):
            depth = signed_depth(np.array([x]), np.array([y]), polys, self.margin)[0]
            if depth > -band:
                out.add(NEITHER if self.itc[k] else k)
            if depth > band:
                return {NEITHER if self.itc[k] else k}
        return out | {FP}


def components(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected regions of a boolean image, each as an array of (row, col)."""
    seen = np.zeros(mask.shape, bool)
    h, w = mask.shape
    out = []
    for r0, c0 in zip(*np.nonzero(mask)):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        queue, cells = deque([(r0, c0)]), []
        while queue:
            r, c = queue.popleft()
            cells.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        queue.append((rr, cc))
        out.append(np.array(cells))
    return out


def detections(heat: np.ndarray, downsample: float, threshold: float) -> list[tuple[float, np.ndarray]]:
    """Per region of heat >= threshold: its highest value and where, as level-0 (x, y) pixel centres: of the pixels
    holding it, those nearest the region's centroid (one, unless several are equally near)."""
    out = []
    for cells in components(np.asarray(heat) >= threshold):
        values = heat[cells[:, 0], cells[:, 1]]
        top = cells[values == values.max()]
        d2 = ((top - cells.mean(0)) ** 2).sum(1)
        top = top[np.isclose(d2, d2.min(), rtol=0, atol=1e-6)]
        out.append((float(values.max()), np.c_[(top[:, 1] + 0.5) * downsample, (top[:, 0] + 0.5) * downsample]))
    return out


def slide_outcomes(heat, downsample, threshold, lesions: Lesions | None, band: float) -> list[tuple[float, set]]:
    """(probability, possible outcomes) of each detection of a slide; a normal slide's are all FP."""
    out = []
    for p, tops in detections(heat, downsample, threshold):
        if lesions is None:
            out.append((p, {FP}))
        else:
            out.append((p, set().union(*(lesions.outcomes(x, y, band) for x, y in tops))))
    return out


def froc(slides: list[tuple[list[tuple[float, object]], int, int]], rates=RATES) -> tuple[float, list[float]]:
    """FROC and sensitivities of slides given as ([(probability, outcome)], lesions on the slide, ITCs on it), as
    the challenge's script computes them: the probabilities of every false positive and of every region (a lesion
    found: its highest; a lesion missed or an ITC: 0) are the thresholds, the lowest of them dropped; per
    threshold (false positives >= it per slide, lesions found >= it over all lesions), then (0, 0); the
    sensitivity at each rate interpolated over those points in threshold order (np.interp over the reversed
    lists, repeated rates and all), the FROC their mean."""
    fps, regions, lesions = [], [], 0
    for dets, n_lesions, n_itc in slides:
        best = {}
        for p, o in dets:
            if o == FP:
                fps.append(p)
            elif o != NEITHER:
                best[o] = max(best.get(o, 0.0), p)
        regions += list(best.values()) + [0.0] * (n_lesions - len(best)) + [0.0] * n_itc
        lesions += n_lesions
    n = len(slides)
    rate, sens = [], []
    for t in sorted(set(fps) | set(regions))[1:]:
        rate.append(len([p for p in fps if p >= t]) / n)
        sens.append(len([p for p in regions if p >= t]) / lesions)
    rate.append(0.0)
    sens.append(0.0)
    out = [float(np.interp(r, rate[::-1], sens[::-1])) for r in rates]
    return sum(out) / len(out), out


def froc_bounds(slides: list[tuple[list[tuple[float, set]], "Lesions | None"]]) -> tuple[tuple, tuple]:
    """(worst, best) (FROC, sensitivities) over the ambiguous detections' outcomes: each scored FP, else ITC, at
    worst, and a lesion, else ITC, at best."""
    def pick(options: set, best: bool):
        lesions = sorted(o for o in options if o not in (FP, NEITHER))
        if best:
            return lesions[0] if lesions else (NEITHER if NEITHER in options else FP)
        return FP if FP in options else (NEITHER if NEITHER in options else lesions[0])
    out = []
    for best in (False, True):
        out.append(froc([([(p, pick(o, best)) for p, o in dets], les.lesions if les else 0,
                           sum(les.itc) if les else 0) for dets, les in slides]))
    return out[0], out[1]
