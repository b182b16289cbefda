"""The storage lab: a real parallel file system, MooseFS 3.0, that wsibench starts on this machine for a run.

MooseFS has BeeGFS's architecture: a metadata server (``mfsmaster``), storage servers (``mfschunkserver``, each
holding replicas of 64 MiB chunks on a folder of its own) and a client in the kernel's path (``mfsmount``, FUSE).
The lab puts each server on a network-namespace host of its own on a private bridge (harness.network: no uplink,
its own /24; the chunk server refuses to talk to its master over loopback), shapes the links the profile names
(tc tbf, both directions; this kernel has no netem, so no delay is added) and mounts the file system at the
profile's root, on this host (the root namespace, on the bridge). With ``client_hosts``, more namespace hosts on the
same bridge each mount it themselves (a mount namespace of their own, the same path: every host a real client with
its own link) and run Dask workers of a scheduler on the bridge (``engine.address = "lab"``). Nothing listens beyond
the bridge: every daemon binds its host's bridge address.

One keeper process (``python -m harness.storage.lab keep STATE``, its own session) starts and owns it all, records
what its servers did (a server that ends is an event in ``lab.json``), and tears everything down, namespaces,
bridge and mounts, when no run that attached it is alive any more, as the emulated mounts' server does: runs share
a lab, the last one out stops it, a killed run leaves nothing behind. A keeper killed outright leaves its lab.json,
from which the next run clears what it left. The servers' data (metadata, chunks) stays under ``servers/`` beside
the mount point, so a lab started again holds what the last one wrote.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import network
from ..errors import WsibenchError
from ..fsutil import process_start
from ..procs import dies_with_parent, stop_groups
from .emulate import check_can_mount, live_users, locked, mount_state

_attached: dict[str, int] = {}  # labs this process holds, and how many times (runs inside runs)
PORTS = {"master_ml": 9419, "master_cs": 9420, "master_cl": 9421, "chunkserver": 9422}
MASTER_OUTAGE_S = 120.0  # seconds without a master before the lab's mounts are stopped, lab.timeout_s unset
BINARIES = ("mfsmaster", "mfschunkserver", "mfsmount", "mfscli", "mfssetgoal", "mfssettrashtime")


class LabError(WsibenchError, RuntimeError):
    """The lab cannot be started or has failed; the message says what and where its log is."""


def check_can_start() -> None:
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        raise LabError(f"the MooseFS lab needs {', '.join(missing)}: apt-get install moosefs-master "
                       "moosefs-chunkserver moosefs-client moosefs-cli (scripts/setup installs them)")
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        raise LabError("the MooseFS lab needs root and the ip and tc commands (iproute2): its servers run on "
                       "network namespaces joined by a bridge")
    check_can_mount()


def state_folder(root: Path) -> Path:
    return root.parent / f".{root.name}.wsibench"


# --- the layout of a lab: names and addresses -----------------------------------------------------------------

def plan(params: dict, tag: str, exclude=()) -> dict:
    """Host names, interfaces and addresses of a lab: the bridge holds .1, the master .2, chunk servers and client
    hosts follow."""
    net = network.free_range(exclude)
    addrs = [str(a) for a in net.hosts()]
    hosts = [{"name": f"wl{tag}-master", "role": "master", "outer": f"wl{tag}m"}]
    hosts += [{"name": f"wl{tag}-cs{i}", "role": "chunkserver", "outer": f"wl{tag}c{i}"}
              for i in range(1, params["chunkservers"] + 1)]
    hosts += [{"name": f"wl{tag}-client{i}", "role": "client", "outer": f"wl{tag}h{i}"}
              for i in range(1, params["client_hosts"] + 1)]
    for h, a in zip(hosts, addrs[1:]):
        h["address"] = a
    return {"network": str(net), "prefixlen": net.prefixlen, "bridge": f"wl{tag}br", "bridge_address": addrs[0],
            "hosts": hosts, "master": hosts[0]["address"]}


def _link(params: dict, role: str) -> float | None:
    return params.get({"master": "master_link_mbit", "chunkserver": "server_link_mbit",
                       "client": "client_link_mbit"}[role])


def label(i: int) -> str:
    """Chunk server i's MooseFS label (A, B, ...): storage classes (mfsscadmin, mfssetsclass) place data by it."""
    return chr(ord("A") + i - 1)


def mount_options(params: dict) -> list[str]:
    timeout = params.get("timeout_s")
    return ["-o", f"mfscachemode={params['cache_mode']},mfsioretries={params['io_retries']}"
                  + (f",mfstimeout={max(1, round(timeout))}" if timeout else "")]


def mounted(root: Path) -> bool:
    """Whether ``root`` is in this mount namespace's mount table. Never asks the mount itself: a MooseFS mount
    whose master is gone blocks a stat for as long as its retries last."""
    return bool(mount_device(root))


def _unmount(root: Path) -> None:
    """Unmount the lab's root here, then its copies in other mount namespaces: one created while it was mounted
    (another lab's host, any ``ip netns exec``) holds a copy, which the unmount here does not always reach."""
    if mounted(root):
        subprocess.run(["fusermount3", "-u", str(root)], capture_output=True)
        if mounted(root):
            subprocess.run(["fusermount3", "-u", "-z", str(root)], capture_output=True)
    target, seen = os.path.realpath(root), {os.readlink("/proc/self/ns/mnt")}
    for d in Path("/proc").iterdir():
        try:
            ns = os.readlink(d / "ns" / "mnt") if d.name.isdigit() else None
            if ns is None or ns in seen:
                continue
            seen.add(ns)
            if any(line.split()[1].replace("\\040", " ") == target for line in (d / "mounts").read_text().splitlines()):
                subprocess.run(["nsenter", "-t", d.name, "-m", "umount", "-l", target], capture_output=True, timeout=10)
        except (OSError, IndexError, subprocess.SubprocessError):
            continue


def mount_device(root: Path) -> str:
    """The device (``major:minor``, /proc/self/mountinfo) of what is mounted at ``root`` here, '' if nothing: a
    FUSE mount's is its connection's, which no later mount at the same place has."""
    target, dev = os.path.realpath(root), ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            f = line.split()
            if len(f) > 4 and f[4].replace("\\040", " ") == target:
                dev = f[2]  # the last: the one on top
    return dev


def guard_main(argv: list[str]) -> None:
    """``guard ROOT MOUNT_PID DEVICE FD``: once FD (a pipe only the keeper writes) ends, that is once the keeper has
    ended however it did, see that the keeper's mount of ROOT is gone. Killed with the keeper, mfsmount's own
    auto-unmount helper (fusermount3) unmounts it, but not always: once in CI a keeper killed outright left the
    mount dead ("Transport endpoint is not connected") for the rest of the suite. A mount of ROOT from another
    device (a lab started since) is left alone."""
    root, mount_pid, device, fd = Path(argv[0]), int(argv[1]), argv[2], int(argv[3])
    while os.read(fd, 1):
        pass
    deadline = time.time() + 10  # mfsmount gets SIGKILL with the keeper (PR_SET_PDEATHSIG); a stuck one is
    while _running(mount_pid) and time.time() < deadline:  # left to the unmount below (no pid killed here: by
        time.sleep(0.1)                                     # then it may be another process's)
    deadline = time.time() + 2  # the helper's turn
    while mount_device(root) == device and time.time() < deadline:
        time.sleep(0.1)
    if mount_device(root) == device:
        print(f"lab guard: the keeper has ended and {root} is still mounted (device {device}): unmounting it",
              flush=True)
        _unmount(root)


def _tag() -> str:
    """A tag for the lab's names (namespaces, veths, bridge) that no lab on this machine uses: the keeper's pid,
    unique among live processes, stepped past names a killed lab may have left."""
    used = network.ip("netns", "list", check=False).stdout + network.ip("-o", "link", "show", check=False).stdout
    n = os.getpid() % 100000
    while f"wl{n}-" in used or f"wl{n}br" in used:
        n = (n + 1) % 100000
    return str(n)


# --- the keeper -----------------------------------------------------------------------------------------------

class Keeper:
    """Starts the lab described by STATE/params.json, watches it, and tears it down."""

    def __init__(self, state: Path):
        self.state = state
        doc = json.loads((state / "params.json").read_text())
        self.params, self.root = doc["params"], Path(doc["root"])
        self.servers = Path(doc["servers"])
        self.procs: dict[str, subprocess.Popen] = {}
        self.events: list[dict] = []
        self.layout: dict | None = None
        self.stopping = False
        self.restart_asked = False
        self.master_gone_since: float | None = None
        self.mounts_stopped = False

    def log(self, name: str):
        return open(self.state / f"{name}.log", "a")

    def start(self) -> None:
        p = self.params
        # one lab at a time picks its range and names, until its bridge holds them: parallel labs never collide
        with locked(Path(tempfile.gettempdir()) / "wsibench-lab-network.lock"):
            self.layout = lay = plan(p, _tag())
            self.write(ready=False)
            network.add_bridge(lay["bridge"], lay["bridge_address"], lay["prefixlen"])
        names = "127.0.0.1 localhost\n" + "".join(f"{h['address']} {h['name']}\n" for h in lay["hosts"])
        for h in lay["hosts"]:
            network.add_host(lay["bridge"], h["name"], h["address"], lay["prefixlen"], h["outer"], names)
            mbit = _link(p, h["role"])
            if mbit:
                network.shape(h["name"], h["outer"], mbit)
        self._master()
        for i, h in enumerate(self.hosts("chunkserver"), 1):
            self._chunkserver(i, h)
        self._wait_for_chunkservers(len(self.hosts("chunkserver")), 60)
        self._mount()
        subprocess.run(["mfssetgoal", "-r", str(p["goal"]), str(self.root)], capture_output=True, check=True)
        # a removed file is gone at once: MooseFS keeps it in its trash for a day by default, and the servers' data
        # is kept between runs (one cluster proof had left 85,000 removed files there, 4.4 GB, twice that on the
        # chunk servers' disk with goal 2)
        subprocess.run(["mfssettrashtime", "-r", "0", str(self.root)], capture_output=True, check=True)
        if p["client_hosts"]:
            self._clients()
        self.write(ready=True)

    def hosts(self, role: str) -> list[dict]:
        return [h for h in self.layout["hosts"] if h["role"] == role]

    def _run(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with self.log(name) as f:  # each dies with the keeper, even a keeper killed outright (SIGKILL)
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=dies_with_parent(), env=env)
        self.procs[name] = proc
        return proc

    def _master(self) -> None:
        d = self.servers / "master"
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "metadata.mfs").exists() and not (d / "metadata.mfs.back").exists():
            shutil.copy("/var/lib/mfs/metadata.mfs.empty", d / "metadata.mfs")
        a = self.layout["master"]
        (d / "mfsexports.cfg").write_text(f"{self.layout['network']} / rw,alldirs,admin,maproot=0:0\n")
        (d / "mfstopology.cfg").write_text("")
        (d / "mfsmaster.cfg").write_text("\n".join([
            "WORKING_USER = root", "WORKING_GROUP = root", f"DATA_PATH = {d}", f"EXPORTS_FILENAME = {d}/mfsexports.cfg",
            f"TOPOLOGY_FILENAME = {d}/mfstopology.cfg", f"MATOML_LISTEN_HOST = {a}", f"MATOCS_LISTEN_HOST = {a}",
            f"MATOCL_LISTEN_HOST = {a}", "REPLICATIONS_DELAY_INIT = 0", "NICE_LEVEL = 0", ""]))
        self.start_master()

    def start_master(self) -> None:
        d = self.servers / "master"
        # -a: metadata restored from the change logs when the last master did not end cleanly
        self._run("master", ["ip", "netns", "exec", self.hosts("master")[0]["name"], "mfsmaster", "-a", "-f", "-c",
                             str(d / "mfsmaster.cfg"), "start"])

    def _chunkserver(self, i: int, h: dict) -> None:
        d = self.servers / f"cs{i}"
        (d / "hdd").mkdir(parents=True, exist_ok=True)
        (d / "mfshdd.cfg").write_text(f"{d / 'hdd'}\n")
        (d / "mfschunkserver.cfg").write_text("\n".join([
            "WORKING_USER = root", "WORKING_GROUP = root", f"DATA_PATH = {d}", f"HDD_CONF_FILENAME = {d}/mfshdd.cfg",
            "HDD_LEAVE_SPACE_DEFAULT = 64MiB", f"MASTER_HOST = {self.layout['master']}",
            f"CSSERV_LISTEN_HOST = {h['address']}", f"LABELS = {label(i)}", "NICE_LEVEL = 0", ""]))
        self._run(f"cs{i}", ["ip", "netns", "exec", h["name"], "mfschunkserver", "-f", "-c",
                             str(d / "mfschunkserver.cfg"), "start"])

    def connected_chunkservers(self) -> int:
        """Chunk servers registered with the master whose disks it counts: right after registering, a server
        reports no space until its disk scan ends, and a write then fails with ENOSPC."""
        r = subprocess.run(["mfscli", "-H", self.layout["master"], "-SCS", "-p", "-n"], capture_output=True, text=True,
                           timeout=10)
        fields = [line.split("\t") for line in r.stdout.splitlines() if line.startswith("chunk servers")]
        return sum(1 for f in fields if len(f) > 10 and f[10].isdigit() and int(f[10]) > 0)  # total bytes

    def _wait_for_chunkservers(self, n: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                if self.connected_chunkservers() >= n:
                    return
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise LabError(f"the lab's {name} ended at start ({p.returncode}); see {self.state / name}.log")
            time.sleep(0.3)
        raise LabError(f"{n} chunk servers did not register with the master within {timeout:.0f} s "
                       f"(logs under {self.state})")

    def _mount(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._run("mount", ["mfsmount", str(self.root), "-f", "-H", self.layout["master"],  # unmounted if it dies
                            *mount_options(self.params), "-o", "auto_unmount"])
        deadline = time.time() + 30
        while mount_state(self.root) != "alive":
            if self.procs["mount"].poll() is not None or time.time() > deadline:
                raise LabError(f"mfsmount could not mount {self.root}; see {self.state / 'mount.log'}")
            time.sleep(0.1)
        # the mount's guard: wakes when this keeper's end, however it comes, closes the pipe's write end, which
        # only the keeper holds (non-inheritable; its children are started with close_fds)
        r, self.guard_pipe = os.pipe()
        with self.log("mount-guard") as f:
            subprocess.Popen([sys.executable, "-m", "harness.storage.lab", "guard", str(self.root),
                              str(self.procs["mount"].pid), mount_device(self.root), str(r)],
                             pass_fds=(r,), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        os.close(r)

    def _clients(self) -> None:
        """A Dask scheduler on the bridge; on each client host its own mount and its Dask workers. They run as the
        embedded cluster does (``dask_engine.SETTINGS``: no statistical profiler, rarer housekeeping): with Dask's
        defaults, on a lab of 3 client hosts, the unshaped patch stage took 8.3-8.8 CPU s of the machine against
        7.8-8.4 with these (the workers' own 2.35-2.45 against 2.06-2.25; the cluster proof's runs, 3 each)."""
        from ..engines.dask_engine import settings_env

        lay, p = self.layout, self.params
        dask = [sys.executable, "-m", "dask"]  # this interpreter's: the harness the driver runs
        env = os.environ | settings_env()
        port = network.free_port(lay["bridge_address"])
        lay["dask"] = f"tcp://{lay['bridge_address']}:{port}"
        self._run("dask-scheduler", [*dask, "scheduler", "--host", lay["bridge_address"], "--port", str(port),
                                     "--dashboard-address", f"{lay['bridge_address']}:0"], env)
        mount = [sys.executable, "-m", "harness.storage.lab", "client", str(self.root), lay["master"],
                 *mount_options(p), "--"]
        for h in self.hosts("client"):
            work = self.servers / "dask" / h["name"]
            work.mkdir(parents=True, exist_ok=True)
            argv = [*dask, "worker", lay["dask"], "--host", h["address"], "--name", h["name"],
                    "--nworkers", str(p["workers_per_host"]), "--nthreads", "1",
                    "--dashboard-address", f"{h['address']}:0", "--local-directory", str(work)]
            self._run(f"dask-{h['name']}", network.in_host(h["name"], mount + argv, own_mounts=True), env)
        want = len(self.hosts("client")) * p["workers_per_host"]
        deadline = time.time() + 120
        from dask.distributed import Client

        while True:
            with contextlib.suppress(OSError, TimeoutError):
                with Client(lay["dask"], timeout=5) as c:
                    if len(c.scheduler_info(n_workers=-1)["workers"]) >= want:
                        break
            if time.time() > deadline:
                raise LabError(f"the lab's {want} Dask workers did not join within 120 s (logs under {self.state})")
            time.sleep(0.5)

    def write(self, ready: bool, stopped: bool = False) -> None:
        doc = {"ready": ready, "stopped": stopped, "keeper": os.getpid(), "keeper_start": process_start(os.getpid()),
               "layout": self.layout, "params": self.params, "root": str(self.root),
               "pids": {k: p.pid for k, p in self.procs.items()}, "events": self.events}
        tmp = self.state / "lab.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.state / "lab.json")

    def event(self, name: str, pid: int, what: str) -> None:
        """A server's event in lab.json: which process (its name in the lab, its host, address and role)."""
        host = self._host_of(name)
        role = host["role"] if host else {"mount": "client", "dask-scheduler": "scheduler"}.get(name, name)
        self.events.append({"server": name, "role": role, "host": host["name"] if host else None,
                            "address": host["address"] if host else None, "pid": pid, "what": what,
                            "at": time.time()})
        self.write(ready=True)

    def _host_of(self, name: str) -> dict | None:
        """The lab host a process of the lab runs on (None: this host, the root namespace)."""
        if name == "master":
            return self.hosts("master")[0]
        if name.startswith("cs") and name[2:].isdigit():
            return self.hosts("chunkserver")[int(name[2:]) - 1]
        return next((h for h in self.hosts("client") if name in (f"dask-{h['name']}", f"mount-{h['name']}")), None)

    def restart_master_if_dead(self) -> None:
        """Start the master again (``restart_master``: SIGUSR1), if it has ended; it restores its metadata from
        its change logs (-a)."""
        p = self.procs.get("master")
        if p is None or p.poll() is None:
            return
        self.note_ended()
        self.start_master()
        self.event("master", self.procs["master"].pid, "restarted")

    def note_ended(self) -> None:
        for name, p in list(self.procs.items()):
            if p.poll() is not None and not any(e["server"] == name and e.get("pid") == p.pid for e in self.events):
                self.event(name, p.pid, f"ended ({_how_ended(p.returncode)})")

    def watch(self, grace: float = 3.0, first_user_timeout: float = 60.0) -> None:
        """Until no attached run is alive (or SIGTERM): note every server that ends; restart the master when asked
        (SIGUSR1)."""
        users, started, last_seen = self.state / "users", time.monotonic(), None
        while not self.stopping:
            time.sleep(0.2)
            if self.restart_asked:
                self.restart_asked = False
                self.restart_master_if_dead()
            self.note_ended()
            self.bound_master_outage()
            registered = users.is_dir() and any(users.iterdir())
            if live_users(users) or (registered and last_seen is None):
                last_seen = time.monotonic()
            elif (last_seen is not None and time.monotonic() - last_seen > grace) or \
                    (last_seen is None and time.monotonic() - started > first_user_timeout):
                return

    def bound_master_outage(self) -> None:
        """A master gone longer than the mount's timeout (lab.timeout_s, else MASTER_OUTAGE_S): stop every mount of
        the lab (this host's, the client hosts'), so that what waits on it fails (ENOTCONN) instead of waiting for
        ever: some requests (a truncate, a close) wait for the master past mfstimeout."""
        master = self.procs.get("master")
        if master is None or master.poll() is None:
            self.master_gone_since = None
            return
        self.master_gone_since = self.master_gone_since or time.monotonic()
        bound = self.params.get("timeout_s") or MASTER_OUTAGE_S
        if self.mounts_stopped or time.monotonic() - self.master_gone_since < bound:
            return
        self.mounts_stopped = True
        why = f"stopped: the master was gone for {bound:g} s (lab.timeout_s)"
        mount = self.procs.get("mount")
        if mount is not None and mount.poll() is None:
            mount.kill()  # its auto_unmount helper unmounts; requests waiting on it fail
            mount.wait()
            self.event("mount", mount.pid, why)
        for h in self.hosts("client"):
            for pid in network.host_pids(h["name"]):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "mfsmount":
                        os.kill(pid, signal.SIGKILL)
                        self.event(f"mount-{h['name']}", pid, why)

    def stop(self) -> None:
        teardown(self.state, self.layout, self.procs, self.root)
        if self.layout:  # torn down: lab.json says so (it stays, for what ran to be read)
            self.write(ready=False, stopped=True)


def teardown(state: Path, layout: dict | None, procs: dict | None = None, root: Path | None = None) -> None:
    """Stop what a lab runs and remove what it made (each step best effort): client hosts, the mount, the servers
    (SIGTERM: the master saves its metadata), the namespaces, the bridge."""
    procs = procs or {}
    if layout:
        for h in layout["hosts"]:
            if h["role"] == "client":  # their workers and their own mounts' clients die with their namespace
                network.remove_host(h["name"], h["outer"])
    if root is not None:
        _unmount(root)
    # the clients' side first, then the chunk servers all at once, then the master (each SIGTERM, then waited for)
    for group in (("mount", "dask-scheduler"), [k for k in procs if k.startswith("cs")], ("master",)):
        stop_groups([procs[n] for n in group if procs.get(n) is not None], timeout=15)
    if layout:
        for h in layout["hosts"]:
            network.remove_host(h["name"], h["outer"])
        network.remove_bridge(layout["bridge"])


def clear_dead(state: Path) -> None:
    """What a keeper killed outright left (from its lab.json): namespaces, bridge, mounts, server processes."""
    doc = _read(state)
    if not doc:
        return
    if doc.get("stopped") or (doc.get("keeper") and process_start(doc["keeper"]) == doc.get("keeper_start")):
        return  # torn down by its keeper, or alive
    print(f"[storage] clearing what a killed lab left (keeper pid {doc.get('keeper')})", file=sys.stderr)
    for pid in (doc.get("pids") or {}).values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    _unmount(Path(doc["root"]))
    teardown(state, doc.get("layout"))
    (state / "lab.json").unlink(missing_ok=True)


def _read(state: Path) -> dict | None:
    try:
        return json.loads((state / "lab.json").read_text())
    except (OSError, ValueError):
        return None


def status(root: Path) -> dict | None:
    """The running lab at ``root``: its layout, servers and events (lab.json)."""
    return _read(state_folder(root))


def link_bytes(doc: dict | None) -> dict[str, dict]:
    """Bytes each lab host received and sent over its link so far (its outer veth's counters, in the root namespace:
    what the veth transmits, the host receives)."""
    out = {}
    for h in ((doc or {}).get("layout") or {}).get("hosts", []):
        stats = Path("/sys/class/net") / h["outer"] / "statistics"
        with contextlib.suppress(OSError, ValueError):
            out[h["name"]] = {"role": h["role"], "received_bytes": int((stats / "tx_bytes").read_text()),
                              "sent_bytes": int((stats / "rx_bytes").read_text())}
    return out


def link_bytes_between(before: dict | None, after: dict) -> dict[str, dict]:
    """What each lab host's link carried between two ``link_bytes`` readings: its role, bytes received and sent."""
    before = before or {}
    return {h: {"role": v["role"], **{k: v[k] - before.get(h, {}).get(k, 0) for k in ("received_bytes", "sent_bytes")}}
            for h, v in after.items()}


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_by_process(doc: dict | None) -> dict[int, tuple[str, float]]:
    """CPU seconds each of the lab's live processes used so far, with its role: the master, the chunk servers,
    the clients (every mfsmount: this host's and the client hosts' own). In the lab they all share this machine's
    cores with the workers: a term of their own in the lab's figures."""
    out: dict[int, tuple[str, float]] = {}
    if not doc:
        return out
    for k, pid in (doc.get("pids") or {}).items():
        role = "master" if k == "master" else "chunkserver" if k.startswith("cs") else "client" if k == "mount" else None
        if role and _running(pid):  # a server killed (a fault test, a crash) is not a process of the lab now
            out[pid] = (role, _cpu(pid))
    for h in client_hosts(doc):
        for pid in network.host_pids(h["name"]):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "mfsmount":
                    out[pid] = ("client", _cpu(pid))
    return out


def cpu_seconds(doc: dict | None) -> dict[str, float]:
    """CPU seconds the lab's live processes used so far, by role (``cpu_by_process``)."""
    out = {"master": 0.0, "chunkserver": 0.0, "client": 0.0}
    for role, cpu in cpu_by_process(doc).values():
        out[role] += cpu
    return out


def cpu_used(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds by role between two ``cpu_by_process`` snapshots: of the processes alive at both, what they
    used between; of those started between, all they used. (Those that ended between are not seen: a client
    mount that ends with its command counts its own, ``fio.timed_phase``.)"""
    out = {"master": 0.0, "chunkserver": 0.0, "client": 0.0}
    for pid, (role, cpu) in after.items():
        was = before[pid][1] if pid in before and before[pid][0] == role else 0.0
        out[role] += cpu - was if cpu >= was else cpu  # less than before: another process has the pid now
    return out


def _running(pid: int | None) -> bool:
    """A process that runs (not ended, not a zombie its parent has yet to reap)."""
    try:
        return pid is not None and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _how_ended(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def lost(doc: dict | None, since: float = 0.0) -> list[dict]:
    """The lab's servers that ended after ``since`` (Unix seconds) and are not running again: their last event."""
    last: dict[str, dict] = {}
    for e in (doc or {}).get("events", []):
        last[e["server"]] = e
    return [e for e in last.values() if e["what"] != "restarted" and e["at"] >= since]


IO_ERRORS = ("[Errno 5]", "[Errno 6]", "[Errno 107]", "[Errno 110]", "Input/output error",
             "No such device or address", "Transport endpoint is not connected")


def describe(e: dict) -> str:
    """A lost server for a person: 'chunk server cs1 (host wl123-cs1, 10.241.0.3) killed by SIGKILL at 06:12:03'."""
    role = {"chunkserver": "chunk server", "master": "metadata master"}.get(e.get("role"), e.get("role") or "")
    where = ", ".join(str(x) for x in (e.get("host"), e.get("address")) if x)
    what = str(e.get("what", "ended"))
    if what.startswith("ended (") and what.endswith(")"):
        what = what[len("ended ("):-1]
    return (f"{role} {e['server']}" + (f" (host {where})" if where else "") + f" {what} at "
            + time.strftime("%H:%M:%S", time.localtime(e["at"])))


def cause(error: str, lost: list[dict], always: bool = False) -> str:
    """An item's error with its cause where a lab server lost during the stage explains it: an I/O error (EIO,
    ENXIO, ...) after a chunk server lost (the chunks of a goal-1 file), any error after the master or a mount
    was lost (every operation needs them, and a library reading the file may say only that it could not).
    ``always``: add the cause to any error."""
    always = always or any(e.get("role") in ("master", "client") for e in lost)
    if not lost or not (always or any(m in error for m in IO_ERRORS)):
        return error
    return f"{error} (the lab lost its {'; '.join(describe(e) for e in lost)})"


def restart_master(root: Path, timeout: float = 30.0) -> dict:
    """Have the keeper of the lab at ``root`` start its master again, if it has ended (a master restarted after a
    crash: it restores its metadata from its change logs). Returns the lab's lab.json once the master runs."""
    state = state_folder(Path(root))
    doc = _read(state)
    if not keeper_alive(doc):
        raise LabError(f"no lab runs at {root}")
    before = doc["pids"].get("master")
    os.kill(doc["keeper"], signal.SIGUSR1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        doc = _read(state) or doc
        pid = doc["pids"].get("master")
        if pid != before or _running(before):  # restarted, or it had not ended
            return doc
        time.sleep(0.1)
    raise LabError(f"the lab's master at {root} was not restarted within {timeout:.0f} s; see {state}/keeper.log")


def keeper_alive(doc: dict | None) -> bool:
    return bool(doc and doc.get("keeper") and process_start(doc["keeper"]) == doc.get("keeper_start"))


@contextlib.contextmanager
def started(profile, root: Path, results_dir: Path, timeout: float = 180.0):
    """The lab of ``profile`` running and mounted at ``root`` for the duration of the block, shared with the other
    runs attached to it; yields its lab.json."""
    check_can_start()
    state = state_folder(root)
    users, me = state / "users", str(os.getpid())
    params = profile.lab.model_dump()
    key = str(state)
    if _attached.get(key):  # this process has it already (a run inside a run): no second registration
        _attached[key] += 1
        try:
            yield _read(state)
        finally:
            _attached[key] -= 1
        return
    with locked(state / "lock"):
        doc = _read(state)
        if not keeper_alive(doc):
            clear_dead(state)
            doc = None
        if doc and doc.get("params") != params:
            if live_users(users):
                raise LabError(f"the lab at {root} runs with other settings for another run; wait for it to finish")
            _stop_keeper(state, doc)
            doc = None
        if doc is None:
            doc = _start_keeper(state, params, root, root.parent / "servers", timeout)
        users.mkdir(parents=True, exist_ok=True)
        (users / me).write_text(process_start(os.getpid()) or "")
    _attached[key] = 1
    try:
        yield doc
    finally:
        del _attached[key]
        with locked(state / "lock"):
            (users / me).unlink(missing_ok=True)
            if not live_users(users):
                _stop_keeper(state, _read(state))


def _start_keeper(state: Path, params: dict, root: Path, servers: Path, timeout: float) -> dict:
    state.mkdir(parents=True, exist_ok=True)
    (state / "params.json").write_text(json.dumps({"params": params, "root": str(root), "servers": str(servers)}))
    (state / "lab.json").unlink(missing_ok=True)
    log = state / "keeper.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "harness.storage.lab", "keep", str(state)], stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    while True:
        doc = _read(state)
        if doc and doc.get("ready"):
            return doc
        if proc.poll() is not None or time.time() > deadline:
            if proc.poll() is None:
                proc.kill()
            raise LabError(f"the MooseFS lab did not start: {log.read_text()[-1500:]}")
        time.sleep(0.2)


def _stop_keeper(state: Path, doc: dict | None) -> None:
    if not keeper_alive(doc):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(doc["keeper"], signal.SIGTERM)
    for _ in range(600):  # its teardown: up to a minute
        if process_start(doc["keeper"]) is None:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(doc["keeper"], signal.SIGKILL)
    clear_dead(state)


# --- on a client host -------------------------------------------------------------------------------------------

def client_hosts(doc: dict) -> list[dict]:
    return [h for h in doc["layout"]["hosts"] if h["role"] == "client"]


def client_prefixes(doc: dict, n: int) -> list[list[str]]:
    """For each of the first ``n`` client hosts, the argv prefix that runs a command there: in its network, with
    its own mount of the lab at the lab's root (the same path as on this machine), which ends with the command."""
    hosts = client_hosts(doc)
    if n > len(hosts):
        raise LabError(f"{n} client hosts asked for, the lab has {len(hosts)} (lab.client_hosts)")
    mount = [sys.executable, "-m", "harness.storage.lab", "client", doc["root"], doc["layout"]["master"],
             *mount_options(doc["params"]), "--"]
    return [network.in_host(h["name"], mount, own_mounts=True) for h in hosts[:n]]


def on_client_hosts(doc: dict, argvs: list[list[str]], timeout: float = 900) -> list[str]:
    """Run argvs[i] on client host i (its network, its own mount of the lab at the same root), all at once; their
    standard outputs. A command that fails raises with its host and output."""
    hosts = client_hosts(doc)
    prefixes = client_prefixes(doc, len(argvs))
    procs = [subprocess.Popen(prefix + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for prefix, argv in zip(prefixes, argvs)]
    outs = []
    for h, p in zip(hosts, procs):
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise LabError(f"on {h['name']}: {' '.join(argvs[0][:4])} ... failed ({p.returncode}): {err.strip()[-1500:]}")
        outs.append(out)
    return outs

def _fuse_mounts() -> list[str]:
    """Mount points of the FUSE file systems in this mount namespace, deepest first."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        f = line.split()
        if len(f) > 2 and (f[2] == "fuse" or f[2].startswith("fuse.")):
            out.append(f[1].replace("\\040", " "))
    return sorted(out, key=lambda m: m.count("/"), reverse=True)


def client_main(argv: list[str]) -> None:
    """``client ROOT MASTER [mfsmount options] -- CMD...``: in a client host's own mount namespace, mount the lab at
    ROOT (over the copy of this host's mount that the namespace inherited), then become CMD; the mount ends with
    it."""
    split = argv.index("--")
    root, master, opts, cmd = argv[0], argv[1], argv[2:split], argv[split + 1:]
    for target in _fuse_mounts():  # inherited copies, in this namespace only: of the lab's own mount on this
        subprocess.run(["umount", "-l", target], capture_output=True)  # machine and of other FUSE mounts (other
                                                                        # labs'), whose servers they would keep
    os.makedirs(root, exist_ok=True)
    # in the foreground, a child of this process and so of CMD once it is exec'd: it ends when CMD ends (a
    # daemonised mfsmount would outlive the command, with its namespace, until the lab stopped)
    m = subprocess.Popen(["mfsmount", root, "-f", "-H", master, *opts, "-o", "auto_unmount"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=dies_with_parent(signal.SIGTERM))
    deadline = time.time() + 30
    while mount_state(Path(root)) != "alive":
        if m.poll() is not None or time.time() > deadline:
            m.kill()
            sys.exit(f"mfsmount {root} on {os.uname().nodename} failed: {(m.communicate()[1] or '').strip()}")
        time.sleep(0.05)
    os.execvp(cmd[0], cmd)


def keep_main(state: Path) -> None:
    keeper = Keeper(state)

    def stop(signum, frame):
        keeper.stopping = True

    def restart(signum, frame):
        keeper.restart_asked = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, restart)
    try:
        keeper.start()
        keeper.watch()
    except Exception as e:  # noqa: BLE001 - said in the keeper's log, which the starter shows
        print(f"lab: {type(e).__name__}: {e}", flush=True)
        raise
    finally:
        keeper.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["keep"]:
        keep_main(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["client"]:
        client_main(sys.argv[2:])
    elif sys.argv[1:2] == ["guard"]:
        guard_main(sys.argv[2:])
    else:
        sys.exit("usage: python -m harness.storage.lab keep STATE | client ROOT MASTER [OPTIONS] -- CMD... | "
                 "guard ROOT MOUNT_PID DEVICE FD")
