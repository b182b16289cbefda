"""Files: atomic outputs (written under a temporary name, renamed when complete), safe names, guarded removal.

Every removal the harness makes goes through ``remove``, which resolves the path and refuses anything that is
not strictly inside the folder it is allowed to clean (a workload's own folder under the storage root).
Names from configuration become paths only after ``check_name``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
from pathlib import Path

from .errors import WsibenchError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class UnsafePath(WsibenchError, PermissionError):
    """A name or path that would reach outside the folders the harness owns."""


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is a safe slug (letters, digits, '-', '_', '.'; no '/', no '..'); else UnsafePath."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise UnsafePath(f"{what + ' ' if what else ''}{name!r} is not a safe name: use letters, digits, '-', '_' and '.', starting "
                         "with a letter or digit, without '/' or '..'")
    return name


def inside(path: str | Path, folder: str | Path) -> Path:
    """The resolved ``path``, which must lie strictly inside the resolved ``folder`` (symbolic links followed)."""
    p, f = Path(path).resolve(), Path(folder).resolve()
    if p == f or f not in p.parents:
        raise UnsafePath(f"refusing to remove {path}: it is not inside {folder}")
    return p


def remove(path: str | Path, within: str | Path) -> None:
    """Delete a file or a folder tree, only if it lies inside ``within``; missing is fine."""
    p = inside(path, within)
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def not_a_file(path: str | Path) -> str | None:
    """Why a path is no file to read (a dangling symbolic link, a directory, a device or a pipe), or None when it
    is a regular file (or a link to one)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a dangling symbolic link (to {os.readlink(path)})"
        return "not found"
    except OSError as e:
        return f"cannot be read: {e.strerror}"
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


FOLDER_WAIT_S = 5.0  # longer than a file-system client's directory-entry cache (MooseFS: 1 s by default)


def outlasting_stale_entries(call, wait: float = FOLDER_WAIT_S):
    """``call()``, retried for up to ``wait`` seconds while it fails with ENOENT: on a shared file system, where
    another client removed a folder (a --fresh run's driver removes the stage's folder through its own mount), this
    client's cached entry still says the folder is there until the cache times out, so makedirs skips it and what
    is made below it fails with ENOENT."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return call()
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def make_folder(path: str | Path) -> None:
    """``os.makedirs(path, exist_ok=True)``, outlasting another client's removal (``outlasting_stale_entries``)."""
    outlasting_stale_entries(lambda: os.makedirs(path, exist_ok=True))


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block completes."""
    path = Path(path)
    make_folder(path.parent)
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
    except FileNotFoundError:  # its folder is new, or another client removed and re-made it
        def make_and_open() -> int:
            os.makedirs(head, exist_ok=True)
            return os.open(tmp, flags, 0o644)
        fd = outlasting_stale_entries(make_and_open)
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
    """The same error, naming the file being written; a full disk (or quota) also says how much room is left."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return type(e)(e.errno, f"{e.strerror} (writing {path}; {room_left(Path(path).parent)})")
    if e.filename:
        return e
    return type(e)(e.errno, f"{e.strerror} (writing {path})")


def human_bytes(n: float) -> str:
    """A size in words: 512 bytes, 64.0 KiB, 1.5 GiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def room_left(folder: str | Path) -> str:
    """What the file system holding ``folder`` has left, in words: free bytes of its size, and its free inodes
    when those ran out (a disk "full" with bytes to spare)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return "free space unknown"
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    text = f"{human_bytes(free)} free of {human_bytes(total)} there"
    if st.f_files and st.f_favail == 0:
        text += f", and no free inodes (of {st.f_files})"
    return text


def write_json(path: str | Path, obj) -> None:
    write_bytes(path, json.dumps(obj, indent=1, default=str).encode())


def remove_temporaries(folder: str | Path, within: str | Path) -> int:
    """Delete leftovers of killed writers (``.<name>.tmp<pid>``) under folder (inside ``within``); how many."""
    n = 0
    for p in Path(folder).rglob(".*.tmp*"):
        if p.is_file():
            remove(p, within)
            n += 1
    return n


class Busy(WsibenchError, RuntimeError):
    """A workload folder another run is using."""


_held: dict[str, int] = {}  # locks this process holds: nested runs (feed preparing its data) take them again


def process_start(pid: int) -> str | None:
    """A live process's start time (clock ticks since boot: with the pid, it names the process); None once it
    has exited, a zombie its parent has not reaped yet included (a server that ended after its unmount is one
    until then: taken for alive, every unmount waited 5 s for it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if len(fields) < 20 or fields[0] in ("Z", "X") else fields[19]


@contextlib.contextmanager
def workload_lock(folder: str | Path, wait: bool = True, announce=print):
    """Hold the lock of a workload's folder for the block: one run per folder at a time. Another run waits for it
    (saying so) or, with wait=False, fails with Busy naming the run that holds it."""
    import datetime as dt
    import fcntl
    import socket

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".wsibench.lock"
    key = str(path.resolve())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another run"
            if not wait:
                raise Busy(f"{folder} is in use by {holder}; wait for it, or run with --if-busy wait") from None
            announce(f"[run] waiting for {folder}: in use by {holder}")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {dt.datetime.now().isoformat(timespec='seconds')}\n")
        f.flush()
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            with contextlib.suppress(OSError):  # storage that failed under the run (a lab's master gone): the
                f.seek(0)                       # lock goes with the file's closing anyway, and the run's own
                f.truncate()                    # error is the one to tell
                fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        with contextlib.suppress(OSError):
            f.close()
