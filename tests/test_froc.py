"""The CAMELYON16 lesion-level FROC on synthetic lesions of known geometry."""
import cv2
import numpy as np
import pytest

from harness.metrics import froc

MPP = 0.25                 # um per level-0 pixel
SIDE_UM = 10_000           # 10 mm slides
EVAL_DS, HEAT_DS = 32, 16  # evaluation mask at level 5, heatmaps at another resolution


def px(um: float, ds: float) -> int:
    return int(round(um / MPP / ds))


def disc_mask(discs, ds, values=None) -> np.ndarray:
    """Discs given as (centre x um, centre y um, radius um), painted at downsample ds."""
    n = px(SIDE_UM, ds)
    img = np.zeros((n, n), np.float32)
    for k, (x, y, r) in enumerate(discs):
        cv2.circle(img, (px(x, ds), px(y, ds)), px(r, ds), float(values[k] if values else 1.0), -1)
    return img


def scored(tumor_discs, heat_discs, heat_values, threshold=0.5):
    """Score one slide: its evaluation mask from the tumour discs, its detections from a heatmap of discs."""
    heat = disc_mask(heat_discs, HEAT_DS, heat_values)
    dets = froc.detections(heat, HEAT_DS, threshold)
    if tumor_discs is None:
        return froc.score_slide(dets, None), dets
    labels, itc = froc.evaluation_mask(disc_mask(tumor_discs, EVAL_DS) > 0, MPP, EVAL_DS)
    return froc.score_slide(dets, labels, itc, EVAL_DS), dets


L1, L2, L3 = (2500, 2500, 1000), (7500, 7500, 150), (5000, 5000, 600)
ITC = (8000, 2000, 20)    # 40 um across: an isolated tumour cell cluster


def test_evaluation_mask_margin_itc_and_axes():
    labels, itc = froc.evaluation_mask(disc_mask([L1, L2, ITC], EVAL_DS) > 0, MPP, EVAL_DS)
    assert labels.max() == 3 and len(itc) == 1
    assert labels[px(ITC[1], EVAL_DS), px(ITC[0], EVAL_DS)] in itc
    # the margin: 75 / (0.25 * 32 * 2) = 4.69 level-5 pixels (the script's 75 um with its factor 2)
    row = px(L1[1], EVAL_DS)
    edge = np.nonzero(disc_mask([L1], EVAL_DS)[row])[0].max()  # the lesion's last pixel on its middle row
    assert labels[row, edge + 4] > 0 and labels[row, edge + 5] == 0
    # holes are filled: a ring is one solid lesion
    ring = disc_mask([L1], EVAL_DS) - disc_mask([(L1[0], L1[1], 500)], EVAL_DS)
    lab, _ = froc.evaluation_mask(ring > 0, MPP, EVAL_DS)
    assert lab[px(L1[1], EVAL_DS), px(L1[0], EVAL_DS)] > 0
    # major axis as scikit-image measures it: 4 sqrt(largest eigenvalue) = 2a for an ellipse of semi-axis a
    img = np.zeros((200, 200), np.int32)
    cv2.ellipse(img, (100, 100), (60, 20), 30, 0, 360, 1, -1)
    assert froc.region_axes(img, 2)[1] == pytest.approx(120, rel=0.02)


def test_perfect_heatmap_scores_one():
    """Every lesion found, no false positive (the ITC's detection is neither); normal slides silent."""
    tumor_a = [L1, L2]
    tumor_b = [L3, ITC]
    slides = [scored(tumor_a, tumor_a, [0.9, 0.8])[0], scored(tumor_b, tumor_b, [0.7, 0.99])[0],
              scored(None, [], [])[0], scored(None, [], [])[0]]
    out = froc.froc(slides)
    assert out["lesions"] == 3 and out["itc"] == 1 and out["false_positives"] == 0 and out["slides"] == 4
    assert out["froc"] == 1.0 and set(out["sensitivities"]) == {"0.25", "0.5", "1", "2", "4", "8"}


def test_shifted_heatmap_scores_the_hand_arithmetic():
    """Heatmaps shifted 400 um to the right.

    Slide A: L1 (r 1000 um) still holds its shifted detection (p 0.9): found. L2 (r 150 um) does not: its
    detection (p 0.8) is a false positive. Slide B: L3 (r 600 um) found (p 0.7); the ITC's own detection
    (p 0.99, not shifted) counts for nothing. Normal slide C: a false positive at p 0.6; normal slide D: one at
    p 0.95. 4 slides, 3 lesions.

    Thresholds, highest first: 0.95 -> 1 FP (0.25 per slide), 0 found; 0.9 -> 0.25, 1/3; 0.8 -> 0.5, 1/3;
    0.7 -> 0.5, 2/3; 0.6 -> 0.75, 2/3. Curve (highest sensitivity per FP rate): (0, 0), (0.25, 1/3),
    (0.5, 2/3), (0.75, 2/3). Sensitivity at 1/4: 1/3; at 1/2, 1, 2, 4, 8: 2/3. FROC = (1/3 + 5 * 2/3) / 6 = 11/18.
    """
    shift = lambda d: (d[0] + 400, d[1], d[2])
    a, dets_a = scored([L1, L2], [shift(L1), shift(L2)], [0.9, 0.8])
    b, _ = scored([L3, ITC], [shift(L3), ITC], [0.7, 0.99])
    c, _ = scored(None, [(3000, 3000, 300)], [0.6])
    d, _ = scored(None, [(6000, 6000, 300)], [0.95])
    assert sorted(p for p, _, _ in dets_a) == [pytest.approx(0.8), pytest.approx(0.9)]
    assert a["fp"] == [pytest.approx(0.8)] and a["lesions"] == [pytest.approx(0.9), 0.0]
    assert b["fp"] == [] and b["lesions"] == [pytest.approx(0.7)] and b["itc"] == 1
    out = froc.froc([a, b, c, d])
    s = out["sensitivities"]
    assert s["0.25"] == pytest.approx(1 / 3)
    assert all(s[k] == pytest.approx(2 / 3) for k in ("0.5", "1", "2", "4", "8"))
    assert out["froc"] == pytest.approx(11 / 18)


def test_detections_are_region_maxima_at_level_0():
    heat = np.zeros((100, 100), np.float32)
    heat[10:20, 30:50] = 0.6
    heat[15, 40] = 0.9
    heat[60:70, 60:70] = 0.4  # under the threshold
    dets = froc.detections(heat, 16.0, 0.5)
    assert dets == [(pytest.approx(0.9), (40 + 0.5) * 16, (15 + 0.5) * 16)]
    assert froc.froc([froc.score_slide(dets, None)])["froc"] is None  # no lesion anywhere: undefined
