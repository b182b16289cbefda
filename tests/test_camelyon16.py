"""workloads/camelyon16.toml end to end on synthetic slides in the exact release layout: capitalised names as
released, annotations in lesion_annotations.zip, a 4-column reference.csv. The layout and the mask and patch
settings are the workload's; only the model, its steps and the engine are made small for a test."""
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness import pipeline
from harness.config import load_workload, parse_workload
from harness.slides import synth

import conftest
from conftest import ROOT, local_root

pytestmark = pytest.mark.slow  # every test reads one run of the whole pipeline, training included


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
    # Adam, 100 steps: the reference's RMSProp (epsilon 1.0) leaves a small model's heatmaps near 0.45-0.5 after
    # as many, under the FROC's detection threshold of 0.5, and the FROC a vacuous 0
    w["train"].update(model="small_cnn", image_size=32, batch_size=32, steps_per_epoch=100, epochs=1,
                      optimizer="adam", learning_rate=2e-3)
    w["tfrecords"].update(shards=None, shard_mb=2, val_fraction=0.3)
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
    """The reference's sampling: tumor patches from tumor slides, normal ones from normal slides only, each
    accepted on the mask pixel at its top-left corner (a tumor patch's corner inside a lesion polygon, a normal
    one's on tissue), at most 3,000 per slide and class, at level 0, 224 px, JPEG quality 75 (Pillow's default,
    whose luminance table starts at 8; quality 90's at 3); files and bytes per class recorded."""
    from matplotlib.path import Path as MplPath

    from harness.slides.annotations import read_asap
    from harness.stages import masks

    summary, root, data = c16_run
    assert summary["status"] == "ok", summary["stages"]
    m = pd.concat([pd.read_parquet(p) for p in (data / "patches" / "manifests").glob("*.parquet")])
    tumor, normal = m[m.label == "tumor"], m[m.label == "normal"]
    assert len(tumor) > 100 and len(normal) > 100
    assert set(tumor.slide) == {"Tumor_001", "Tumor_002"}
    assert set(normal.slide) == {"Normal_001", "Normal_002"}           # normal patches from normal slides only
    for slide, rows in tumor.groupby("slide"):
        ann = read_asap(f"{root}/training/lesion_annotations.zip::{slide}.xml")
        lesion = [MplPath(p) for p in ann.regions(["_0", "_1"])]
        holes = [MplPath(p) for p in ann.regions(["_2"])]
        corners = np.c_[rows.x, rows.y]
        inside = np.any([p.contains_points(corners) for p in lesion], axis=0)
        if holes:
            inside &= ~np.any([p.contains_points(corners) for p in holes], axis=0)
        assert inside.all(), slide                                    # the corner pixel is tumour
    for slide, rows in normal.groupby("slide"):
        rec, _, tissue = masks.load(data / "masks", slide)
        ds = rec["tissue_downsample"]
        assert tissue[(rows.y / ds).astype(int), (rows.x / ds).astype(int)].all(), slide  # the corner is tissue
    assert m.groupby(["slide", "label"]).size().max() <= 3000 and m.level.eq(0).all()
    jpeg = data / "patches" / "tumor" / (tumor.path.iloc[0].split("/")[-1])
    with Image.open(jpeg) as im:
        assert im.size == (224, 224) and im.quantization[0][0] == 8
    pc = summary["stages"]["patches"]["per_class"]
    assert summary["stages"]["patches"]["sampling"] == "reference"
    assert (pc["tumor"]["files"], pc["normal"]["files"]) == (len(tumor), len(normal))
    assert (pc["tumor"]["bytes"], pc["normal"]["bytes"]) == (tumor.bytes.sum(), normal.bytes.sum())


def test_infer_records_auc_and_the_official_froc(c16_run, dataset):
    """The recorded FROC against an independent implementation (tests/froc_oracle.py: exact geometry, NumPy
    alone) fed the saved heatmaps and the generator's ground-truth lesion polygons; it bounds the FROC where raster
    and geometry may disagree at a lesion's edge."""
    import openslide

    import froc_oracle

    summary, root, data = c16_run
    i = summary["infer"]
    assert i["evaluated_slides"] == 2 and i["not_evaluated"] == []
    assert i["slide_auc"] is not None and i["patch_auc"] is not None
    assert set(i["froc_sensitivities"]) == {"0.25", "0.5", "1", "2", "4", "8"}
    threshold = load_workload(ROOT / "workloads" / "camelyon16.toml").infer.froc_threshold
    labels = {f[0]: f[1] for f in (r.split(",") for r in (root / "testing" / "reference.csv").read_text().splitlines())
              if len(f) > 1 and f[1] in ("Tumor", "Normal")}
    slides, lesions = [], 0
    for name, label in sorted(labels.items()):
        heat = np.load(data / "infer" / f"{name}_heatmap.npy")
        slide = openslide.OpenSlide(root / "testing" / "images" / f"{name}.tif")
        mpp, width = float(slide.properties[openslide.PROPERTY_NAME_MPP_X]), slide.dimensions[0]
        truth = None
        if label == "Tumor":
            truth = froc_oracle.Lesions(conftest.truth(dataset, name.lower()).lesions, mpp)
            lesions += truth.lesions
        slides.append((froc_oracle.slide_outcomes(heat, width / heat.shape[1], threshold, truth, band=64.0), truth))
    # a trained model's heatmaps reach the threshold somewhere (else the comparison below is 0 against 0); its
    # lesion is usually found (FROC 1.0 in 14 of 15 runs here; once a model flagged normal tissue at 0.998 and
    # missed it: no floor on the FROC itself, which would flake)
    assert any(dets for dets, _ in slides), "no heatmap reached the detection threshold: is the model trained?"
    (low, low_s), (high, high_s) = froc_oracle.froc_bounds(slides)
    assert i["froc_detail"]["slides"] == 2 and i["froc_detail"]["lesions"] == lesions >= 1
    assert low - 1e-9 <= i["froc"] <= high + 1e-9, (i["froc"], low, high, i["froc_detail"])
    for rate, lo, hi in zip(froc_oracle.RATES, low_s, high_s):
        assert lo - 1e-9 <= i["froc_sensitivities"][f"{rate:g}"] <= hi + 1e-9, (rate, lo, hi, i["froc_detail"])
