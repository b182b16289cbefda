"""workloads/camelyon16.toml end to end on synthetic slides in the exact release layout: capitalised names as
released, annotations in lesion_annotations.zip, a 4-column reference.csv. The layout and the mask and patch
settings are the workload's; only the model, its steps and the engine are made small for a test."""
import os

import numpy as np
import pandas as pd
import pytest

from harness import pipeline
from harness.config import load_workload, parse_workload
from harness.slides import synth

from conftest import ROOT, local_root


def release_layout(src, dst):
    """The synthetic dataset as the release ships: Tumor_001.tif, lesion_annotations.zip with Tumor_001.xml."""
    for p in sorted(src.rglob("*")):
        if p.is_file() and "ground_truth" not in p.parts and p.name != "reference.csv":
            rel = p.relative_to(src)
            stem = p.stem[0].upper() + p.stem[1:]  # tumor_001 -> Tumor_001
            target = dst / rel.parent / (stem + p.suffix if p.suffix in (".tif", ".xml") else p.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, target)  # slides and XML linked, not copied (the zip is a new file)
    synth.zip_annotations(dst)
    rows = (src / "testing" / "reference.csv").read_text().splitlines()
    (dst / "testing" / "reference.csv").write_text("".join(r[0].upper() + r[1:] + "\n" for r in rows))  # a new file
    return dst


@pytest.fixture(scope="module")
def c16_run(dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("c16")
    root = release_layout(dataset, tmp / "CAMELYON16")
    w = load_workload(ROOT / "workloads" / "camelyon16.toml").model_dump()
    w["dataset"]["path"] = str(root)
    w["engine"] = {"name": "multiprocessing", "workers": 2}
    w["train"].update(model="small_cnn", image_size=32, batch_size=32, steps_per_epoch=15, epochs=1)
    w["tfrecords"].update(shard_mb=2, val_fraction=0.3)
    with local_root(str(tmp / "data")):
        summary = pipeline.run(parse_workload(w), results_dir=tmp / "results")
    return summary, root, tmp / "data" / "camelyon16"


def test_release_layout_is_the_one_read(c16_run):
    summary, root, _ = c16_run
    assert (root / "training" / "lesion_annotations.zip").is_file()
    assert not (root / "training" / "lesion_annotations").exists()
    assert sorted(p.name for p in (root / "training" / "tumor").iterdir()) == ["Tumor_001.tif", "Tumor_002.tif"]
    assert (root / "testing" / "reference.csv").read_text().splitlines()[1].startswith("Test_002,Tumor,")
    d = summary["dataset"]
    assert d["layout"] == "camelyon16" and d["slides"] == 6 and not d["excluded"]
    assert d["counts"]["training/tumor"] == {"slides": 2, "annotated": 2}
    assert d["counts"]["testing/tumor"] == {"slides": 1, "annotated": 1}


def test_patches_follow_the_reference_settings(c16_run):
    summary, _, data = c16_run
    assert summary["status"] == "ok", summary["stages"]
    m = pd.concat([pd.read_parquet(p) for p in (data / "patches" / "manifests").glob("*.parquet")])
    tumor, normal = m[m.label == "tumor"], m[m.label == "normal"]
    assert len(tumor) > 100 and len(normal) > 100
    assert set(tumor.slide) == {"Tumor_001", "Tumor_002"}
    assert set(normal.slide) == {"Normal_001", "Normal_002"}           # normal patches from normal slides only
    assert (tumor.x % 64 == 0).all() and (tumor.y % 64 == 0).all()      # tumor stride 64 px
    assert (normal.x % 320 == 0).all() and (normal.y % 320 == 0).all()  # normal stride 320 px
    assert ((tumor.x % 320 != 0) | (tumor.y % 320 != 0)).any()
    assert (tumor.tumor_fraction >= 0.9).all() and (normal.tumor_fraction == 0).all()
    assert (normal.tissue_fraction >= 0.5).all() and m.level.eq(0).all()
    assert m.groupby(["slide", "label"]).size().max() <= 3000
    # a tumor stride of 64 px finds about (224 / 64)^2 more tumor patches than one of 224 would
    assert len(tumor) > 6 * tumor.groupby("slide").apply(lambda t: ((t.x % 224 == 0) & (t.y % 224 == 0)).sum()).sum()


def test_infer_records_auc_and_the_official_froc(c16_run):
    summary, _, _ = c16_run
    i = summary["infer"]
    assert i["evaluated_slides"] == 2 and i["not_evaluated"] == []
    assert i["slide_auc"] is not None and i["patch_auc"] is not None
    assert set(i["froc_sensitivities"]) == {"0.25", "0.5", "1", "2", "4", "8"}
    assert 0 <= i["froc"] <= 1 and i["froc"] == pytest.approx(np.mean(list(i["froc_sensitivities"].values())))
    assert i["froc_detail"]["slides"] == 2 and i["froc_detail"]["lesions"] >= 1
