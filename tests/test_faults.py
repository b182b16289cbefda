"""Faults a flaky data centre and a hostile user bring: dying workers, dead mounts, concurrent runs, full disks,
corrupt data, interrupts, absurd settings. Each must end in a clear error, with nothing lost."""
import functools
import os
from pathlib import Path

import pytest

from harness.engines import make_engine, run_all
from harness.engines.isolate import guarded

HERE = str(Path(__file__).parent)


def abort_on_bad(x: str) -> str:
    """A native crash, as a decoder's abort() on a hostile file: SIGABRT kills the process."""
    if x == "bad":
        os.abort()
    return x * 2


@pytest.mark.parametrize("engine", ["local", "multiprocessing", "dask", "spark"])
def test_an_item_that_kills_its_worker_fails_alone(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
    items = ["a", "b", "bad", "c", "d", "e"]
    fn = functools.partial(guarded, abort_on_bad, str(tmp_path / "inflight"))
    with make_engine(engine, workers=2, retries=1, conf={"spark.executorEnv.PYTHONPATH": HERE}) as eng:
        out = run_all(eng, fn, items, progress=False)
    assert [o.item for o in out] == items
    good = [o for o in out if o.item != "bad"]
    assert [o.value for o in good] == [x * 2 for x in items if x != "bad"] and not any(o.error for o in good)
    (bad,) = [o for o in out if o.item == "bad"]
    assert bad.error.startswith("WorkerCrashed: bad: the worker process running it died"), bad.error
    assert "killed by SIGABRT" in bad.error and "Fatal Python error: Aborted" in bad.error, bad.error
    assert not list((tmp_path / "inflight").iterdir())  # no marker, no leftover of the isolated run


# --- emulated mounts survive kills and neighbours ---------------------------------------------------------------

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0,
                                reason="emulated storage needs FUSE and root (the CI machine has both)")

HOLD = """
import sys, time
from pathlib import Path
from harness.storage.emulate import mounted
backing, mnt, go = map(Path, sys.argv[1:4])
with mounted(backing, mnt, {"name": "shared", "latency_ms": 0.1}):
    (go.parent / "attached").touch()
    while not go.exists():
        time.sleep(0.05)
"""


def _wait(cond, timeout=20.0):
    import time
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _holder(tmp_path, backing, mnt):
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(backing), str(mnt), str(tmp_path / "go")])
    _wait(lambda: (tmp_path / "attached").exists())
    return p


@needs_fuse
def test_a_dead_mount_is_cleared_before_use(tmp_path):
    import signal
    import subprocess
    import sys
    from harness.storage.emulate import mount_state, mounted
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    server = subprocess.Popen([sys.executable, "-m", "harness.storage.emulate", str(backing), str(mnt)])
    _wait(lambda: os.path.ismount(mnt))
    os.kill(server.pid, signal.SIGKILL)  # as when a whole run is killed: the mount stays, its server is gone
    server.wait()
    _wait(lambda: mount_state(mnt) == "dead")
    with mounted(backing, mnt, {"name": "x", "latency_ms": 0.1}):
        (mnt / "f.txt").write_text("through the mount")
    assert (backing / "f.txt").read_text() == "through the mount" and mount_state(mnt) == "none"


@needs_fuse
def test_runs_sharing_an_emulated_mount_do_not_pull_it_from_each_other(tmp_path):
    from harness.storage.emulate import mount_state, mounted
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    other = _holder(tmp_path, backing, mnt)
    with mounted(backing, mnt, {"name": "shared", "latency_ms": 0.1}):
        (tmp_path / "go").touch()  # the other run leaves while this one still works on the mount
        other.wait(20)
        assert mount_state(mnt) == "alive"
        (mnt / "after.txt").write_text("still mounted")
    assert (backing / "after.txt").read_text() == "still mounted"
    assert mount_state(mnt) == "none"  # the last one out unmounted


@needs_fuse
def test_a_killed_run_leaves_no_server_behind(tmp_path):
    import signal
    from harness.storage.emulate import mount_state
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    run = _holder(tmp_path, backing, mnt)
    server = int((tmp_path / ".mnt.wsibench" / "server.pid").read_text())
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    _wait(lambda: mount_state(mnt) == "none", timeout=30)  # the server saw no live user and unmounted itself
    _wait(lambda: not os.path.exists(f"/proc/{server}") or "Z" in open(f"/proc/{server}/stat").read().split()[2])


# --- one run per workload folder ------------------------------------------------------------------------------

LOCK_HOLDER = """
import sys, time
from pathlib import Path
from harness.fsutil import workload_lock
folder, go = map(Path, sys.argv[1:3])
with workload_lock(folder):
    (go.parent / "locked").touch()
    while not go.exists():
        time.sleep(0.05)
"""


def test_one_run_per_workload_folder_at_a_time(dataset, tmp_path, capfd):
    import subprocess
    import sys
    import threading
    import time

    from harness import pipeline
    from harness.config import parse_workload
    from harness.fsutil import Busy

    root = tmp_path / "root"
    other = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(root / "t"), str(tmp_path / "go")])
    _wait(lambda: (tmp_path / "locked").exists())
    w = parse_workload({"name": "t", "stages": ["masks"], "dataset": {"kind": "camelyon16", "path": str(dataset)}})
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(root)
    try:
        with pytest.raises(Busy, match=rf"{root / 't'} is in use by pid {other.pid} on "):
            pipeline.run(w, results_dir=tmp_path / "results", wait_if_busy=False)
        threading.Timer(2.0, (tmp_path / "go").touch).start()  # the other run ends in 2 s
        t0 = time.monotonic()
        s = pipeline.run(w, results_dir=tmp_path / "results")
    finally:
        del os.environ["WSIBENCH_LOCAL_ROOT"]
        other.wait(10)
    assert s["status"] == "ok" and time.monotonic() - t0 >= 1.5
    assert f"waiting for {root / 't'}: in use by pid {other.pid}" in capfd.readouterr().err
