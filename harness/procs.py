"""Nothing the harness starts outlives the run that started it.

- ``dies_with_parent()``: a ``preexec_fn`` for the processes the harness launches itself (training ranks, their
  launcher): the child is killed when its parent dies, SIGKILL included (Linux's parent-death signal).
- ``stop_tree(pid)``: stop a process and everything below it (frozen first, so that none starts another, then
  killed) and wait until they have ended. An interrupted run does this before it writes its record and releases
  the workload's lock, so nothing it started writes after the record.
- ``mark_driver()`` and ``watch_driver()``: for workers an engine starts in ways the harness does not control
  (multiprocessing's pool, Dask's embedded workers, Spark's JVM and its Python workers). The driver names itself in
  ``WSIBENCH_DRIVER`` (pid and start time) before its engine starts them; a worker's first item starts a watchdog
  thread which, once the driver is gone, kills the processes between the worker and the driver (Spark's JVM and
  its Python daemon) and then the worker itself. Workers of a cluster the harness did not start never see the
  variable, and are left alone.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from .fsutil import process_start

DRIVER_ENV = "WSIBENCH_DRIVER"
PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.2  # how often a worker looks at its driver


def _prctl(option: int, value: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl failed")


def dies_with_parent(sig: int = signal.SIGKILL):
    """A ``preexec_fn``: the child gets ``sig`` when the process that starts it (this one) dies. (The kernel sends
    it when the starting *thread* ends: start such children from a thread that outlives them.)"""
    parent = os.getpid()

    def preexec():
        _prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)
    return preexec


def stop_groups(popens, timeout: float = 15.0) -> None:
    """Each of ``popens`` (leaders of process groups of their own) and its group stopped together: SIGTERM to every
    group at once, then each waited for until a shared deadline, and SIGKILLed past it."""
    import subprocess

    live = [p for p in popens if p.poll() is None]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.time() + timeout
    for p in live:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _tree(pid: int) -> list[int]:
    """pid and its descendants, parents before children (from /proc: no process is frozen by reading it)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid] + [c.pid for c in root.children(recursive=True)]
    except psutil.Error:
        return []


def stop_tree(pid: int, timeout: float = 10.0, group: bool = False) -> list[int]:
    """SIGKILL ``pid`` and all its descendants (and, with ``group``, every member of its process group), and wait
    up to ``timeout`` s until each has ended (a zombie has ended: it runs no code and holds no namespace). The
    processes are stopped (SIGSTOP) until no new one appears, then killed, so none escapes by forking. Returns the
    pids that were stopped."""
    starts: dict[int, str] = {}
    for _ in range(100):  # until the frozen tree has no new member
        new = [p for p in _tree(pid) if p not in starts]
        if group:
            new += [p for p in _group(pid) if p not in starts and p not in new]
        if not new:
            break
        for p in new:
            start = process_start(p)
            if start is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGSTOP)
                    starts[p] = start
    for p in starts:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(process_start(p) == s for p, s in starts.items()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return list(starts)


def _group(pgid: int) -> list[int]:
    """The live members of a process group (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


@contextlib.contextmanager
def signals_deferred():
    """Hold Ctrl-C and SIGTERM off while the block runs (the clean-up of a run already stopping: a second signal
    must not cut it short); they are dropped, as the run is ending anyway. Only the main thread can do this; in
    another the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived = []
    old = {s: signal.signal(s, lambda n, f: arrived.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def mark_driver() -> None:
    """Name this process as the driver of the workers its engines start from now on (they inherit the variable)."""
    os.environ[DRIVER_ENV] = f"{os.getpid()}:{process_start(os.getpid()) or ''}"


_watching: int | None = None  # the pid of the process whose watchdog runs (a forked child has none)


def watch_driver() -> None:
    """In a worker of an engine this driver started: once, start a thread that kills the processes between this
    worker and the driver, and then this worker, as soon as the driver is gone. No-op in the driver itself, and
    where no driver is named (the worker of a cluster the harness did not start)."""
    global _watching
    me = os.getpid()
    if _watching == me:
        return
    _watching = me
    token = os.environ.get(DRIVER_ENV, "")
    pid, _, start = token.partition(":")
    if not pid.isdigit() or int(pid) == me or not start:
        return
    driver = int(pid)
    between = _ancestors_below(driver)
    if between is None:  # the driver is not an ancestor (it has already gone, or this is no worker of it)
        if process_start(driver) != start:
            os.kill(me, signal.SIGKILL)
        return
    threading.Thread(target=_watch, args=(driver, start, between), daemon=True, name="wsibench-driver-watch").start()


def _ancestors_below(driver: int) -> list[tuple[int, str]] | None:
    """The processes between this one and ``driver`` (parent first), with their start times; None if the driver
    is not among this process's ancestors."""
    chain, pid = [], os.getppid()
    while pid > 1:
        if pid == driver:
            return chain
        chain.append((pid, process_start(pid)))
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


def _watch(driver: int, start: str, between: list[tuple[int, str]]) -> None:
    while process_start(driver) == start:
        time.sleep(WATCH_INTERVAL_S)
    for pid, s in between:  # the JVM and the daemon between a Spark worker and its driver: nothing restarts us
        if s is not None and process_start(pid) == s:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
