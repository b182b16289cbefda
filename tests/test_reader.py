"""The fast tile path against OpenSlide, pixel for pixel, for every tile format it claims (reader.PROVEN), and the
fall-back to OpenSlide for the others."""
import cv2
import numpy as np
import openslide
import pytest
import tifffile

from harness.slides import reader
from harness.slides.reader import TileReader

from conftest import shared

APERIO = "Aperio Image Library v12.0.15 \n1500x1200 [0,0 1500x1200] (256x256) J2K/KDU Q=70|AppMag = 20|MPP = 0.5"


def level_pixels(s: openslide.OpenSlide, level: int) -> np.ndarray:
    """The whole level as OpenSlide decodes it (white where transparent)."""
    w, h = s.level_dimensions[level]
    rgba = np.asarray(s.read_region((0, 0), level, (w, h)))
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def crop(full: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """A region of a level, white outside it."""
    out = np.full((h, w, 3), 255, np.uint8)
    H, W = full.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 > x0 and y1 > y0:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = full[y0:y1, x0:x1]
    return out


def regions(w: int, h: int, n: int = 12, seed: int = 0):
    """Random regions over the level, some across its edges, plus a 224-px patch at a tile corner."""
    rng = np.random.default_rng(seed)
    yield 500, 500, 224, 224
    for _ in range(n):
        rw, rh = (int(v) for v in rng.integers(1, 400, 2))
        yield int(rng.integers(-60, w - 10)), int(rng.integers(-60, h - 10)), rw, rh


def assert_same_as_openslide(path, expect_direct=True):
    s = openslide.OpenSlide(str(path))
    for level in range(s.level_count):
        full = level_pixels(s, level)
        r = TileReader(path, level, s)
        assert r.direct is expect_direct, (path, level, r.fallback_reason)
        w, h = s.level_dimensions[level]
        for x, y, rw, rh in regions(w, h):
            got = r.region(x, y, rw, rh)
            assert np.array_equal(got, crop(full, x, y, rw, rh)), (path, level, x, y, rw, rh)
        assert np.array_equal(r.region(0, 0, w, h), full)
        if s.level_downsamples[level] == 1.0:  # at level 0, read_region itself is the reference
            ref = np.asarray(s.read_region((300, 200), 0, (224, 224)))[..., :3]
            assert np.array_equal(r.region(300, 200, 224, 224), ref)
    s.close()


@pytest.mark.parametrize("rel", ["slides/CMU-1-Small-Region.svs", "slides/TCGA-CR-7395-01A-01-TS1.svs"])
def test_real_slides_decode_as_openslide_does(rel):
    """CMU-1: Aperio JPEG in RGB, 240-px tiles; TCGA: Aperio JPEG 2000 (33005), two levels, non-integer downsample."""
    assert_same_as_openslide(shared(rel))


def image(seed=0, w=1500, h=1200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 255, (h // 12, w // 12, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


def write_pyramid(path, tile=512, **kw):
    img = image()
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, tile=(tile, tile), metadata=None, **kw)
        tw.write(cv2.resize(img, (750, 600), interpolation=cv2.INTER_AREA), tile=(tile, tile), subfiletype=1,
                 metadata=None, **kw)
    return path


GENERATED = {
    "jpeg-ycbcr-420": dict(compression="jpeg", photometric="ycbcr", subsampling=(2, 2)),
    "jpeg-ycbcr-444": dict(compression="jpeg", photometric="ycbcr", subsampling=(1, 1)),
    "lzw": dict(compression="lzw", photometric="rgb"),
    "lzw-predictor": dict(compression="lzw", photometric="rgb", predictor=True),
    "deflate": dict(compression="zlib", photometric="rgb"),
    "zstd": dict(compression="zstd", photometric="rgb"),
    "packbits": dict(compression="packbits", photometric="rgb"),
    "uncompressed": dict(compression=None, photometric="rgb"),
}


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_512px_tiffs_decode_as_openslide_does(tmp_path, name):
    path = write_pyramid(tmp_path / f"{name}.tif", **GENERATED[name])
    page = tifffile.TiffFile(path).pages[0]
    assert page.tilewidth == 512 and (int(page.compression), int(page.photometric)) in reader.PROVEN
    assert_same_as_openslide(path)


def write_aperio_j2k(path, compression, photometric):
    img = image(1)
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, tile=(256, 256), compression=compression, photometric=photometric, metadata=None, description=APERIO)
        tw.write(cv2.resize(img, (375, 300)), metadata=None, description="Aperio Image Library v12.0.15 \n1500x1200 -> 375x300")
        tw.write(cv2.resize(img, (750, 600), interpolation=cv2.INTER_AREA), tile=(256, 256), compression=compression,
                 photometric=photometric, metadata=None, description="Aperio Image Library v12.0.15 \n1500x1200 -> 750x600")
    return path


def test_aperio_jpeg2000_rgb_is_direct(tmp_path):
    assert_same_as_openslide(write_aperio_j2k(tmp_path / "rgb.svs", 33005, "rgb"))


def test_unproven_formats_fall_back_to_openslide(tmp_path, monkeypatch):
    """Aperio JPEG 2000 in YCbCr (33003): decoding the tiles directly gives other pixels than OpenSlide's, so the
    reader must not claim it; through the fall-back it returns OpenSlide's pixels."""
    path = write_aperio_j2k(tmp_path / "ycbcr.svs", 33003, "ycbcr")
    s = openslide.OpenSlide(str(path))
    r = TileReader(path, 0, s)
    ref = np.asarray(s.read_region((100, 80), 0, (224, 224)))[..., :3]
    assert np.array_equal(r.region(100, 80, 224, 224), ref)  # before: decoded directly, other pixels
    assert not r.direct and "compression 33003" in r.fallback_reason
    assert (33003, 6) not in reader.PROVEN
    monkeypatch.setitem(reader.PROVEN, (33003, 6), "claimed without proof")
    forced = TileReader(path, 0, s)
    assert forced.direct and not np.array_equal(forced.region(100, 80, 224, 224), ref)
    # RGBA tiles are not claimed either
    rgba = np.dstack([image(), np.full((1200, 1500), 255, np.uint8)])
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, tile=(512, 512), compression="lzw", photometric="rgb", metadata=None)
    r = TileReader(tmp_path / "rgba.tif", 0)
    assert not r.direct and "4 samples" in r.fallback_reason


def test_synthetic_slides_take_the_direct_path(dataset):
    """The generator writes what CAMELYON16 ships: 512-px JPEG tiles in YCbCr."""
    path = dataset / "training" / "tumor" / "tumor_001.tif"
    page = tifffile.TiffFile(path).pages[0]
    assert (page.tilewidth, int(page.compression), int(page.photometric)) == (512, 7, 6)
    s = openslide.OpenSlide(str(path))
    r = TileReader(path, 0, s)
    assert r.direct
    for x, y, w, h in regions(8192, 8192, n=6):
        ref = np.asarray(s.read_region((x, y), 0, (w, h)))
        rgb = ref[..., :3].copy()
        rgb[ref[..., 3] == 0] = 255
        assert np.array_equal(r.region(x, y, w, h), rgb)
