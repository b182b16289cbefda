"""Emulated storage: a throttled FUSE passthrough of a local folder; and the same passthrough unthrottled, to observe.

Every reader goes through it for real (OpenSlide's C library, tf.data, fio): reads and writes pay a
per-operation latency and share a bandwidth budget and an IOPS budget (token buckets); metadata operations
(create, open, mkdir, unlink, rename) pay a metadata latency. The mount uses direct I/O, so the kernel page
cache does not hide the throttle. Results on such a mount are labelled emulated.

Throttled or not (``observe``: no throttle parameters at all), the passthrough counts every request it serves
(harness.storage.iostats): per operation type its count, latency histogram and request sizes, and the bytes and
operations of every second; it answers snapshots of those counters on a Unix socket beside the mount point.

Run as ``python -m harness.storage.emulate BACKING MOUNTPOINT --params JSON`` (the harness does this, see
``mounted``); needs /dev/fuse and the right to mount (root here).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import WsibenchError
from ..fsutil import check_name
from . import iostats


class EmulationError(WsibenchError, RuntimeError):
    pass


class Bucket:
    """A token bucket with no burst: callers queue behind each other at ``rate`` units per second."""

    def __init__(self, rate: float | None):
        self.rate, self._next, self._lock = rate, 0.0, threading.Lock()

    def take(self, amount: float) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + amount / self.rate
            wait = self._next - now
        if wait > 0:
            time.sleep(wait)


THROTTLES = ("read_mb_s", "write_mb_s", "iops", "latency_ms", "metadata_ms")


def throttle_mode(params: dict) -> str:
    """``throttled`` when any throttle is set, else ``observe`` (the passthrough only counts)."""
    return "throttled" if any(params.get(k) for k in THROTTLES) else "observe"


def _counted(counters: iostats.Counters, op: str, sized: bool = False):
    """Count each call of an operation: its time in the passthrough (throttle included), its size, its errors."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args):
            t0 = time.perf_counter()
            try:
                result = fn(*args)
            except OSError:
                counters.record(op, time.perf_counter() - t0, error=True)
                raise
            counters.record(op, time.perf_counter() - t0, (len(result) if op == "read" else result) if sized else None)
            return result
        return inner
    return wrap


def _operations(backing: str, p: dict, counters: iostats.Counters | None = None):
    import mfusepy as fuse

    read_bw, write_bw = Bucket((p.get("read_mb_s") or 0) * 1e6), Bucket((p.get("write_mb_s") or 0) * 1e6)
    iops = Bucket(p.get("iops") or 0)
    latency, meta = (p.get("latency_ms") or 0) / 1000, (p.get("metadata_ms") or 0) / 1000
    readonly = bool(p.get("read_only"))

    def full(path):
        return os.path.join(backing, path.lstrip("/"))

    def meta_op():
        if meta:
            time.sleep(meta)

    def data_op(bucket, n):
        if latency:
            time.sleep(latency)
        iops.take(1)
        bucket.take(n)

    def ro():
        if readonly:
            raise fuse.FuseOSError(errno.EROFS)

    class Throttled(fuse.Operations):
        use_ns = True

        def getattr(self, path, fh=None):
            st = os.lstat(full(path))
            return {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid",
                                                "st_atime_ns", "st_mtime_ns", "st_ctime_ns")} | {
                "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns}

        def readdir(self, path, fh):
            return [".", ".."] + os.listdir(full(path))

        def statfs(self, path):
            st = os.statvfs(full(path))
            return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

        def access(self, path, amode):
            if amode & os.W_OK:
                ro()
            if not os.access(full(path), amode):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

        def open(self, path, fi):
            if fi.flags & (os.O_WRONLY | os.O_RDWR):
                ro()
            meta_op()
            fi.fh = os.open(full(path), fi.flags & ~os.O_DIRECT)
            fi.direct_io = 1
            return 0

        def create(self, path, mode, fi):
            ro()
            meta_op()
            fi.fh = os.open(full(path), (fi.flags | os.O_CREAT) & ~os.O_DIRECT, mode)
            fi.direct_io = 1
            return 0

        def read(self, path, size, offset, fi):
            data = os.pread(fi.fh, size, offset)
            data_op(read_bw, len(data))
            return data

        def write(self, path, data, offset, fi):
            ro()
            data_op(write_bw, len(data))
            return os.pwrite(fi.fh, data, offset)

        def truncate(self, path, length, fi=None):
            ro()
            if fi is not None and fi.fh:
                os.ftruncate(fi.fh, length)
            else:
                os.truncate(full(path), length)
            return 0

        def flush(self, path, fi):
            return 0

        def fsync(self, path, datasync, fi):
            (os.fdatasync if datasync else os.fsync)(fi.fh)
            return 0

        def release(self, path, fi):
            os.close(fi.fh)
            return 0

        def unlink(self, path):
            ro()
            meta_op()
            os.unlink(full(path))
            return 0

        def rename(self, old, new, flags=0):
            ro()
            meta_op()
            os.rename(full(old), full(new))
            return 0

        def mkdir(self, path, mode):
            ro()
            meta_op()
            os.mkdir(full(path), mode)
            return 0

        def rmdir(self, path):
            ro()
            meta_op()
            os.rmdir(full(path))
            return 0

        def chmod(self, path, mode):
            ro()
            os.chmod(full(path), mode)
            return 0

        def chown(self, path, uid, gid):
            ro()
            os.chown(full(path), uid, gid)
            return 0

        def utimens(self, path, times=None):
            ro()
            os.utime(full(path), ns=times)
            return 0

    if counters is not None:  # every operation the class serves, counted
        for op in [k for k, v in vars(Throttled).items() if callable(v) and not k.startswith("_")]:
            setattr(Throttled, op, _counted(counters, op, op in ("read", "write"))(getattr(Throttled, op)))
    return Throttled()


def serve(backing: str, mountpoint: str, params: dict) -> None:
    import mfusepy as fuse

    name = check_name(params.get("name", "emulated"), "storage profile")  # the fsname must not add mount options
    counters = iostats.Counters(throttle_mode(params), {k: params.get(k) for k in THROTTLES})
    stats = iostats.serve(counters, mountpoint)
    try:
        fuse.FUSE(_operations(os.path.abspath(backing), params, counters), mountpoint, raw_fi=True, foreground=True,
                  nothreads=False, fsname=f"wsibench-{name}", default_permissions=False,
                  **({"ro": True} if params.get("read_only") else {}))
    finally:
        with contextlib.suppress(FileNotFoundError):
            stats.unlink()


def check_can_mount() -> None:
    if not os.path.exists("/dev/fuse"):
        raise EmulationError("emulated storage needs FUSE: /dev/fuse is missing on this machine")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise EmulationError("emulated storage needs the right to mount FUSE file systems (run as root)")
    if not shutil.which("fusermount3"):
        raise EmulationError("emulated storage needs fusermount3: apt-get install fuse3")


@contextlib.contextmanager
def mounted(backing: Path, mountpoint: Path, params: dict, timeout: float = 20.0):
    """Mount the throttled passthrough of ``backing`` at ``mountpoint`` for the duration of the block."""
    check_can_mount()
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(mountpoint):  # a leftover of a killed run
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
    log = open(mountpoint.parent / f"{mountpoint.name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "harness.storage.emulate", str(backing), str(mountpoint),
                             "--params", json.dumps(params)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                raise EmulationError(f"could not mount emulated storage at {mountpoint}: "
                                     f"{(mountpoint.parent / f'{mountpoint.name}.log').read_text()[-500:]}")
            time.sleep(0.05)
        yield mountpoint
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
            proc.kill()
            proc.wait()
        log.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Serve a throttled FUSE passthrough (used by wsibench).")
    ap.add_argument("backing")
    ap.add_argument("mountpoint")
    ap.add_argument("--params", default="{}", help="JSON: read_mb_s, write_mb_s, iops, latency_ms, metadata_ms, read_only")
    a = ap.parse_args(argv)
    serve(a.backing, a.mountpoint, json.loads(a.params))


if __name__ == "__main__":
    main()
