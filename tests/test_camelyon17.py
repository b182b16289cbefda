"""CAMELYON17's metric: slide classes from heatmaps, pN stages by the challenge's rules, quadratic weighted kappa."""
import numpy as np
import pytest

from harness.config import Infer
from harness.metrics import camelyon17 as c17
from harness.stages.infer import pn_staging


@pytest.mark.parametrize("classes, stage", [
    (["negative"] * 5, "pN0"),
    (["negative", "itc", "negative", "itc", "negative"], "pN0(i+)"),   # only ITCs
    (["micro", "itc", "negative", "negative", "negative"], "pN1mi"),   # micro, no macro
    (["micro", "micro", "micro", "micro", "negative"], "pN1mi"),       # however many nodes: no macro
    (["macro", "negative", "negative", "negative", "negative"], "pN1"),
    (["macro", "micro", "micro", "itc", "itc"], "pN1"),                 # 3 nodes with metastases; ITCs do not count
    (["macro", "micro", "micro", "micro", "negative"], "pN2"),          # 4 nodes, one a macro-metastasis
    (["macro"] * 5, "pN2"),
])
def test_pn_stage_follows_the_challenge_rules(classes, stage):
    assert c17.pn_stage(classes) == stage


def test_pn_stage_refuses_an_unknown_class():
    with pytest.raises(ValueError, match="tumor"):
        c17.pn_stage(["negative", "tumor"])


def kappa_by_agreement(truth, pred, k=5):
    """Weighted kappa the other way round: (p_o - p_e) / (1 - p_e) with agreement weights 1 - (i - j)^2 / (k - 1)^2."""
    t, p = np.asarray(truth), np.asarray(pred)
    agree = lambda a, b: 1 - (a - b) ** 2 / (k - 1) ** 2
    p_o = agree(t, p).mean()
    p_e = np.mean([agree(a, b) for a in t for b in p])  # every pairing of the two marginals
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def test_quadratic_kappa_by_hand_and_against_the_agreement_form():
    S = c17.PN_STAGES
    assert c17.quadratic_kappa(S, S) == pytest.approx(1.0)
    # the extremes swapped: O puts 1/2 on (pN0, pN2) and 1/2 on (pN2, pN0), weight 1 each: sum wO = 1; chance puts
    # 1/4 on each corner: sum wE = 1/2; kappa = 1 - 1 / (1/2) = -1
    assert c17.quadratic_kappa(["pN0", "pN0", "pN2", "pN2"], ["pN2", "pN2", "pN0", "pN0"]) == pytest.approx(-1.0)
    # one patient of four one stage off: O puts 1/4 on (0,0), (1,1), (3,3) and (4,3): sum wO = 1/4 x 1/16; chance
    # pairs every truth with every prediction: sum wE = the mean of (a - b)^2 / 16 over those 16 pairs
    t, p = ["pN0", "pN0(i+)", "pN1", "pN2"], ["pN0", "pN0(i+)", "pN1", "pN1"]
    ti, pi = [S.index(x) for x in t], [S.index(x) for x in p]
    chance = np.mean([(a - b) ** 2 / 16 for a in ti for b in pi])
    assert c17.quadratic_kappa(t, p) == pytest.approx(1 - (1 / 4 / 16) / chance)
    assert c17.quadratic_kappa(["pN1"] * 3, ["pN1"] * 3) is None  # one stage on both sides: undefined
    rng = np.random.default_rng(11)
    for _ in range(300):
        n = int(rng.integers(2, 40))
        truth = rng.integers(0, 5, n)
        pred = np.clip(truth + rng.integers(-2, 3, n) * (rng.random(n) < 0.6), 0, 4)
        want = kappa_by_agreement(truth, pred)
        got = c17.quadratic_kappa([S[i] for i in truth], [S[i] for i in pred])
        assert (got is None) == (want is None) and (got is None or got == pytest.approx(want, abs=1e-12))


def test_slide_class_is_the_longest_lesion_by_the_challenge_thresholds():
    """A heatmap at 32x of a 0.25 um/px slide: a pixel is 8 um. A 25 x 1 strip is 25 x 8 = 200 um long by its
    longest diameter (the diagonal: sqrt(200^2 + 8^2) = 200.2 um): over 0.2 mm, micro; 24 x 1: 192.2 um, itc."""
    heat = np.zeros((400, 400), np.float32)
    assert c17.slide_class(heat, 32, 0.25, 0.5) == ("negative", None)
    heat[10, 10:34] = 0.9
    cls, um = c17.slide_class(heat, 32, 0.25, 0.5)
    assert cls == "itc" and um == pytest.approx(8 * np.hypot(24, 1))
    heat[10, 34] = 0.9
    assert c17.slide_class(heat, 32, 0.25, 0.5)[0] == "micro"
    heat[100:250, 100:300] = 0.7  # 150 x 200 px: 1.2 x 1.6 mm, its diagonal 2.0 mm exactly: not over 2 mm
    cls, um = c17.slide_class(heat, 32, 0.25, 0.5)
    assert um == pytest.approx(8 * np.hypot(150, 200)) and cls == "micro"  # 2,000 um: not over 2 mm
    heat[250, 300] = 0.7
    assert c17.slide_class(heat, 32, 0.25, 0.5)[0] == "macro"
    assert c17.slide_class(heat, 32, 0.25, 0.8)[0] == "micro"  # the threshold decides what a lesion is


def test_patients_are_staged_from_their_heatmaps_and_scored_by_kappa(tmp_path):
    """Three labelled patients and one test patient (no stage label), two nodes each. Heatmaps at 32x, 0.25
    um/px: 'macro' a 300-px square (2.4 mm), 'micro' 50 px (0.4 mm), 'itc' one pixel, 'negative' nothing.
    patient_000 (truth pN1): macro + negative -> pN1. patient_001 (truth pN0(i+)): itc + negative -> pN0(i+).
    patient_002 (truth pN1mi): its micro node predicted negative, the other itc -> pN0(i+), one stage off.
    patient_100 (test): micro + micro -> pN1mi, staged, not scored. patient_003 (truth pN0): one node not
    inferred -> no stage, not scored."""
    draw = {"macro": 300, "micro": 50, "itc": 1, "negative": 0}
    plan = {"patient_000": ("pN1", [("macro", "macro"), ("negative", "negative")]),
            "patient_001": ("pN0(i+)", [("itc", "itc"), ("negative", "negative")]),
            "patient_002": ("pN1mi", [("micro", "negative"), ("itc", "itc")]),
            "patient_100": (None, [(None, "micro"), (None, "micro")]),
            "patient_003": ("pN0", [("negative", "negative"), ("negative", None)])}
    items, inferred = [], []
    for who, (stage, nodes) in plan.items():
        for n, (truth, shown) in enumerate(nodes):
            slide = f"{who}_node_{n}"
            label = None if truth is None else ("tumor" if truth in ("micro", "macro") else "normal")
            items.append({"slide": slide, "patient": who, "patient_stage": stage, "label": label,
                          "lesion": truth if truth not in (None, "negative") else None})
            if shown is None:
                continue  # this node failed inference
            heat = np.zeros((512, 512), np.float32)
            heat[100:100 + draw[shown], 100:100 + draw[shown]] = 0.9
            np.save(tmp_path / f"{slide}.npy", heat)
            inferred.append({"slide": slide, "heatmap": str(tmp_path / f"{slide}.npy"), "heatmap_downsample": 32.0,
                             "mpp": 0.25})
    out = pn_staging(inferred, items, Infer())
    by = {p["patient"]: p for p in out["patients"]}
    assert {k: v["predicted"] for k, v in by.items()} == {"patient_000": "pN1", "patient_001": "pN0(i+)",
                                                          "patient_002": "pN0(i+)", "patient_100": "pN1mi",
                                                          "patient_003": None}
    assert by["patient_100"]["stage"] is None and by["patient_003"]["inferred"] == 1
    assert out["patients_scored"] == 3
    assert out["kappa"] == pytest.approx(c17.quadratic_kappa(["pN1", "pN0(i+)", "pN1mi"], ["pN1", "pN0(i+)", "pN0(i+)"]))
    assert out["kappa"] == pytest.approx(kappa_by_agreement([3, 1, 2], [3, 1, 1]))
    slides = {s["slide"]: s for s in out["slides"]}
    assert slides["patient_002_node_0"]["class"] == "micro" and slides["patient_002_node_0"]["predicted"] == "negative"
    assert slides["patient_100_node_0"]["class"] is None and slides["patient_100_node_0"]["predicted"] == "micro"
    assert out["slide_accuracy"] == pytest.approx(6 / 7)  # 7 labelled slides inferred, one wrong


@pytest.mark.slow
def test_a_camelyon17_run_stages_its_patients(dataset, tmp_path):
    """The whole pipeline on the synthetic slides laid out as CAMELYON17 (centres, patient_*_node_*, a
    stage-labels CSV with slide and patient rows): center_1's labelled patient is staged and scored, center_2's
    patient has no stage label (a test patient) and is inferred, classed and staged without one."""
    from harness import pipeline
    from harness.config import parse_workload

    from conftest import local_root

    root = tmp_path / "c17"
    ref = dict(r.split(",")[:2] for r in (dataset / "testing" / "reference.csv").read_text().lower().splitlines())
    test_stage = (dataset / "testing" / "reference.csv").read_text().lower().split("test_002,tumor,")[1].split(",")[0]
    assert ref["test_002"] == "tumor" and test_stage in ("micro", "macro")
    layout = [("training", "tumor", "tumor_001", "center_0/patient_000_node_0"),
              ("training", "normal", "normal_001", "center_0/patient_000_node_1"),
              ("training", "tumor", "tumor_002", "center_0/patient_001_node_0"),
              ("training", "normal", "normal_002", "center_0/patient_001_node_1"),
              ("testing", "images", "test_002", "center_1/patient_010_node_0"),
              ("testing", "images", "test_001", "center_1/patient_010_node_1"),
              ("testing", "images", "test_001", "center_2/patient_100_node_0")]
    for split, sub, name, dst in layout:
        (root / dst).parent.mkdir(parents=True, exist_ok=True)
        (root / f"{dst}.tif").hardlink_to(dataset / split / sub / f"{name}.tif")
        xml = dataset / split / "lesion_annotations" / f"{name}.xml"
        if xml.is_file():
            (root / "lesion_annotations").mkdir(exist_ok=True)
            (root / "lesion_annotations" / f"{dst.split('/')[1]}.xml").hardlink_to(xml)
    (root / "stage_labels.csv").write_text(
        "patient,stage\npatient_000.zip,pN1\npatient_000_node_0.tif,macro\npatient_000_node_1.tif,negative\n"
        "patient_001.zip,pN1\npatient_001_node_0.tif,macro\npatient_001_node_1.tif,negative\n"
        f"patient_010.zip,{'pN1' if test_stage == 'macro' else 'pN1mi'}\npatient_010_node_0.tif,{test_stage}\n"
        "patient_010_node_1.tif,negative\n")
    w = parse_workload({"name": "c17", "stages": ["masks", "patches", "tfrecords", "train", "infer"],
                        "dataset": {"kind": "camelyon17", "path": str(root), "test_centers": [1]},
                        "patches": {"max_per_class": 150}, "tfrecords": {"shard_mb": 2, "val_fraction": 0.5},
                        "train": {"model": "small_cnn", "image_size": 32, "batch_size": 32, "steps_per_epoch": 10},
                        "infer": {"stride": 448}})
    with local_root(str(tmp_path / "data")):
        s = pipeline.run(w, results_dir=tmp_path / "results")
    assert s["status"] == "ok" and s["dataset"]["layout"] == "camelyon17"
    assert s["dataset"]["counts"]["testing/unlabelled"]["slides"] == 1
    d = s["infer"]["pn_detail"]
    by = {p["patient"]: p for p in d["patients"]}
    assert set(by) == {"patient_010", "patient_100"}  # the test split's patients
    assert by["patient_010"]["stage"] in ("pN1", "pN1mi") and by["patient_010"]["predicted"] in c17.PN_STAGES
    assert by["patient_100"]["stage"] is None and by["patient_100"]["predicted"] in c17.PN_STAGES
    assert d["patients_scored"] == 1 and {x["slide"] for x in d["slides"]} == {
        "patient_010_node_0", "patient_010_node_1", "patient_100_node_0"}
    assert s["infer"]["pn_kappa"] == d["kappa"]
    assert s["infer"]["evaluated_slides"] == 2  # the unlabelled slide is inferred, not in the AUCs and FROC
