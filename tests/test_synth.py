import hashlib

import numpy as np
import openslide

from harness.slides import synth
from harness.slides.dataset import list_slides, reference

from conftest import truth


def test_layout_and_reference(dataset):
    slides = list_slides(dataset)
    names = {(s["split"], s["slide"]) for s in slides}
    assert names == {("training", "normal_001"), ("training", "normal_002"), ("training", "tumor_001"),
                     ("training", "tumor_002"), ("testing", "test_001"), ("testing", "test_002")}
    assert (dataset / "training" / "tumor" / "tumor_001.tif").is_file()
    assert (dataset / "training" / "normal" / "normal_001.tif").is_file()
    assert (dataset / "testing" / "images" / "test_001.tif").is_file()
    # annotations for tumor slides only
    assert sorted(p.name for p in (dataset / "training" / "lesion_annotations").iterdir()) == ["tumor_001.xml", "tumor_002.xml"]
    assert reference(dataset) == {"test_001": "normal", "test_002": "tumor"}
    assert [p.name for p in (dataset / "testing" / "lesion_annotations").iterdir()] == ["test_002.xml"]


def test_openslide_levels_and_mpp(dataset):
    s = openslide.OpenSlide(str(dataset / "training" / "tumor" / "tumor_001.tif"))
    assert s.level_count == 4
    assert s.level_dimensions == ((8192, 8192), (4096, 4096), (2048, 2048), (1024, 1024))
    assert s.level_downsamples == (1.0, 2.0, 4.0, 8.0)
    assert float(s.properties["openslide.mpp-x"]) == 0.25 and float(s.properties["openslide.mpp-y"]) == 0.25
    assert s.properties["tiff.ImageDescription"].startswith("wsibench synthetic slide")


def test_odd_size_pyramid(tmp_path):
    rng = np.random.default_rng(0)
    rec = synth.write_slide(tmp_path / "s.tif", synth.make_layout(rng, 5000, True), rng, mpp=0.5)
    s = openslide.OpenSlide(str(tmp_path / "s.tif"))
    assert rec["levels"] == s.level_count == 4
    assert s.level_dimensions[-1] == (625, 625) and s.level_dimensions[1] == (2500, 2500)
    assert float(s.properties["openslide.mpp-x"]) == 0.5


def test_deterministic(tmp_path):
    digests = []
    for k in range(2):
        synth.generate(tmp_path / str(k), slides=2, size=4096, seed=9)
        digests.append(hashlib.sha256((tmp_path / str(k) / "training" / "tumor" / "tumor_001.tif").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    synth.generate(tmp_path / "other", slides=2, size=4096, seed=10)
    assert hashlib.sha256((tmp_path / "other" / "training" / "tumor" / "tumor_001.tif").read_bytes()).hexdigest() != digests[0]


def test_pixels_follow_the_layout(dataset):
    """Background is white, tissue is pink/purple, and tumor pixels hold more (darker) nuclei than normal tissue."""
    s = openslide.OpenSlide(str(dataset / "training" / "tumor" / "tumor_001.tif"))
    lay = truth(dataset, "tumor_001")
    level = 2  # 2048 px
    rgb = np.asarray(s.read_region((0, 0), level, s.level_dimensions[level]).convert("RGB")).astype(int)
    lab = lay.label(rgb.shape[:2], 4.0)
    bg, normal, tumor = (rgb[lab == c] for c in (0, 1, 2))
    assert bg.mean() > 235 and bg.std() < 5
    assert normal.mean() < 215 and tumor.mean() < 215
    assert (normal[:, 1] < normal[:, 0]).mean() > 0.9  # pink-purple: green lowest
    full = np.asarray(s.read_region((0, 0), 0, (8192, 8192)).convert("L"))
    lab0 = lay.label(full.shape, 1.0)
    dark = full < 110  # nuclei
    assert dark[lab0 == 2].mean() > 1.5 * dark[lab0 == 1].mean()
