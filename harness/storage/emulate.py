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
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import WsibenchError
from ..fsutil import check_name, process_start, remove
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
    namespace = op in iostats.NAMESPACE_OPS  # (self, path, ...): the path's folder is counted too

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args):
            folder = os.path.dirname(args[1]) if namespace else None
            if op == "release":  # (self, path, fi): its handle's next opening starts afresh; before the handle is
                # closed, for once closed its number may be a new open's, whose reads would be forgotten
                counters.forget(args[2].fh)
            t0 = time.perf_counter()
            try:
                result = fn(*args)
            except OSError:
                counters.record(op, time.perf_counter() - t0, error=True, folder=folder)
                raise
            # a read's place in its open file (read(self, path, size, offset, fi)): how reads follow one another
            counters.record(op, time.perf_counter() - t0, (len(result) if op == "read" else result) if sized else None,
                            folder=folder, at=_place(args[4].fh, args[3]) if op == "read" else None)
            return result
        return inner
    return wrap


def _place(fh: int, offset: int) -> tuple[int, int, int | None]:
    """A read's (open file, offset, and, where it began at the file's start, the file's size)."""
    size = None
    if offset == 0:
        with contextlib.suppress(OSError):
            size = os.fstat(fh).st_size
    return fh, offset, size


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


def serve(backing: str, mountpoint: str, params: dict, users: str | None = None) -> None:
    """Serve the mount in the foreground. With ``users`` (the folder where attached runs register), a watchdog
    unmounts and ends the server once no registered run is alive: a killed run leaves no server behind."""
    import mfusepy as fuse

    name = check_name(params.get("name", "emulated"), "storage profile")  # the fsname must not add mount options
    if users:
        threading.Thread(target=_watch_users, args=(Path(users), mountpoint), daemon=True).start()
    counters = iostats.Counters(throttle_mode(params), {k: params.get(k) for k in THROTTLES})
    stats = iostats.serve(counters, mountpoint)
    try:
        fuse.FUSE(_operations(os.path.abspath(backing), params, counters), mountpoint, raw_fi=True, foreground=True,
                  nothreads=False, fsname=f"wsibench-{name}", default_permissions=False,
                  **({"ro": True} if params.get("read_only") else {}))
    finally:
        with contextlib.suppress(FileNotFoundError):
            stats.unlink()


def _watch_users(users: Path, mountpoint: str, grace: float = 3.0, first_user_timeout: float = 60.0) -> None:
    started, last_seen = time.monotonic(), None
    while True:
        time.sleep(0.5)
        registered = users.is_dir() and any(users.iterdir())  # a run registered (alive, or killed since)
        if live_users(users) or (registered and last_seen is None):
            last_seen = time.monotonic()
        elif (last_seen is not None and time.monotonic() - last_seen > grace) or \
                (last_seen is None and time.monotonic() - started > first_user_timeout):
            subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True)
            return


def check_can_mount() -> None:
    if not os.path.exists("/dev/fuse"):
        raise EmulationError("emulated storage needs FUSE: /dev/fuse is missing on this machine")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise EmulationError("emulated storage needs the right to mount FUSE file systems (run as root)")
    if not shutil.which("fusermount3"):
        raise EmulationError("emulated storage needs fusermount3: apt-get install fuse3")


# --- shared, reference-counted mounts ------------------------------------------------------------------------
#
# Runs on the same emulated profile share its mount: each registers itself (users/<pid>, with the process's start
# time, so a reused pid is not taken for it) under the mount's state folder, beside the mount point. The last to
# leave unmounts; a run that is killed leaves an entry whose process is gone, which the next run and the server's
# watchdog ignore. A mount whose server died (listed in /proc/mounts, "Transport endpoint is not connected") is
# cleared before use. Attaching and leaving hold an exclusive lock on the state folder.

def live_users(users: Path) -> list[Path]:
    alive = []
    for entry in users.glob("*") if users.is_dir() else []:
        try:
            pid, start = entry.name, entry.read_text().strip()
            if process_start(int(pid)) == start:
                alive.append(entry)
            else:
                entry.unlink(missing_ok=True)
        except (OSError, ValueError):
            continue
    return alive


def mount_state(mountpoint: Path) -> str:
    """'alive' (served), 'dead' (in the mount table, its server gone) or 'none'."""
    target = os.path.realpath(mountpoint)
    try:
        listed = any(line.split()[1].replace("\\040", " ") == target
                     for line in Path("/proc/mounts").read_text().splitlines() if len(line.split()) > 1)
    except OSError:
        listed = False
    if not listed:
        return "none"
    try:
        os.statvfs(mountpoint)  # answered by the server itself
        return "alive"
    except OSError:
        return "dead"


@contextlib.contextmanager
def locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _unmount(mountpoint: Path, state: Path) -> None:
    subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
    if mount_state(mountpoint) != "none":
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
    pid = state / "server.pid"
    try:
        server = int(pid.read_text())
        for _ in range(100):  # it ends once unmounted
            if process_start(server) is None:
                break
            time.sleep(0.05)
        else:
            os.kill(server, signal.SIGKILL)
    except (OSError, ValueError):
        pass
    for f in ("server.pid", "params.json"):
        (state / f).unlink(missing_ok=True)


_held: dict[str, int] = {}  # mounts this process holds, and how many times (a run inside a run)


@contextlib.contextmanager
def mounted(backing: Path, mountpoint: Path, params: dict, timeout: float = 20.0):
    """The throttled passthrough of ``backing`` mounted at ``mountpoint`` for the duration of the block, shared
    with the other runs that use it at the same time."""
    check_can_mount()
    backing.mkdir(parents=True, exist_ok=True)
    state = mountpoint.parent / f".{mountpoint.name}.wsibench"
    users, me = state / "users", str(os.getpid())
    key = str(state)
    if _held.get(key) and mount_state(mountpoint) == "alive":  # this process holds it already (a run in a run)
        _held[key] += 1
        try:
            yield mountpoint
        finally:
            _held[key] -= 1
        return
    with locked(state / "lock"):
        if mount_state(mountpoint) == "dead":  # a killed server's mount: clear it
            print(f"[storage] clearing the dead mount at {mountpoint} (its server was killed)", file=sys.stderr)
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
        others = live_users(users)
        current = (state / "params.json").read_text() if (state / "params.json").is_file() else None
        if mount_state(mountpoint) == "alive" and current != json.dumps(params, sort_keys=True):
            if others:
                raise EmulationError(f"{mountpoint} is mounted by another run (pid {others[0].name}) with other "
                                     "emulation settings; wait for it to finish")
            _unmount(mountpoint, state)
        if mount_state(mountpoint) == "none":
            mountpoint.mkdir(parents=True, exist_ok=True)
            _serve(backing, mountpoint, params, state, timeout)
        users.mkdir(parents=True, exist_ok=True)
        (users / me).write_text(process_start(os.getpid()) or "")
    _held[key] = 1
    try:
        yield mountpoint
    finally:
        _held.pop(key, None)
        with locked(state / "lock"):
            (users / me).unlink(missing_ok=True)
            if not live_users(users):
                _unmount(mountpoint, state)


def _serve(backing: Path, mountpoint: Path, params: dict, state: Path, timeout: float) -> None:
    """Start the server (in its own session: a Ctrl-C aimed at one run does not pull the mount from the others)."""
    log_path = state / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "harness.storage.emulate", str(backing), str(mountpoint),
                                 "--params", json.dumps(params), "--users", str(state / "users")],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (state / "server.pid").write_text(str(proc.pid))
    (state / "params.json").write_text(json.dumps(params, sort_keys=True))
    deadline = time.time() + timeout
    while mount_state(mountpoint) != "alive":
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise EmulationError(f"could not mount emulated storage at {mountpoint}: {log_path.read_text()[-500:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def observed(root: Path, results_dir: Path, name: str):
    """Mount the counting passthrough, unthrottled, over ``root`` at a mount point of this run's own under
    ``<results>/observe/``; yield the mount point (the root to use) and remove it when done."""
    base = Path(results_dir).resolve() / "observe"
    folder = base / f"{check_name(name, 'storage profile')}-{os.getpid()}"
    try:
        with mounted(Path(root), folder / "mnt", {"name": f"{name}-observed"}):
            yield folder / "mnt"
    finally:
        with contextlib.suppress(OSError):
            if not os.path.ismount(folder / "mnt"):
                remove(folder, base)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Serve a throttled FUSE passthrough (used by wsibench).")
    ap.add_argument("backing")
    ap.add_argument("mountpoint")
    ap.add_argument("--params", default="{}", help="JSON: read_mb_s, write_mb_s, iops, latency_ms, metadata_ms, read_only")
    ap.add_argument("--users", help="folder of the runs using the mount: the server ends when none is alive")
    a = ap.parse_args(argv)
    serve(a.backing, a.mountpoint, json.loads(a.params), a.users)


if __name__ == "__main__":
    main()
