"""The independent FROC of tests/froc_oracle.py (which test_camelyon16 holds the recorded FROC against) checked on
its own against hand arithmetic: test_froc's shifted-heatmap case, with lesions as exact polygons at level 0."""
import cv2
import numpy as np
import pytest

import froc_oracle as fo

MPP, SIDE_UM, HEAT_DS = 0.25, 10_000, 32
L1, L2, L3 = (2500, 2500, 1000), (7500, 7500, 150), (5000, 5000, 600)
ITC = (8000, 2000, 20)  # 40 um across


def px(um: float, ds: float) -> int:
    return int(round(um / MPP / ds))


def heat(discs, values) -> np.ndarray:
    img = np.zeros((px(SIDE_UM, HEAT_DS),) * 2, np.float32)
    for (x, y, r), v in zip(discs, values):
        cv2.circle(img, (px(x, HEAT_DS), px(y, HEAT_DS)), px(r, HEAT_DS), float(v), -1)
    return img


def disc(x, y, r) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    return np.c_[x + r * np.cos(a), y + r * np.sin(a)] / MPP


def test_the_oracle_scores_the_hand_arithmetic():
    """As in test_froc: heatmaps shifted 400 um; L1 found (0.9), L2's detection a false positive (0.8), L3 found
    (0.7), the ITC's detection (0.99) nothing, normal slides' false positives at 0.6 and 0.95: FROC 11/18."""
    a, b = fo.Lesions([disc(*L1), disc(*L2)], MPP), fo.Lesions([disc(*L3), disc(*ITC)], MPP)
    # major axes: the diameter plus twice the 37.5 um margin; the ITC under 275 um
    assert a.axes_um == [pytest.approx(2075, rel=0.01), pytest.approx(375, rel=0.01)] and b.itc == [False, True]
    shift = lambda d: (d[0] + 400, d[1], d[2])  # noqa: E731
    slides = [(fo.slide_outcomes(heat([shift(L1), shift(L2)], [0.9, 0.8]), HEAT_DS, 0.5, a, 64.0), a),
              (fo.slide_outcomes(heat([shift(L3), ITC], [0.7, 0.99]), HEAT_DS, 0.5, b, 64.0), b),
              (fo.slide_outcomes(heat([(3000, 3000, 300)], [0.6]), HEAT_DS, 0.5, None, 64.0), None),
              (fo.slide_outcomes(heat([(6000, 6000, 300)], [0.95]), HEAT_DS, 0.5, None, 64.0), None)]
    assert sorted((round(p, 2), sorted(map(str, o))) for p, o in slides[0][0]) == [(0.8, ["fp"]), (0.9, ["0"])]
    (low, low_s), (high, high_s) = fo.froc_bounds(slides)
    assert low == high == pytest.approx(11 / 18) and low_s == pytest.approx([1 / 3] + [2 / 3] * 5)


def test_an_edge_detection_is_bounded_not_guessed():
    """A detection on a lesion's grown edge is ambiguous: scored missed at worst, found at best."""
    a = fo.Lesions([disc(*L1)], MPP)
    edge_x = (L1[0] + L1[2] + 37.5) / MPP  # the grown region's edge on the lesion's middle row
    assert a.outcomes(edge_x, L1[1] / MPP, band=64.0) == {0, fo.FP}
    assert a.outcomes(edge_x - 100, L1[1] / MPP, band=64.0) == {0}
    # (a normal slide's false positive at 0.5 is the lowest threshold, dropped as the script drops it)
    (low, _), (high, _) = fo.froc_bounds([([(0.9, {0, fo.FP})], a), ([(0.5, {fo.FP})], None)])
    assert (low, high) == (0.0, 1.0)


def test_a_detector_without_false_positives_loses_its_weakest_lesion_as_the_script_does():
    """The script drops the lowest threshold: with no false positive, no ITC and no lesion missed, that is its
    weakest lesion's probability (one lesion found at 0.9: FROC 0); an ITC or a missed lesion adds the 0 that is
    dropped instead (FROC 1)."""
    assert fo.froc([([(0.9, 0)], 1, 0)])[0] == 0.0
    assert fo.froc([([(0.9, 0)], 1, 1)])[0] == 1.0
    # a false positive below the lesion is the lowest instead: at 1/4 false positives a slide, the lesion is found
    assert fo.froc([([(0.9, 0), (0.6, fo.FP)], 1, 0)])[0] == 1.0
