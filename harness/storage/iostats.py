"""The pipeline's own I/O profile, as the FUSE pass-through sees it (harness.storage.emulate).

The pass-through counts every request the kernel hands it, per operation type: how many, how long each took in
the pass-through (from its arrival to its answer, the throttle's waits included; the kernel's own round trip is
not), the sizes of reads and writes, and per wall-clock second the bytes and operations. The counters are
cumulative; the server answers a snapshot of them on a Unix socket beside the mount point (``socket_path``),
readable by root alone. A connection gets the snapshot and is closed: the server reads nothing from it.

The harness snapshots at each stage's start and end; the difference is the stage's profile (``delta``), turned
into the run record's ``io_profile`` (``profile``) and into Parquet rows (``rows``).

Histograms: latencies in buckets of a quarter power of two of microseconds (bucket i holds latencies from
2**(i/4) to 2**((i+1)/4) us; a percentile is its bucket's geometric middle, within 9%); request sizes in powers
of two of bytes (bucket i holds sizes from 2**(i-1) to 2**i - 1; bucket 0 is the empty request).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import threading
import time
from pathlib import Path

from .. import network

LATENCY_BUCKETS = 112           # 2**(111/4) us: about 2.3 hours, far beyond any request
TIMELINE = ("bytes_read", "bytes_written", "ops", "data_ops", "metadata_ops")
DATA_OPS = ("read", "write")
METADATA_OPS = ("open", "create", "rename", "unlink", "mkdir", "rmdir", "getattr", "access", "readdir", "statfs",
                "truncate", "chmod", "chown", "utimens")
# the operation types every profile lists, counted or not, in this order (the others follow when counted)
MAIN_OPS = ("open", "create", "read", "write", "rename", "unlink", "getattr", "mkdir", "fsync")
# operations that change a folder's entries: the kernel holds that folder's lock through each (counted per folder)
NAMESPACE_OPS = ("create", "mkdir", "rename", "unlink", "rmdir")
MAX_FOLDERS = 4096              # folders counted apart; beyond, under OTHER_FOLDERS
OTHER_FOLDERS = "(other folders)"
TOP_FOLDERS = 16                # folders a profile names (the rest as a count)


def latency_bucket(seconds: float) -> int:
    us = seconds * 1e6
    return 0 if us < 1 else min(LATENCY_BUCKETS - 1, int(4 * math.log2(us)))


def latency_bounds(i: int) -> tuple[float, float]:
    """The bucket's lower and upper latency in seconds."""
    return (0.0 if i == 0 else 2 ** (i / 4) / 1e6), 2 ** ((i + 1) / 4) / 1e6


def size_bucket(n: int) -> int:
    return int(n).bit_length()


def size_bounds(i: int) -> tuple[int, int]:
    """The bucket's smallest and largest request size in bytes."""
    return (0, 0) if i == 0 else (2 ** (i - 1), 2 ** i - 1)


class Counters:
    """Cumulative counters of one pass-through, updated by its request threads (``record``)."""

    def __init__(self, mode: str, params: dict):
        self.mode, self.params = mode, dict(params)
        self.started_at = time.time()
        self._lock = threading.Lock()
        self.ops: dict[str, dict] = {}
        self.sizes = {"read": {}, "write": {}}
        self.bytes = {"read": 0, "written": 0}
        self.timeline: dict[int, list[int]] = {}
        self.folders: dict[str, int] = {}  # folder -> namespace operations in it
        # where each read began against where the last read of the same open file ended (``_follows``)
        self.reads = {"first": 0, "continued": 0, "forward": 0, "forward_bytes": 0, "backward": 0}
        self.gaps: dict[int, int] = {}  # forward jumps: size bucket -> jumps
        self._ends: dict[int, int] = {}  # open file handle -> where its last read ended
        # opens whose first read began at the file's start (a client's read-ahead fetches from there): by whether
        # the next read went on from it, size bucket of the file's bytes the open did not read -> opens (``forget``)
        self.starts: dict[str, dict[int, int]] = {"alone": {}, "went_on": {}}
        self._starts: dict[int, list] = {}  # open file handle -> [file size, bytes read, went on (None: one read)]

    def record(self, op: str, seconds: float, nbytes: int | None = None, error: bool = False,
               folder: str | None = None, at: tuple[int, int, int | None] | None = None) -> None:
        """One call of ``op``; ``at``: a read's (open file handle, offset, the file's size where the read began at
        its start), placed against that file's last read (``_follows``)."""
        now = int(time.time())
        b = latency_bucket(seconds)
        with self._lock:
            o = self.ops.get(op)
            if o is None:
                o = self.ops[op] = {"count": 0, "errors": 0, "seconds": 0.0, "latency": {}}
            o["count"] += 1
            o["errors"] += error
            o["seconds"] += seconds
            o["latency"][b] = o["latency"].get(b, 0) + 1
            t = self.timeline.get(now)
            if t is None:
                t = self.timeline[now] = [0] * len(TIMELINE)
            t[2] += 1
            if op in DATA_OPS:
                t[3] += 1
                if nbytes is not None and not error:
                    s = self.sizes[op]
                    k = size_bucket(nbytes)
                    s[k] = s.get(k, 0) + 1
                    if op == "read":
                        self.bytes["read"] += nbytes
                        t[0] += nbytes
                        if at is not None:
                            self._follows(at[0], at[1], nbytes, at[2])
                    else:
                        self.bytes["written"] += nbytes
                        t[1] += nbytes
            elif op in METADATA_OPS:
                t[4] += 1
            if folder is not None:
                if folder not in self.folders and len(self.folders) >= MAX_FOLDERS:
                    folder = OTHER_FOLDERS
                self.folders[folder] = self.folders.get(folder, 0) + 1

    def _follows(self, fh: int, offset: int, nbytes: int, size: int | None = None) -> None:
        """A read of ``nbytes`` at ``offset`` of the open file ``fh`` (the lock held): the first of that file, one
        that begins where the last ended (a run goes on: a client's read-ahead has its bytes), a jump forward (by
        how much: the bytes a read-ahead may have fetched for nothing) or back. An open whose first read began at
        the file's start (of ``size`` bytes) is followed to its close: what it read of the file."""
        end = self._ends.get(fh)
        start = self._starts.get(fh)
        if start is not None:
            start[1] += nbytes
            if start[2] is None:  # its second read: did it go on from the first?
                start[2] = offset == end
        if end is None:
            self.reads["first"] += 1
            if offset == 0 and size is not None:
                self._starts[fh] = [size, nbytes, None]
        elif offset == end:
            self.reads["continued"] += 1
        elif offset > end:
            self.reads["forward"] += 1
            self.reads["forward_bytes"] += offset - end
            k = size_bucket(offset - end)
            self.gaps[k] = self.gaps.get(k, 0) + 1
        else:
            self.reads["backward"] += 1
        self._ends[fh] = offset + nbytes

    def forget(self, fh: int) -> None:
        """The file ``fh`` closed: its next opening starts afresh. If it was read from its start, the file's bytes
        it did not read (what a read-ahead from the start may fetch for nothing), by whether its second read went on
        from its first."""
        with self._lock:
            self._ends.pop(fh, None)
            start = self._starts.pop(fh, None)
            if start is not None:
                kind = self.starts["went_on" if start[2] else "alone"]
                k = size_bucket(max(0, start[0] - start[1]))
                kind[k] = kind.get(k, 0) + 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"mode": self.mode, "params": self.params, "pid": os.getpid(), "started_at": self.started_at,
                    "at": time.time(), "server_cpu_seconds": time.process_time(),
                    "server_runqueue_seconds": _runqueue_seconds(),
                    "ops": {k: dict(v, latency=dict(v["latency"])) for k, v in self.ops.items()},
                    "sizes": {k: dict(v) for k, v in self.sizes.items()}, "bytes": dict(self.bytes),
                    "timeline": {k: list(v) for k, v in self.timeline.items()}, "folders": dict(self.folders),
                    "reads": dict(self.reads), "gaps": dict(self.gaps),
                    "starts": {k: dict(v) for k, v in self.starts.items()}}


def _runqueue_seconds() -> float:
    """Seconds the server's threads have waited for a core (/proc/self/task/*/schedstat)."""
    total = 0
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/self/task/{task}/schedstat") as f:
            total += int(f.read().split()[1])
    return total / 1e9


# --- the stats channel -------------------------------------------------------------------------------------

def socket_path(mountpoint: str | Path) -> Path:
    """Where the pass-through mounted at ``mountpoint`` answers snapshots: beside the mount point, never inside."""
    m = Path(os.path.abspath(mountpoint))
    return m.parent / f".{m.name}.iostats.sock"


def serve(counters: Counters, mountpoint: str | Path) -> Path:
    """Answer snapshots of ``counters`` on the mount's socket, in a daemon thread; returns the socket's path."""
    path = socket_path(mountpoint)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a leftover of a killed server
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with network.unix_address(path) as addr:
        old = os.umask(0o177)  # created 0600: root's alone
        try:
            sock.bind(addr)
        finally:
            os.umask(old)
    sock.listen(8)

    def loop():
        while True:
            conn, _ = sock.accept()
            with conn:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(counters.snapshot()).encode())

    threading.Thread(target=loop, name="iostats", daemon=True).start()
    return path


def snapshot(mountpoint: str | Path, timeout: float = 10.0) -> dict | None:
    """The cumulative counters of the pass-through mounted at ``mountpoint``; None where there is none."""
    path = socket_path(mountpoint)
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, network.unix_address(path) as addr:
            s.settimeout(timeout)
            s.connect(addr)
            chunks = []
            while chunk := s.recv(1 << 16):
                chunks.append(chunk)
    except OSError:
        return None
    return json.loads(b"".join(chunks))


# --- a stage's profile: the difference of two snapshots ------------------------------------------------------

def _sub(a: dict, b: dict) -> dict:
    out = {k: v - b.get(k, 0) for k, v in a.items()}
    return {k: v for k, v in out.items() if v}


def delta(before: dict | None, after: dict | None) -> dict | None:
    """What happened between two snapshots of the same server (None where either is missing or the server
    changed between them)."""
    if not before or not after or before.get("pid") != after.get("pid") or \
            before.get("started_at") != after.get("started_at"):
        return None
    ops = {}
    for op, a in after["ops"].items():
        b = before["ops"].get(op, {})
        lat = _sub({int(k): v for k, v in a["latency"].items()}, {int(k): v for k, v in b.get("latency", {}).items()})
        n = a["count"] - b.get("count", 0)
        if n:
            ops[op] = {"count": n, "errors": a["errors"] - b.get("errors", 0),
                       "seconds": a["seconds"] - b.get("seconds", 0.0), "latency": lat}
    sizes = {k: _sub({int(i): v for i, v in after["sizes"][k].items()},
                     {int(i): v for i, v in before["sizes"].get(k, {}).items()}) for k in after["sizes"]}
    t0, t1 = int(before["at"]), int(after["at"])
    timeline = {int(k): v for k, v in after["timeline"].items() if t0 <= int(k) <= t1}
    for k, v in before["timeline"].items():  # the second the first snapshot fell in: only what came after it
        if int(k) in timeline:
            timeline[int(k)] = [x - y for x, y in zip(timeline[int(k)], v)]
    return {"mode": after["mode"], "params": after["params"], "start": before["at"], "end": after["at"],
            "server_cpu_seconds": after["server_cpu_seconds"] - before["server_cpu_seconds"],
            "server_runqueue_seconds": after.get("server_runqueue_seconds", 0) - before.get("server_runqueue_seconds", 0),
            "ops": ops, "sizes": sizes,
            "bytes": {k: after["bytes"][k] - before["bytes"].get(k, 0) for k in after["bytes"]},
            "timeline": dict(sorted(timeline.items())),
            "folders": _sub(after.get("folders", {}), before.get("folders", {})),
            "reads": {k: v - before["reads"][k] for k, v in after["reads"].items()},  # the same server: same keys
            "gaps": _sub({int(k): v for k, v in after["gaps"].items()}, {int(k): v for k, v in before["gaps"].items()}),
            "starts": {kind: _sub({int(k): v for k, v in h.items()}, {int(k): v for k, v in before["starts"][kind].items()})
                       for kind, h in after["starts"].items()}}


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile (0..1) of a latency histogram, in seconds (its bucket's geometric middle)."""
    total = sum(hist.values())
    if not total:
        return None
    need, seen = q * total, 0
    for i in sorted(hist):
        seen += hist[i]
        if seen >= need:
            lo, hi = latency_bounds(i)
            return math.sqrt(max(lo, 1e-7) * hi)
    return None


def profile(d: dict | None) -> dict | None:
    """The run record's ``io_profile`` of a stage from a ``delta``: counts, latency percentiles and sizes per
    operation type, bytes, and the timeline's peaks."""
    if d is None:
        return None
    wall = max(d["end"] - d["start"], 1e-9)
    ops = {}
    names = [o for o in MAIN_OPS] + sorted(o for o in d["ops"] if o not in MAIN_OPS)
    for op in names:
        o = d["ops"].get(op)
        if o is None:
            ops[op] = {"count": 0}
            continue
        lat = o["latency"]
        ops[op] = {"count": o["count"], "errors": o["errors"], "per_s": o["count"] / wall,
                   "mean_latency_s": o["seconds"] / o["count"], "p50_latency_s": percentile(lat, 0.5),
                   "p90_latency_s": percentile(lat, 0.9), "p99_latency_s": percentile(lat, 0.99),
                   "busy_seconds": o["seconds"]}
    sizes = {}
    for kind, hist in d["sizes"].items():
        n = sum(hist.values())
        if n:
            nbytes = d["bytes"]["read" if kind == "read" else "written"]
            sizes[kind] = {"requests": n, "mean_bytes": nbytes / n,
                           "histogram": {str(size_bounds(i)[0]): c for i, c in sorted(hist.items())}}
    tl = list(d["timeline"].values())
    counted = sum(o["count"] for o in d["ops"].values())
    return {"source": f"FUSE pass-through ({d['mode']}): every request the kernel sent it; latency from its arrival "
                      "in the pass-through to its answer",
            "mode": d["mode"], "wall_seconds": wall, "operations": counted,
            "bytes_read": d["bytes"]["read"], "bytes_written": d["bytes"]["written"],
            "read_bytes_per_s": d["bytes"]["read"] / wall, "write_bytes_per_s": d["bytes"]["written"] / wall,
            "operations_per_s": counted / wall,
            "creates": ops["create"]["count"],
            "metadata_operations": sum(o["count"] for k, o in d["ops"].items() if k in METADATA_OPS),
            "server_cpu_seconds": d["server_cpu_seconds"],
            "server_runqueue_seconds": d["server_runqueue_seconds"],
            "peak_read_bytes_per_s": max((t[0] for t in tl), default=0),
            "peak_write_bytes_per_s": max((t[1] for t in tl), default=0),
            "peak_operations_per_s": max((t[2] for t in tl), default=0),
            "ops": ops, "request_sizes": sizes, **_read_runs(d), **_folders(d.get("folders") or {})}


def _read_runs(d: dict) -> dict:
    """``read_runs``: how the stage's reads followed one another in each open file (``Counters._follows``)."""
    r = d["reads"]
    runs = r["first"] + r["forward"] + r["backward"]  # a run: reads each beginning where the last ended
    if not runs:
        return {}
    return {"read_runs": {"runs": runs, "continued": r["continued"], "forward_jumps": r["forward"],
                          "forward_jump_bytes": r["forward_bytes"], "backward_jumps": r["backward"],
                          "reads_a_run": (runs + r["continued"]) / runs,
                          "forward_jump_histogram": {str(size_bounds(i)[0]): c for i, c in sorted(d["gaps"].items())},
                          "from_start": {kind: {"opens": sum(h.values()),
                                                "unread_histogram": {str(size_bounds(i)[0]): c for i, c in sorted(h.items())}}
                                         for kind, h in d["starts"].items()}}}


def _folders(folders: dict[str, int]) -> dict:
    """Where the namespace operations (create, mkdir, rename, unlink, rmdir) fell: how many folders, and the
    busiest by name (their share of the operations is what sizing's folder-lock term needs)."""
    top = sorted(folders.items(), key=lambda kv: (-kv[1], kv[0]))
    named = [kv for kv in top if kv[0] != OTHER_FOLDERS][:TOP_FOLDERS]
    return {"namespace_operations": sum(folders.values()),
            "namespace_folders": len(folders),
            "namespace_operations_by_folder": dict(named)}


def rows(stage: str, d: dict | None) -> dict[str, list[dict]]:
    """Parquet rows of a stage's ``delta``: ``io_latency`` (per operation type and latency bucket), ``io_sizes``
    (per direction and size bucket) and ``io_timeline`` (per second)."""
    if d is None:
        return {}
    lat = [{"stage": stage, "op": op, "latency_lo_s": latency_bounds(i)[0], "latency_hi_s": latency_bounds(i)[1],
            "count": c} for op, o in sorted(d["ops"].items()) for i, c in sorted(o["latency"].items())]
    sizes = [{"stage": stage, "direction": k, "size_lo_bytes": size_bounds(i)[0], "size_hi_bytes": size_bounds(i)[1],
              "count": c} for k, h in d["sizes"].items() for i, c in sorted(h.items())]
    start = int(d["start"])
    timeline = [{"stage": stage, "second": sec - start, "unix_second": sec, **dict(zip(TIMELINE, v))}
                for sec, v in d["timeline"].items()]
    return {"io_latency": lat, "io_sizes": sizes, "io_timeline": timeline}


def op_rows(stage: str, prof: dict | None) -> list[dict]:
    """Parquet rows ``io_ops``: per operation type of a stage's profile, its count and latency percentiles."""
    if not prof:
        return []
    return [{"stage": stage, "op": op, **{k: o.get(k) for k in ("count", "errors", "per_s", "mean_latency_s",
                                                                "p50_latency_s", "p90_latency_s", "p99_latency_s",
                                                                "busy_seconds")}}
            for op, o in prof["ops"].items() if o["count"]]
