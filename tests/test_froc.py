"""The CAMELYON16 lesion-level FROC on synthetic lesions of known geometry, and against an independent
implementation of the official script's computeFROC."""
import cv2
import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from harness.config import parse_workload
from harness.metrics import froc
from harness.slides.annotations import rasterize, read_asap, sample_points, write_asap
from harness.stages.infer import lesion_froc

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
    """Every lesion found, no false positive (the ITC's detection is neither); normal slides silent. The script
    skips its lowest threshold: here the ITC's 0, so every lesion counts."""
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

    Thresholds: the set {0 (the missed L2, the ITC), 0.6, 0.7, 0.8, 0.9, 0.95}, 0 skipped. Highest first:
    0.95 -> 1 FP (0.25 per slide), 0 found; 0.9 -> 0.25, 1/3; 0.8 -> 0.5, 1/3; 0.7 -> 0.5, 2/3; 0.6 -> 0.75, 2/3.
    The raw curve, (0, 0) first: x 0, 0.25, 0.25, 0.5, 0.5, 0.75; y 0, 0, 1/3, 1/3, 2/3, 2/3. np.interp at a
    repeated x takes the later point: 1/3 at 1/4, 2/3 at 1/2; beyond 0.75, 2/3. FROC = (1/3 + 5 * 2/3) / 6 = 11/18.
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


def script_froc(fp_lists, tp_lists, tumors, rates=froc.FP_RATES):
    """computeFROC and its np.interp, as Evaluation_FROC.py publishes them: per slide a list of false-positive
    probabilities, a float32 array of one probability per evaluation-mask region (0: missed, or an ITC) and the
    number of lesions (regions less ITCs)."""
    all_fps = [p for sub in fp_lists for p in sub]
    all_tps = [p for sub in tp_lists for p in sub]
    total_fps, total_tps = [], []
    probs = sorted(set(all_fps + all_tps))
    for thresh in probs[1:]:
        total_fps.append((np.asarray(all_fps) >= thresh).sum())
        total_tps.append((np.asarray(all_tps) >= thresh).sum())
    total_fps.append(0)
    total_tps.append(0)
    fps = np.asarray(total_fps) / float(len(fp_lists))
    sens = np.asarray(total_tps) / float(sum(tumors))
    return np.interp(rates, fps[::-1], sens[::-1])


def random_case(rng):
    """Slides with random detections: probabilities continuous or on a coarse grid (ties), some lesions missed,
    some regions ITCs. As the script's inputs, and as score_slide's outputs."""
    grid = rng.random() < 0.5
    draw = (lambda n: np.round(rng.random(n), 1).tolist()) if grid else (lambda n: rng.random(n).tolist())
    fp_lists, tp_lists, tumors, scored = [], [], [], []
    for _ in range(rng.integers(1, 7)):
        fp = draw(rng.integers(0, 6))
        if rng.random() < 0.5:  # a normal slide
            fp_lists.append(fp), tp_lists.append([]), tumors.append(0)
            scored.append({"fp": fp, "lesions": [], "itc": 0})
            continue
        n_les, n_itc = int(rng.integers(0, 5)), int(rng.integers(0, 2))
        found = np.where(rng.random(n_les) < 0.7, draw(n_les), 0.0).astype(np.float32)
        regions = np.r_[found, np.zeros(n_itc, np.float32)]
        rng.shuffle(regions)  # ITC labels anywhere among the regions
        fp_lists.append(fp), tp_lists.append(regions.tolist()), tumors.append(n_les)
        scored.append({"fp": fp, "lesions": found.tolist(), "itc": n_itc})
    return fp_lists, tp_lists, tumors, scored


def collapsed(scored, rates=froc.FP_RATES):
    """The former rule: every threshold, the best sensitivity per false-positive level, interpolated between."""
    fps = np.array([p for s in scored for p in s["fp"]])
    found = np.array([p for s in scored for p in s["lesions"]])
    t = np.unique(np.r_[fps, found[found > 0]])[::-1]
    x = np.r_[0.0, [(fps >= v).sum() / len(scored) for v in t]]
    y = np.r_[0.0, [((found >= v) & (found > 0)).sum() / len(found) for v in t]]
    xs = np.unique(x)
    return np.interp(rates, xs, [y[x == v].max() for v in xs])


def test_froc_is_the_scripts_on_random_score_sets():
    """2,000 random score sets, not only ones whose rates fall on steps: the sensitivities are the script's
    exactly. The former rule (best sensitivity per false-positive level, every threshold) scored above the script
    on many of these, by up to about +0.08 FROC."""
    rng = np.random.default_rng(7)
    checked = differ = 0
    for _ in range(2000):
        fp_lists, tp_lists, tumors, scored = random_case(rng)
        if not sum(tumors):
            assert froc.froc(scored)["froc"] is None  # the script divides by zero: undefined
            continue
        want = script_froc(fp_lists, tp_lists, tumors)
        got = froc.froc(scored)
        assert [got["sensitivities"][f"{r:g}"] for r in froc.FP_RATES] == pytest.approx(want, abs=1e-12)
        assert got["froc"] == pytest.approx(want.mean(), abs=1e-12)
        checked += 1
        differ += abs(collapsed(scored).mean() - want.mean()) > 1e-9
    assert checked > 1000 and differ > checked // 10  # the cases do tell the two rules apart


def test_lowest_threshold_is_skipped_as_in_the_script():
    """No false positive, no ITC, no lesion missed: the lowest probability is the skipped threshold, so the
    weakest lesion is never counted (sensitivity 1/2 everywhere, not 1)."""
    out = froc.froc([{"fp": [], "lesions": [0.9, 0.8], "itc": 0}])
    assert out["froc"] == pytest.approx(0.5)
    assert out["curve"] == {"fp_per_slide": [0.0, 0.0], "sensitivity": [0.0, 0.5]}


def test_evaluation_mask_is_the_level_5_mask_the_script_reads(dataset):
    """The script reads level 5 of a mask TIFF written by ASAP, whose levels are nearest-neighbour: pixel (i, j)
    is the level-0 point (32 j, 32 i) tested against the polygons. On the tests' tumour slides, an independent
    point-in-polygon test (matplotlib) at those points gives the same mask, so the same lesion and ITC lists; the
    former mask (pixel centres, (32 j + 16, 32 i + 16)) was not that one."""
    xmls = sorted(dataset.rglob("lesion_annotations/*.xml"))
    assert len(xmls) >= 2
    shifted = 0
    for xml in xmls:
        ann = read_asap(xml)
        polys, holes = ann.regions(["_0", "_1", "Tumor"]), ann.regions(["_2"])
        assert polys
        shape = (8192 // 32, 8192 // 32)
        ours = sample_points(polys, holes, shape, 32)
        jj, ii = np.meshgrid(np.arange(shape[1]) * 32.0, np.arange(shape[0]) * 32.0)
        pts = np.c_[jj.ravel(), ii.ravel()]
        inside = lambda ps: np.any([MplPath(p).contains_points(pts) for p in ps], axis=0) if ps else False
        oracle = (inside(polys) & ~inside(holes)).reshape(shape)  # exclusions last
        assert (ours == oracle).all(), xml
        labels, itc = froc.evaluation_mask(ours)
        want_labels, want_itc = froc.evaluation_mask(oracle)
        assert (labels == want_labels).all() and itc == want_itc
        shifted += int((rasterize(polys, holes, shape, 32) != oracle).sum())
    assert shifted > 0


def test_official_resolution_is_0243_and_slide_mpp_is_another_mode(tmp_path):
    """A lesion 600 px across at level 0 on a slide of 0.5 um/px: at the script's fixed 0.243 um/px its
    evaluation region (600 / 32 px plus 2 x 4.8 px of margin, about 28 px) is under the ITC bound of 275 /
    (0.243 x 32) = 35.4 px: an ITC, nothing to find. At the slide's own 0.5 um/px (margin 2.3 px, bound 17.2 px)
    it is a lesion, found by the heatmap."""
    c = np.array([4000.0, 4000.0])
    disc = c + 300 * np.c_[np.cos(np.linspace(0, 2 * np.pi, 64, endpoint=False)),
                           np.sin(np.linspace(0, 2 * np.pi, 64, endpoint=False))]
    write_asap(tmp_path / "t.xml", [("_0", disc)])
    heat = np.zeros((256, 256), np.float32)
    heat[124:126, 124:126] = 0.9  # over the lesion's centre, at downsample 32
    np.save(tmp_path / "t.npy", heat)
    scored = [{"slide": "t", "label": "tumor", "heatmap": str(tmp_path / "t.npy"), "heatmap_downsample": 32.0,
               "mpp": 0.5, "width": 8192, "height": 8192}]
    items = {"t": {"annotation": str(tmp_path / "t.xml")}}
    out = {}
    for mode in ("official", "slide_mpp"):
        w = parse_workload({"name": "t", "infer": {"froc_resolution": mode}})
        out[mode] = lesion_froc(scored, items, w)
    assert out["official"]["resolution"] == "official"
    assert (out["official"]["lesions"], out["official"]["itc"], out["official"]["froc"]) == (0, 1, None)
    assert (out["slide_mpp"]["lesions"], out["slide_mpp"]["itc"]) == (1, 0)
    assert out["slide_mpp"]["false_positives"] == 0
