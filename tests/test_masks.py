import numpy as np
import openslide
import pytest

from harness.config import Masks
from harness.slides.dataset import list_slides
from harness.slides.reader import SlideError, nearest_level
from harness.stages import masks

from conftest import iou, shared, truth


@pytest.fixture(scope="module")
def mask_dir(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("masks")
    for item in list_slides(dataset):
        masks.run_slide(item, Masks(), str(out))
    return out


def test_tumor_and_tissue_masks_match_ground_truth(dataset, mask_dir):
    for slide in ("tumor_001", "tumor_002", "test_002"):
        rec, tumor, tissue = masks.load(mask_dir, slide)
        assert rec["level"] == 3 and rec["downsample"] == 8.0  # the level nearest 32x on an 8192-px slide
        lab = truth(dataset, slide).label(tumor.shape, rec["downsample"])
        assert tumor.sum() > 1000
        assert iou(tumor, lab == 2) >= 0.98
        assert iou(tissue, lab > 0) >= 0.9
        assert rec["tumor_fraction"] == pytest.approx(tumor.mean())
    rec, tumor, tissue = masks.load(mask_dir, "normal_001")
    assert tumor.sum() == 0 and rec["tumor_fraction"] == 0 and 0.05 < rec["tissue_fraction"] < 0.6
    assert (mask_dir / "tumor_001_tumor.png").is_file() and (mask_dir / "tumor_001_tissue.png").is_file()


def test_tissue_on_real_slide():
    path = shared("slides/CMU-1-Small-Region.svs")
    s = openslide.OpenSlide(str(path))
    rgb = np.asarray(s.read_region((0, 0), 0, s.level_dimensions[0]).convert("RGB"))
    frac = masks.tissue_mask(rgb).mean()
    assert 0.2 < frac < 0.9, frac


def test_no_tissue_on_blank_region():
    rng = np.random.default_rng(0)
    blank = np.clip(245 + rng.normal(0, 2, (512, 512, 3)), 0, 255).astype(np.uint8)
    assert masks.tissue_mask(blank).sum() == 0


def test_level_uses_real_downsamples(tmp_path):
    path = shared("slides/TCGA-CR-7395-01A-01-TS1.svs")
    s = openslide.OpenSlide(str(path))
    assert s.level_downsamples[1] != 2.0
    assert nearest_level(s, 2.0) == 1 and nearest_level(s, 1.2) == 0
    item = {"slide": "tcga", "path": str(path), "split": "training", "label": None, "annotation": None}
    rec = masks.run_slide(item, Masks(level=1), str(tmp_path))
    assert rec["downsample"] == s.level_downsamples[1] and (rec["width"], rec["height"]) == s.level_dimensions[1]
    assert 0.1 < rec["tissue_fraction"] < 0.95
    with pytest.raises(SlideError, match="level 5 requested, the slide has 2"):
        masks.run_slide(item, Masks(level=5), str(tmp_path))


def test_corrupt_slide_is_named(tmp_path, dataset):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(SlideError, match="broken.tif: cannot open slide"):
        masks.run_slide({"slide": "broken", "path": str(bad), "split": "training"}, Masks(), str(tmp_path))


def test_one_level_slide_masks_are_made_at_the_target_downsample(tmp_path):
    """CMU-1-Small-Region has one level: its masks were made (and read back by the patch stage) at full resolution,
    1,024x the pixels of a 32x mask, which made masks + patches slower than the reference's thumbnail."""
    path = shared("slides/CMU-1-Small-Region.svs")
    s = openslide.OpenSlide(str(path))
    assert s.level_count == 1
    W, H = s.dimensions
    item = {"slide": "cmu", "path": str(path), "split": "training", "label": None, "annotation": None}
    rec = masks.run_slide(item, Masks(), str(tmp_path))
    _, tumor, tissue = masks.load(tmp_path, "cmu")
    assert rec["downsample"] == rec["tissue_downsample"] == 32.0 and rec["level"] == 0
    assert tissue.shape == tumor.shape == (-(-H // 32), -(-W // 32))
    # the same tissue as at full resolution, reduced: each mask pixel stands for its 32 x 32 square
    full = masks.tissue_mask(np.asarray(s.read_region((0, 0), 0, (W, H)).convert("RGB")))
    padded = np.zeros((tissue.shape[0] * 32, tissue.shape[1] * 32), bool)
    padded[:H, :W] = full
    share = padded.reshape(tissue.shape[0], 32, tissue.shape[1], 32).mean(axis=(1, 3))
    assert abs(tissue.mean() - full.mean()) < 0.05
    assert ((share > 0.5) == tissue).mean() > 0.9
    # an explicit level keeps its own resolution
    rec0 = masks.run_slide(item, Masks(level=0), str(tmp_path))
    assert rec0["downsample"] == 1.0 and (rec0["width"], rec0["height"]) == (W, H)


def test_an_unreadable_mask_is_named(tmp_path):
    """A mask file that cannot be decoded (a storage that lost its data, a truncated write) fails its slide naming the
    file; cv2.imread returned None for it, and the slide failed with a TypeError naming nothing."""
    import cv2
    import numpy as np

    from harness.errors import StageInputError
    from harness.stages import masks

    (tmp_path / "s1.json").write_text('{"level": 5}')
    ok, png = cv2.imencode(".png", np.ones((4, 4), np.uint8) * 255)
    (tmp_path / "s1_tissue.png").write_bytes(png.tobytes())
    (tmp_path / "s1_tumor.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(StageInputError, match=f"{tmp_path / 's1_tumor.png'}: not a readable mask image"):
        masks.load(tmp_path, "s1")
    (tmp_path / "s1_tumor.png").write_bytes(png.tobytes())
    rec, tumor, tissue = masks.load(tmp_path, "s1")
    assert rec == {"level": 5} and tumor.all() and tissue.dtype == bool
