"""The listening-socket watch (netcheck.Watch) that the engine, distributed and multi-host tests rely on: its
negative controls. A watch that saw nothing, or excused everything, would let those tests pass whatever the runs
listened on."""
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

import netcheck
from netcheck import Watch

LISTEN = """
import socket, sys, time
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET,
                  socket.SOCK_DGRAM if sys.argv[2] == "udp" else socket.SOCK_STREAM)
s.bind((sys.argv[1], 0))
if sys.argv[2] != "udp":
    s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


def _listener(addr: str, kind: str = "tcp", prefix: list[str] = ()) -> tuple[subprocess.Popen, int]:
    """A child process listening on (addr, a free port): the process and the port."""
    p = subprocess.Popen([*prefix, sys.executable, "-c", LISTEN, addr, kind], stdout=subprocess.PIPE, text=True)
    return p, int(p.stdout.readline())


def _watched(listeners) -> tuple[Watch, list[int]]:
    """A watch (sampling every 0.05 s) over the children ``listeners`` start, kept up until it has sampled them."""
    with Watch(interval=0.05) as watch:
        children = [_listener(*a) for a in listeners]
        time.sleep(0.3)
        for p, _ in children:  # the listener may be a grandchild (behind unshare)
            for c in psutil.Process(p.pid).children(recursive=True) + [psutil.Process(p.pid)]:
                c.kill()
            p.wait()
    return watch, [port for _, port in children]


def test_the_tests_run_in_a_namespace_with_more_than_loopback():
    """In a loopback-only namespace every socket is unreachable from outside, and the watches below excuse it:
    the engine tests' 'nothing listens beyond loopback' would then prove nothing."""
    assert netcheck.interfaces(os.getpid()) - {"lo"}, netcheck.interfaces(os.getpid())


def test_a_listener_on_every_address_is_reported():
    """The negative control: a child of the test listening on 0.0.0.0 (TCP and UDP), and on :: where IPv6 is
    on, is exposed; one on 127.0.0.1 is seen and not exposed."""
    cases = [("0.0.0.0", "tcp"), ("0.0.0.0", "udp"), ("127.0.0.1", "tcp")] + ([("::", "tcp")] if socket.has_ipv6
                                                                               and os.path.exists("/proc/net/if_inet6") else [])
    watch, ports = _watched(cases)
    exposed = {(addr, port) for (_, _, addr, port) in watch.exposed}
    seen = {(addr, port) for (_, _, addr, port) in watch.seen}
    for (addr, kind), port in zip(cases, ports):
        assert (addr, port) in seen, (addr, kind, watch.seen)
        assert ((addr, port) in exposed) == (addr != "127.0.0.1"), (addr, kind, watch.exposed)
    assert not watch.isolated


def test_a_listener_in_a_loopback_only_namespace_is_isolated_not_exposed():
    """The ranks of distributed training bind 0.0.0.0 inside a private namespace (harness.network): the watch
    excuses them for that reason, and says so (``isolated``), so tests can tell it from a loopback binding."""
    from harness.errors import RunError
    from harness.network import private_network

    try:
        prefix = private_network([])  # the namespace's launcher, before the command
    except RunError as e:
        pytest.skip(str(e))
    watch, (port,) = _watched([("0.0.0.0", "tcp", prefix)])
    assert [k for k in watch.isolated if k[2:] == ("0.0.0.0", port)], (watch.seen, watch.isolated)
    assert not watch.exposed, watch.exposed
