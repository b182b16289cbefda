"""fio characterisation of a storage root with jobs that mirror this pipeline's I/O.

  slide_seq_read    large sequential reads of a slide file (1 MiB; the file once, at most the runtime)
  slide_tile_read   random tile-sized reads of a slide (64 KiB)
  jpeg_small_writes many small files created and written (32 KiB each): the patch stage's metadata path
  jpeg_small_writes_8k the same at 8 KiB a file: with the 32 KiB job, a fixed cost a file and a cost a byte (a
                    file written whole is flushed at its close: its bytes go at the servers' pace, not at the
                    client's buffered write stream's)
  jpeg_small_reads  those files opened and read whole, one after the other: the TFRecord stage's input path
  tfrecord_stream   TFRecord streaming: 1 MiB sequential reads by several jobs at once (each file once, at most
                    the runtime)
  checkpoint_write  a large sequential write ended by fsync
  read_latency      small (4 KiB) random reads one at a time: the fixed cost of a read request
  write_latency     small (4 KiB) random writes one at a time: the fixed cost of a write request
  file_create       empty files created (fio's filecreate engine): the cost of a create
  file_stat         those files stat'ed (filestat): the cost of a lookup
  file_delete       those files deleted (filedelete): the cost of an unlink

fio has no engine for opening an existing file or renaming one, which the pipeline does for every patch and
every shard it reads: ``metadata_probe`` times those calls itself (Python's os.open/os.close, os.rename), on
files of its own in the same scratch folder. Nor does one fio job read small files while their bytes stream into
another file, the TFRecord stage's path (patches packed into a shard): ``packed_probe`` times it (at two file
sizes), for a client's reads and its stream of writes may share a link direction and a server's egress, or not:
on MooseFS with 80 Mbit/s chunk-server links an 18 KB file took 1.3 ms read alone, 2.0 ms written alone, 2.9 ms
read and packed. ``read_ahead_probe`` counts what an open reading from a file's start costs beyond its bytes (a
client that drops a file's cache at its open reads ahead from there: OpenSlide reads a slide's header after each
of its opens), and ``tiles_and_files_probe`` times the patch stage's own pair, a tile read and a patch written
whole, alone and together (a client's reads and writes may travel apart, or not).

fio's JSON (jobs[].read/write: bw_bytes, iops, clat_ns mean and percentiles, io_bytes, runtime) becomes a small
characterisation: bandwidths, IOPS, mean, p50 and p99 latencies, files per second.
"""
from __future__ import annotations

import json
import shutil
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import load_profile
from ..errors import WsibenchError
from ..fsutil import remove
from .attach import attached
from .characterisations import save

JOBS = ("slide_seq_read", "slide_tile_read", "jpeg_small_writes", "jpeg_small_writes_8k", "jpeg_small_reads",
        "tfrecord_stream",
        "checkpoint_write",
        "read_latency", "write_latency", "file_create", "file_stat", "file_delete")
PROBES = ("file_open", "file_rename", "small_files_packed", "read_ahead", "tiles_and_files")  # timed by wsibench itself: fio has no engine for them
PACKED_SIZES = (32768, 16384)  # bytes a file of the packed probe: two sizes, a fixed cost a file and one a byte
PACKED_STREAMS = 6  # streams the packed probe writes one after the other (as a stage writes its shards)


class FioError(WsibenchError, RuntimeError):
    pass


def small_files_job(name: str, rw: str, kib: int, folder: str, files: int) -> str:
    """A job of ``files`` small files of ``kib`` KiB each, one after the other, written whole (created as opened)
    or read whole, in ``folder``."""
    return (f"[{name}]\nstonewall\nrw={rw}\nbs={kib}k\nfilesize={kib}k\nnrfiles={files}\nsize={files * kib}k\n"
            f"openfiles=1\n" + ("create_on_open=1\n" if rw == "write" else "")
            + f"file_service_type=sequential\ndirect=0\nfilename_format={folder}/$jobnum.$filenum.jpg\n")


def job_file(directory: Path, size_mb: int, runtime_s: float, small_files: int, streams: int, direct: bool) -> str:
    g = (f"[global]\nioengine=psync\ndirectory={directory}\ninvalidate=1\ndirect={int(direct)}\n"
         f"group_reporting=1\n")
    if not runtime_s >= 0.001:
        raise FioError(f"a time-based job's runtime must be at least 1 ms, not {runtime_s} s")
    # In milliseconds: fio reads "0.5s" as 0, no time limit at all (a random-read job then read its whole file).
    t = f"time_based=1\nruntime={round(runtime_s * 1000)}ms\n"
    # Sequential reads go over their files once, at most the runtime: time-based, a file smaller than the runtime's
    # worth is read again, and a client with a cache of its own (mfsmount's) served the second pass: 4.3 GB/s
    # "read" over a 40 Mbit/s link.
    once = f"runtime={round(runtime_s * 1000)}ms\n"
    return g + f"""
[slide_seq_read]
stonewall
rw=read
bs=1M
size={size_mb}M
filename=slide.bin
{once}
[slide_tile_read]
stonewall
rw=randread
bs=64k
size={size_mb}M
filename=slide.bin
{t}
{small_files_job("jpeg_small_writes", "write", 32, "jpeg", small_files)}
{small_files_job("jpeg_small_writes_8k", "write", 8, "jpeg8", small_files)}
{small_files_job("jpeg_small_reads", "read", 32, "jpeg", small_files)}
[tfrecord_stream]
stonewall
rw=read
bs=1M
numjobs={streams}
size={max(1, size_mb // streams)}M
filename_format=tfrecord.$jobnum
{once}
[checkpoint_write]
stonewall
rw=write
bs=1M
size={size_mb}M
end_fsync=1
filename=checkpoint.bin

[read_latency]
stonewall
rw=randread
bs=4k
size={size_mb}M
filename=slide.bin
{t}
[write_latency]
stonewall
rw=randwrite
bs=4k
size={size_mb}M
filename=checkpoint.bin
{t}
[file_create]
stonewall
ioengine=filecreate
nrfiles={small_files}
filesize=4k
openfiles=1
filename_format=meta/$jobnum.$filenum

[file_stat]
stonewall
ioengine=filestat
nrfiles={small_files}
filesize=4k
openfiles=1
filename_format=meta/$jobnum.$filenum

[file_delete]
stonewall
ioengine=filedelete
nrfiles={small_files}
filesize=4k
openfiles=1
filename_format=meta/$jobnum.$filenum
"""


def summarise(doc: dict, small_files: int) -> dict:
    out = {}
    for job in doc["jobs"]:
        name = job["jobname"]
        rec = {"runtime_s": job.get("job_runtime", 0) / 1000}
        if job.get("usr_cpu") is not None:  # the calling process's own CPU (its kernel time in the file system's
            # client included), in per cent of the job's runtime
            rec["caller_cpu_seconds"] = (job["usr_cpu"] + job.get("sys_cpu", 0.0)) / 100 * rec["runtime_s"]
        for side in ("read", "write"):
            d = job.get(side, {})
            if not d.get("io_bytes") and not d.get("total_ios"):
                continue
            clat = d.get("clat_ns", {})
            pct = clat.get("percentile", {})
            p50, p99 = pct.get("50.000000"), pct.get("99.000000")
            rec.update({f"{side}_bw_bytes_per_s": d["bw_bytes"], f"{side}_iops": d["iops"],
                        f"{side}_mean_latency_s": clat["mean"] / 1e9 if clat.get("mean") else None,
                        f"{side}_p50_latency_s": p50 / 1e9 if p50 else None,
                        f"{side}_p99_latency_s": p99 / 1e9 if p99 else None, f"{side}_bytes": d["io_bytes"],
                        f"{side}_requests": d.get("total_ios")})
        if name in ("jpeg_small_writes", "jpeg_small_writes_8k", "jpeg_small_reads") and rec["runtime_s"]:
            rec["files_per_s"] = small_files / rec["runtime_s"]
        if name.startswith("file_"):  # fio reports these calls on the read side: one "request" per file
            rec = {"runtime_s": rec["runtime_s"], "caller_cpu_seconds": rec.get("caller_cpu_seconds"),
                   "files": rec.get("read_requests"),
                   "mean_latency_s": rec.get("read_mean_latency_s"), "p50_latency_s": rec.get("read_p50_latency_s"),
                   "p99_latency_s": rec.get("read_p99_latency_s"), "files_per_s": rec.get("read_iops"),
                   "tool": f"fio {name.removeprefix('file_')} engine"}
        out[name] = rec
    return out


def metadata_probe(work: Path, files: int) -> dict:
    """Open-and-close of existing files, and renames, timed one call after the other (fio has no engine for them).
    Each is timed around the calls themselves (os.open + os.close; os.rename)."""
    folder = work / "probe"
    folder.mkdir()
    names = [folder / f"f{i}" for i in range(files)]
    for p in names:
        p.write_bytes(b"")
    out = {}
    for job, call in (("file_open", lambda p: os.close(os.open(p, os.O_RDONLY))),
                      ("file_rename", lambda p: os.rename(p, p.with_name(p.name + ".r")))):
        times = []
        t_all = time.perf_counter()
        for p in names:
            t0 = time.perf_counter()
            call(p)
            times.append(time.perf_counter() - t0)
        wall = time.perf_counter() - t_all
        times.sort()
        out[job] = {"runtime_s": wall, "files": files, "mean_latency_s": statistics.fmean(times),
                    "p50_latency_s": times[len(times) // 2], "p99_latency_s": times[min(len(times) - 1, int(0.99 * len(times)))],
                    "files_per_s": files / wall if wall else None,
                    "tool": "wsibench: " + ("os.open + os.close of an existing file" if job == "file_open" else "os.rename")}
    return out


def packed_probe(work: Path, files: int) -> dict:
    """Small files read whole, one after the other, each file's bytes appended to a stream file as it is read
    (the TFRecord stage: patches packed into shards, one shard after the other), timed from the first open to the
    last stream's close, at each size of PACKED_SIZES: ``files`` files a size, written first, then dropped from the
    page cache (fadvise) so the reads reach the storage; PACKED_STREAMS streams in turn, a share of the files each
    (where a stream's servers are the reads' matters: on the MooseFS lab with 80 Mbit/s chunk servers one stream
    gave 2.9 ms an 18 KB file in one run and 4.4 in another). Per size: seconds a file."""
    rows = {}
    for size in PACKED_SIZES:
        folder = work / f"packed{size}"
        folder.mkdir()
        names = [folder / f"f{i}" for i in range(files)]
        data = os.urandom(size)
        for p in names:
            p.write_bytes(data)
        for p in names:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(PACKED_STREAMS):
            with open(folder / f"stream{k}.bin", "wb") as stream:
                for p in names[k * len(names) // PACKED_STREAMS:(k + 1) * len(names) // PACKED_STREAMS]:
                    with open(p, "rb") as f:
                        stream.write(f.read())
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows[str(size)] = {"files": files, "file_bytes": size, "runtime_s": wall, "seconds_per_file": wall / files,
                           "caller_cpu_seconds": cpu}
    return {"small_files_packed": {"sizes": rows, "tool": "wsibench: small files read whole, each one's bytes "
                                   "appended to one stream file (buffered writes), to the stream's close"}}


READ_AHEAD_OPENS = 24  # opens of each kind of the read-ahead probe
TILE = (65536, 16 << 20)  # the read that follows each open's first reads: a tile, away from the file's start
READ_AHEAD_KINDS = {  # an open's first reads, (bytes, offset) in order, before the tile; "elsewhere" is the
    # baseline: a lone read away from the start, what an open and its reads cost without a read-ahead
    "alone": ((4096, 0),), "went_on": ((512, 0), (4096, 512)), "elsewhere": ((4096, 8 << 20),)}


def received_bytes() -> int | None:
    """Bytes this network namespace's interfaces (not loopback) have received (/proc/self/net/dev): a lab's client
    host has its own link; a real host's NICs carry other traffic too. None where unreadable."""
    try:
        rows = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    except OSError:
        return None
    return sum(int(r.split(":", 1)[1].split()[0]) for r in rows if r.split(":", 1)[0].strip() != "lo")


def _large_file(path: Path, mib: int = 32) -> Path:
    """A file of ``mib`` MiB of random bytes at ``path``, on the storage (fsync'd) and dropped from the page cache."""
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(2**20))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return path


def read_ahead_probe(work: Path) -> dict:
    """What an open that reads from a file's start costs beyond its bytes: a 32 MiB file written and dropped from
    the page cache, then READ_AHEAD_OPENS opens of each kind of READ_AHEAD_KINDS, each followed by a tile's read
    (TILE), timed from the open to the tile's bytes (what a worker waits), the bytes the host's interfaces received
    counted around each open, once they stop coming (the read-ahead's tail). A network file system's client that
    drops a file's cache at its open reads ahead from the start (MooseFS's mfsmount: a TIFF reader's header reads
    after each open carried 2.3 times the patch stage's bytes over the lab's links), and the tile's read may wait
    behind it where one link carries both; lone reads elsewhere carry their bytes; local storage receives nothing.
    Per kind: opens, the bytes read and received, the seconds to the tile's bytes."""
    path = _large_file(work / "read-ahead.bin")
    rows = {}
    for kind, reads in READ_AHEAD_KINDS.items():
        got, received, waited = 0, 0, 0.0
        for _ in range(READ_AHEAD_OPENS):
            rx0 = received_bytes()
            t0 = time.perf_counter()
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                for n, off in (*reads, TILE):
                    got += len(os.pread(fd, n, off))
                waited += time.perf_counter() - t0
            finally:
                os.close(fd)
            rx1 = _settled(rx0)
            received = None if rx0 is None or rx1 is None or received is None else received + rx1 - rx0
        rows[kind] = {"opens": READ_AHEAD_OPENS, "read_bytes": got, "received_bytes": received, "runtime_s": waited}
    path.unlink()
    return {"read_ahead": {"kinds": rows, "tool": "wsibench: opens of a 32 MiB file reading from its start (alone; "
                           "then going on) or elsewhere, then a 64 KiB tile; the time to the tile's bytes, the bytes "
                           "the host's interfaces received around each open (/proc/self/net/dev)"}}


def tiles_and_files_probe(work: Path, files: int) -> dict:
    """The patch stage's path: a 64 KiB tile read from a large file (at a random place, the file dropped from the
    page cache first) then a 32 KiB file written whole (created, written, closed), ``files`` pairs one after the
    other; and as many tiles alone, then as many files alone, each timed the same way. Where a client's reads and
    its files' writes travel apart (a client link's two directions), a pair takes about the longer one's time; where
    one path carries both, the sum. Per part: its pairs, tiles or files and seconds."""
    import random

    folder = work / "tiles"
    folder.mkdir()
    big = _large_file(folder / "slide.bin")
    rng = random.Random(11)
    places = [rng.randrange(0, (32 << 20) - TILE[0]) for _ in range(2 * files)]  # the tiles alone, and in pairs
    data = os.urandom(32768)
    fd = os.open(big, os.O_RDONLY)
    rows = {}
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for part, (tiles, writes) in {"tiles": (True, False), "files": (False, True), "both": (True, True)}.items():
            t0 = time.perf_counter()
            for i in range(files):
                if tiles:
                    os.pread(fd, TILE[0], places.pop())
                if writes:
                    (folder / f"{part}{i}.jpg").write_bytes(data)
            rows[part] = {"count": files, "runtime_s": time.perf_counter() - t0}
    finally:
        os.close(fd)
    return {"tiles_and_files": {"parts": rows, "tile_bytes": TILE[0], "file_bytes": len(data),
                                "tool": "wsibench: 64 KiB reads of a large file and 32 KiB files written whole, "
                                        "each alone and in pairs, one after the other"}}


def _settled(since: int | None, quiet: float = 0.02, limit: float = 1.0) -> int | None:
    """The host's received bytes once they have stopped growing for ``quiet`` seconds (at most ``limit``: a real
    host's NICs may never go quiet, other traffic; a read-ahead of 1.4 MB takes 0.3 s at 40 Mbit/s); at once where
    nothing came since ``since`` (local storage)."""
    last, t_end = received_bytes(), time.perf_counter() + limit
    while last is not None and last != since and time.perf_counter() < t_end:
        time.sleep(quiet)
        now = received_bytes()
        if now == last:
            break
        last = now
    return last


def run(root: Path, size_mb: int = 256, runtime_s: float = 5.0, small_files: int = 2000, streams: int = 4,
        direct: bool = False) -> dict:
    """Run the job suite in a scratch folder under root; return the characterisation."""
    fio = shutil.which("fio")
    if not fio:
        raise FioError("fio is not installed: apt-get install fio (Debian/Ubuntu) or dnf install fio")
    work = Path(tempfile.mkdtemp(prefix=".wsibench-fio-", dir=root))  # its own scratch folder, removed after
    jobs = work.parent / f"{work.name}.fio"
    try:
        (work / "jpeg").mkdir()
        (work / "jpeg8").mkdir()
        (work / "meta").mkdir()
        jobs.write_text(job_file(work, size_mb, runtime_s, small_files, streams, direct))
        r = subprocess.run([fio, "--output-format=json", str(jobs)], capture_output=True, text=True)
        if r.returncode != 0:
            raise FioError(f"fio failed on {root}: {(r.stderr or r.stdout).strip()[-800:]}")
        text = r.stdout[r.stdout.find("{"):]  # fio may print notes before its JSON
        doc = json.loads(text)
        probes = metadata_probe(work, small_files) | packed_probe(work, max(20, small_files // 2)) \
            | read_ahead_probe(work) | tiles_and_files_probe(work, max(20, small_files // 4))
    finally:
        remove(work, root)
        remove(jobs, root)
    return {"fio_version": doc.get("fio version"), "size_mb": size_mb, "runtime_s": runtime_s, "direct": direct,
            "small_files": small_files, "jobs": summarise(doc, small_files) | probes}


def characterise(profile_name: str, results_dir: Path, size_mib: int = 256, runtime: float = 5.0,
                 small_files: int = 2000, streams: int = 4, direct: bool | None = None, strict: bool = False,
                 observe: bool = False, hosts: int | None = None, parallel_phases: bool = True,
                 jobs_from: Path | None = None, progress=print) -> tuple[Path, dict]:
    """``wsibench fio``: attach the profile's storage, run the jobs on its root and store the characterisation under
    <results>/fio/ (later runs on the profile carry it). ``direct`` defaults to on for real roots, off for emulated
    or observed ones (a FUSE passthrough that never caches). ``hosts`` (a lab profile with client hosts): the jobs
    run on the lab's first client host, as one client sees the storage, and then ``parallel`` phases run on that
    many client hosts at once: what the servers deliver to several clients (not with ``parallel_phases`` off).
    ``jobs_from``: an earlier characterisation of this storage whose jobs are kept, not run again (one client's
    view measured on a lab of one client host, where idle client hosts do not share its cores; the cluster proof).
    Returns (its file, the result)."""
    profile = load_profile(profile_name)
    with attached(profile, Path(results_dir), strict, observe) as st:
        observed = "observe" in st.record
        direct = direct if direct is not None else not st.observing
        where = ""
        if hosts:
            doc = _lab_with_clients(profile, st, hosts)
            where = f" on client host {_clients(doc)[0]['name']}"
        progress(f"[fio] {profile.name}: {st.root} ({st.record['fstype']}{', emulated' if profile.emulated else ''}"
                 f"{', observed through the counting passthrough' if observed else ''}){where}, "
                 + (f"the jobs kept from {Path(jobs_from).name}" if jobs_from
                    else f"{len(JOBS)} jobs of about {runtime:g}s"))
        if jobs_from:
            kept = json.loads(Path(jobs_from).read_text())
            if kept.get("profile") != profile.name:
                raise FioError(f"{jobs_from} characterises {kept.get('profile')!r}, not {profile.name!r}: its jobs "
                               "are not this storage's")
            result = {k: v for k, v in kept.items()
                      if k not in ("profile", "created_at", "observed", "storage", "parallel", "jobs_from")}
            result["jobs_from"] = f"{Path(jobs_from).name} (created {kept.get('created_at')})"
        elif hosts:
            argv = [sys.executable, "-m", "harness.storage.fio", "suite", str(st.root), json.dumps(
                {"size_mb": size_mib, "runtime_s": runtime, "small_files": small_files, "streams": streams,
                 "direct": direct})]
            result = json.loads(lab_on_hosts(doc, [argv])[0])
            result["client_host"] = _clients(doc)[0]["name"]
        else:
            result = run(st.root, size_mib, runtime, small_files, streams, direct)
        if hosts and parallel_phases:
            progress(f"[fio] {profile.name}: parallel phases on {hosts} client hosts at once")
            result["parallel"] = parallel(st.root, doc, hosts, runtime, size_mib, small_files, direct)
        storage = {k: v for k, v in st.record.items() if k != "fio"}  # not the characterisation it replaces
    return save(Path(results_dir), profile.name, {"storage": storage, **result}, observed=observed), result


# --- several client hosts at once (the storage lab) ------------------------------------------------------------

METADATA_PHASES = ("create", "stat", "open", "rename", "unlink")  # one phase each, one after the other on the same
# files: the lab's CPU is read around each phase, so each kind of operation has its own CPU cost (a stat costs the
# servers far less than a create)
# "idle" first: the hosts mount, wait for the common start and end: what a phase costs the lab before any work
# (each host's mount starting, the master registering it), subtracted from every phase's CPU in the costs
PHASES = ("idle", "write", "read", "mixed", "small_writes", "small_writes_8k", *METADATA_PHASES)
SMALL_WRITE_KIB = {"small_writes": 32, "small_writes_8k": 8}  # two sizes: the servers' time a file and a byte


def _clients(doc: dict) -> list[dict]:
    return [h for h in doc["layout"]["hosts"] if h["role"] == "client"]


def _lab_with_clients(profile, st, hosts: int) -> dict:
    from .lab import status

    doc = status(st.real_root) if profile.kind == "lab" else None
    if not doc or len(_clients(doc)) < hosts:
        raise FioError(f"--hosts {hosts}: several clients at once need a lab profile (kind = \"lab\") with "
                       f"lab.client_hosts >= {hosts}; {profile.name} has "
                       + (f"{len(_clients(doc))}" if doc else "none (it is not a lab)"))
    return doc


def lab_cpu(doc: dict) -> dict:
    from .lab import cpu_by_process

    return cpu_by_process(doc)


def lab_cpu_used(before: dict, after: dict) -> dict:
    from .lab import cpu_used

    return cpu_used(before, after)


def lab_on_hosts(doc: dict, argvs: list[list[str]]) -> list[str]:
    from .lab import on_client_hosts

    return on_client_hosts(doc, argvs)


def parallel(root: Path, doc: dict, hosts: int, runtime_s: float, size_mb: int, small_files: int,
             direct: bool) -> dict:
    """Each phase on ``hosts`` client hosts at once, started together (a common start time): large sequential
    writes (1 MiB, time-based, BIG_FILES files a host) then reads of them (as many bytes on every host), both at once,
    small files written whole (at two sizes), and the metadata operations, a phase for each kind (creates, stats,
    opens, renames, unlinks). Per phase the sum over hosts (what the servers delivered to all of them; a rate, all
    bytes over the longest host's time) and each host's own figure."""
    out = {"hosts": hosts, "runtime_s": runtime_s, "direct": direct, "phases": {}}
    work = Path(tempfile.mkdtemp(prefix=".wsibench-fio-parallel-", dir=root))
    try:
        for phase in PHASES:
            start_at = time.time() + 4.0  # every host mounted and ready by then
            mib = size_mb
            if phase in ("read", "mixed"):  # every host reads as much (the least any host wrote): at once throughout
                mib = min(size_mb, *(h["write_bytes"] // 2**20 for h in out["phases"]["write"]["per_host"]))
            argvs = [[sys.executable, "-m", "harness.storage.fio", "phase", phase, str(work / f"h{i}"),
                      json.dumps({"runtime_s": runtime_s, "size_mb": mib, "files": small_files, "direct": direct,
                                  "start_at": start_at})] for i in range(hosts)]
            cpu0 = lab_cpu(doc)
            per_host = [json.loads(o) for o in lab_on_hosts(doc, argvs)]
            cpu = lab_cpu_used(cpu0, lab_cpu(doc))
            cpu["client"] += sum(h.get("mount_cpu_seconds", 0.0) for h in per_host)
            summed = {k: sum(h[k] for h in per_host) for k in per_host[0] if k.endswith("_per_s")}
            # the bytes over the span they took, not the sum of rates over unequal times (a host that read its
            # 4 MiB in 0.3 s at 14.7 MB/s had made 80 Mbit/s chunk-server links 31.6 MB/s)
            if phase == "read":
                summed["read_bw_bytes_per_s"] = sum(h["read_bytes"] for h in per_host) / max(
                    h["runtime_s"] for h in per_host)
            if phase == "mixed" and "mixed_read_seconds" in per_host[0]:
                for side in ("read", "write"):
                    summed[f"mixed_{side}_bw_bytes_per_s"] = sum(h[f"mixed_{side}_bytes"] for h in per_host) / max(
                        h[f"mixed_{side}_seconds"] for h in per_host)
            totals = {k: sum(h[k] for h in per_host) for k in per_host[0]
                      if k.endswith(("_bytes", "_files", "_operations"))}
            out["phases"][phase] = {**summed, **totals, "per_host": per_host,
                                    # the lab's own processes share this machine's cores with the workers, and so
                                    # do the calling processes' requests (their kernel time in the FUSE client)
                                    "lab_cpu_seconds": cpu
                                    | {"callers": sum(h.get("caller_cpu_seconds", 0.0) for h in per_host)}}
    finally:
        remove(work, root)
    return out


def timed_phase(name: str, folder: Path, o: dict) -> dict:
    """``phase``, with the CPU seconds this host's calling processes spent in it (user and system, fio's
    included): a request to a FUSE client costs the caller kernel time too, which a worker pays on its core."""
    import resource

    def used():
        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                        resource.getrusage(resource.RUSAGE_CHILDREN)))
    before = used()
    out = phase(name, folder, o)
    return out | {"caller_cpu_seconds": used() - before, "mount_cpu_seconds": _mount_cpu()}


def _mount_cpu() -> float:
    """CPU seconds this host's own lab mount used (an mfsmount child of this process, which ends with it: the
    lab's snapshots would miss it)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)
            if f[0].endswith("(mfsmount") and int(f[1].split()[1]) == os.getpid():
                total += (int(f[1].split()[11]) + int(f[1].split()[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return total


SMALL_FILE_STREAMS = 4  # small files and metadata operations: streams a host, so the servers, not one stream's
# round trips, set the rate (a single stream measures its own latency, not the servers' capacity)


def _streams(folder: Path, work) -> list:
    """``work(subfolder)`` on SMALL_FILE_STREAMS threads at once, each in a folder of its own (the folder lock of
    one host's kernel is the cluster model's separate term); their results."""
    import threading

    out = [None] * SMALL_FILE_STREAMS

    def one(i):
        sub = folder / f"t{i}"
        sub.mkdir(exist_ok=True)
        out[i] = work(sub)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(SMALL_FILE_STREAMS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


BIG_FILES = 4  # files a host writes one after the other and reads back in order: on a file system that keeps a
# file on one storage target (MooseFS: a chunk of up to 64 MiB on one chunk server) each file is a new draw of the
# targets, as a stage's items are; one file a host left the servers' rate to one draw (3 hosts on 2 chunk servers
# at 80 Mbit/s: 10.1 MB/s, all three on one server, then 19.1)


def _bigs(folder: Path) -> list[Path]:
    return [folder / f"big.{j}" for j in range(BIG_FILES)]


def phase(name: str, folder: Path, o: dict) -> dict:
    """One phase of ``parallel`` on this host, from ``o['start_at']`` (Unix seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    delay = o["start_at"] - time.time()
    if delay > 0:
        time.sleep(delay)
    if name == "idle":
        return {"runtime_s": 0.0}
    if name == "mixed":  # reads of the read phase's files and new writes at once: do they share the servers' links?
        import threading

        # the reads go over the files once (at most the runtime) and the writes stop with them: both rates over the
        # same time. Before, the reads began again at the file's end, and a second pass came from the client's own
        # buffers: reads "at" 1.04 to 1.52 of what the servers' links could add to the writes, from day to day
        res, stop = {}, threading.Event()
        t = threading.Thread(target=lambda: res.update(_write_for(folder / "mixed", o["runtime_s"], stop=stop)))
        t.start()
        try:
            res.update(_read_files(_bigs(folder), o["runtime_s"], o["size_mb"] * 2**20))
        finally:
            stop.set()
            t.join()
        return {"mixed_read_bw_bytes_per_s": res["read_bytes"] / res["read_seconds"],
                "mixed_write_bw_bytes_per_s": res["write_bytes"] / res["write_seconds"],
                "mixed_read_bytes": res["read_bytes"], "mixed_write_bytes": res["write_bytes"],
                "mixed_read_seconds": res["read_seconds"], "mixed_write_seconds": res["write_seconds"]}
    if name == "write":  # new 1 MiB blocks for the runtime, BIG_FILES files, every byte on the servers when timed
        n, secs = 0, 0.0
        for f in _bigs(folder):
            r = _write_for(f, o["runtime_s"] / BIG_FILES, at_least=1)
            n, secs = n + r["write_bytes"], secs + r["write_seconds"]
        return {"write_bw_bytes_per_s": n / secs, "write_bytes": n, "runtime_s": secs}
    if name == "read":
        # what the write phase wrote, at most size_mb, once (a size beyond the files had fio lay them out first,
        # inside the phase: on 80 Mbit/s chunk-server links 56 MiB a host of writes, which other hosts' reads met)
        have = sum(f.stat().st_size for f in _bigs(folder) if f.is_file())
        if have < 2**20:
            raise FioError(f"the read phase found no files of at least 1 MiB from the write phase in {folder}")
        r = _read_files(_bigs(folder), o["runtime_s"], min(o["size_mb"] * 2**20, have))
        return {"read_bw_bytes_per_s": r["read_bytes"] / r["read_seconds"], "read_bytes": r["read_bytes"],
                "runtime_s": r["read_seconds"]}
    if name in SMALL_WRITE_KIB:
        data = os.urandom(SMALL_WRITE_KIB[name] * 1024)
        n = max(1, o["files"] // SMALL_FILE_STREAMS)

        def write(sub):
            for i in range(n):
                with open(sub / f"{name}-{i}.jpg", "wb") as f:
                    f.write(data)
        t0 = time.perf_counter()
        _streams(folder, write)
        wall, files = time.perf_counter() - t0, n * SMALL_FILE_STREAMS
        return {"files_per_s": files / wall, "bytes_per_s": files * len(data) / wall, "runtime_s": wall,
                "small_files": files, "small_bytes": files * len(data), "streams": SMALL_FILE_STREAMS}
    if name in METADATA_PHASES:  # n files a stream, one operation kind, on the files the create phase made
        n = max(1, o["files"] // SMALL_FILE_STREAMS)
        call = {"create": lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)), "stat": os.stat,
                "open": lambda p: os.close(os.open(p, os.O_RDONLY)),
                "rename": lambda p: os.rename(p, p.with_name(p.name + ".r")),
                "unlink": lambda p: os.unlink(p.with_name(p.name + ".r"))}[name]
        t0 = time.perf_counter()
        _streams(folder, lambda sub: [call(sub / f"m{i}") for i in range(n)])
        wall = time.perf_counter() - t0
        return {f"{name}_per_s": n * SMALL_FILE_STREAMS / wall, "runtime_s": wall,
                "metadata_operations": n * SMALL_FILE_STREAMS, "streams": SMALL_FILE_STREAMS}
    raise FioError(f"unknown phase {name!r}")


SYNC_EVERY = 4  # MiB written between fsyncs: the time is checked on the servers' side of a client's write cache


def _write_for(path: Path, seconds: float, at_least: int = 2, stop=None) -> dict:
    """New 1 MiB blocks (never the same region twice: a client's write cache would merge rewrites) for ``seconds``
    or until ``stop`` (an event) is set, through fsync every SYNC_EVERY MiB and at the end. Synced as it goes, not
    once at the end: a client's write cache takes blocks far faster than a narrow link carries them, and a loop
    timed on the cache's side wrote 513 MiB in a second that a 16 Mbit/s link then took 300 s to carry."""
    block = os.urandom(2**20)
    n, t0 = 0, time.perf_counter()
    with open(path, "wb") as f:
        while (time.perf_counter() - t0 < seconds and not (stop and stop.is_set())) or n < at_least:
            f.write(block)
            n += 1
            if n % SYNC_EVERY == 0:
                f.flush()
                os.fsync(f.fileno())
        f.flush()
        os.fsync(f.fileno())
    return {"write_bytes": n * 2**20, "write_seconds": time.perf_counter() - t0}


def _read_files(files: list[Path], seconds: float, limit: int) -> dict:
    """``_read_for`` over ``files`` in order, once each, at most ``limit`` bytes in all and ``seconds``."""
    n, t0 = 0, time.perf_counter()
    for f in files:
        left = seconds - (time.perf_counter() - t0)
        if left <= 0 or n >= limit:
            break
        if f.is_file():
            n += _read_for(f, left, limit - n)["read_bytes"]
    return {"read_bytes": n, "read_seconds": time.perf_counter() - t0}


def _read_for(path: Path, seconds: float, limit: int) -> dict:
    """1 MiB reads of ``path``, once over it, at most ``limit`` bytes and ``seconds``, O_DIRECT where the file system allows it, the
    file dropped from the page cache first: every byte from the storage, none a second time from a cache."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        fd = os.open(path, os.O_RDONLY)
    import mmap

    buf = mmap.mmap(-1, 2**20)  # page-aligned, as O_DIRECT wants
    n, t0 = 0, time.perf_counter()
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds and n < limit:
            got = os.readv(fd, [buf])
            if got <= 0:
                break
            n += got
    finally:
        os.close(fd)
    return {"read_bytes": n, "read_seconds": time.perf_counter() - t0}


if __name__ == "__main__":
    if sys.argv[1:2] == ["suite"]:
        o = json.loads(sys.argv[3])
        print(json.dumps(run(Path(sys.argv[2]), o["size_mb"], o["runtime_s"], o["small_files"], o["streams"],
                             o["direct"])))
    elif sys.argv[1:2] == ["phase"]:
        print(json.dumps(timed_phase(sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4]))))
    else:
        sys.exit("usage: python -m harness.storage.fio suite ROOT OPTIONS_JSON | phase NAME FOLDER OPTIONS_JSON")
