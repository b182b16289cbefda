"""The MooseFS lab (storage kind "lab"): a real parallel file system that wsibench starts on network-namespace hosts
of this machine for a run. Each test starts a small lab of its own (a few synthetic 4096-px slides) and checks what a
user relies on: stages run on it from several client hosts and the record says so, nothing is left behind (after a
run, after a SIGKILL), nothing listens beyond its bridge, --observe counts over it, and a lost chunk server or master
ends as the record says, never in a hang. Needs root, /dev/fuse, ip, tc and MooseFS (scripts/setup installs it)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.storage import lab

from conftest import ROOT


def _why_not() -> str | None:
    try:
        lab.check_can_start()
    except lab.LabError as e:
        return str(e)
    return None


WHY_NOT = _why_not()
needs_lab = pytest.mark.skipif(WHY_NOT is not None, reason=f"the MooseFS lab cannot start here: {WHY_NOT}")


# --- helpers ------------------------------------------------------------------------------------------------------

def profile(tmp: Path, name: str = "lab", **settings) -> Path:
    """A lab profile whose root, servers and state all lie under tmp."""
    p = tmp / f"{name}.toml"
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in {"chunkservers": 2, "goal": 2, **settings}.items())
    p.write_text(f'name = "{name}"\nkind = "lab"\nroot = "{tmp}/{name}/mnt"\nfstype = "fuse"\ncreate = true\n'
                 f"[lab]\n{table}")
    return p


def workload(tmp: Path, slides: int = 4, engine: str = "multiprocessing", nodes: int | None = None,
             retries: int = 1) -> Path:
    """A small synthetic workload (4096-px slides), masks and patches."""
    p = tmp / "wl.toml"
    eng = f'name = "{engine}"\nworkers = 2\nretries = {retries}\n'
    if nodes:
        eng = f'name = "dask"\nworkers = 1\nretries = {retries}\naddress = "lab"\nnodes = {nodes}\n'
    p.write_text(f'name = "labwl"\nstages = ["masks", "patches"]\nstorage = "local"\n'
                 f'[dataset]\nkind = "synthetic"\n[dataset.synthetic]\nslides = {slides}\nsize = 4096\nseed = 3\n'
                 f"tumor_fraction = 0.5\ntest_fraction = 0.0\n[engine]\n{eng}[patches]\nmax_per_class = 60\n")
    return p


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def start_run(wl: Path, prof: Path, res: Path, stages: str = "masks,patches") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(wl), "--storage", str(prof), "--results",
                             str(res), "--stages", stages, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def record(res: Path, run_id: str | None = None) -> dict:
    if run_id:
        return json.loads((res / run_id / "summary.json").read_text())
    (path,) = [p for p in res.glob("*/summary.json") if json.loads(p.read_text())["status"] == "running"]
    return json.loads(path.read_text())


def wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except (OSError, ValueError):  # a record being written, a file not there yet
            pass
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended ({proc.returncode}) before {what}: {err[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout:.0f} s")


def patches_written(root: Path) -> bool:
    folder = root / "labwl" / "patches"
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*.jp*g"))


def running_stage(res: Path) -> str | None:
    return record(res).get("running_stage")


def mounted_anywhere(path: Path) -> list[str]:
    """Mount namespaces (as /proc/PID/mounts of any process) in which ``path`` is mounted."""
    out = []
    target = str(path)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if any(line.split()[1] == target for line in (d / "mounts").read_text().splitlines()):
                out.append(d.name)
        except (OSError, IndexError):
            continue
    return out


def processes_naming(text: str) -> list[str]:
    """Processes (other than this one) whose command line contains ``text``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append(f"{d.name}: {cmd[:160]}")
    return out


def left_over(tmp: Path, layout: dict) -> list[str]:
    """Whatever of a lab is still there: its namespaces, bridge, veths, mounts (in any mount namespace) and the
    processes whose command line names its folder (master, chunk servers, mounts, Dask, the keeper)."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    left = [f"namespace {h['name']}" for h in layout["hosts"] if h["name"] in netns.split()]
    left += [f"link {n}" for n in [layout["bridge"], *[h["outer"] for h in layout["hosts"]]] if f" {n}:" in links
             or f" {n}@" in links]
    left += [f"mounted in the mount namespace of pid {p}" for p in mounted_anywhere(tmp / "lab" / "mnt")]
    left += processes_naming(str(tmp))
    return left


def listeners(netns: str | None) -> list[tuple[str, str]]:
    """(local address, process) of every listening TCP socket in a network namespace (None: this one)."""
    cmd = ["ss", "-Hltnp"] if netns is None else ["ip", "netns", "exec", netns, "ss", "-Hltnp"]
    out = []
    for line in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        out.append((parts[3].rsplit(":", 1)[0].strip("[]"), " ".join(parts[5:])))
    return out


def lab_layout(tmp: Path) -> dict:
    return lab.status(tmp / "lab" / "mnt")["layout"]


# --- tests that need no lab -------------------------------------------------------------------------------------

def test_a_lost_server_is_named_as_the_cause_of_io_errors_only():
    lost = [{"server": "cs1", "role": "chunkserver", "host": "wl7-cs1", "address": "10.241.0.3", "pid": 9,
             "what": "ended (killed by SIGKILL)", "at": time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))}]
    io = "OSError: [Errno 6] No such device or address: '/r/labwl/dataset/tumor_001.tif'"
    said = lab.cause(io, lost)
    assert said.startswith(io) and "chunk server cs1 (host wl7-cs1, 10.241.0.3) killed by SIGKILL at 03:04:05" in said
    assert lab.cause("ValueError: bad annotation", lost) == "ValueError: bad annotation"
    # the master (or a mount) lost: every operation needs it, whatever the error says
    master = dict(lost[0], server="master", role="master", host="wl7-master", address="10.241.0.2")
    said = lab.cause("SlideError: /r/a.tif: cannot open slide: Cannot set TIFF directory 0", [master])
    assert said.endswith("(the lab lost its metadata master master (host wl7-master, 10.241.0.2) killed by SIGKILL "
                         "at 03:04:05)"), said
    mount = {"server": "mount", "role": "client", "host": None, "address": None, "pid": 1, "at": lost[0]["at"],
             "what": "stopped: the master was gone for 5 s (lab.timeout_s)"}
    assert lab.describe(mount) == "client mount stopped: the master was gone for 5 s (lab.timeout_s) at 03:04:05"
    assert lab.cause(io, []) == io


def test_lost_is_what_ended_and_did_not_come_back():
    doc = {"events": [{"server": "cs1", "what": "ended (killed by SIGKILL)", "at": 10.0},
                      {"server": "master", "what": "ended (killed by SIGKILL)", "at": 11.0},
                      {"server": "master", "what": "restarted", "at": 14.0},
                      {"server": "cs2", "what": "ended (exit status 1)", "at": 2.0}]}
    assert [e["server"] for e in lab.lost(doc, since=5.0)] == ["cs1"]
    assert [e["server"] for e in lab.lost(doc)] == ["cs1", "cs2"]


def test_a_lab_its_keeper_tore_down_is_not_cleared_as_a_killed_one(tmp_path, capsys):
    """A keeper that stopped normally marks lab.json stopped; the next start does not tear it down again nor say
    it was killed (before: every new lab on a root said "clearing what a killed lab left")."""
    (tmp_path / "lab.json").write_text(json.dumps({"stopped": True, "keeper": 2**22 + 1, "keeper_start": "x",
                                                  "root": str(tmp_path / "mnt"), "layout": None}))
    lab.clear_dead(tmp_path)
    assert "killed" not in capsys.readouterr().err and (tmp_path / "lab.json").exists()
    (tmp_path / "lab.json").write_text(json.dumps({"keeper": 2**22 + 1, "keeper_start": "x",
                                                  "root": str(tmp_path / "mnt"), "layout": None}))
    lab.clear_dead(tmp_path)  # a keeper killed outright: cleared, and said
    assert "clearing what a killed lab left" in capsys.readouterr().err and not (tmp_path / "lab.json").exists()


def test_the_mount_timeout_reaches_mfsmount():
    base = {"cache_mode": "DIRECT", "io_retries": 8}
    assert lab.mount_options(base) == ["-o", "mfscachemode=DIRECT,mfsioretries=8"]
    assert lab.mount_options(dict(base, timeout_s=5)) == ["-o", "mfscachemode=DIRECT,mfsioretries=8,mfstimeout=5"]


# --- a run on the lab ---------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_lab
def test_a_stage_on_two_client_hosts_is_labelled_lab_and_leaves_nothing(tmp_path):
    """masks and patches with Dask workers on two client hosts, each its own mount: the record is lab's (not
    emulated), each host's I/O in the stage's per-host table and over its own link; the run table and the report
    say LAB; afterwards nothing is mounted, running or left of the namespaces."""
    prof, res = profile(tmp_path, client_hosts=2, workers_per_host=1), tmp_path / "results"
    r = run_cli("run", str(workload(tmp_path, nodes=2)), "--storage", str(prof), "--results", str(res))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(storage lab, LAB: a real file system on one machine;" in r.stdout, r.stdout
    (path,) = res.glob("*/summary.json")
    s = json.loads(path.read_text())
    assert s["status"] == "ok", s.get("error")
    st = s["storage"]
    assert st["emulated"] is False and st["lab"]["file_system"].startswith("MooseFS 3.")
    clients = [h["name"] for h in st["lab"]["client_hosts"]]
    assert len(clients) == 2 and st["lab"]["goal"] == 2 and len(st["lab"]["chunkservers"]) == 2
    for stage in ("masks", "patches"):
        hosts = s["stages"][stage]["hosts"]
        assert sorted(hosts) == sorted(clients), (stage, hosts)  # every item ran on a client host, both used
        for h in clients:
            assert hosts[h]["items"] > 0 and hosts[h]["bytes_read"] > 0 and hosts[h]["bytes_written"] > 0, (stage, h)
    links = st["lab"]["link_bytes"]
    for h in clients:  # each client host's I/O crossed its own link: at least what its workers read and wrote
        read = sum(s["stages"][k]["hosts"][h]["bytes_read"] for k in ("masks", "patches"))
        assert links[h]["role"] == "client" and links[h]["received_bytes"] >= 0.5 * read, (h, links[h], read)
        assert links[h]["sent_bytes"] > 0
    assert st["lab"]["lost"] == [] and not any("servers_lost" in v for v in s["stages"].values())
    assert s["page_cache"]["potential_caching"] is False  # mfsmount's DIRECT cache mode: no read from memory

    runs = run_cli("runs", "--results", str(res))
    assert runs.returncode == 0 and "lab (LAB)" in runs.stdout, runs.stdout
    html = tmp_path / "report.html"
    rep = run_cli("report", str(res), "-o", str(html))
    assert rep.returncode == 0, rep.stderr[-2000:]
    text = html.read_text()
    assert '<span class="badge lab">LAB</span>' in text and "Lab storage." in text and "EMULATED" not in text

    layout = lab_layout(tmp_path)
    assert left_over(tmp_path, layout) == []


@pytest.mark.slow
@needs_lab
def test_nothing_listens_beyond_the_bridge(tmp_path):
    """Every listening socket of the lab, on each of its hosts and on this one, is on its bridge's address or a
    loopback (this host's, or the namespace's own)."""
    from harness.config import load_profile
    from harness.storage import attached

    prof = load_profile(str(profile(tmp_path, client_hosts=1)))
    with attached(prof, tmp_path / "results") as st:
        layout = lab.status(st.real_root)["layout"]
        pids = set(lab.status(st.real_root)["pids"].values())
        seen = 0
        for h in layout["hosts"]:
            for addr, proc in listeners(h["name"]):
                seen += 1
                assert addr == h["address"] or addr.startswith("127.") or addr == "::1", (h["name"], addr, proc)
        for addr, proc in listeners(None):
            if any(f"pid={p}," in proc for p in pids):
                seen += 1
                assert addr == layout["bridge_address"] or addr.startswith("127."), (addr, proc)
        assert seen >= 5  # master (3 ports), 2 chunk servers, the scheduler, the worker: there was something to check
    assert left_over(tmp_path, layout) == []


def trash(master: str) -> tuple[int, int]:
    """The files in MooseFS's trash and their bytes, as its master reports them."""
    out = subprocess.run(["mfscli", "-H", master, "-SIN", "-p", "-n"], capture_output=True, text=True,
                         timeout=10).stdout
    info = dict(line.split("\t")[1:3] for line in out.splitlines() if line.startswith("master info:\t"))
    return int(info["trash files"]), int(info["trash space"])


@pytest.mark.slow
@needs_lab
def test_a_file_removed_in_the_lab_is_gone_not_kept_in_moosefs_s_trash(tmp_path):
    """MooseFS keeps a removed file's chunks in its trash for a day by default, and the lab keeps its servers' data
    between runs: every --fresh run and fio phase would pile up there (a cluster proof had left 4.4 GB). Files
    removed in the lab leave no trash."""
    from harness.config import load_profile
    from harness.storage import attached

    with attached(load_profile(str(profile(tmp_path))), tmp_path / "results") as st:
        master = lab.status(st.real_root)["layout"]["master"]
        before = trash(master)
        for i in range(3):
            f = st.real_root / f"removed-{i}.bin"
            f.write_bytes(os.urandom(2**20))
            f.unlink()
        assert trash(master) == before, (before, trash(master))


@pytest.mark.slow
@needs_lab
def test_the_lab_s_dask_runs_as_the_embedded_cluster_does(tmp_path):
    """The lab's scheduler and the workers on its client hosts run with the settings of the cluster wsibench embeds:
    no statistical profiler sampling each task's stack every 10 ms, housekeeping once a second, the next task held
    (with Dask's defaults the workers' own CPU was a tenth more on 3 client hosts)."""
    from dask.distributed import Client

    from harness.config import load_profile
    from harness.storage import attached

    want = {"distributed.worker.profile.enabled": False, "distributed.scheduler.worker-saturation": 2.0,
            "distributed.admin.tick.interval": "1s"}

    def settings():  # nested: sent by value (the workers cannot import this test module)
        import dask

        return {k: dask.config.get(k) for k in want}
    with attached(load_profile(str(profile(tmp_path, client_hosts=1))), tmp_path / "results") as st:
        with Client(lab.status(st.real_root)["layout"]["dask"], timeout=30) as c:
            workers = c.run(settings)
            assert len(workers) == 1 and list(workers.values()) == [want], workers
            assert c.run_on_scheduler(settings) == want


@pytest.mark.slow
@needs_lab
def test_sigkill_of_the_run_takes_the_lab_down(tmp_path):
    """The run's process killed outright mid-stage: its keeper sees it gone and tears the lab down (servers,
    mounts, the client host, namespaces, bridge)."""
    prof, res = profile(tmp_path, client_hosts=1), tmp_path / "results"
    p = start_run(workload(tmp_path, slides=2, nodes=1), prof, res, stages="masks")
    wait(lambda: running_stage(res) == "masks", 120, "the masks stage started", p)
    layout = lab_layout(tmp_path)
    assert left_over(tmp_path, layout) != []  # it is up
    p.kill()
    p.wait()
    deadline = time.time() + 40
    while left_over(tmp_path, layout) and time.time() < deadline:
        time.sleep(0.5)
    assert left_over(tmp_path, layout) == []


def mfsmounts(host: str) -> set[int]:
    from harness import network

    return {pid for pid in network.host_pids(host) if Path(f"/proc/{pid}/comm").exists()
            and Path(f"/proc/{pid}/comm").read_text().strip() == "mfsmount"}


@pytest.mark.slow
@needs_lab
def test_a_command_on_a_client_host_mounts_for_itself_and_leaves_no_client_behind(tmp_path):
    """A command on a client host (wsibench fio --hosts runs its phases so) sees the lab through a mount of its own,
    over its host's link; once it ends, that mount's mfsmount ends too (each command used to leave one running, a
    client of the master, until the lab stopped)."""
    from harness.config import load_profile
    from harness.storage import attached

    with attached(load_profile(str(profile(tmp_path, client_hosts=1))), tmp_path / "results") as st:
        (st.real_root / "hello").write_text("from the run host\n")
        doc = lab.status(st.real_root)
        host = lab.client_hosts(doc)[0]["name"]
        before = mfsmounts(host)
        assert len(before) == 1  # the Dask worker's mount
        for _ in range(2):
            (out,) = lab.on_client_hosts(doc, [["sh", "-c", f"hostname; cat {st.real_root}/hello; "
                                                            f"grep -c ' {st.real_root} ' /proc/self/mounts"]])
            assert out.split("\n")[:3] == [host, "from the run host", "1"], out
        wait(lambda: mfsmounts(host) == before, 15, "the commands' mounts ended")
    assert left_over(tmp_path, doc["layout"]) == []


@pytest.mark.slow
@needs_lab
def test_what_the_storage_delivers_to_client_hosts_is_what_reached_them_not_what_a_shaped_link_dropped(tmp_path):
    """`wsibench feed --hosts`' delivered bytes on a lab whose client links are shaped to 40 Mbit/s: 12 shards of
    1 MB read whole on a client host. The chunk servers send more than that (the tbf shaping drops packets and TCP
    sends them again: 1.07-1.13 x the bytes read, measured so); the counter counts what the client host received,
    the bytes read and their TCP/IP headers (1.01 x measured). Before, it counted the chunk servers' sends."""
    from harness import feed as F
    from harness.config import load_profile
    from harness.storage import attached

    with attached(load_profile(str(profile(tmp_path, client_hosts=1, client_link_mbit=40))),
                  tmp_path / "results") as st:
        files = []
        for i in range(12):
            files.append(st.real_root / f"train-{i:05d}.tfrecord")
            files[-1].write_bytes(os.urandom(1_000_000))
        doc = lab.status(st.real_root)
        counter, how = F.delivered_counter(st, [str(f) for f in files], client_hosts=1)
        before = counter()
        (out,) = lab.on_client_hosts(doc, [[sys.executable, "-c", "import sys\nfor f in sys.argv[1:]:\n"
                                            "    print(len(open(f, 'rb').read()))", *map(str, files)]])
        read = sum(int(n) for n in out.split())
        time.sleep(0.5)  # the last segments' counters
        got = counter() - before
    assert read == 12_000_000 and "client host" in how
    assert read <= got <= 1.04 * read, got / read


HOLD = """
import sys, time
from pathlib import Path
from harness.config import load_profile
from harness.storage import attached
with attached(load_profile(sys.argv[1]), Path(sys.argv[2])):
    print("up", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
@needs_lab
@pytest.mark.parametrize("helper", ["helper alive", "helper gone"])
def test_sigkill_of_the_keeper_stops_servers_and_mount_and_the_next_run_clears_the_rest(tmp_path, helper):
    """A keeper killed outright leaves no mount, whether or not mfsmount's auto-unmount helper (fusermount3) does
    its job: once in CI it did not, and the dead mount broke the tests after ("helper gone" kills the helper first:
    the mount stayed on the old code)."""
    prof, root = profile(tmp_path), tmp_path / "lab" / "mnt"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(prof), str(tmp_path / "results")],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "up"
        doc = lab.status(root)
        if helper == "helper gone":
            (helper_proc,) = [c for c in psutil.Process(doc["pids"]["mount"]).children() if c.name() == "fusermount3"]
            helper_proc.kill()
        os.kill(doc["keeper"], signal.SIGKILL)
        servers = [doc["pids"][k] for k in ("master", "cs1", "cs2", "mount")]
        wait(lambda: not any(lab._running(pid) for pid in servers), 10, "the servers and mount ended")
        wait(lambda: not mounted_anywhere(root), 15, "the mount went")
    finally:
        holder.kill()
        holder.wait()
        lab.clear_dead(lab.state_folder(root))  # what the next run on this root does first
    assert left_over(tmp_path, doc["layout"]) == []


@pytest.mark.slow
@needs_lab
def test_observe_counts_over_the_lab(tmp_path):
    from harness import pipeline
    from harness.config import load_workload

    prof = profile(tmp_path)
    s = pipeline.run(load_workload(str(workload(tmp_path, slides=2))), storage=str(prof), stages=["masks"],
                     results_dir=tmp_path / "results", observe=True)
    assert s["status"] == "ok" and s["storage"]["lab"] and s["storage"]["emulated"] is False
    assert s["storage"]["observe"]["root"] == str(tmp_path / "lab" / "mnt")
    ops = s["stages"]["masks"]["io_profile"]
    assert ops["bytes_read"] > 0 and ops["bytes_written"] > 0 and ops["creates"] > 0, ops
    # what the passthrough counted went to the chunk servers, twice (goal 2): their links carried at least that
    stored = sum(v["received_bytes"] for v in s["storage"]["lab"]["link_bytes"].values() if v["role"] == "chunkserver")
    assert stored >= 2 * 0.95 * ops["bytes_written"], (stored, ops["bytes_written"])
    assert left_over(tmp_path, lab_layout(tmp_path)) == []


# --- faults -------------------------------------------------------------------------------------------------------

def kill_server(root: Path, name: str) -> float:
    """SIGKILL a lab server (master, cs1, ...); the time just before."""
    pid, t = lab.status(root)["pids"][name], time.time()
    os.kill(pid, signal.SIGKILL)
    return t


def host_of(root: Path, name: str) -> dict:
    """The lab host a server runs on (hosts are named wl<tag>-master, wl<tag>-cs1, ...)."""
    (host,) = [h for h in lab.status(root)["layout"]["hosts"] if h["name"].endswith(f"-{name}")]
    return host


@pytest.mark.slow
@needs_lab
def test_a_chunk_server_lost_mid_stage_with_goal_2_the_stage_completes_and_says_so(tmp_path):
    prof, res, root = profile(tmp_path, server_link_mbit=40), tmp_path / "results", tmp_path / "lab" / "mnt"
    p = start_run(workload(tmp_path), prof, res)
    wait(lambda: running_stage(res) == "patches" and patches_written(root), 150, "the patches stage writing", p)
    host, killed = host_of(root, "cs1"), kill_server(root, "cs1")
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-3000:]
    s = record(res, json.loads(out)["run_id"])
    st = s["stages"]["patches"]
    assert s["status"] == "ok" and st["status"] == "ok" and st["errors"] == [] and st["items"] == 4, st["errors"]
    (lost,) = st["servers_lost"]
    assert (lost["server"], lost["role"], lost["host"], lost["address"]) == ("cs1", "chunkserver", host["name"],
                                                                            host["address"])
    assert lost["what"] == "ended (killed by SIGKILL)" and killed <= lost["at"] < killed + 2, lost
    assert s["storage"]["lab"]["lost"] == [lost]
    assert left_over(tmp_path, lab_layout(tmp_path)) == []


def chunk_servers_of(path: Path) -> set[str]:
    """Addresses of the chunk servers holding a copy of the file's chunks (mfsfileinfo)."""
    out = subprocess.run(["mfsfileinfo", str(path)], capture_output=True, text=True, check=True, timeout=30).stdout
    return {line.split("copy", 1)[1].split(":")[1].strip() for line in out.splitlines() if "copy " in line}


@pytest.mark.slow
@needs_lab
def test_a_chunk_server_lost_mid_stage_with_goal_1_fails_the_items_whose_chunks_it_held(tmp_path):
    """Goal 1: a file's only copy is on one server. The tumor slides' files are placed on the first chunk server,
    everything else on the second (MooseFS storage classes by the servers' labels A and B); the first is killed as
    the patch stage starts. The tumor items fail, each naming its slide file and the lost server as the cause; the
    normal ones complete."""
    import shutil

    from harness.config import load_profile
    from harness.storage import attached

    prof, res, root = profile(tmp_path, goal=1, io_retries=2, timeout_s=4), tmp_path / "results", \
        tmp_path / "lab" / "mnt"
    wl = workload(tmp_path, slides=4, retries=0)
    with attached(load_profile(str(prof)), res):  # one lab for both runs
        data = root / "labwl"
        data.mkdir()
        for sclass, label in (("onA", "A"), ("onB", "B")):
            mfs("mfsscadmin", str(root), "create", "-K", label, sclass)
        mfs("mfssetsclass", "-r", "onB", str(data))  # what the runs write inherits it: on cs2
        r = run_cli("run", str(wl), "--storage", str(prof), "--results", str(res), "--stages", "masks", "--json")
        assert r.returncode == 0, r.stderr[-3000:]
        tumors = sorted((data / "dataset").rglob("tumor_*.tif"))
        assert len(tumors) == 2
        mfs("mfssetsclass", "onA", str(tumors[0].parent))
        for f in tumors:  # written again in their folder of class onA: their chunks on cs1
            shutil.copyfile(f, f.with_suffix(".copy"))
            os.replace(f.with_suffix(".copy"), f)
        cs1, cs2 = host_of(root, "cs1"), host_of(root, "cs2")
        for f in (data / "dataset").rglob("*"):  # the placement, as the master has it
            if f.is_file() and f.stat().st_size:
                assert chunk_servers_of(f) == {(cs1 if f in tumors else cs2)["address"]}, f
        p = start_run(wl, prof, res, stages="patches")
        wait(lambda: running_stage(res) == "patches", 120, "the patches stage started", p)
        kill_server(root, "cs1")
        out, err = p.communicate(timeout=150)
    s = record(res, json.loads(out)["run_id"])
    st = s["stages"]["patches"]
    failed = {e["item"]: e["error"] for e in st["errors"]}
    assert set(failed) == {f.stem for f in tumors}, failed
    for f in tumors:
        assert str(f) in failed[f.stem], failed[f.stem]  # the file
        assert f"chunk server cs1 (host {cs1['name']}, {cs1['address']}) killed by SIGKILL" in failed[f.stem]
    assert st["items"] == 4 and st["status"] == "partial" and s["status"] == "partial"
    assert [e["server"] for e in st["servers_lost"]] == ["cs1"]
    assert left_over(tmp_path, lab_layout(tmp_path)) == []


def mfs(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{' '.join(argv)}: {r.stdout} {r.stderr}"


@pytest.mark.slow
@needs_lab
def test_a_master_restarted_mid_stage_the_run_waits_and_continues(tmp_path):
    prof, res, root = profile(tmp_path, timeout_s=40, io_retries=30, server_link_mbit=40), tmp_path / "results", \
        tmp_path / "lab" / "mnt"
    p = start_run(workload(tmp_path), prof, res)
    wait(lambda: running_stage(res) == "patches" and patches_written(root), 150, "the patches stage writing", p)
    killed = kill_server(root, "master")
    time.sleep(2)
    lab.restart_master(root)
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-3000:]
    s = record(res, json.loads(out)["run_id"])
    st = s["stages"]["patches"]
    assert s["status"] == "ok" and st["status"] == "ok" and st["errors"] == [] and st["items"] == 4, st["errors"]
    events = [(e["server"], e["what"]) for e in s["storage"]["lab"]["events"]]
    assert events == [("master", "ended (killed by SIGKILL)"), ("master", "restarted")], events
    assert killed <= s["storage"]["lab"]["events"][1]["at"] < killed + 10
    assert s["storage"]["lab"]["lost"] == [] and "servers_lost" not in st
    assert left_over(tmp_path, lab_layout(tmp_path)) == []


@pytest.mark.slow
@needs_lab
def test_a_master_lost_for_good_fails_the_run_clearly_within_its_timeout(tmp_path):
    prof, res, root = profile(tmp_path, timeout_s=5, io_retries=30, server_link_mbit=40), tmp_path / "results", \
        tmp_path / "lab" / "mnt"
    p = start_run(workload(tmp_path, retries=0), prof, res)
    wait(lambda: running_stage(res) == "patches" and patches_written(root), 150, "the patches stage writing", p)
    host, killed = host_of(root, "master"), kill_server(root, "master")
    out, err = p.communicate(timeout=120)
    took = time.time() - killed
    (path,) = res.glob("*/summary.json")
    s = json.loads(path.read_text())
    assert s["status"] != "ok" and p.returncode != 0, (s["status"], p.returncode)
    said = f"metadata master master (host {host['name']}, {host['address']}) killed by SIGKILL"
    where = s["stages"]["patches"]["errors"] if "patches" in s["stages"] else [{"error": s.get("error", "")}]
    assert where and all(said in e["error"] for e in where), where
    # within the timeout: each item gives up after 5 s; 4 items on 2 workers, then the teardown
    assert took < 60, took
    assert left_over(tmp_path, lab_layout(tmp_path)) == []


def test_observe_is_refused_for_stages_on_the_lab_client_hosts(tmp_path):
    """The passthrough counts this host's mount; the client hosts' workers use their own: refused before any lab."""
    from harness import pipeline
    from harness.config import ConfigError, load_workload

    with pytest.raises(ConfigError, match="--observe counts the requests of this host's mount"):
        pipeline.run(load_workload(str(workload(tmp_path, nodes=2))), storage=str(profile(tmp_path, client_hosts=2)),
                     results_dir=tmp_path / "results", observe=True)
    assert not (tmp_path / "lab").exists()


def test_runs_and_report_label_a_lab_run_LAB(tmp_path):
    """Without a lab: a run's record given a lab's storage section (as the lab writes it) is listed and reported as
    LAB, a real file system on one machine, and not as emulated."""
    from harness import pipeline
    from harness.config import load_workload

    res = tmp_path / "results"
    prof = tmp_path / "plain.toml"
    prof.write_text(f'name = "plain"\nroot = "{tmp_path}/plain"\ncreate = true\n')
    s = pipeline.run(load_workload(str(workload(tmp_path, slides=2, engine="local"))), storage=str(prof),
                     stages=["masks"], results_dir=res)
    path = res / s["run_id"] / "summary.json"
    doc = json.loads(path.read_text())
    lost = {"server": "cs1", "role": "chunkserver", "host": "wl7-cs1", "address": "10.241.0.3", "pid": 9,
            "what": "ended (killed by SIGKILL)", "at": time.time()}
    doc["storage"]["lab"] = {"file_system": "MooseFS 3.0.117", "goal": 2, "cache_mode": "DIRECT", "io_retries": 8,
                             "timeout_s": None, "network": "10.241.0.0/24", "master": "10.241.0.2",
                             "chunkservers": ["10.241.0.3", "10.241.0.4"], "client_hosts": [],
                             "links_mbit": {"master": None, "chunkserver": 80, "client": None}, "dask": None,
                             "events": [lost], "lost": [lost], "link_bytes": {}}
    path.write_text(json.dumps(doc))
    runs = run_cli("runs", "--results", str(res))
    assert runs.returncode == 0 and "plain (LAB)" in runs.stdout and "emulated" not in runs.stdout, runs.stdout
    html = tmp_path / "report.html"
    rep = run_cli("report", str(res), "-o", str(html))
    assert rep.returncode == 0, rep.stderr[-2000:]
    text = html.read_text()
    assert '<span class="badge lab">LAB</span>' in text and "Lab storage." in text and "EMULATED" not in text
    assert "MooseFS 3.0.117 on one machine" in text and "chunkserver 80 Mbit/s" in text
    assert "chunk server cs1 (host wl7-cs1, 10.241.0.3) killed by SIGKILL" in text


@pytest.mark.slow
@needs_lab
def test_a_small_cluster_proof_measures_the_servers_and_predicts_one_and_two_client_hosts(tmp_path, monkeypatch):
    """benchmarks/cluster_sizing_proof.py, small: the client hosts' links at 40 Mbit/s, the patch stage on 1 and 2
    client hosts, predicted from an observed run on local storage and `wsibench fio --hosts 2` alone, within 20% of
    what it measured on the lab (the full proof: docs/sizing.md).

    On the way, `wsibench fio --hosts 2` (its jobs kept from one client's, measured on a lab of one): each
    parallel phase ran on both client hosts at once (each host's own figures, their sum the servers'), the small
    files and metadata operations on the streams the phase says, and the lab's CPU by role over the phase: none
    negative (a phase's own client mount ends with it; subtracting it
    as a process seen before but not after made the clients' CPU negative), the clients' including those mounts;
    each kind of metadata operation its own rate and CPU cost."""
    from harness.sizing import storage_costs
    from harness.storage import fio

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import cluster_sizing_proof as cp
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    monkeypatch.setattr(cp, "SHAPES", {"clients-40mbit": {"client_link_mbit": 40}})
    monkeypatch.setenv("WSIBENCH_LOCAL_ROOT", str(tmp_path / "local"))
    doc = cp.collect(tmp_path, 4, 8192, 1, {"size_mib": 16, "runtime": 3.0, "small_files": 120},
                     progress=lambda m: None, hosts=(1, 2), stages=("patches",))
    entry = doc["shapes"]["clients-40mbit"]
    assert [r["status"] for r in entry["runs"]] == ["ok", "ok"]
    # the proof's own cpuacct group is gone, though this process's helpers started in it still run (it was left)
    assert not (Path("/sys/fs/cgroup/cpuacct") / f"wsibench-proof-{os.getpid()}").exists()

    # N client hosts measured on a lab of N (a lab's idle client hosts share the cores with the ones a run uses),
    # one client's view of the storage on a lab of one, the servers' on the lab of the most
    labs = [len(json.loads((tmp_path / "results" / run["run_id"] / "summary.json").read_text())["storage"]["lab"]
                ["client_hosts"]) for run in entry["runs"]]
    assert labs == [run["hosts"] for run in entry["runs"]] == [1, 2], labs
    one = json.loads((tmp_path / "results" / "fio" / entry["fio_one_client"]).read_text())
    assert len(one["storage"]["lab"]["client_hosts"]) == 1 and "parallel" not in one  # its jobs only
    c = json.loads((tmp_path / "results" / "fio" / entry["fio"]).read_text())
    assert len(c["storage"]["lab"]["client_hosts"]) == 2
    assert c["jobs"] == one["jobs"] and c["jobs_from"].startswith(entry["fio_one_client"])  # kept, not run again
    ph = c["parallel"]["phases"]
    assert c["parallel"]["hosts"] == 2 and set(ph) == set(fio.PHASES)
    for name, p in ph.items():
        assert len(p["per_host"]) == 2, name
        assert all(v >= 0 for v in p["lab_cpu_seconds"].values()), (name, p["lab_cpu_seconds"])
        busy = p["lab_cpu_seconds"]["chunkserver"] > 0
        assert busy or name in (*fio.METADATA_PHASES, "idle"), (name, p["lab_cpu_seconds"])
    assert ph["write"]["write_bytes"] == sum(h["write_bytes"] for h in ph["write"]["per_host"]) >= 2 * 4 * 2**20
    assert ph["small_writes"]["small_files"] == 2 * (120 // fio.SMALL_FILE_STREAMS) * fio.SMALL_FILE_STREAMS
    assert all(h["streams"] == fio.SMALL_FILE_STREAMS for h in ph["small_writes"]["per_host"])
    assert all(h["mount_cpu_seconds"] > 0 for h in ph["write"]["per_host"])  # each host's own mount, counted
    costs = storage_costs(c, name="lab")
    assert all(f"server_{op}" in costs and f"lab_cpu_per_{op}" in costs for op in fio.METADATA_PHASES), sorted(costs)

    # each stage's record: the machine's busy CPU over it, and the bytes the lab's links carried (every byte the
    # stage read crossed a client's link; what the clients sent, the stage's writes, each once)
    for run in entry["runs"]:
        rec = json.loads((tmp_path / "results" / run["run_id"] / "summary.json").read_text())
        st, cores = rec["stages"]["patches"], rec["environment"]["cpu_count"]
        links = st["lab"]["link_bytes"]
        assert 0 < st["machine_cpu_seconds"] <= cores * st["work_seconds"] * 1.05, st["machine_cpu_seconds"]
        assert links["client"]["received_bytes"] >= 0.95 * st["bytes_read"], (links, st["bytes_read"])
        assert 0.95 * st["bytes_written"] <= links["client"]["sent_bytes"] <= 1.3 * st["bytes_written"], links
        assert links["chunkserver"]["received_bytes"] >= 1.9 * st["bytes_written"]  # goal 2: a replica forwarded
        assert st["lab"]["cpu_seconds"]["chunkserver"] > 0

    rows = cp.predict(tmp_path, progress=lambda m: None)["rows"]
    assert [(r["hosts"], r["from"]) for r in rows] == [(1, "local + fio"), (2, "local + fio"),
                                                       (2, "one lab host + fio")]
    machine_cpu = [json.loads((tmp_path / "results" / run["run_id"] / "summary.json").read_text())["stages"]["patches"]
                   ["machine_cpu_seconds"] for run in entry["runs"]]
    for r in rows:  # all of it when it misses: the binding resource, busy shares, cores free, each run's machine CPU
        assert abs(r["ratio"] - 1) <= 0.2, json.dumps(dict(r, machine_cpu_seconds=machine_cpu), default=str)
    layout = lab.status(tmp_path / "results" / "lab" / "proof" / "mnt")["layout"]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert [h["name"] for h in layout["hosts"] if h["name"] in netns] == [] and processes_naming(str(tmp_path)) == []


@pytest.mark.slow
@needs_lab
def test_feed_deals_the_accelerators_over_client_hosts_each_reading_through_its_own_mount(tmp_path):
    """`wsibench feed --hosts 2` on a lab with two client hosts: the TFRecords prepared on the lab, then each probe's
    ranks dealt round-robin over the two client hosts (each rank says where it ran), the bytes the two client hosts
    received counted as delivered, the record says how many client hosts; afterwards nothing is left of the lab."""
    prof, res = profile(tmp_path, client_hosts=2), tmp_path / "results"
    wl = tmp_path / "feed.toml"
    wl.write_text('name = "labfeed"\nstages = ["masks", "patches", "tfrecords"]\n[dataset]\nkind = "synthetic"\n'
                  '[dataset.synthetic]\nslides = 3\nsize = 4096\nseed = 3\ntumor_fraction = 0.5\ntest_fraction = 0.0\n'
                  '[patches]\nmax_per_class = 60\n[tfrecords]\nshard_mb = 0.2\nval_fraction = 0.2\n'
                  '[train]\nmodel = "small_cnn"\nimage_size = 32\nbatch_size = 8\naugment = false\ndecode = false\n'
                  'step_time_s = 0.05\nshuffle_buffer = 0\n')
    r = run_cli("feed", str(wl), "--storage", str(prof), "--results", str(res), "--hosts", "2", "--max", "2",
                "--steps", "6", timeout=420)
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = [p for p in res.glob("*/summary.json") if "-feed-" in p.parent.name]
    s = json.loads(path.read_text())
    f = s["feed"]
    order = [h["name"] for h in s["storage"]["lab"]["client_hosts"]]  # the order ranks are dealt in
    clients = sorted(order)
    assert f["client_hosts"] == 2 and len(clients) == 2
    two = next(p for p in f["probes"] if p["accelerators"] == 2)
    assert two["delivered_bytes"] is not None and two["delivered_bytes"] > 0
    assert "the 2 client host(s) the ranks ran on received" in f["delivered_how"]
    assert two["rank_hosts"] == clients, (two["rank_hosts"], clients)  # a rank on each client host, none here
    one = next(p for p in f["probes"] if p["accelerators"] == 1)
    assert one["rank_hosts"] == order[:1]
    assert left_over(tmp_path, lab_layout(tmp_path)) == []



def test_the_cluster_proof_characterises_each_lab_once_with_what_it_keeps(tmp_path, monkeypatch):
    """The proof's fio: on the lab of one client host one client's jobs alone; on the lab of the most hosts the
    parallel phases alone, the jobs kept from the one-client characterisation; where the most is one host, one
    characterisation with both (before: two, the second thrown away)."""
    from harness.storage import fio

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import cluster_sizing_proof as cp
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    calls = []

    def characterise(prof, res, hosts, parallel_phases, jobs_from, progress, **kw):
        calls.append((hosts, parallel_phases, jobs_from and jobs_from.name))
        return Path(f"c{len(calls)}.json"), {}
    monkeypatch.setattr(fio, "characterise", characterise)
    monkeypatch.setattr(cp, "SHAPES", {"s": {}})
    entry: dict = {}
    for clients in (1, 2, 3):
        cp.characterise_shape(tmp_path, "s", clients, 3, entry, {}, lambda m: None)
    assert calls == [(1, False, None), (3, True, "c1.json")]
    assert entry == {"fio_one_client": "c1.json", "fio": "c2.json"}
    calls.clear()
    entry, said = {}, []
    cp.characterise_shape(tmp_path, "s", 1, 1, entry, {}, said.append)
    assert calls == [(1, True, None)] and entry == {"fio_one_client": "c1.json", "fio": "c1.json"}
    assert "one client's jobs and the parallel phases" in said[0], said  # the progress line says what runs


def test_the_lab_s_cpu_between_two_readings_is_never_negative():
    """A server killed in a stage (a fault) and another process on its pid: what the pid used is the new one's, not
    its counter less the dead one's (the stage records of the fault tests had -0.12 CPU s for the chunk servers)."""
    before = {10: ("chunkserver", 5.0), 11: ("master", 2.0), 12: ("client", 1.0)}
    after = {10: ("chunkserver", 0.3), 11: ("master", 2.5), 13: ("client", 0.2)}
    assert lab.cpu_used(before, after) == {"master": 0.5, "chunkserver": 0.3, "client": 0.2}
