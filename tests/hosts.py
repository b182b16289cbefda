"""Distinct hosts on one machine, for tests: network namespaces joined by a bridge on a private range of their own.

Each host is a network namespace with loopback and one interface, ``wsi0``, on the bridge; the bridge itself (in
the root namespace, where the test driver runs) holds the range's first address. Nothing leaves the machine: the
bridge has no uplink and the namespaces no default route. Processes started on a host run in its namespace and a
UTS namespace of their own whose host name is the host's, so that what they report (os.uname) tells the hosts
apart; the host names resolve on the hosts as DNS would resolve them on real machines, through the hosts file
that ``ip netns exec`` mounts over /etc/hosts in the namespace (/etc/netns/NAME/hosts). Everything is torn down
afterwards, also on failure: the hosts' processes, the namespaces and their hosts files, the bridge.

Needs root and ``ip netns``; ``skip_reason()`` says why not where they are missing.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from clusters import free_port, wait_for

from harness.network import free_range  # the lab's: the first private /24 this machine does not use
from harness.procs import stop_groups

IFACE = "wsi0"  # the hosts' interface on the bridge: the same name on every host, as network.interface names it


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def skip_reason() -> str | None:
    """Why namespaced hosts cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "distinct hosts need root (network namespaces and a bridge)"
    if not shutil.which("ip") or not shutil.which("unshare"):
        return "distinct hosts need the ip and unshare commands (iproute2, util-linux)"
    probe = f"wsiprobe{os.getpid()}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns is unavailable here: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str        # its host name (and its namespace's)
    address: str     # on the bridge
    procs: list[subprocess.Popen] = field(default_factory=list)

    def command(self, argv: list[str]) -> list[str]:
        """argv run on this host: in its network namespace, in a UTS namespace named after it."""
        return ["ip", "netns", "exec", self.name, "unshare", "--uts", "--", "sh", "-c",
                'hostname "$0" && exec "$@"', self.name, *argv]

    def start(self, argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        f = open(log, "w")
        p = subprocess.Popen(self.command(argv), stdout=f, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        f.close()
        self.procs.append(p)
        return p


@dataclass
class Bridge:
    network: ipaddress.IPv4Network
    address: str     # the driver's, in the root namespace
    hosts: list[Host]
    name: str


@contextlib.contextmanager
def bridged_hosts(n: int):
    """n hosts on a private bridge; yields the Bridge; removes everything afterwards."""
    tag = f"{os.getpid() % 100000}"
    net = free_range()
    addrs = [str(a) for a in net.hosts()]
    bridge = Bridge(net, addrs[0], [Host(f"wsib{tag}h{i + 1}", addrs[i + 1]) for i in range(n)], f"wsibr{tag}")
    made_bridge, made_ns = False, []
    etc = Path("/etc/netns")
    made_etc = not etc.exists()
    names = "".join(f"{h.address} {h.name}\n" for h in bridge.hosts)
    try:
        _ip("link", "add", bridge.name, "type", "bridge")
        made_bridge = True
        _ip("addr", "add", f"{bridge.address}/{net.prefixlen}", "dev", bridge.name)
        _ip("link", "set", bridge.name, "up")
        for i, h in enumerate(bridge.hosts):
            _ip("netns", "add", h.name)
            made_ns.append(h.name)
            (etc / h.name).mkdir(parents=True, exist_ok=True)
            (etc / h.name / "hosts").write_text(f"127.0.0.1 localhost\n{names}")
            outer = f"wsiv{tag}x{i + 1}"
            _ip("link", "add", outer, "type", "veth", "peer", "name", IFACE, "netns", h.name)
            _ip("link", "set", outer, "master", bridge.name)
            _ip("link", "set", outer, "up")
            _ip("-n", h.name, "addr", "add", f"{h.address}/{net.prefixlen}", "dev", IFACE)
            _ip("-n", h.name, "link", "set", IFACE, "up")
            _ip("-n", h.name, "link", "set", "lo", "up")
        yield bridge
    finally:
        for h in bridge.hosts:
            _stop(h)
        for ns in made_ns:
            _ip("netns", "del", ns, check=False)  # its veth pair goes with it
            shutil.rmtree(etc / ns, ignore_errors=True)
        if made_etc:
            with contextlib.suppress(OSError):
                etc.rmdir()
        if made_bridge:
            _ip("link", "del", bridge.name, check=False)


def _stop(h: Host) -> None:
    """The processes this test started on the host, then any left in its namespace (executors, daemons)."""
    stop_groups(h.procs)
    left = _ip("netns", "pids", h.name, check=False).stdout.split()
    for pid in map(int, left):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def spark_on_hosts(bridge: Bridge, tmp: Path, cores: int = 1):
    """A Spark standalone master on the bridge (root namespace) and one worker on each host; yields the master URL."""
    import json
    import sys
    import urllib.request

    import pyspark

    home = Path(pyspark.__file__).parent
    spark_class = str(home / "bin" / "spark-class")
    env = dict(os.environ, SPARK_HOME=str(home), PYSPARK_PYTHON=sys.executable, SPARK_LOG_DIR=str(tmp / "logs"))
    port, ui = free_port(bridge.address), free_port(bridge.address)
    url = f"spark://{bridge.address}:{port}"
    logs = [tmp / "spark-master.log"]
    with open(logs[0], "w") as f:
        master = subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", bridge.address,
                                   "--port", str(port), "--webui-port", str(ui)], stdout=f, stderr=subprocess.STDOUT,
                                  env=dict(env, SPARK_LOCAL_IP=bridge.address), start_new_session=True)
    try:
        for h in bridge.hosts:
            logs.append(tmp / f"spark-worker-{h.name}.log")
            h.start([spark_class, "org.apache.spark.deploy.worker.Worker", "--host", h.address, "--webui-port", "0",
                     "--cores", str(cores), "--memory", "1g", "--work-dir", str(tmp / f"work-{h.name}"), url],
                    logs[-1], env=dict(env, SPARK_LOCAL_IP=h.address))

        def alive():
            doc = json.load(urllib.request.urlopen(f"http://{bridge.address}:{ui}/json/", timeout=2))
            return sum(w["state"] == "ALIVE" for w in doc["workers"]) == len(bridge.hosts)
        wait_for(alive, 120, "Spark standalone cluster on the bridge", logs)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(master.pid, signal.SIGTERM)
        try:
            master.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(master.pid, signal.SIGKILL)
            master.wait()


@contextlib.contextmanager
def dask_on_hosts(bridge: Bridge, tmp: Path, pythonpath: str):
    """A Dask scheduler on the bridge (root namespace) and one worker (one process, one thread) on each host;
    yields the scheduler address."""
    import sys

    from dask.distributed import Client

    dask = str(Path(sys.executable).parent / "dask")
    port = free_port(bridge.address)
    address = f"tcp://{bridge.address}:{port}"
    logs = [tmp / "dask-scheduler.log"]
    with open(logs[0], "w") as f:
        # (its --no-dashboard still opens one on every interface: the dashboard stays on the bridge instead)
        scheduler = subprocess.Popen([dask, "scheduler", "--host", bridge.address, "--port", str(port),
                                      "--dashboard-address", f"{bridge.address}:0"], stdout=f, stderr=subprocess.STDOUT,
                                     start_new_session=True)
    try:
        env = dict(os.environ, PYTHONPATH=pythonpath)
        for h in bridge.hosts:
            logs.append(tmp / f"dask-worker-{h.name}.log")
            h.start([dask, "worker", address, "--host", h.address, "--name", h.name, "--nworkers", "1",
                     "--nthreads", "1", "--dashboard-address", f"{h.address}:0",
                     "--local-directory", str(tmp / f"dask-{h.name}")],
                    logs[-1], env=env)

        def ready():
            with Client(address, timeout=5) as c:
                return len(c.scheduler_info(n_workers=-1)["workers"]) == len(bridge.hosts)
        wait_for(ready, 90, "Dask cluster on the bridge", logs)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(scheduler.pid, signal.SIGTERM)
        try:
            scheduler.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(scheduler.pid, signal.SIGKILL)
            scheduler.wait()
