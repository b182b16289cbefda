"""fio characterisation of a storage root with jobs that mirror this pipeline's I/O.

  slide_seq_read    large sequential reads of a slide file (1 MiB)
  slide_tile_read   random tile-sized reads of a slide (64 KiB)
  jpeg_small_writes many small files created and written (32 KiB each): the patch stage's metadata path
  jpeg_small_reads  those files opened and read whole, one after the other: the TFRecord stage's input path
  tfrecord_stream   TFRecord streaming: 1 MiB sequential reads by several jobs at once
  checkpoint_write  a large sequential write ended by fsync
  read_latency      small (4 KiB) random reads one at a time: the fixed cost of a read request
  write_latency     small (4 KiB) random writes one at a time: the fixed cost of a write request
  file_create       empty files created (fio's filecreate engine): the cost of a create
  file_stat         those files stat'ed (filestat): the cost of a lookup
  file_delete       those files deleted (filedelete): the cost of an unlink

fio has no engine for opening an existing file or renaming one, which the pipeline does for every patch and
every shard it reads: ``metadata_probe`` times those calls itself (Python's os.open/os.close, os.rename), on
files of its own in the same scratch folder.

fio's JSON (jobs[].read/write: bw_bytes, iops, clat_ns mean and percentiles, io_bytes, runtime) becomes a small
characterisation: bandwidths, IOPS, mean, p50 and p99 latencies, files per second.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import WsibenchError
from ..fsutil import remove, write_json

JOBS = ("slide_seq_read", "slide_tile_read", "jpeg_small_writes", "jpeg_small_reads", "tfrecord_stream",
        "checkpoint_write",
        "read_latency", "write_latency", "file_create", "file_stat", "file_delete")
PROBES = ("file_open", "file_rename")  # timed by wsibench itself: fio has no engine for them


class FioError(WsibenchError, RuntimeError):
    pass


def job_file(directory: Path, size_mb: int, runtime_s: float, small_files: int, streams: int, direct: bool) -> str:
    g = (f"[global]\nioengine=psync\ndirectory={directory}\ninvalidate=1\ndirect={int(direct)}\n"
         f"group_reporting=1\n")
    if not runtime_s >= 0.001:
        raise FioError(f"a time-based job's runtime must be at least 1 ms, not {runtime_s} s")
    # In milliseconds: fio reads "0.5s" as 0, no time limit at all (a random-read job then read its whole file).
    t = f"time_based=1\nruntime={round(runtime_s * 1000)}ms\n"
    return g + f"""
[slide_seq_read]
stonewall
rw=read
bs=1M
size={size_mb}M
filename=slide.bin
{t}
[slide_tile_read]
stonewall
rw=randread
bs=64k
size={size_mb}M
filename=slide.bin
{t}
[jpeg_small_writes]
stonewall
rw=write
bs=32k
filesize=32k
nrfiles={small_files}
size={small_files * 32}k
openfiles=1
create_on_open=1
file_service_type=sequential
direct=0
filename_format=jpeg/$jobnum.$filenum.jpg

[jpeg_small_reads]
stonewall
rw=read
bs=32k
filesize=32k
nrfiles={small_files}
size={small_files * 32}k
openfiles=1
file_service_type=sequential
direct=0
filename_format=jpeg/$jobnum.$filenum.jpg

[tfrecord_stream]
stonewall
rw=read
bs=1M
numjobs={streams}
size={max(1, size_mb // streams)}M
filename_format=tfrecord.$jobnum
{t}
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
        if name in ("jpeg_small_writes", "jpeg_small_reads") and rec["runtime_s"]:
            rec["files_per_s"] = small_files / rec["runtime_s"]
        if name.startswith("file_"):  # fio reports these calls on the read side: one "request" per file
            rec = {"runtime_s": rec["runtime_s"], "files": rec.get("read_requests"),
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
        (work / "meta").mkdir()
        jobs.write_text(job_file(work, size_mb, runtime_s, small_files, streams, direct))
        r = subprocess.run([fio, "--output-format=json", str(jobs)], capture_output=True, text=True)
        if r.returncode != 0:
            raise FioError(f"fio failed on {root}: {(r.stderr or r.stdout).strip()[-800:]}")
        text = r.stdout[r.stdout.find("{"):]  # fio may print notes before its JSON
        doc = json.loads(text)
        probes = metadata_probe(work, small_files)
    finally:
        remove(work, root)
        remove(jobs, root)
    return {"fio_version": doc.get("fio version"), "size_mb": size_mb, "runtime_s": runtime_s, "direct": direct,
            "small_files": small_files, "jobs": summarise(doc, small_files) | probes}


def _stem(profile: str, observed: bool) -> str:
    return f"{profile}.observed" if observed else profile


def save(results_dir: Path, profile: str, doc: dict, observed: bool = False) -> Path:
    """Store a characterisation under <results>/fio/, where later runs on the profile find it (those observed
    through the counting passthrough find the one made through it, ``observed``)."""
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    doc = {"profile": profile, "created_at": stamp, "observed": observed, **doc}
    out = Path(results_dir) / "fio" / f"{_stem(profile, observed)}-{stamp}.json"
    write_json(out, doc)
    return out


def latest(results_dir: Path, profile: str, observed: bool = False) -> dict | None:
    """The newest fio characterisation of this profile under <results>/fio, if one was made (this profile's alone:
    ``nfs`` is not ``nfs-emulated``)."""
    stem = _stem(profile, observed)
    pattern = re.compile(re.escape(stem) + r"-\d{8}T\d{6}\.json")
    files = sorted(f for f in (Path(results_dir) / "fio").glob(f"{stem}-*.json") if pattern.fullmatch(f.name))
    return json.loads(files[-1].read_text()) if files else None
