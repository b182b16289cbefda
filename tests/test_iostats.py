"""The pipeline's own I/O profile: the passthrough's counters, their differences per stage, observe mode."""
import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from harness import pipeline
from harness.config import parse_workload
from harness.storage import iostats
from harness.storage.emulate import mounted

from conftest import local_root

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0,
                                reason="the passthrough needs FUSE and root (the CI machine has both)")


def test_percentiles_and_sizes_from_the_histograms():
    c = iostats.Counters("observe", {})
    for ms in [1.0] * 50 + [2.0] * 40 + [10.0] * 9 + [100.0]:  # 100 reads: p50 1 ms, p90 2 ms, p99 10 ms
        c.record("read", ms / 1000, 4096)
    c.record("write", 0.001, 131072)
    c.record("getattr", 0.00002, error=True)
    before = iostats.Counters("observe", {}).snapshot() | {"pid": c.snapshot()["pid"], "started_at": c.started_at,
                                                           "at": c.started_at - 1}
    d = iostats.delta(before, c.snapshot())
    p = iostats.profile(d)
    r = p["ops"]["read"]
    assert r["count"] == 100 and r["mean_latency_s"] == pytest.approx((50 + 80 + 90 + 100) / 100 / 1000)
    for q, want in (("p50_latency_s", 0.001), ("p90_latency_s", 0.002), ("p99_latency_s", 0.010)):
        assert abs(r[q] - want) / want < 0.1, (q, r[q])  # a quarter power of two: within 9%
    assert p["bytes_read"] == 100 * 4096 and p["bytes_written"] == 131072
    assert p["request_sizes"]["read"]["histogram"] == {"4096": 100}  # 4096 falls in [4096, 8191]
    assert p["request_sizes"]["write"]["histogram"] == {"131072": 1}
    assert p["ops"]["getattr"]["errors"] == 1 and p["ops"]["unlink"] == {"count": 0}
    assert sum(row["ops"] for row in iostats.rows("s", d)["io_timeline"]) == 102


def test_a_stage_is_what_happened_between_its_snapshots():
    c = iostats.Counters("observe", {})
    c.record("create", 0.001)
    first = c.snapshot()
    c.record("create", 0.001)
    c.record("write", 0.001, 100)
    d = iostats.delta(first, c.snapshot())
    assert d["ops"]["create"]["count"] == 1 and d["bytes"]["written"] == 100
    assert sum(v[2] for v in d["timeline"].values()) == 2  # the first snapshot's second counts only what followed
    other = dict(first, pid=first["pid"] + 1)  # a server that restarted between the snapshots: no profile
    assert iostats.delta(other, c.snapshot()) is None


@pytest.mark.slow
@needs_fuse
def test_the_throttled_passthrough_counts_what_it_throttles(tmp_path):
    with mounted(tmp_path / "b", tmp_path / "m", {"name": "t", "metadata_ms": 5, "latency_ms": 2}):
        sock = iostats.socket_path(tmp_path / "m")
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_ISSOCK(sock.stat().st_mode)
        s0 = iostats.snapshot(tmp_path / "m")
        for i in range(20):
            (tmp_path / "m" / f"f{i}").write_bytes(b"x" * 5000)
        os.rename(tmp_path / "m" / "f0", tmp_path / "m" / "g0")
        p = iostats.profile(iostats.delta(s0, iostats.snapshot(tmp_path / "m")))
    assert p["mode"] == "throttled" and p["creates"] == 20 and p["ops"]["rename"]["count"] == 1
    assert p["ops"]["write"]["count"] == 20 and p["bytes_written"] == 100000
    assert p["ops"]["create"]["p50_latency_s"] >= 0.005 * 0.9  # the metadata latency, as the passthrough served it
    assert p["ops"]["write"]["p50_latency_s"] >= 0.002 * 0.9
    assert not sock.exists()  # gone with the server


@needs_fuse
def test_the_passthrough_counts_how_reads_follow_one_another_in_a_file(tmp_path):
    """Reads through the mount, by hand: 16 KiB at 0, at 16 KiB (the run goes on), at 100 KiB (a jump of
    67,584 B past the last read's end), at 10 KiB (back); the file closed and opened again, a read at 0 (a first
    read again, not a jump back). 4 runs of 5 reads; the jump in the 64-128 KiB bucket."""
    with mounted(tmp_path / "b", tmp_path / "m", {"name": "t"}):
        f = tmp_path / "m" / "slide.bin"
        f.write_bytes(os.urandom(2**20))
        s0 = iostats.snapshot(tmp_path / "m")
        fd = os.open(f, os.O_RDONLY)
        try:
            for off in (0, 16384, 102400, 10240):
                assert len(os.pread(fd, 16384, off)) == 16384
        finally:
            os.close(fd)
        fd = os.open(f, os.O_RDONLY)
        try:
            os.pread(fd, 16384, 0)
        finally:
            os.close(fd)
        p = iostats.profile(iostats.delta(s0, iostats.snapshot(tmp_path / "m")))
    r = p["read_runs"]
    assert (r["runs"], r["continued"], r["forward_jumps"], r["backward_jumps"]) == (4, 1, 1, 1)
    assert r["forward_jump_bytes"] == 102400 - 32768 and r["forward_jump_histogram"] == {"65536": 1}
    assert r["reads_a_run"] == pytest.approx(5 / 4)


def test_the_passthrough_counts_the_opens_that_read_from_a_files_start(tmp_path):
    """By hand through the mount, a file of 1 MiB and one of 10 KiB: opened, 512 B read at 0 and 4 KiB from there
    (a run from the start that went on: 1,043,968 B unread); opened, 4 KiB at 0 then 4 KiB at 512 KiB (alone:
    1,040,384 B unread); opened, first read at 4 KiB (not from the start: not counted); the small file read whole
    by one read (alone, nothing unread)."""
    with mounted(tmp_path / "b", tmp_path / "m", {"name": "t"}):
        big, small = tmp_path / "m" / "slide.bin", tmp_path / "m" / "patch.jpg"
        big.write_bytes(os.urandom(2**20))
        small.write_bytes(os.urandom(10240))
        s0 = iostats.snapshot(tmp_path / "m")
        for path, reads in ((big, ((512, 0), (4096, 512))), (big, ((4096, 0), (4096, 2**19))),
                            (big, ((4096, 4096), (4096, 0))), (small, ((16384, 0),))):
            fd = os.open(path, os.O_RDONLY)
            try:
                for n, off in reads:
                    os.pread(fd, n, off)
            finally:
                os.close(fd)
        p = iostats.profile(iostats.delta(s0, iostats.snapshot(tmp_path / "m")))
    starts = p["read_runs"]["from_start"]
    assert starts["went_on"] == {"opens": 1, "unread_histogram": {"524288": 1}}  # 1,043,968 B: 512 KiB-1 MiB
    assert starts["alone"] == {"opens": 2, "unread_histogram": {"0": 1, "524288": 1}}


def test_a_handle_closed_and_taken_by_a_new_open_at_once_keeps_the_new_opens_reads(tmp_path, monkeypatch):
    """The passthrough's operations called as its request threads may interleave them: open A reads 4 KiB from the
    file's start; A's release closes its descriptor, and that moment another thread opens the file (the same
    descriptor number) and reads at 4 KiB; then the new open reads at 0. By hand: one open from the start (A), two
    first reads; the new open's read at 0 goes back in it, no open from the start (the handle forgotten after its
    close had forgotten the new open's first read, and counted its read at 0 as another open from the start)."""
    from types import SimpleNamespace

    from harness.storage import emulate

    (tmp_path / "f").write_bytes(os.urandom(2**20))
    counters = iostats.Counters("observe", {})
    ops = emulate._operations(str(tmp_path), {}, counters)
    a, b = SimpleNamespace(flags=os.O_RDONLY, fh=0), SimpleNamespace(flags=os.O_RDONLY, fh=0)
    ops.open("/f", a)
    ops.read("/f", 4096, 0, a)
    real_close = os.close

    def close_then_another_opens(fd):
        real_close(fd)
        if not b.fh:
            ops.open("/f", b)
            assert b.fh == fd
            ops.read("/f", 4096, 4096, b)

    monkeypatch.setattr(os, "close", close_then_another_opens)
    ops.release("/f", a)
    monkeypatch.undo()
    ops.read("/f", 4096, 0, b)
    ops.release("/f", b)
    snap = counters.snapshot()
    assert snap["reads"]["first"] == 2 and snap["reads"]["backward"] == 1
    assert snap["starts"] == {"alone": {iostats.size_bucket(2**20 - 4096): 1}, "went_on": {}}


@pytest.mark.slow
@needs_fuse
def test_observe_profiles_every_stage_and_leaves_nothing_mounted(dataset, tmp_path):
    wl = parse_workload({"name": "o", "stages": ["masks", "patches"], "dataset": {"kind": "camelyon16", "path": str(dataset)},
                         "patches": {"max_per_class": 30}})
    with local_root(str(tmp_path / "data")):
        s = pipeline.run(wl, results_dir=tmp_path / "results", observe=True)
    run = tmp_path / "results" / s["run_id"]
    data = tmp_path / "data" / "o"
    p = s["stages"]["patches"]["io_profile"]
    jpegs = list((data / "patches").glob("*/*.jpg"))
    assert s["stages"]["patches"]["patches"] == len(jpegs)
    # each patch: a temporary file created, written, renamed; each slide's manifest too, and its in-flight marker
    # (engines/isolate.py: created, then removed)
    assert p["creates"] == len(jpegs) + 4 + 4 and p["ops"]["rename"]["count"] == len(jpegs) + 4
    assert p["ops"]["unlink"]["count"] >= 4
    # where the namespace operations fell: each patch created (as a temporary) and renamed in its label's folder
    by = p["namespace_operations_by_folder"]
    for label in ("tumor", "normal"):
        assert by[f"/o/patches/{label}"] == 2 * len(list((data / "patches" / label).glob("*.jpg"))), (label, by)
    assert p["namespace_operations"] == sum(p["ops"][k]["count"] for k in ("create", "mkdir", "rename", "unlink", "rmdir")
                                            if k in p["ops"]) == sum(by.values())
    assert p["namespace_folders"] == len(by)
    assert p["bytes_written"] >= sum(f.stat().st_size for f in jpegs)
    # the masks of the slides the stage cut (the training slides; the slides lie outside the root: not counted),
    # each read whole once (before masks.py read them with cv2.imread, which read each file twice, and the test slides'
    # masks, which the stage does not read, were in this sum)
    cut = set(pd.read_parquet(run / "patches.parquet")["item"])
    read_masks = sum(f.stat().st_size for f in (data / "masks").glob("*")
                     if f.stem in cut or f.stem.removesuffix("_tumor").removesuffix("_tissue") in cut)
    assert cut and p["bytes_read"] >= read_masks
    mask_bytes = sum(f.stat().st_size for f in (data / "masks").glob("*"))
    masks = s["stages"]["masks"]["io_profile"]
    assert masks["creates"] == len(list((data / "masks").glob("*"))) + s["stages"]["masks"]["items"]  # + markers
    assert masks["bytes_read"] == 0
    assert 0 <= masks["bytes_written"] - mask_bytes <= 64 * s["stages"]["masks"]["items"]  # the markers say who ran
    assert s["storage"]["observe"]["root"] == str(tmp_path / "data")
    passthrough = s["storage"].pop("observe")["mountpoint"]
    assert str(tmp_path / "results" / "observe") in passthrough and passthrough not in json.dumps(s)  # paths name the root
    for name in ("io_ops", "io_latency", "io_sizes", "io_timeline"):
        t = pd.read_parquet(run / f"{name}.parquet")
        assert set(t["stage"]) >= {"masks", "patches"}, name
    tl = pd.read_parquet(run / "io_timeline.parquet")
    assert tl.query("stage == 'patches'")["bytes_written"].sum() == p["bytes_written"]
    assert not [m for m in Path("/proc/mounts").read_text().splitlines() if str(tmp_path) in m]
    assert not (tmp_path / "results" / "observe").exists() or not any((tmp_path / "results" / "observe").iterdir())
