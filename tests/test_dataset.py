"""Datasets as released: the official CAMELYON16 tree (annotations as a folder or the shipped zip), the flat layout
of cloud mirrors, CAMELYON17; names matched case-insensitively; missing annotations and labels loud; zip members
untrusted; `wsibench validate` checks the data itself."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness import pipeline
from harness.config import Dataset, Masks, parse_workload
from harness.errors import DataError
from harness.slides import dataset, synth
from harness.slides.annotations import AnnotationError, read_asap, write_asap
from harness.stages import masks

from conftest import local_root, shared

LESION = np.array([[600.0, 600], [1400, 600], [1400, 1400], [600, 1400]])


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, Path]:
    """One small normal and one small tumor slide (2048 px) and the tumor slide's ASAP XML."""
    out = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    for name, tumor in (("normal", False), ("tumor", True)):
        synth.write_slide(out / f"{name}.tif", synth.make_layout(rng, 2048, tumor), rng)
    write_asap(out / "tumor.xml", [("_0", LESION)])
    return {"normal": out / "normal.tif", "tumor": out / "tumor.tif", "xml": out / "tumor.xml"}


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.link(src, dst)


def camelyon16(root: Path, slides, zipped: bool, reference: str, tumors=("Tumor_001", "Tumor_002"),
               xmls=("Tumor_001", "tumor_002"), test_xmls=("Test_002",)) -> Path:
    """The official tree, names as released (capitalised slides, some lower-case XML)."""
    link(slides["normal"], root / "training" / "normal" / "Normal_001.tif")
    for t in tumors:
        link(slides["tumor"], root / "training" / "tumor" / f"{t}.tif")
    link(slides["normal"], root / "testing" / "images" / "Test_001.tif")
    link(slides["tumor"], root / "testing" / "images" / "Test_002.tif")
    for split, names in (("training", xmls), ("testing", test_xmls)):
        if zipped:
            with zipfile.ZipFile(root / split / "lesion_annotations.zip", "w") as z:
                for n in names:
                    z.write(slides["xml"], f"{n}.xml")
        else:
            for n in names:
                link(slides["xml"], root / split / "lesion_annotations" / f"{n}.xml")
    (root / "testing" / "reference.csv").write_text(reference)
    return root


REFERENCE = "Test_001,Normal\nTest_002,Tumor,Macro,Primary\n"


def ds(**kw) -> Dataset:
    return Dataset.model_construct(**(Dataset().model_dump() | {"kind": "auto"} | kw))


@pytest.mark.parametrize("zipped", [False, True])
def test_official_camelyon16_tree(tmp_path, slides, zipped):
    root = camelyon16(tmp_path / "c16", slides, zipped, "slide,class,size,type\n" + REFERENCE)
    assert dataset.detect(root) == "camelyon16"
    items, record = dataset.load(root, ds())
    by = {i["slide"]: i for i in items}
    assert set(by) == {"Normal_001", "Tumor_001", "Tumor_002", "Test_001", "Test_002"}
    assert [by[n]["label"] for n in ("Normal_001", "Tumor_001", "Test_001", "Test_002")] == \
        ["normal", "tumor", "normal", "tumor"]
    assert by["Test_002"]["lesion"] == "Macro" and by["Test_001"]["lesion"] is None
    # Tumor_002.tif matches tumor_002.xml: case does not matter
    assert all(by[n]["annotation"] for n in ("Tumor_001", "Tumor_002", "Test_002"))
    assert not by["Normal_001"]["annotation"] and not by["Test_001"]["annotation"]
    if zipped:
        assert by["Tumor_002"]["annotation"] == f"{root / 'training' / 'lesion_annotations.zip'}::tumor_002.xml"
    assert len(read_asap(by["Tumor_002"]["annotation"]).regions(["_0"])) == 1
    assert record["layout"] == "camelyon16" and record["counts"]["training/tumor"] == {"slides": 2, "annotated": 2}
    assert record["counts"]["testing/tumor"] == {"slides": 1, "annotated": 1}


def test_zipped_annotations_reach_the_masks_without_extraction(tmp_path, slides):
    root = camelyon16(tmp_path / "c16", slides, True, REFERENCE)
    before = sorted(p for p in tmp_path.rglob("*"))
    items, _ = dataset.load(root, ds())
    item = next(i for i in items if i["slide"] == "Tumor_001")
    rec = masks.run_slide(dict(item, split="training"), Masks(), str(tmp_path / "masks"))
    assert rec["tumor_fraction"] > 0.1  # the lesion square covers about 15% of the slide
    after = sorted(p for p in tmp_path.rglob("*") if "masks" not in p.parts)
    assert after == before  # nothing extracted anywhere


def test_flat_cloud_mirror_layout(tmp_path, slides):
    """All slides in images/, annotations in annotations/, the reference in evaluation/ (lower-case names)."""
    root = tmp_path / "mirror"
    for n, k in (("normal_001", "normal"), ("tumor_001", "tumor"), ("test_001", "normal"), ("test_002", "tumor")):
        link(slides[k], root / "images" / f"{n}.tif")
    for n in ("tumor_001", "test_002"):
        link(slides["xml"], root / "annotations" / f"{n}.xml")
    (root / "evaluation").mkdir()
    (root / "evaluation" / "reference.csv").write_text("test_001,Normal\ntest_002,Tumor,Micro,Primary\n")
    assert dataset.detect(root) == "flat"
    items, record = dataset.load(root, ds())
    by = {i["slide"]: i for i in items}
    assert [(by[n]["split"], by[n]["label"], bool(by[n]["annotation"])) for n in sorted(by)] == [
        ("training", "normal", False), ("testing", "normal", False), ("testing", "tumor", True),
        ("training", "tumor", True)]
    assert record["layout"] == "flat"


def test_camelyon17_centers_stage_labels_and_metastases_group(tmp_path, slides):
    root = tmp_path / "c17"
    for c, p, n, k in ((0, 0, 0, "normal"), (0, 4, 4, "tumor"), (0, 5, 1, "normal"), (1, 21, 2, "tumor"),
                       (1, 21, 3, "normal"), (2, 150, 0, "tumor"), (2, 150, 1, "normal")):
        link(slides[k], root / "training" / f"center_{c}" / f"patient_{p:03d}_node_{n}.tif")
    ann = root / "training" / "lesion_annotations.zip"
    xml = slides["xml"].read_text().replace('PartOfGroup="_0"', 'PartOfGroup="metastases"')
    with zipfile.ZipFile(ann, "w") as z:
        z.write(shared("annotations/camelyon17_patient_004_node_4.xml"), "patient_004_node_4.xml")
        z.writestr("lesion_annotations/patient_021_node_2.xml", xml)
    (root / "training" / "stage_labels.csv").write_text(
        "patient,stage\npatient_000.zip,pN0\npatient_000_node_0.tif,negative\npatient_004.zip,pN1mi\n"
        "patient_004_node_4.tif,micro\npatient_005.zip,pN0(i+)\npatient_005_node_1.tif,itc\n"
        "patient_021.zip,pN1\npatient_021_node_2.tif,macro\npatient_021_node_3.tif,negative\n")
    assert dataset.detect(root) == "camelyon17"
    # patient_150 has no stage label: a test patient of the challenge, inferred without one; not an error (before:
    # missing_labels = "error" stopped the run, "exclude" dropped the patient)
    items, record = dataset.load(root, ds(test_centers=[1]))
    by = {i["slide"]: i for i in items}
    assert {n: (by[n]["split"], by[n]["label"], by[n]["center"]) for n in by} == {
        "patient_000_node_0": ("training", "normal", 0), "patient_004_node_4": ("training", "tumor", 0),
        "patient_005_node_1": ("training", "normal", 0),  # itc: isolated tumour cells are not a metastasis
        "patient_021_node_2": ("testing", "tumor", 1), "patient_021_node_3": ("testing", "normal", 1),
        "patient_150_node_0": ("testing", None, 2), "patient_150_node_1": ("testing", None, 2)}
    assert by["patient_004_node_4"]["lesion"] == "micro" and by["patient_005_node_1"]["lesion"] == "itc"
    assert {n: (by[n]["patient"], by[n]["patient_stage"]) for n in ("patient_005_node_1", "patient_021_node_3",
                                                                   "patient_150_node_0")} == {
        "patient_005_node_1": ("patient_005", "pN0(i+)"), "patient_021_node_3": ("patient_021", "pN1"),
        "patient_150_node_0": ("patient_150", None)}
    assert not record["excluded"] and record["counts"]["testing/unlabelled"] == {"slides": 2, "annotated": 0}
    groups = Masks().tumor_groups  # CAMELYON17's `metastases` group is tumour by default
    assert len(read_asap(by["patient_021_node_2"]["annotation"]).regions(groups)) == 1
    assert len(read_asap(by["patient_004_node_4"]["annotation"]).regions(groups)) == 3
    assert record["counts"]["testing/tumor"] == {"slides": 1, "annotated": 1}
    (root / "training" / "stage_labels.csv").write_text("patient,stage\npatient_000.zip,pN3\n")
    with pytest.raises(DataError, match=r"stage_labels.csv:2: stage 'pN3', expected one of pN0, pN0\(i\+\)"):
        dataset.load(root, ds())


def run_masks(tmp_path, root, **dataset_cfg):
    w = parse_workload({"name": "t", "stages": ["masks"],
                        "dataset": {"kind": "camelyon16", "path": str(root), **dataset_cfg}})
    with local_root(str(tmp_path / "data")):
        return pipeline.run(w, results_dir=tmp_path / "results")


def test_tumor_slide_without_annotation_is_an_error_naming_it(tmp_path, slides):
    """Before: Tumor_002 (its XML missing) was cut into normal patches, silently."""
    root = camelyon16(tmp_path / "c16", slides, True, REFERENCE, xmls=("Tumor_001",))
    with pytest.raises(DataError, match=r"slides labelled tumor without a lesion annotation \(1\): Tumor_002 .*"
                                        r"dataset.missing_annotations = \"exclude\""):
        run_masks(tmp_path, root)
    s = run_masks(tmp_path, root, missing_annotations="exclude")
    assert s["status"] == "ok" and s["dataset"]["excluded"] == [{"slide": "Tumor_002", "reason": "no lesion annotation"}]
    assert s["stages"]["masks"]["items"] == 4 and s["dataset"]["slides"] == 4


def test_test_slide_without_label_is_an_error_naming_it(tmp_path, slides):
    """Before: Test_002 (no row in reference.csv) dropped out of the slide AUC, silently."""
    root = camelyon16(tmp_path / "c16", slides, False, "Test_001,Normal\n")
    with pytest.raises(DataError, match=r"slides without a label \(1\): Test_002"):
        dataset.load(root, ds())
    items, record = dataset.load(root, ds(missing_labels="exclude"))
    assert "Test_002" not in {i["slide"] for i in items}
    assert record["excluded"] == [{"slide": "Test_002", "reason": "no label"}]


def test_known_problem_slides_are_kept_out_of_evaluation_by_default(tmp_path, slides):
    root = camelyon16(tmp_path / "c16", slides, False, REFERENCE + "Test_049,Normal\nTest_114,Tumor,Macro,Primary\n")
    link(slides["normal"], root / "testing" / "images" / "Test_049.tif")
    link(slides["tumor"], root / "testing" / "images" / "Test_114.tif")
    link(slides["xml"], root / "testing" / "lesion_annotations" / "Test_114.xml")
    items, record = dataset.load(root, ds())
    by = {i["slide"]: i for i in items}
    assert not by["Test_049"]["evaluate"] and not by["Test_114"]["evaluate"] and by["Test_002"]["evaluate"]
    assert [x["slide"] for x in record["not_evaluated"]] == ["Test_049", "Test_114"]
    assert "duplicate" in record["not_evaluated"][0]["reason"]
    items, record = dataset.load(root, ds(exclude_from_evaluation=[]))
    assert all(i["evaluate"] for i in items) and not record["not_evaluated"]
    # synthetic data (CAMELYON16 layout, generated names) has no known problem slides
    items, _ = dataset.load(root, ds(kind="synthetic"))
    assert all(i["evaluate"] for i in items)


def test_zip_members_are_untrusted(tmp_path, slides, monkeypatch):
    root = camelyon16(tmp_path / "c16", slides, True, REFERENCE)
    evil = root / "training" / "lesion_annotations.zip"
    xml = slides["xml"].read_bytes()
    with zipfile.ZipFile(evil, "a") as z:
        z.writestr("../../outside.xml", xml)
        z.writestr("/etc/absolute.xml", xml)
        z.writestr("C:/windows.xml", xml)
    s = dataset.scan(root)
    assert len(s.ignored) == 3 and all("unsafe name" in x for x in s.ignored)
    assert not any("outside" in str(v) or "absolute" in str(v) for v in s.annotations.values())
    for member in ("../../outside.xml", "/etc/absolute.xml"):
        with pytest.raises(AnnotationError, match="unsafe name"):
            read_asap(f"{evil}::{member}")
    assert not (tmp_path / "outside.xml").exists()
    from harness.slides import annotations
    monkeypatch.setattr(annotations, "MAX_MEMBER_BYTES", 100)  # a member larger than the cap is refused
    with pytest.raises(AnnotationError, match="Tumor_001.xml.*refused"):
        read_asap(f"{evil}::Tumor_001.xml")


def test_duplicate_names_and_unknown_layout_are_errors(tmp_path, slides):
    root = camelyon16(tmp_path / "c16", slides, False, REFERENCE)
    link(slides["tumor"], root / "training" / "tumor" / "tumor_001.tif")  # beside Tumor_001.tif
    with pytest.raises(DataError, match="two slides with the name 'tumor_001'"):
        dataset.load(root, ds())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset layout recognised"):
        dataset.detect(tmp_path / "empty")
    bad = camelyon16(tmp_path / "bad", slides, False, "Test_001,Normal\nTest_002,Cancer\n")
    with pytest.raises(DataError, match=r"reference.csv:2: class 'Cancer', expected Tumor or Normal"):
        dataset.scan(bad)


def validate(tmp_path, root, extra=""):
    w = tmp_path / "w.toml"
    w.write_text(f'name = "v"\n[dataset]\nkind = "auto"\npath = "{root}"\n{extra}')
    return subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(w)], capture_output=True, text=True)


def test_cli_validate_checks_the_dataset(tmp_path, slides):
    root = camelyon16(tmp_path / "c16", slides, True, REFERENCE + "Test_999,Normal\n", xmls=("Tumor_001", "Tumor_003"))
    r = validate(tmp_path, root)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "layout camelyon16 (detected)" in r.stdout
    assert "training   tumor            2         1" in r.stdout
    assert "1 unmatched (Tumor_003.xml)" in r.stdout and "1 rows name no slide (test_999)" in r.stdout
    assert "slides labelled tumor without a lesion annotation (1): Tumor_002" in r.stderr
    r = validate(tmp_path, root, 'missing_annotations = "exclude"\n')
    assert r.returncode == 0, r.stderr
    assert "excluded (not run): Tumor_002 (no lesion annotation)" in r.stdout
    r = validate(tmp_path, tmp_path / "nowhere")  # a dataset folder is the machine's: checked here, not in the file
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path / 'nowhere'}: dataset folder not found"
