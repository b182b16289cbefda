"""Storage profiles, emulated (throttled FUSE) backends, fio characterisation, I/O accounting."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import pipeline
from harness.config import Train, load_profile, load_workload, parse_workload
from harness.storage import StorageError, attached, fio
from harness.storage.emulate import mounted

from conftest import ROOT, local_root

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0,
                                reason="emulated storage needs FUSE and root (the CI machine has both)")


def profile(tmp: Path, name: str, **emulate) -> str:
    """A profile file for an emulated root under tmp; emulate=None for a plain folder."""
    p = tmp / f"{name}.toml"
    lines = [f'name = "{name}"', f'root = "{tmp}/{name}/mnt"', "create = true"]
    if emulate:
        lines += ['fstype = "fuse"', 'kind = "emulated"', "[throttle]", f'backing = "{tmp}/{name}/backing"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in emulate.items()]
    p.write_text("\n".join(lines) + "\n")
    return str(p)


@pytest.mark.slow
@needs_fuse
def test_fio_on_emulated_50_mb_s(tmp_path):
    prof = load_profile(profile(tmp_path, "slow50", read_mb_s=50, write_mb_s=400))
    with attached(prof, tmp_path / "results") as st:
        root, rec = st.root, st.record
        assert rec["emulated"] and rec["fstype"].startswith("fuse")
        result = fio.run(root, size_mb=48, runtime_s=1.5, small_files=50, streams=2)
    bw = result["jobs"]["slide_seq_read"]["read_bw_bytes_per_s"]
    assert abs(bw - 50e6) / 50e6 < 0.2, bw
    assert set(result["jobs"]) == set(fio.JOBS) | set(fio.PROBES)
    assert result["jobs"]["jpeg_small_writes"]["files_per_s"] > 0
    assert result["jobs"]["checkpoint_write"]["write_bw_bytes_per_s"] > 50e6
    # the packed probe's reads reach the storage (not the page cache its own writes filled): a 32 KiB file at
    # 50 MB/s takes at least 0.66 ms, and costs more than a 16 KiB one
    packed = result["jobs"]["small_files_packed"]["sizes"]
    assert packed["32768"]["seconds_per_file"] >= 0.9 * 32768 / 50e6, packed
    assert packed["32768"]["seconds_per_file"] > packed["16384"]["seconds_per_file"], packed


@pytest.mark.slow
@needs_fuse
def test_leaving_a_mount_does_not_wait_out_its_ended_server(tmp_path):
    """The server ends once unmounted, and stays a zombie until its parent reaps it: taken for alive, every
    emulated run, fio and feed waited 5 s for it at the end (then sent SIGKILL to the dead)."""
    prof = load_profile(profile(tmp_path, "brief", read_mb_s=100))
    with attached(prof, tmp_path / "results") as st:
        root = st.root
        (root / "x").write_bytes(b"1")
        t0 = time.perf_counter()
    assert time.perf_counter() - t0 < 2.0
    assert not os.path.ismount(root) and (tmp_path / "brief" / "backing" / "x").read_bytes() == b"1"


def test_the_parallel_write_phase_is_timed_on_the_servers_side_of_a_write_cache(tmp_path, monkeypatch):
    """A client whose write cache takes blocks at once and whose link carries 20 MiB/s (an fsync waits for what was
    written since the last): the phase writes about its runtime's worth, not what the cache took in that time
    (before: one fsync at the end, after 0.3 s of writes into the cache, hundreds of MiB)."""
    pending = {}

    def fsync(fd):
        pos, ino = os.lseek(fd, 0, os.SEEK_CUR), os.fstat(fd).st_ino
        time.sleep((pos - pending.get(ino, 0)) / (20 * 2**20))
        pending[ino] = pos
    monkeypatch.setattr(fio.os, "fsync", fsync)
    t0 = time.perf_counter()
    r = fio.phase("write", tmp_path, {"start_at": 0, "runtime_s": 0.3})
    assert time.perf_counter() - t0 < 1.5 and r["write_bytes"] <= 16 * 2**20, r
    assert r["write_bw_bytes_per_s"] == pytest.approx(20 * 2**20, rel=0.3)


def test_the_servers_read_rate_is_every_host_reading_as_much_at_once_over_the_time_it_took(tmp_path, monkeypatch):
    """The write phase is timed, so hosts leave files of different sizes (12, 4 and 8 MiB on 80 Mbit/s chunk-server
    links): each host then read its own, and the sum of their rates made the servers 31.6 MB/s where their links
    carry 20 (a host that read 4 MiB in 0.3 s, while the others still read, had its rate counted for the whole
    phase). Every host now reads the least any host wrote, and the rate is all bytes over the longest time; so
    in the mixed phase, whose reads and writes are timed over the same span."""
    seen, wrote, took = {}, [12, 4, 8], [1.4, 0.3, 1.1]

    def on_hosts(doc, argvs):
        outs = []
        for i, argv in enumerate(argvs):
            phase, o = argv[4], json.loads(argv[6])
            seen.setdefault(phase, []).append(o["size_mb"])
            r = {"runtime_s": 1.0}
            if phase == "write":
                r = {"write_bytes": wrote[i] * 2**20, "write_bw_bytes_per_s": wrote[i] * 2**20 / 1.2, "runtime_s": 1.2}
            elif phase == "read":
                n = o["size_mb"] * 2**20
                r = {"read_bytes": n, "read_bw_bytes_per_s": n / took[i], "runtime_s": took[i]}
            elif phase == "mixed":  # reads and writes at once, the writes stopped with the reads
                n = o["size_mb"] * 2**20
                r = {"mixed_read_bytes": n, "mixed_read_bw_bytes_per_s": n / took[i], "mixed_read_seconds": took[i],
                     "mixed_write_bytes": 2**20, "mixed_write_bw_bytes_per_s": 2**20 / took[i],
                     "mixed_write_seconds": took[i]}
            outs.append(json.dumps(r))
        return outs
    monkeypatch.setattr(fio, "lab_on_hosts", on_hosts)
    monkeypatch.setattr(fio, "lab_cpu", lambda doc: {})
    monkeypatch.setattr(fio, "lab_cpu_used", lambda a, b: {"client": 0.0})
    out = fio.parallel(tmp_path, {}, 3, 1.0, 64, 30, False)
    assert seen["write"] == [64] * 3 and seen["read"] == [4] * 3 and seen["mixed"] == [4] * 3
    assert out["phases"]["read"]["read_bw_bytes_per_s"] == pytest.approx(3 * 4 * 2**20 / 1.4)
    assert out["phases"]["mixed"]["mixed_read_bw_bytes_per_s"] == pytest.approx(3 * 4 * 2**20 / 1.4)
    assert out["phases"]["mixed"]["mixed_write_bw_bytes_per_s"] == pytest.approx(3 * 2**20 / 1.4)
    assert list(tmp_path.iterdir()) == []  # its scratch folder removed


def test_the_mixed_phase_reads_its_file_once_and_its_writes_stop_with_its_reads(tmp_path):
    """The mixed phase's reads began again at the file's end: a second pass the client's own buffers served, reads
    "at" 1.04 to 1.52 of what the servers' links could add to the writes. Now once over the file (at most size_mb),
    and the writes end with the reads."""
    fio._bigs(tmp_path)[0].write_bytes(os.urandom(3 * 2**20))
    r = fio.phase("mixed", tmp_path, {"start_at": 0, "runtime_s": 3.0, "size_mb": 16, "direct": False})
    assert r["mixed_read_bytes"] == 3 * 2**20, r
    assert r["mixed_write_seconds"] < 2.0, r  # stopped with the reads, not after the 3 s runtime
    r = fio.phase("mixed", tmp_path, {"start_at": 0, "runtime_s": 3.0, "size_mb": 2, "direct": False})
    assert r["mixed_read_bytes"] == 2 * 2**20, r


def test_the_parallel_read_phase_reads_what_the_write_phase_wrote_and_writes_nothing(tmp_path):
    """On a slow storage the write phase leaves less than size_mb a host: the read phase reads its files as they are
    (before: fio laid them out to size_mb first, inside the phase: writes the servers carried while the other hosts
    read, and whose CPU counted as the reads'), in order, each once."""
    sizes = [2**20, 2 * 2**20, 0, 2**20]
    for f, n in zip(fio._bigs(tmp_path), sizes):
        f.write_bytes(os.urandom(n))
    r = fio.phase("read", tmp_path, {"start_at": 0, "runtime_s": 5.0, "size_mb": 16, "direct": False})
    assert [f.stat().st_size for f in fio._bigs(tmp_path)] == sizes and r["read_bytes"] == 4 * 2**20, r
    r = fio.phase("read", tmp_path, {"start_at": 0, "runtime_s": 5.0, "size_mb": 2, "direct": False})
    assert r["read_bytes"] == 2 * 2**20, r  # at most size_mb: every host reads the least any host wrote
    for f in fio._bigs(tmp_path):
        f.write_bytes(b"x" * 1000)  # nothing of the write phase to read: said, not laid out
    with pytest.raises(fio.FioError, match="no files of at least 1 MiB from the write phase"):
        fio.phase("read", tmp_path, {"start_at": 0, "runtime_s": 1.0, "size_mb": 16, "direct": False})


def test_the_write_phase_writes_a_file_a_draw_of_the_storage_targets(tmp_path):
    """A file on one storage target (a MooseFS chunk on one chunk server): one file a host left the servers' read
    rate to one draw of the targets (10.1 MB/s, then 19.1, on 2 chunk servers at 80 Mbit/s). The write phase
    writes BIG_FILES files one after another, the read phase reads them back in order."""
    r = fio.phase("write", tmp_path, {"start_at": 0, "runtime_s": 0.2})
    files = fio._bigs(tmp_path)
    assert len(files) >= 4 and all(f.stat().st_size >= 2**20 for f in files)
    assert r["write_bytes"] == sum(f.stat().st_size for f in files), r


def test_fio_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(fio.FioError, match="fio is not installed: apt-get install fio"):
        fio.run(tmp_path)


def test_fio_refuses_a_runtime_under_a_millisecond_and_leaves_nothing(tmp_path):
    """fio reads a runtime that rounds to 0 as no limit at all: refused, before anything is left in the root
    (before: accepted; then refused after the scratch folder was made, which stayed)."""
    with pytest.raises(fio.FioError, match="at least 1 ms, not 0.0 s"):
        fio.run(tmp_path, size_mb=1, runtime_s=0.0, small_files=5)
    assert list(tmp_path.iterdir()) == []


def test_fio_keeps_jobs_only_from_a_characterisation_of_the_same_storage(tmp_path):
    """``jobs_from`` keeps an earlier characterisation's jobs instead of running them (the cluster proof: one
    client's jobs measured on a lab of one client host): kept as they were and named, and refused from another
    profile's characterisation, whose jobs say nothing of this storage."""
    res = tmp_path / "results"
    jobs = {"slide_tile_read": {"read_bw_bytes_per_s": 1.5e8, "runtime_s": 0.5}}
    mine, other = tmp_path / "plain-1.json", tmp_path / "other-1.json"
    mine.write_text(json.dumps({"profile": "plain", "created_at": "20261205T170000", "storage": {"x": 1},
                                "fio_version": "fio-3.33", "size_mb": 16, "jobs": jobs}))
    other.write_text(json.dumps({"profile": "other", "created_at": "20261205T170000", "jobs": jobs}))
    with pytest.raises(fio.FioError, match="characterises 'other', not 'plain'"):
        fio.characterise(profile(tmp_path, "plain"), res, jobs_from=other, progress=lambda m: None)
    path, doc = fio.characterise(profile(tmp_path, "plain"), res, jobs_from=mine, progress=lambda m: None)
    saved = json.loads(path.read_text())
    assert saved["jobs"] == jobs and saved["fio_version"] == "fio-3.33" and saved["storage"]["profile"] == "plain"
    assert saved["jobs_from"] == "plain-1.json (created 20261205T170000)" and "parallel" not in saved


@pytest.mark.slow
def test_fio_cli_stores_a_characterisation(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "fio", profile(tmp_path, "plain"), "--results",
                        str(tmp_path / "results"), "--size", "16", "--runtime", "0.5", "--small-files", "50",
                        "--no-direct"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(next((tmp_path / "results" / "fio").glob("plain-*.json")).read_text())
    assert doc["jobs"]["tfrecord_stream"]["read_bw_bytes_per_s"] > 0 and doc["storage"]["profile"] == "plain"
    assert "tfrecord_stream" in r.stdout and "files/s" in r.stdout
    # each time-based job ran for the half second asked (before: fio read "0.5s" as no limit, one pass over the file)
    for job in ("slide_tile_read", "read_latency", "write_latency"):
        assert 0.4 <= doc["jobs"][job]["runtime_s"] <= 1.5, (job, doc["jobs"][job]["runtime_s"])
    # the sequential reads go over their files once, at most the half second: read again, a client's own cache
    # served the second pass (mfsmount: 4.3 GB/s over a 40 Mbit/s link); 16 MiB of this machine's page cache is
    # read many times over in half a second
    for job in ("slide_seq_read", "tfrecord_stream"):
        assert doc["jobs"][job]["read_bytes"] <= 16 * 2**20 and doc["jobs"][job]["runtime_s"] <= 1.5, doc["jobs"][job]


def test_missing_or_read_only_root_fails_before_any_work(tmp_path):
    wl = load_workload(ROOT / "workloads" / "quickstart.toml")
    missing = tmp_path / "missing.toml"
    missing.write_text(f'root = "{tmp_path}/not/mounted"\nfstype = "nfs"\n')
    with pytest.raises(StorageError, match=r"'missing': root .*/not/mounted does not exist \(is it mounted\?\)"):
        pipeline.run(wl, storage=str(missing), results_dir=tmp_path / "results")
    assert not list((tmp_path / "results").glob("*quickstart*"))  # no run was started
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(ROOT / "workloads" / "quickstart.toml"),
                        "--storage", str(missing), "--results", str(tmp_path / "results")], capture_output=True, text=True)
    assert r.returncode == 1 and "does not exist (is it mounted?)" in r.stderr


@needs_fuse
def test_read_only_root_fails_before_any_work(tmp_path):
    wl = load_workload(ROOT / "workloads" / "quickstart.toml")
    ro = profile(tmp_path, "ro", read_only=True)
    with pytest.raises(StorageError, match=r"'ro': root .*/ro/mnt is not writable: Read-only file system"):
        pipeline.run(wl, storage=ro, results_dir=tmp_path / "results")
    assert not list((tmp_path / "results").glob("*quickstart*"))  # no run was started


def test_claim_is_checked_against_the_mount_table(tmp_path):
    p = tmp_path / "liar.toml"
    p.write_text(f'root = "{tmp_path}/liar"\ncreate = true\nfstype = "beegfs"\n')
    prof = load_profile(str(p))
    with attached(prof, tmp_path) as st:
        rec = st.record
        assert rec["fstype"] not in (None, "beegfs") and "claims 'beegfs'" in rec["claim_mismatch"]
    with pytest.raises(StorageError, match="claims 'beegfs'.*refusing"):
        with attached(prof, tmp_path, strict=True):
            pass


@pytest.fixture(scope="module")
def local_run(dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    wl = parse_workload({"name": "t", "stages": ["masks", "patches", "tfrecords"],
                         "dataset": {"kind": "camelyon16", "path": str(dataset)},
                         "tfrecords": {"shard_mb": 1, "val_fraction": 0.5}, "engine": {"name": "multiprocessing", "workers": 2}})
    with local_root(str(tmp / "data")):
        return pipeline.run(wl, results_dir=tmp / "results"), tmp / "data" / "t"


def test_io_accounting_of_tfrecords_matches_shard_bytes(local_run):
    summary, data = local_run
    st = summary["stages"]["tfrecords"]
    shards = sum(p.stat().st_size for p in (data / "tfrecords").glob("*.tfrecord"))
    assert shards > 1e6 and abs(st["bytes_written"] - shards) / shards < 0.05, (st["bytes_written"], shards)
    jpegs = sum(p.stat().st_size for p in (data / "patches").glob("*/*.jpg"))
    assert st["bytes_read"] >= jpegs  # the shards are built from the JPEG files
    p = summary["stages"]["patches"]
    assert p["bytes_written"] >= jpegs and p["write_calls"] >= p["files_written"] - 4
    assert summary["page_cache"]["potential_caching"] is True  # a tiny dataset on local disk: RAM serves it


def _train(tfrecords: Path, out: Path) -> dict:
    from harness.stages import train
    cfg = Train(model="small_cnn", image_size=32, batch_size=32, steps_per_epoch=15, augment=False,
                interleave_cycle=1, prefetch=1, parallel_calls=2)
    return train.run(tfrecords, out, cfg, progress=lambda m: None)[0]


@pytest.mark.slow
@needs_fuse
def test_slow_storage_starves_training(local_run, tmp_path):
    _, data = local_run
    fast = _train(data / "tfrecords", tmp_path / "fast")
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    shutil.copytree(data / "tfrecords", backing / "tfrecords")
    with mounted(backing, mnt, {"read_mb_s": 2, "latency_ms": 5}):
        slow = _train(mnt / "tfrecords", tmp_path / "slow")
    assert slow["input_wait_fraction"] > fast["input_wait_fraction"] + 0.3, (slow["input_wait_fraction"], fast["input_wait_fraction"])
    assert slow["images_per_s"] < fast["images_per_s"]


@pytest.mark.slow
@needs_fuse
def test_quickstart_on_an_emulated_profile(tmp_path):
    """Every stage of the quickstart through an emulated mount, on a lighter copy of it (8 slides, 2 short epochs:
    what the classifier learns is test_train_infer's business)."""
    prof = profile(tmp_path, "emu", read_mb_s=400, write_mb_s=300, latency_ms=0.05, metadata_ms=0.1)
    text = (ROOT / "workloads" / "quickstart.toml").read_text()
    for old, new in (("slides = 16", "slides = 8"), ("epochs = 8", "epochs = 2"), ("steps_per_epoch = 100", "steps_per_epoch = 20")):
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "quickstart.toml").write_text(text)
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(tmp_path / "quickstart.toml"),
                        "--storage", prof, "--results", str(tmp_path / "results"), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "results" / json.loads(r.stdout)["run_id"] / "summary.json").read_text())
    assert s["status"] == "ok" and set(s["stages"]) == {"masks", "patches", "tfrecords", "train", "infer"}
    assert s["storage"]["emulated"] is True and s["storage"]["fstype"].startswith("fuse")
    assert s["storage"]["mount"]["source"] == "wsibench-emu"
    assert s["storage"]["emulation"]["read_mb_s"] == 400
    assert s["train"]["val_auc"] is not None and s["infer"]["patches"] > 0
    assert not os.path.ismount(tmp_path / "emu" / "mnt")  # unmounted after the run
    assert (tmp_path / "emu" / "backing" / "quickstart" / "tfrecords" / "splits.json").is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (the CI machine has it)")
def test_full_disk_names_the_file_and_leaves_nothing_half_written(dataset, tmp_path):
    """A storage root too small for the patches: the slides that do not fit fail naming the file; no temporaries."""
    root = tmp_path / "tiny"
    root.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(root)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a small tmpfs as root: {r.stderr.strip()}"  # as its sibling in test_faults
    try:
        wl = parse_workload({"name": "t", "stages": ["masks", "patches"],
                             "dataset": {"kind": "camelyon16", "path": str(dataset)}})
        with local_root(str(root)):
            s = pipeline.run(wl, results_dir=tmp_path / "results")
        assert s["status"] == "partial" and s["stages"]["masks"]["status"] == "ok"
        errors = s["stages"]["patches"]["errors"]
        assert errors and all("No space left on device (writing " in e["error"] and ".jpg" in e["error"] for e in errors)
        data = root / "t" / "patches"
        assert not list(data.rglob(".*.tmp*"))
        for e in errors:  # a failed slide leaves none of its patches and no manifest
            assert not list(data.rglob(f"{e['item']}_*.jpg")) and not (data / "manifests" / f"{e['item']}.parquet").exists()
    finally:
        subprocess.run(["umount", str(root)], capture_output=True)


def test_the_machine_s_busy_cpu_leaves_out_the_time_a_hypervisor_gave_other_guests():
    """/proc/stat's steal is CPU another guest of the host took: counted as this machine's busy CPU, it makes a stage
    on a busy cloud VM look CPU-heavy, and the cluster sizing, which spreads a run's machine CPU over its items, finds
    the shared cores binding where a link does. Idle and iowait are not busy either; steal counts only when asked
    (the CPU the machine did not get)."""
    import os

    from harness.cputime import machine_cpu_seconds

    hz = os.sysconf("SC_CLK_TCK")
    #         user nice system idle iowait irq softirq steal guest guest_nice
    line = f"cpu  {3 * hz} {hz} {2 * hz} {50 * hz} {4 * hz} 0 {hz} {9 * hz} 0 0\ncpu0 1 2 3"
    assert machine_cpu_seconds(line) == pytest.approx(7.0)
    assert machine_cpu_seconds(line, steal=True) == pytest.approx(16.0)
    assert machine_cpu_seconds("cpu  10 0 5 100") == pytest.approx(15 / hz)  # a kernel listing four fields
    assert machine_cpu_seconds("not a stat") is None
    assert machine_cpu_seconds() > 0


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/sys/fs/cgroup/cpuacct/cpuacct.usage").exists(),
                    reason="needs root and cgroup v1's cpuacct to make a control group")
def test_a_harness_in_a_control_group_of_its_own_counts_its_cpu_not_the_machine_s_other_tenants(tmp_path):
    """Where the harness runs in a control group of its own (a container, the cluster proof's group), a stage's
    busy CPU is that group's: its own work counts, a process spinning elsewhere on the machine does not (it did, from
    /proc/stat, and the cluster sizing spread it over the stage's items); the record's environment names the group."""
    group = Path("/sys/fs/cgroup/cpuacct") / f"wsibench-test-{os.getpid()}"
    group.mkdir()
    code = ("import json, os, sys, time\n"
            "from harness.cputime import busy_cpu_seconds, machine_cpu_seconds\n"
            "from harness.results.record import environment\n"
            "b, m = busy_cpu_seconds(), machine_cpu_seconds()\n"
            "t = time.process_time()\n"
            "while time.process_time() - t < 0.5: pass\n"
            "time.sleep(1.0)\n"
            "print(json.dumps([busy_cpu_seconds() - b, machine_cpu_seconds() - m, environment()['cpu_group']]))\n")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                             preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
    finally:
        spinner.kill()
        spinner.wait()
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    assert out.returncode == 0, out.stderr
    own, machine, name = json.loads(out.stdout)
    assert 0.45 <= own <= 0.8, own           # its 0.5 s of work (and its start), not the spinner's
    assert machine >= own + 0.9, machine     # the machine's: the spinner's 1.5 s of a core too
    assert name == "/" + group.name
