"""The run record of design.md: summary.json plus one Parquet table per stage, written atomically."""
from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import os
import platform
from pathlib import Path

import pandas as pd

from ..fsutil import atomic_path, write_json

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
            "cpu_model": cpu, "cpu_count": os.cpu_count(),
            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "gpus": _gpus()}


def _gpus() -> list[dict]:
    try:
        import pynvml  # nvidia-ml-py, present only where GPUs are
        pynvml.nvmlInit()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append({"name": pynvml.nvmlDeviceGetName(h), "memory_bytes": pynvml.nvmlDeviceGetMemoryInfo(h).total})
        return out
    except Exception:  # noqa: BLE001 - no NVML, no GPUs
        return []


def new_summary(run_id: str, workload, storage: dict, engine: dict) -> dict:
    return {"run_id": run_id, "workload": workload.name, "workload_file": workload.source,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "status": "running",
            "engine": engine, "storage": dict(storage), "environment": environment(),
            "settings": workload.model_dump(), "stages": {}}


def write(run_dir: Path, summary: dict, tables: dict[str, pd.DataFrame]) -> None:
    for name, df in tables.items():
        with atomic_path(run_dir / f"{name}.parquet") as tmp:
            df.to_parquet(tmp, index=False)
    write_json(run_dir / "summary.json", summary)


def read(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())
