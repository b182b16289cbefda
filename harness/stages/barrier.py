"""A barrier across emulated accelerators, one round per step, as DLIO (MLPerf Storage's engine) does with
``comm.barrier()`` after every step: the slowest rank sets every step's pace, so ranks that fall behind under
contention cannot hide it behind the others' AU.

The driver serves it (``Server``, a thread): on a Unix socket in a private temporary folder for ranks on this host
(nothing listens on a network), or on TCP at a named interface's address for ranks on a cluster's hosts (where the workload
named the interface). Each rank connects once (``Client``) and, per round, sends one tag byte and waits for the
release; the server releases every rank once all ``world`` have arrived, after calling the driver's hook for that
tag (``hooks[tag](round)``): that is how the driver snapshots the storage's counters, or drops the page cache, at
the instant the ranks are all stopped at the same point (the measured window's start and end, an epoch's edges).

A rank that ends or dies breaks the barrier: the server closes every connection, so the others stop waiting and
fail instead of hanging.

Tags: ``B`` start (after start-up), ``M`` after step 0 (the measured window starts), ``s`` a step, ``Z`` after the
last step (the window ends); MLPerf mode: ``E`` before an epoch (caches dropped here), ``X`` after its last step.
"""
from __future__ import annotations

import contextlib
import socket
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path

from .. import network
from ..errors import RunError


class Server:
    def __init__(self, world: int, host: str | None = None, hooks: dict | None = None):
        self.world, self.hooks = world, dict(hooks or {})
        self.rounds: list[tuple[str, float]] = []  # (tag, time all arrived)
        self.error: str | None = None
        self._closing = False  # close() under way: what its closing of the sockets breaks is no barrier error
        self._conns: list[socket.socket] = []
        self._dir: Path | None = None
        if host:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.bind((host, 0))
            self.address = f"tcp:{host}:{self._sock.getsockname()[1]}"
        else:  # in a private temporary folder: the probe's own folder may be on a storage that holds no sockets
            self._dir = Path(tempfile.mkdtemp(prefix="wsibench-barrier-"))  # 0700
            path = self._dir / "barrier.sock"
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with network.unix_address(path) as addr:
                self._sock.bind(addr)
            self.address = f"unix:{path}"
        self._sock.listen(max(8, world))
        self._thread = threading.Thread(target=self._run, name="step-barrier", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conns: dict[int, socket.socket] = {}
            while len(conns) < self.world:
                c, _ = self._sock.accept()
                if c.family == socket.AF_INET:
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                rank = struct.unpack("!I", _recv_exact(c, 4))[0]
                conns[rank] = c
                self._conns.append(c)
            order = [conns[r] for r in sorted(conns)]
            n = 0
            while True:
                tags = set()
                for c in order:
                    b = c.recv(1)
                    if not b:  # a rank ended (or died): nobody may wait for it any more
                        return
                    tags.add(b.decode())
                t = time.time()
                if len(tags) != 1:
                    self.error = f"round {n}: ranks at different points {sorted(tags)}"
                    return
                tag = tags.pop()
                self.rounds.append((tag, t))
                hook = self.hooks.get(tag)
                if hook is not None:
                    hook(n)
                for c in order:
                    c.sendall(b"g")
                n += 1
        except Exception as e:  # noqa: BLE001 - recorded; closing the connections frees the ranks
            if not self._closing:
                self.error = self.error or f"{type(e).__name__}: {e}"
        finally:
            self._close_all()

    def _close_all(self) -> None:
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.rounds if t == tag)

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.close()
        self._close_all()
        self._thread.join(5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
        return False


class Client:
    def __init__(self, address: str, rank: int, timeout: float = 600.0):
        kind, _, where = address.partition(":")
        if kind == "tcp":
            host, port = where.rsplit(":", 1)
            self._sock = socket.create_connection((host, int(port)), timeout=timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.settimeout(timeout)
            with network.unix_address(Path(where)) as addr:
                self._sock.connect(addr)
        self._sock.sendall(struct.pack("!I", rank))
        self.waited = 0.0  # seconds spent in the barrier, in all

    def wait(self, tag: str) -> float:
        """Arrive with ``tag`` and wait for every rank; returns the seconds waited."""
        t = time.perf_counter()
        try:
            self._sock.sendall(tag.encode())
            ok = self._sock.recv(1)
        except OSError as e:
            raise RunError(f"step barrier: {e} (another rank failed?)") from None
        if not ok:
            raise RunError("step barrier broken: another rank ended or failed")
        dt = time.perf_counter() - t
        self.waited += dt
        return dt

    def close(self) -> None:
        self._sock.close()


def _recv_exact(c: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = c.recv(n - len(data))
        if not chunk:
            raise ConnectionError("a rank closed its barrier connection while saying who it is")
        data += chunk
    return data
