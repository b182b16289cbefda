"""What a run's processes listen on, read from /proc: every listening socket must be bound to loopback, or live in
a network namespace whose only interface is loopback (psutil sees only this namespace's sockets, so /proc/<pid>/net
of each process is read: it shows that process's own namespace). Tests of several hosts allow a private range of
their own: a socket bound to an address in it, or to every address of a namespace whose addresses are all in it or
loopback, is allowed too."""
from __future__ import annotations

import ipaddress
import os
import threading
from pathlib import Path

import psutil

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _addr(hexaddr: str) -> tuple[str, int]:
    ip, port = hexaddr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        addr = ipaddress.IPv4Address(raw[::-1])
    else:  # four little-endian 32-bit words
        addr = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if addr.ipv4_mapped:
            return f"::ffff:{addr.ipv4_mapped}", int(port, 16)
    return str(addr), int(port, 16)


def listening(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of the sockets pid listens on (TCP LISTEN, bound UDP)."""
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
    except OSError:
        return []
    out = []
    for proto, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == state and f[9] in inodes:
                addr, port = _addr(f[1])
                if port:
                    out.append((proto, addr, port))
    return out


def local_addresses(pid: int) -> set[str]:
    """The addresses of pid's network namespace: IPv4 from its routing trie's local entries, IPv6 from if_inet6."""
    out = set()
    try:
        lines = Path(f"/proc/{pid}/net/fib_trie").read_text().splitlines()
        out |= {prev.split()[-1] for prev, line in zip(lines, lines[1:]) if line.strip() == "/32 host LOCAL"}
        for line in Path(f"/proc/{pid}/net/if_inet6").read_text().splitlines():
            out.add(str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))))
    except OSError:
        pass
    return out


def interfaces(pid: int) -> set[str]:
    try:
        return {l.split(":")[0].strip() for l in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]}
    except OSError:
        return set()


class Watch:
    """Samples the listening sockets of this process's whole tree (and of ``extra`` pids and their trees)."""

    def __init__(self, extra_pids=(), interval: float = 0.2, allowed=()):
        self.extra, self.interval = list(extra_pids), interval
        self.allowed = [ipaddress.ip_network(n) for n in allowed]  # private ranges a test made for itself
        self.seen: dict[tuple, str] = {}  # (pid, proto, addr, port) -> command line
        self.exposed: dict[tuple, str] = {}
        # bound beyond loopback, but in a network namespace whose only interface is loopback: safe for that reason
        # alone (a test whose processes should be safe by their own binding asserts there are none)
        self.isolated: dict[tuple, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self):
        roots = [psutil.Process()] + [psutil.Process(p) for p in self.extra if psutil.pid_exists(p)]
        procs = set()
        for r in roots:
            procs.add(r)
            try:
                procs.update(r.children(recursive=True))
            except psutil.Error:
                pass
        return procs

    def sample(self):
        for p in self._tree():
            # The namespace first, then the sockets: a process that exits in between has no sockets left to judge
            # (read the other way round, a rank that exited just after listing looked like one with no namespace).
            ifaces, addresses = interfaces(p.pid), local_addresses(p.pid)
            for proto, addr, port in listening(p.pid):
                try:
                    cmd = " ".join(p.cmdline())[:200]
                except psutil.Error:
                    cmd = "?"
                key = (p.pid, proto, addr, port)
                self.seen[key] = cmd
                if addr in LOOPBACK:
                    continue
                if ifaces == {"lo"}:
                    self.isolated[key] = cmd
                elif not self._private(addresses, addr):
                    self.exposed[key] = cmd

    def _private(self, addresses: set[str], addr: str) -> bool:
        """Bound inside an allowed range, or to every address of a namespace holding only such and loopback."""
        def inside(a: str) -> bool:  # IPv6 link-local: on the namespace's own links only (the bridge)
            ip = ipaddress.ip_address(a.removeprefix("::ffff:"))
            return ip.is_loopback or any(ip in n for n in self.allowed) or (ip.version == 6 and ip.is_link_local)
        if not self.allowed:
            return False
        if addr in ("0.0.0.0", "::"):
            return bool(addresses) and all(inside(a) for a in addresses)
        return inside(addr)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
