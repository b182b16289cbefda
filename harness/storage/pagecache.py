"""How much of a set of files the page cache holds (mincore(2) over a read-only mapping of each file).

What a storage delivered to readers of files under a page cache (local disks, NFS) is what came into the cache
while they read: the growth of the files' resident bytes over a window (``resident_bytes`` before and after), as
long as nothing was evicted meanwhile. The processes' own /proc/<pid>/io read_bytes cannot say it: it also counts
their code and libraries paged in (TensorFlow's, after a cache drop, tens of MB a process).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
MAP_FAILED = ctypes.c_void_p(-1).value
PAGE = mmap.PAGESIZE


def resident_bytes(paths) -> int:
    """Bytes of ``paths`` in the page cache now (whole pages; a file's last page counts whole). Mapping a file
    reads none of it."""
    total = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if not size:
                continue
            addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, MAP_FAILED):
                raise OSError(ctypes.get_errno(), f"mmap {p}")
            try:
                pages = (size + PAGE - 1) // PAGE
                vec = (ctypes.c_ubyte * pages)()
                if _libc.mincore(addr, size, vec) != 0:
                    raise OSError(ctypes.get_errno(), f"mincore {p}")
                total += sum(b & 1 for b in vec) * PAGE
            finally:
                _libc.munmap(addr, size)
        finally:
            os.close(fd)
    return total
