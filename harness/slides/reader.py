"""Opening slides, and reading their pixels fast.

``open_slide`` wraps OpenSlide with errors that name the file. ``TileReader`` reads regions of one pyramid
level by decoding the source tiles directly (tifffile + imagecodecs, each tile at most once while it is in
use), and falls back to OpenSlide's read_region where the file is not a tiled TIFF whose tile format is in
``PROVEN``: the (compression, photometric) pairs whose direct decoding tests/test_reader.py checks pixel for
pixel against OpenSlide, on the real slides of ../shared/data and on generated variants (512-px tiles).
Anything else (JPEG 2000 in YCbCr, alpha, 16-bit, planar, formats OpenSlide reads otherwise) goes through
OpenSlide.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openslide

from ..errors import WsibenchError
from ..fsutil import not_a_file


class SlideError(WsibenchError, RuntimeError):
    """A slide that cannot be opened or read; the message names the file."""


# (TIFF compression, photometric) -> what it is; decoded directly only these (see tests/test_reader.py)
PROVEN = {
    (1, 2): "uncompressed RGB",
    (5, 2): "LZW RGB (with or without horizontal predictor)",
    (8, 2): "Deflate RGB",
    (32946, 2): "Deflate RGB (old code)",
    (32773, 2): "PackBits RGB",
    (50000, 2): "Zstandard RGB",
    (7, 6): "JPEG YCbCr (CAMELYON16, generic pyramidal TIFF)",
    (7, 2): "JPEG RGB (Aperio)",
    (33005, 2): "JPEG 2000 RGB (Aperio)",
}


# What a sane slide can have. A CAMELYON16 slide is ~100k x 200k px in 512-px tiles; a hostile file that declares
# 2^20 x 2^20 tiles makes OpenSlide's decoder abort allocating 4 TiB, killing its process: refuse it before.
MAX_SIDE = 2 ** 21  # px: 2 million, 10x the largest slides scanned today
MAX_TILE = 4096  # px
MAX_TILES = 2 ** 24  # per page


def check_tiff(path: str) -> None:
    """Refuse a TIFF whose pages declare dimensions no slide can have (SlideError naming the page); files that
    are no TIFF, or that tifffile cannot parse, are left to OpenSlide."""
    pages = _tiff_pages(path)
    base = pages[0].shape if pages else None
    for i, page in enumerate(pages):
        w, h = int(page.imagewidth), int(page.imagelength)
        tw, th = (int(page.tilewidth), int(page.tilelength)) if page.is_tiled else (w, 0)
        problem = None
        if not 0 < w <= MAX_SIDE or not 0 < h <= MAX_SIDE:
            problem = f"declares {w} x {h} px (a slide has at most {MAX_SIDE} a side)"
        elif page.is_tiled and not (0 < tw <= MAX_TILE and 0 < th <= MAX_TILE):
            problem = f"declares {tw} x {th} px tiles (at most {MAX_TILE})"
        elif page.is_tiled and -(-w // tw) * -(-h // th) > MAX_TILES:
            problem = f"declares {-(-w // tw)} x {-(-h // th)} tiles (at most {MAX_TILES})"
        elif i and page.is_tiled and base and (h > base[0] or w > base[1]):
            problem = f"is a reduced level of {w} x {h} px, larger than level 0 ({base[1]} x {base[0]})"
        if problem:
            raise SlideError(f"{path}: TIFF page {i} {problem}: refused before decoding")


def check_extent(path: str | Path) -> None:
    """Refuse a TIFF whose pages' tile (or strip) data reach beyond the end of the file, as a truncated copy's do
    (SlideError naming the page, where its data end and the file's size). Reads the tile tables, not the pixels;
    files that are no TIFF, or that tifffile cannot parse, are left to OpenSlide."""
    size = os.path.getsize(path)
    for i, page in enumerate(_tiff_pages(str(path))):
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
        if ends and max(ends) > size:
            raise SlideError(f"{path}: truncated: TIFF page {i}'s tiles reach byte {max(ends)}, the file has {size} "
                             "bytes")


def _tiff_pages(path: str) -> list:
    """A TIFF's pages as tifffile reads them (their tags and tile tables; the file is closed again), or [] for a
    file that is no TIFF or that tifffile cannot parse (OpenSlide names what is wrong with it). tifffile's own
    complaints ("invalid page offset", without the file's name) are kept off standard error."""
    import logging

    with open(path, "rb") as f:
        if f.read(4) not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            return []
    import tifffile
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with tifffile.TiffFile(path) as tf:
            return list(tf.pages)
    except Exception:  # noqa: BLE001 - OpenSlide names what is wrong with the file
        return []
    finally:
        log.setLevel(level)


def load_codecs() -> None:
    """Load what reading tiles loads on first use (tifffile, libturbojpeg, imagecodecs' JPEG codec): a worker's
    warm-up calls it, so that the first slide a worker reads pays no import (stages' ``prepare_worker``)."""
    import importlib

    import imagecodecs

    from . import jpeg

    importlib.import_module("tifffile")
    jpeg.available()
    imagecodecs.jpeg8_encode, imagecodecs.jpeg8_decode  # imagecodecs loads each codec's module on first access


def open_slide(path: str | Path) -> openslide.OpenSlide:
    path = str(path)
    why = not_a_file(path)
    if why:
        raise SlideError(f"{path}: {'slide not found' if why == 'not found' else why}")
    try:
        check_tiff(path)
    except OSError as e:  # named: a read's error names no file (an EIO of a storage that lost the file's data)
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror, path) from e
    try:
        return openslide.OpenSlide(path)
    except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError) as e:
        raise SlideError(f"{path}: cannot open slide: {e or type(e).__name__}") from None


def read_level(slide: openslide.OpenSlide, level: int, path: str = "", warnings: list | None = None) -> np.ndarray:
    """The whole of one (small) level as RGB uint8, white where the slide is transparent. Read from the tiles
    directly where their format is proven, so that a corrupt tile is caught (an error, or a warning appended to
    ``warnings`` when a list is given); else through OpenSlide."""
    reader = TileReader(path or slide._filename, level, slide, "record" if warnings is not None else "error")
    with reader:
        if reader.direct:
            px = reader.region(0, 0, reader.width, reader.height)
            if warnings is not None:
                warnings += reader.warnings
            return px
    w, h = slide.level_dimensions[level]
    try:
        rgba = np.asarray(slide.read_region((0, 0), level, (w, h)))
    except openslide.OpenSlideError as e:
        raise SlideError(f"{path or slide}: cannot read level {level}: {e}") from None
    return _flatten(rgba)


def _flatten(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def nearest_level(slide: openslide.OpenSlide, downsample: float) -> int:
    """The level whose real downsample is nearest (in log scale) to ``downsample``."""
    ds = np.asarray(slide.level_downsamples, float)
    return int(np.argmin(np.abs(np.log(ds) - np.log(downsample))))


def mpp(slide: openslide.OpenSlide) -> float | None:
    v = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    return float(v) if v else None


class TileReader:
    """Regions of one level, from decoded source tiles (or read_region where that is not possible).

    ``region(x, y, w, h)`` takes level coordinates. Decoded tiles are kept until ``forget_above(y)``
    says no later request reaches above row y, so a row-major sweep decodes every tile once.
    """

    def __init__(self, path: str | Path, level: int, slide: openslide.OpenSlide | None = None,
                 on_warning: str = "error"):
        self.path, self.level = str(path), level
        self.on_warning = on_warning  # a corrupt JPEG tile: "error" (the slide fails) or "record" (self.warnings)
        self.warnings: list[str] = []
        self._owns_slide = slide is None
        self.slide = slide or open_slide(path)
        self.width, self.height = self.slide.level_dimensions[level]
        self.tiles_decoded = 0
        self.fallback_reason: str | None = None
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._forgot = -1
        self._pool: list[np.ndarray] = []  # tile buffers to reuse: allocation churn costs more than decoding
        self._jpeg = self._tj = None
        self._page = self._tiff_page()
        self._fd = os.open(self.path, os.O_RDONLY) if self._page is not None else None

    def _tiff_page(self):
        """The level's tiled TIFF page when its format is proven to decode as OpenSlide does, else None
        (the reason in ``fallback_reason``)."""
        try:
            import tifffile
            tf = tifffile.TiffFile(self.path)
        except Exception:  # noqa: BLE001 - not a TIFF tifffile reads: use OpenSlide
            self.fallback_reason = "not a TIFF"
            return None
        for page in tf.pages:
            if not (page.is_tiled and (page.imagewidth, page.imagelength) == (self.width, self.height)):
                continue
            fmt = (int(page.compression), int(page.photometric))
            if fmt not in PROVEN or page.samplesperpixel != 3 or page.dtype != np.uint8 or page.imagedepth != 1 \
                    or page.planarconfig != 1 or page.bitspersample != 8:
                self.fallback_reason = (f"tile format not proven (compression {fmt[0]}, photometric {fmt[1]}, "
                                        f"{page.samplesperpixel} samples of {page.bitspersample} bits)")
                break
            self._tf = tf
            self.tw, self.th = page.tilewidth, page.tilelength
            self.cols = -(-self.width // self.tw)
            if page.compression == 7:  # JPEG: decode straight into pooled buffers (no allocation per tile)
                from . import jpeg
                if jpeg.available():  # libjpeg-turbo's TurboJPEG: the same pixels, and corrupt data reported
                    self._tj = jpeg.Decoder(page.jpegtables, rgb=int(page.photometric) == 2)
                else:  # imagecodecs: the same pixels, but corrupt data passes silently
                    import imagecodecs
                    from tifffile.tifffile import jpeg_decode_colorspace
                    cs = jpeg_decode_colorspace(page.photometric, page.planarconfig, page.extrasamples, page.is_jfif)
                    self._jpeg = (imagecodecs.jpeg8_decode, page.jpegtables, *cs)
            return page
        else:
            self.fallback_reason = self.fallback_reason or "no tiled page of the level's size"
        tf.close()
        return None

    @property
    def direct(self) -> bool:
        return self._page is not None

    def _tile(self, ty: int, tx: int) -> np.ndarray:
        key = (ty, tx)
        t = self._cache.get(key)
        if t is None:
            page = self._page
            i = ty * self.cols + tx
            n = page.databytecounts[i]
            try:
                data = os.pread(self._fd, n, page.dataoffsets[i])
            except OSError as e:  # named: a read's error names no file (an EIO of a storage that lost its data)
                raise OSError(e.errno, f"{e.strerror} reading level {self.level} tile ({tx}, {ty})", self.path) from e
            if len(data) != n or n == 0:
                raise SlideError(f"{self.path}: level {self.level} tile ({tx}, {ty}) is truncated")
            where = f"{self.path}: level {self.level} tile ({tx}, {ty})"
            try:
                if self._tj is not None:
                    t = self._pool.pop() if self._pool else np.empty((self.th, self.tw, 3), np.uint8)
                    warning = self._tj.decode(data, t)
                    if warning:
                        if self.on_warning == "error":
                            raise SlideError(f"{where}: corrupt JPEG data: {warning} (dataset.decode_warnings = "
                                             "\"record\" keeps such tiles, recorded)")
                        self.warnings.append(f"{where}: corrupt JPEG data: {warning}")
                elif self._jpeg is not None:
                    decode, tables, cs, out_cs = self._jpeg
                    buf = self._pool.pop() if self._pool else None
                    t = decode(data, tables=tables, colorspace=cs, outcolorspace=out_cs, out=buf)
                else:
                    t = page.decode(data, i, jpegtables=page.jpegtables)[0]
            except SlideError:
                raise
            except Exception as e:  # noqa: BLE001 - codec errors come in many types
                raise SlideError(f"{where} cannot be decoded: {e}") from None
            t = t.reshape(t.shape[-3:])
            self._cache[key] = t
            self.tiles_decoded += 1
        return t

    def region(self, x: int, y: int, w: int, h: int, out: np.ndarray | None = None) -> np.ndarray:
        """RGB pixels of the level region; written into ``out`` (h, w, 3) when given."""
        if self._page is None:
            try:
                ds = self.slide.level_downsamples[self.level]
                rgba = np.asarray(self.slide.read_region((round(x * ds), round(y * ds)), self.level, (w, h)))
            except openslide.OpenSlideError as e:
                raise SlideError(f"{self.path}: cannot read region at ({x}, {y}) of level {self.level}: {e}") from None
            return _flatten(rgba)
        x1, y1 = min(x + w, self.width), min(y + h, self.height)
        inside = x >= 0 and y >= 0 and x1 == x + w and y1 == y + h
        if out is None:
            out = np.empty((h, w, 3), np.uint8)
        if not inside:
            out[:] = 255
        for ty in range(max(y, 0) // self.th, (y1 - 1) // self.th + 1):
            for tx in range(max(x, 0) // self.tw, (x1 - 1) // self.tw + 1):
                tile = self._tile(ty, tx)
                ox, oy = tx * self.tw, ty * self.th
                sx0, sy0 = max(x, ox), max(y, oy)
                sx1, sy1 = min(x1, ox + self.tw), min(y1, oy + self.th)
                out[sy0 - y: sy1 - y, sx0 - x: sx1 - x] = tile[sy0 - oy: sy1 - oy, sx0 - ox: sx1 - ox, :3]
        return out

    def forget_above(self, y: int) -> None:
        """Drop decoded tiles that lie wholly above level row y."""
        if self._page is not None:
            row = y // self.th
            if row != self._forgot:
                self._forgot = row
                for key in [k for k in self._cache if k[0] < row]:
                    self._pool.append(self._cache.pop(key))

    def close(self):
        """Close the file handles it opened (and the slide, when it opened that too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._tf.close()
            self._fd = None
        if self._tj is not None:
            self._tj.close()
        if self._owns_slide:
            self.slide.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
