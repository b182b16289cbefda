"""CAMELYON17's metric: a pN stage per patient from the classes of its lymph-node slides, scored against the
truth by quadratic weighted Cohen's kappa over the five stages.

- Slide classes (the challenge's): ``negative``; ``itc``, isolated tumour cells (no lesion longer than 0.2 mm);
  ``micro``, a micro-metastasis (longer than 0.2 mm, none longer than 2 mm); ``macro``, a macro-metastasis
  (longer than 2 mm). A slide's class from a heatmap (``slide_class``): the longest diameter of its longest
  region at or above a threshold, in micrometres; no region, negative.
- pN stage of a patient (``pn_stage``), the challenge's rules: pN0, no ITC, micro- or macro-metastasis; pN0(i+),
  only ITCs; pN1mi, micro-metastases but no macro-metastasis; pN1, metastases (micro or macro) in 1-3 nodes, at
  least one a macro-metastasis; pN2, metastases in 4-9 nodes, at least one a macro-metastasis (a CAMELYON17
  patient has five nodes; ten or more would be pN3, which the challenge does not have: counted as pN2 here).
- The score (``quadratic_kappa``): 1 - sum(w O) / sum(w E) over the 5 x 5 table of (truth, prediction) patient
  counts O, E the table chance would give (the outer product of the two marginals over the patient count), w the
  squared distance between the stages' ranks over 16. 1 is perfect agreement, 0 chance; None where it is
  undefined (every patient in one and the same stage on both sides).
"""
from __future__ import annotations

import cv2
import numpy as np

SLIDE_CLASSES = ("negative", "itc", "micro", "macro")
PN_STAGES = ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")
ITC_MAX_UM = 200.0     # a lesion up to 0.2 mm long is isolated tumour cells
MICRO_MAX_UM = 2000.0  # up to 2 mm, a micro-metastasis; longer, a macro-metastasis


def lesion_class(longest_um: float | None) -> str:
    """The class of a slide whose longest lesion is ``longest_um`` long (None: no lesion)."""
    if longest_um is None:
        return "negative"
    if longest_um <= ITC_MAX_UM:
        return "itc"
    return "micro" if longest_um <= MICRO_MAX_UM else "macro"


def longest_diameters(mask: np.ndarray) -> list[float]:
    """The longest diameter (the largest distance between two points) of each 8-connected region of a bool mask,
    in pixels, each pixel taken as a unit square."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8,
                                                           ltype=cv2.CV_32S)
    out = []
    for i in range(1, n):
        x, y, w, h = stats[i, :4]
        region = (labels[y:y + h, x:x + w] == i).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64) + (x, y)
        corners = (pts[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]])[None]).reshape(-1, 2)
        hull = cv2.convexHull(corners.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        d = np.sqrt(((hull[:, None] - hull[None]) ** 2).sum(-1)).max() if len(hull) > 1 else np.sqrt(2)
        out.append(float(d))
    return out


def slide_class(heat: np.ndarray, downsample: float, mpp: float, threshold: float) -> tuple[str, float | None]:
    """(class, longest lesion in um) of a slide from its heatmap at ``downsample``: the regions at or above
    ``threshold`` are its lesions."""
    lengths = longest_diameters(np.asarray(heat) >= threshold)
    longest = max(lengths) * downsample * mpp if lengths else None
    return lesion_class(longest), longest


def pn_stage(classes) -> str:
    """A patient's pN stage from the classes of its nodes' slides (the challenge's rules)."""
    classes = list(classes)
    unknown = set(classes) - set(SLIDE_CLASSES)
    if unknown:
        raise ValueError(f"slide classes {sorted(unknown)}: expected {', '.join(SLIDE_CLASSES)}")
    metastases = sum(c in ("micro", "macro") for c in classes)
    if "macro" in classes:
        return "pN1" if metastases <= 3 else "pN2"
    if "micro" in classes:
        return "pN1mi"
    return "pN0(i+)" if "itc" in classes else "pN0"


def quadratic_kappa(truth, predicted, labels=PN_STAGES) -> float | None:
    """Quadratic weighted Cohen's kappa of two ratings of the same items over the ordered ``labels``."""
    index = {v: i for i, v in enumerate(labels)}
    k = len(labels)
    observed = np.zeros((k, k))
    for t, p in zip(truth, predicted, strict=True):
        observed[index[t], index[p]] += 1
    n = observed.sum()
    if not n:
        return None
    expected = np.outer(observed.sum(1), observed.sum(0)) / n
    i, j = np.indices((k, k))
    weights = (i - j) ** 2 / (k - 1) ** 2
    chance = (weights * expected).sum()
    return None if chance == 0 else float(1 - (weights * observed).sum() / chance)
