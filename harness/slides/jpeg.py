"""JPEG tiles decoded by libjpeg-turbo's TurboJPEG API, which reports libjpeg's warnings.

A JPEG tile whose entropy-coded data is damaged (a few hundred bytes overwritten, no marker touched) decodes
"fine" in imagecodecs and in OpenSlide: libjpeg calls it a warning ("Corrupt JPEG data: 265 extraneous bytes
before marker 0xd9", "bad Huffman code"), fills in what it can, and both ignore the warning. TurboJPEG
(libturbojpeg, through ctypes) decodes the same tile into the same pixels, as fast, and says so.

TIFF tiles are abbreviated streams: their tables are merged in (SOI, the tables, the tile's own segments). A
tile coded in RGB (Aperio: photometric RGB, no colour transform) gets an Adobe marker with transform 0, so that
libjpeg decodes it as RGB, as OpenSlide does; YCbCr tiles are decoded as such.
"""
from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

SOI = b"\xff\xd8"
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"  # APP14, transform 0: the data is RGB
TJPF_RGB = 0
TJERR_WARNING = 0

_lib = None


def available() -> bool:
    """Whether libturbojpeg can be loaded (Debian: libturbojpeg0, which scripts/setup installs)."""
    global _lib
    if _lib is None:
        path = ctypes.util.find_library("turbojpeg")
        if not path:
            _lib = False
            return False
        lib = ctypes.CDLL(path)
        lib.tjInitDecompress.restype = ctypes.c_void_p
        lib.tjDestroy.argtypes = [ctypes.c_void_p]
        lib.tjDecompress2.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p,
                                      ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.tjGetErrorStr2.argtypes = [ctypes.c_void_p]
        lib.tjGetErrorStr2.restype = ctypes.c_char_p
        lib.tjGetErrorCode.argtypes = [ctypes.c_void_p]
        _lib = lib
    return bool(_lib)


class JpegError(ValueError):
    """A tile libjpeg could not decode at all."""


class Decoder:
    """Decodes the JPEG tiles of one TIFF page into caller-given RGB buffers, returning libjpeg's warning, if any."""

    def __init__(self, tables: bytes | None, rgb: bool):
        if not available():
            raise RuntimeError("libturbojpeg is not installed (apt-get install libturbojpeg0)")
        self._head = SOI + (ADOBE_RGB if rgb else b"") + (tables[2:-2] if tables else b"")
        self._h = _lib.tjInitDecompress()

    def decode(self, data: bytes, out: np.ndarray) -> str | None:
        """Decode one tile into ``out`` (h, w, 3) uint8, C-contiguous; the warning text, or None when clean."""
        stream = self._head + data[2:]  # the tile's own SOI replaced by ours, tables merged in
        h, w = out.shape[:2]
        if _lib.tjDecompress2(self._h, stream, len(stream), out.ctypes.data, w, 0, h, TJPF_RGB, 0) == 0:
            return None
        msg = _lib.tjGetErrorStr2(self._h).decode(errors="replace")
        if _lib.tjGetErrorCode(self._h) == TJERR_WARNING and "no image" not in msg:
            return msg  # damaged data, decoded into (partly) wrong pixels; "no image": nothing decoded at all
        raise JpegError(msg)

    def close(self) -> None:
        if self._h:
            _lib.tjDestroy(self._h)
            self._h = None

    def __del__(self):
        self.close()
