"""Atomic outputs: every file is written under a temporary name and renamed when complete."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _named(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write atomically. The hot path of the small-file workload, so plain syscalls: open, write, close, rename."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(head, exist_ok=True)
        fd = os.open(tmp, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException as e:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _named(e, path) from None
        raise


def _named(e: OSError, path) -> OSError:
    """The same error, naming the file being written (a full disk says which file and where)."""
    if e.filename:
        return e
    return type(e)(e.errno, f"{e.strerror} (writing {path})")


def write_json(path: str | Path, obj) -> None:
    write_bytes(path, json.dumps(obj, indent=1, default=str).encode())


def remove_temporaries(folder: str | Path) -> int:
    """Delete leftovers of killed writers (``.<name>.tmp<pid>``) under folder; returns how many."""
    n = 0
    for p in Path(folder).rglob(".*.tmp*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n
