"""fio characterisation of a storage root with jobs that mirror this pipeline's I/O.

  slide_seq_read    large sequential reads of a slide file (1 MiB)
  slide_tile_read   random tile-sized reads of a slide (64 KiB)
  jpeg_small_writes many small files created and written (32 KiB each): the patch stage's metadata path
  tfrecord_stream   TFRecord streaming: 1 MiB sequential reads by several jobs at once
  checkpoint_write  a large sequential write ended by fsync

fio's JSON (jobs[].read/write: bw_bytes, iops, clat_ns percentiles, io_bytes, runtime) becomes a small
characterisation: bandwidths, IOPS, p99 latencies and files per second.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import WsibenchError
from ..fsutil import remove, write_json

JOBS = ("slide_seq_read", "slide_tile_read", "jpeg_small_writes", "tfrecord_stream", "checkpoint_write")


class FioError(WsibenchError, RuntimeError):
    pass


def job_file(directory: Path, size_mb: int, runtime_s: float, small_files: int, streams: int, direct: bool) -> str:
    g = (f"[global]\nioengine=psync\ndirectory={directory}\ninvalidate=1\ndirect={int(direct)}\n"
         f"group_reporting=1\n")
    t = f"time_based=1\nruntime={runtime_s}s\n"
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
"""


def summarise(doc: dict, small_files: int) -> dict:
    out = {}
    for job in doc["jobs"]:
        name = job["jobname"]
        rec = {"runtime_s": job.get("job_runtime", 0) / 1000}
        for side in ("read", "write"):
            d = job.get(side, {})
            if not d.get("io_bytes"):
                continue
            p99 = d.get("clat_ns", {}).get("percentile", {}).get("99.000000")
            rec.update({f"{side}_bw_bytes_per_s": d["bw_bytes"], f"{side}_iops": d["iops"],
                        f"{side}_p99_latency_s": p99 / 1e9 if p99 else None, f"{side}_bytes": d["io_bytes"]})
        if name == "jpeg_small_writes" and rec["runtime_s"]:
            rec["files_per_s"] = small_files / rec["runtime_s"]
        out[name] = rec
    return out


def run(root: Path, size_mb: int = 256, runtime_s: float = 5.0, small_files: int = 2000, streams: int = 4,
        direct: bool = False) -> dict:
    """Run the job suite in a scratch folder under root; return the characterisation."""
    fio = shutil.which("fio")
    if not fio:
        raise FioError("fio is not installed: apt-get install fio (Debian/Ubuntu) or dnf install fio")
    work = Path(tempfile.mkdtemp(prefix=".wsibench-fio-", dir=root))  # its own scratch folder, removed after
    (work / "jpeg").mkdir()
    jobs = work.parent / f"{work.name}.fio"
    jobs.write_text(job_file(work, size_mb, runtime_s, small_files, streams, direct))
    try:
        r = subprocess.run([fio, "--output-format=json", str(jobs)], capture_output=True, text=True)
        if r.returncode != 0:
            raise FioError(f"fio failed on {root}: {(r.stderr or r.stdout).strip()[-800:]}")
        text = r.stdout[r.stdout.find("{"):]  # fio may print notes before its JSON
        doc = json.loads(text)
    finally:
        remove(work, root)
        remove(jobs, root)
    return {"fio_version": doc.get("fio version"), "size_mb": size_mb, "runtime_s": runtime_s, "direct": direct,
            "jobs": summarise(doc, small_files)}


def save(results_dir: Path, profile: str, doc: dict) -> Path:
    """Store a characterisation under <results>/fio/, where later runs on the profile find it."""
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    doc = {"profile": profile, "created_at": stamp, **doc}
    out = Path(results_dir) / "fio" / f"{profile}-{stamp}.json"
    write_json(out, doc)
    return out


def latest(results_dir: Path, profile: str) -> dict | None:
    """The newest fio characterisation of this profile under <results>/fio, if one was made."""
    files = sorted((Path(results_dir) / "fio").glob(f"{profile}-*.json"))
    return json.loads(files[-1].read_text()) if files else None
