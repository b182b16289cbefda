"""One item that kills its worker fails alone.

A native crash (an abort in a decoder, a segmentation fault, the kernel's out-of-memory killer) takes the worker
process with it, and with it whatever the engine was running there. So every item leaves an in-flight marker
(in a folder on the shared storage, so any worker on any host sees it) while it runs. When an engine runs an item
again after its worker died (a rebuilt process pool, Dask's rescheduling, Spark's next task attempt), the item
finds its marker and runs this time in a child process of its own: if the child dies too, the item's error says
how (signal or exit code) with the child's last words on stderr, and the worker, and every other item, carry on.

Run a child: ``python -m harness.engines.isolate IN OUT`` (IN: the pickled function and item; OUT: the result).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

from ..procs import watch_driver
from .base import WorkerCrashed, worker_id


def _item_name(item) -> str:
    if isinstance(item, dict):
        return str(item.get("slide") or item.get("shard") or item.get("name") or item)
    return str(item)


def guarded(fn, folder: str, item):
    """fn(item), leaving an in-flight marker while it runs; an item whose marker is already there runs alone."""
    name = _item_name(item)
    base = Path(folder) / hashlib.sha1(name.encode()).hexdigest()[:16]
    marker = base.with_suffix(".inflight")
    if marker.exists():
        return isolated(fn, item, base, marker.read_text())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{worker_id()} {name}")
    try:
        return fn(item)
    finally:  # a Python exception is no crash: the marker goes
        marker.unlink(missing_ok=True)


def how_it_died(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def last_words(path: Path, lines: int = 4) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    stack = ("File ", "Current thread", "Thread 0x", "Extension modules", "<no Python frame>")
    kept = [l.strip()[:300] for l in text.splitlines() if l.strip() and not l.strip().startswith(stack)]
    return " | ".join(kept[-lines:])  # what the process said, not the Python stack faulthandler adds


def isolated(fn, item, base: Path, previous: str):
    """Run fn(item) in a child process; a child that dies raises WorkerCrashed naming the item and how it died."""
    inp, out, err = (base.with_suffix(s) for s in (".in", ".out", ".stderr"))
    inp.write_bytes(pickle.dumps((fn, item)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # as the worker imports
    try:
        with open(err, "wb") as e:
            r = subprocess.run([sys.executable, "-m", "harness.engines.isolate", str(inp), str(out)],
                               stdout=subprocess.DEVNULL, stderr=e, env=env)
        if out.is_file():
            status, value = pickle.loads(out.read_bytes())
            if status == "error":
                raise value  # an ordinary Python error of the item
            return value
        path = item.get("path") if isinstance(item, dict) else None
        raise WorkerCrashed(f"{_item_name(item)}{f' ({path})' if path else ''}: the worker process running it died "
                            f"(worker {previous.split()[0]}); run again alone, it died again: {how_it_died(r.returncode)}"
                            f"; last words on stderr: {last_words(err) or '(none)'}")
    finally:
        for f in (inp, out, err, base.with_suffix(".inflight")):
            f.unlink(missing_ok=True)


def main(argv=None) -> None:
    import faulthandler

    faulthandler.enable()  # a fatal signal writes its name and the Python stack to stderr: the last words
    watch_driver()  # it dies with the run, as its worker does
    inp, out = (argv or sys.argv[1:])[:2]
    fn, item = pickle.loads(Path(inp).read_bytes())
    try:
        result = ("ok", fn(item))
    except Exception as e:  # noqa: BLE001 - handed back to the worker, which records it
        result = ("error", e)
    tmp = Path(out).with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(result))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
