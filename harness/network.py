"""Network helpers: a free port, an interface's address, and commands run in a private network namespace.

Ranks that talk to each other open services: TensorFlow's gRPC server (MultiWorkerMirroredStrategy) binds 0.0.0.0
whatever TF_CONFIG says, and horovodrun opens a rendezvous server on every interface. So by default those ranks run
in a network namespace of their own whose only interface is loopback (``private_network``): what they open is
reachable by nothing but each other. A workload that runs across hosts names the interface instead
(network.interface), and the services are then opened on it, as the user asked.

``python -m harness.network --loopback-up -- CMD...`` brings loopback up in a fresh namespace, then runs CMD;
``--hostname NAME -- CMD...`` names the (fresh UTS namespace's) host, then runs CMD. Namespace hosts on a private
bridge (below) let the storage lab run servers and clients on one machine.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys

from pathlib import Path

from .errors import RunError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def interface_address(name: str) -> str:
    """The IPv4 address of a named network interface."""
    import psutil

    for a in psutil.net_if_addrs().get(name, []):
        if a.family == socket.AF_INET:
            return a.address
    raise RunError(f"network.interface {name!r}: no such interface with an IPv4 address here "
                   f"(known: {', '.join(psutil.net_if_addrs())})")


def private_network(cmd: list[str]) -> list[str]:
    """``cmd`` in a new network namespace with loopback only (root, or user namespaces, needed). ``cmd`` is
    killed when unshare dies (--kill-child): start unshare with ``procs.dies_with_parent`` and the namespace ends
    with the run."""
    unshare = shutil.which("unshare")
    if unshare and os.geteuid() == 0:
        base = [unshare, "--net", "--fork", "--kill-child"]
    elif unshare and subprocess.run([unshare, "--net", "--map-root-user", "true"], capture_output=True).returncode == 0:
        base = [unshare, "--net", "--map-root-user", "--fork", "--kill-child"]
    else:
        raise RunError("distributed training opens services that bind every interface (TensorFlow's gRPC server, "
                       "horovodrun's rendezvous); wsibench runs them in a private network namespace, which needs "
                       "root or user namespaces here (unshare). Run as root, or set network.interface = \"NAME\" "
                       "in the workload to open them on that interface (multi-host runs).")
    return [*base, "--", sys.executable, "-m", "harness.network", "--loopback-up", "--", *cmd]


def _loopback_up() -> None:
    """Bring lo up (SIOCGIFFLAGS / SIOCSIFFLAGS), in a fresh network namespace where it starts down."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))  # IFF_UP



# --- hosts on one machine: network namespaces on a private bridge -------------------------------------------
#
# A namespace host has loopback and one interface, ``wsi0``, on a bridge in the root namespace, which holds the
# range's first address. Nothing leaves the machine: the bridge has no uplink and the namespaces no default route.
# The storage lab (storage/lab.py) builds its servers and client hosts this way.

HOST_IFACE = "wsi0"
# A shaped link's queue, as the time its backlog may wait (tc tbf "latency"): a switch port's buffer is a few
# milliseconds deep; a deeper one (tbf's examples use 400 ms) holds every small request behind bulk transfers.
TBF_LATENCY = "20ms"
RANGES = [f"10.{b}.{c}.0/24" for b in (241, 242, 243) for c in (0, 17, 33, 49, 65, 81)]  # private, tried in order


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RunError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def free_range(exclude=()):
    """The first candidate /24 that overlaps no route and no address of this machine (nor ``exclude``)."""
    import ipaddress

    used = [ipaddress.ip_network(x) for x in exclude]
    for line in ip("-4", "route", "show", "table", "all").stdout.splitlines() + \
            ip("-4", "-o", "addr", "show").stdout.split():
        for word in line.split():
            try:
                used.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
    for r in map(ipaddress.ip_network, RANGES):
        if not any(r.overlaps(u) for u in used if u.prefixlen > 0):
            return r
    raise RunError(f"every candidate range ({', '.join(RANGES)}) is in use on this machine")


def add_bridge(name: str, address: str, prefixlen: int) -> None:
    ip("link", "add", name, "type", "bridge")
    ip("addr", "add", f"{address}/{prefixlen}", "dev", name)
    ip("link", "set", name, "up")


def add_host(bridge: str, name: str, address: str, prefixlen: int, outer: str, hosts_file: str = "") -> None:
    """Namespace ``name`` with ``wsi0`` at ``address`` on ``bridge`` (through the veth ``outer``); ``hosts_file``
    becomes its /etc/hosts under ``ip netns exec``."""
    ip("netns", "add", name)
    if hosts_file:
        etc = f"/etc/netns/{name}"
        os.makedirs(etc, exist_ok=True)
        with open(f"{etc}/hosts", "w") as f:
            f.write(hosts_file)
    ip("link", "add", outer, "type", "veth", "peer", "name", HOST_IFACE, "netns", name)
    ip("link", "set", outer, "master", bridge)
    ip("link", "set", outer, "up")
    ip("-n", name, "addr", "add", f"{address}/{prefixlen}", "dev", HOST_IFACE)
    ip("-n", name, "link", "set", HOST_IFACE, "up")
    ip("-n", name, "link", "set", "lo", "up")


def shape(host: str, outer: str, mbit: float) -> None:
    """Both directions of a host's link at ``mbit`` Mbit/s (tc tbf: the outer veth's egress carries what the host
    receives, its wsi0's egress what it sends). This kernel has no netem: no delay is added."""
    burst = f"{max(32, int(mbit * 1000 / 8 / 250))}kb"  # about 4 ms at the rate, at least 32 KiB
    for prefix in ([], ["-n", host]):
        dev = outer if not prefix else HOST_IFACE
        subprocess.run(["tc", *prefix, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{mbit:g}mbit",
                        "burst", burst, "latency", TBF_LATENCY], check=True, capture_output=True)


def host_pids(host: str) -> list[int]:
    return [int(p) for p in ip("netns", "pids", host, check=False).stdout.split()]


def remove_host(host: str, outer: str) -> None:
    """Kill what runs in the namespace, then remove it, its veth pair and its hosts file (each step best effort)."""
    import shutil as _shutil
    import signal

    for pid in host_pids(host):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ip("netns", "del", host, check=False)
    ip("link", "del", outer, check=False)
    _shutil.rmtree(f"/etc/netns/{host}", ignore_errors=True)


def remove_bridge(name: str) -> None:
    ip("link", "del", name, check=False)


def in_host(host: str, argv: list[str], own_mounts: bool = False) -> list[str]:
    """``argv`` run on a namespace host: in its network namespace and a UTS namespace of its own whose host name is
    the host's (set by ``python -m harness.network --hostname``, no shell); with ``own_mounts``, also in a mount
    namespace of its own (slave of the root's), so that what its processes mount only they see."""
    ns = ["--uts"] + (["--mount", "--propagation", "slave"] if own_mounts else [])
    return ["ip", "netns", "exec", host, "unshare", *ns, "--", sys.executable, "-m", "harness.network",
            "--hostname", host, "--", *argv]

if __name__ == "__main__":
    if sys.argv[1:2] == ["--loopback-up"] and sys.argv[2:3] == ["--"]:
        _loopback_up()
        os.execvp(sys.argv[3], sys.argv[3:])
    if sys.argv[1:2] == ["--hostname"] and sys.argv[3:4] == ["--"]:
        socket.sethostname(sys.argv[2])
        os.execvp(sys.argv[4], sys.argv[4:])
    sys.exit("usage: python -m harness.network --loopback-up -- CMD... | --hostname NAME -- CMD...")


@contextlib.contextmanager
def unix_address(path: Path):
    """A Unix socket address for ``path``; long paths (over the 107-byte limit) go through /proc/self/fd."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
