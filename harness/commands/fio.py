"""wsibench fio: characterise a storage profile's root with fio jobs that mirror the pipeline."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import parents


def add(sub):
    s = sub.add_parser("fio", parents=parents("results", "strict", "observe"),
                       help="characterise a storage profile's root with fio jobs that mirror the pipeline",
                       description="Run fio jobs that mirror this pipeline's I/O (slide reads, small JPEG writes, "
                                   "TFRecord streaming, checkpoint writes) on a profile's root; the result is stored "
                                   "under RESULTS/fio/ and attached to later runs on that profile.")
    s.add_argument("profile", help="storage profile name or path")
    s.add_argument("--size", type=int, default=256, help="MiB per file for the large jobs (default 256)")
    s.add_argument("--runtime", type=float, default=5.0, help="seconds per time-based job (default 5)")
    s.add_argument("--small-files", type=int, default=2000, help="files in the small-file job (default 2000)")
    s.add_argument("--streams", type=int, default=4, help="parallel TFRecord readers (default 4)")
    s.add_argument("--hosts", type=int,
                   help="a lab profile with client hosts: run the jobs on its first client host (one client's view), "
                        "then parallel phases (large writes and reads, small files, metadata operations) on this "
                        "many client hosts at once: what the servers deliver to several clients")
    s.add_argument("--direct", action=argparse.BooleanOptionalAction, default=None,
                   help="O_DIRECT I/O (default: on for real roots, off for emulated ones, which never cache)")
    return s


def run(a) -> int:
    from ..storage import fio

    out, result = fio.characterise(a.profile, Path(a.results), size_mib=a.size, runtime=a.runtime,
                                   small_files=a.small_files, streams=a.streams, direct=a.direct, strict=a.strict,
                                   observe=a.observe, hosts=a.hosts, progress=lambda m: print(m, file=sys.stderr))
    for name, j in result["jobs"].items():
        bw = j.get("read_bw_bytes_per_s") or j.get("write_bw_bytes_per_s") or 0
        mean = j.get("read_mean_latency_s") or j.get("write_mean_latency_s") or j.get("mean_latency_s")
        p99 = j.get("read_p99_latency_s") or j.get("write_p99_latency_s") or j.get("p99_latency_s")
        print(f"  {name:<18} {bw / 2**20:9.1f} MiB/s  {j.get('read_iops') or j.get('write_iops') or 0:9.0f} IOPS"
              + (f"  mean {mean * 1e3:.3f} ms" if mean else "") + (f"  p99 {p99 * 1e3:.3f} ms" if p99 else "")
              + (f"  {j['files_per_s']:.0f} files/s" if j.get("files_per_s") else ""))
    print(f"[fio] characterisation: {out}", file=sys.stderr)
    par = result.get("parallel")
    if par:
        print(f"  on {par['hosts']} client hosts at once (sums over the hosts):")
        for ph, v in par["phases"].items():
            print(f"  {ph:<18} " + ", ".join(f"{k.removesuffix('_per_s').replace('_', ' ')} "
                                            + (f"{x / 2**20:.1f} MiB/s" if "bytes" in k or "bw" in k else f"{x:.0f}/s")
                                            for k, x in v.items() if k.endswith("_per_s")))
    return 0
