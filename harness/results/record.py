"""The run record: summary.json plus one Parquet table per stage, written atomically.

summary.json's keys, their units and when they are null are documented in docs/run-record.schema.json
(rendered as docs/run-record.md); a record carries the ``schema_version`` of that layout.

``recording`` owns a run's record from its first line to its last: it names the run, makes its folder, writes a
first record at once (status ``running``, with the process that runs it, so that a run killed outright is seen
as incomplete), and writes the record again on every way out, with the status the run reached: ``failed`` with
the error when an exception ends it, ``interrupted`` on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..cputime import cpu_group
from ..errors import describe
from ..fsutil import atomic_path, process_start, write_json
from .schema import RecordError

SCHEMA_VERSION = 2  # docs/run-record.schema.json; version 1: the same record without schema_version
PACKAGES = ("wsibench", "numpy", "tifffile", "imagecodecs", "openslide-python", "openslide-bin", "opencv-python-headless",
            "pyarrow", "pandas", "tensorflow-cpu", "tensorflow", "dask", "distributed", "pyspark")


def environment() -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions,
            "cpu_model": cpu, "cpu_count": os.cpu_count(), "cpu_group": (cpu_group() or ("/",))[0],
            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "gpus": _gpus()}


def _gpus() -> list[dict] | None:
    """The GPUs NVML reports: [] when NVML answers that there are none, None when it cannot be asked (no driver)."""
    import pynvml  # nvidia-ml-py, a dependency

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            out.append({"name": name.decode() if isinstance(name, bytes) else name,
                        "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                        "driver": _text(pynvml.nvmlSystemGetDriverVersion())})
        return out
    finally:
        pynvml.nvmlShutdown()


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def new_summary(run_id: str, workload, storage: dict, engine: dict) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id, "workload": workload.name, "workload_file": workload.source,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "status": "running",
            "engine": engine, "storage": dict(storage), "environment": environment(),
            "settings": workload.model_dump(), "stages": {}}


def write(run_dir: Path, summary: dict, tables: dict[str, pd.DataFrame]) -> None:
    for name, df in tables.items():
        with atomic_path(run_dir / f"{name}.parquet") as tmp:
            df.to_parquet(tmp, index=False)
    write_json(run_dir / "summary.json", summary)


def read(run_dir: str | Path) -> dict:
    """A run's summary.json, brought to SCHEMA_VERSION (``upgrade``)."""
    path = Path(run_dir) / "summary.json"
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: not valid JSON ({e}); records are written atomically, so this one was "
                          "changed by something else") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot be read: {e.strerror}") from None
    if not isinstance(doc, dict):
        kind = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(type(doc), "a number")
        raise RecordError(f"{path}: not a wsibench run record (JSON {kind} where an object was expected)")
    doc = upgrade(doc, str(path))
    if not isinstance(doc.get("run_id"), str):
        raise RecordError(f"{path}: not a wsibench run record (no run_id)")
    return doc


def _from_v1(doc: dict) -> dict:
    """Version 1 (records without schema_version) has the keys of version 2."""
    return {"schema_version": 2, **doc}


UPGRADES = {1: _from_v1}  # older version -> its record in the next version


def upgrade(doc: dict, source: str = "summary.json") -> dict:
    """The record in SCHEMA_VERSION's layout; a RecordError that says what to run for versions it cannot read."""
    version = doc.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordError(f"{source}: schema_version {version!r} is not a version number; not a wsibench run record?")
    if version > SCHEMA_VERSION:
        wrote = (doc.get("environment") or {}).get("packages", {}).get("wsibench")
        raise RecordError(f"{source}: run record schema_version {version}, written by a newer wsibench"
                          f"{f' ({wrote})' if wrote else ''}; this one ({_installed_version()}) reads versions 1 to "
                          f"{SCHEMA_VERSION}. Update wsibench (git pull, then scripts/setup) to read it")
    while version < SCHEMA_VERSION:
        doc, version = UPGRADES[version](doc), version + 1
    return doc


def _installed_version() -> str:
    try:
        return md.version("wsibench")
    except md.PackageNotFoundError:
        return "version unknown"


@dataclass
class Run:
    run_id: str
    dir: Path
    summary: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def save(self) -> None:
        """Write the record as it stands (at each stage's start and end: a killed run says where it was)."""
        write_json(self.dir / "summary.json", self.summary)


@contextlib.contextmanager
def recording(results_dir: Path, workload, storage: dict, engine: dict, tags: dict | None = None, kind: str = ""):
    """A new run under results_dir: yields a Run whose summary the caller fills in; the record is written when the
    block ends, however it ends. A block that ends normally with the status still ``running`` is ``ok``."""
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{workload.name}{'-' + kind if kind else ''}-{uuid.uuid4().hex[:6]}"
    run_dir = Path(results_dir) / run_id
    run_dir.mkdir(parents=True)
    run = Run(run_id, run_dir, new_summary(run_id, workload, storage, engine))
    run.summary["tags"] = dict(tags or {})
    run.summary["process"] = {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}
    write(run_dir, run.summary, {})
    try:
        yield run
        if run.summary["status"] == "running":
            run.summary["status"] = "ok"
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (errors.Interrupted)
        during = run.summary.pop("running_stage", None)
        run.summary["status"] = "interrupted"
        run.summary["error"] = (f"interrupted ({str(e) or 'SIGINT'})" + (f" during the {during} stage" if during else "")
                                + f"; completed: {', '.join(run.summary['stages']) or 'no stage'}")
        raise
    except Exception as e:  # recorded, then raised
        run.summary["status"], run.summary["error"] = "failed", describe(e)  # TensorFlow's without its internals
        raise
    finally:
        write(run_dir, run.summary, run.tables)
        print(f"[{kind or 'run'}] {run.summary['status']}: record in {run_dir}", file=sys.stderr)


def still_running(summary: dict) -> bool | None:
    """Whether the process that wrote a ``running`` record is alive: None when it ran on another host."""
    p = summary.get("process") or {}
    if p.get("host") != socket.gethostname():
        return None
    return p.get("pid") is not None and process_start(p["pid"]) == p.get("start")
