"""Saving what training makes: the model and its checkpoints, written whole or not at all (a temporary renamed), refused
before writing when the storage has no room, timed (checkpoint bursts are a sizing figure).

Used by the train stage and by the chief training rank (``stages.distributed``).
"""
from __future__ import annotations

import errno
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fsutil import room_left


class StorageFull(DataError):
    """Not enough free space for a checkpoint or the model; the message names the file."""


def _saved(write, model, path: Path) -> None:
    """Write with Keras to a temporary of ours beside ``path`` (the ``.<name>.tmp<pid>`` pattern the stages
    clean up, keeping the suffix Keras wants), then rename. Before writing, check that the storage has room for
    the file (as large as the last one, or the model's weights): a full disk mid-write crashes h5py instead of
    raising. Any failure names the file and leaves no temporary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = path.name.split(".", 1)
    tmp = path.with_name(f".{stem}.tmp{os.getpid()}.{suffix}")
    need = path.stat().st_size if path.exists() else sum(int(np.prod(v.shape)) * 4 for v in model.weights)
    free = shutil.disk_usage(path.parent).free
    if free < 1.2 * need + 2**16:
        raise StorageFull(f"{path}: no room to write it: {free / 2**20:.1f} MiB free, about {need / 2**20:.1f} MiB "
                          "needed (No space left on device)")
    try:
        with warnings.catch_warnings():
            # Keras 3 on TensorFlow converts each variable with np.array(variable), whose __array__ lacks NumPy 2's
            # copy keyword: NumPy warns and copies, the file is the same (Keras's to fix; nothing here can)
            warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                    category=DeprecationWarning)
            write(tmp)
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001 - Keras and h5py raise many kinds; one that names the file
        full = getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e)
        raise DataError(f"{path}: could not write it: {type(e).__name__}: {e}"
                        + (f" ({room_left(path.parent)})" if full else "")) from e
    finally:
        tmp.unlink(missing_ok=True)


def save_model(model, path: Path) -> None:
    _saved(model.save, model, path)


def save_weights(model, path: Path) -> None:
    _saved(model.save_weights, model, path)


def timed_save(save, model, path: Path) -> dict:
    """Save with ``save`` and return the seconds and bytes of the write (checkpoint bursts are a sizing figure)."""
    t0 = time.perf_counter()
    save(model, path)
    return {"seconds": time.perf_counter() - t0, "bytes": path.stat().st_size, "path": str(path)}


def files_written_since(folder: Path, since: float) -> int:
    """Files under folder created or rewritten since the wall-clock time ``since``."""
    return sum(1 for p in Path(folder).rglob("*") if p.is_file() and p.stat().st_mtime >= since)
