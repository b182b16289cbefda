"""The accelerator registry for emulated training (MLPerf Storage / DLIO style), and the calibrations that
``wsibench calibrate`` measures and stores beside it (``<results>/calibration/*.json``).

An emulated accelerator is a step time for a batch: each emulated rank runs the real input pipeline and sleeps
that long instead of computing. Every entry says where its figure comes from.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import StageInputError, UnknownName
from .fsutil import write_json

# batch: images per step; step_s: seconds per step
ACCELERATORS = {
    "h100-resnet50": {"step_s": 0.224, "batch": 400, "source": "MLPerf Storage resnet50 workload: 0.224 s per batch of 400 on H100"},
    "a100-resnet50": {"step_s": 0.435, "batch": 400, "source": "MLPerf Storage resnet50 workload: 0.435 s per batch of 400 on A100"},
    "cpu2-inception_v3": {"step_s": 1.8, "batch": 16, "source": "measured on this project's 2-core CI machine: Inception-v3, 224 px, batch 16 (domain.md)"},
}


@dataclass(frozen=True)
class Emulated:
    step_s: float
    batch: int
    source: str
    name: str | None = None


def describe() -> str:
    return "; ".join(f"{k}: {v['step_s']} s per batch of {v['batch']} ({v['source']})" for k, v in ACCELERATORS.items())


def save_calibration(results_dir: Path, result: dict) -> Path:
    out = Path(results_dir) / "calibration" / f"{result['model']}-b{result['batch']}-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    write_json(out, result)
    return out


def latest_calibration(results_dir: Path, model: str, batch: int) -> tuple[Path, dict] | None:
    found = sorted((Path(results_dir) / "calibration").glob(f"{model}-b{batch}-*.json"))
    return (found[-1], json.loads(found[-1].read_text())) if found else None


def resolve(cfg, results_dir: Path) -> Emulated | None:
    """The emulated accelerator of a Train configuration, or None when training is real."""
    if cfg.step_time_s:
        return Emulated(cfg.step_time_s, cfg.batch_size, "step_time_s in the workload")
    if cfg.accelerator == "calibrated":
        found = latest_calibration(results_dir, cfg.model, cfg.batch_size)
        if not found:
            raise StageInputError(f"train.accelerator = 'calibrated' but no calibration of {cfg.model} at batch "
                                  f"{cfg.batch_size} under {Path(results_dir) / 'calibration'}; run `wsibench calibrate` first")
        path, c = found
        return Emulated(c["step_s"], c["batch"], f"wsibench calibrate: {path.name}", "calibrated")
    if cfg.accelerator:
        if cfg.accelerator not in ACCELERATORS:
            raise UnknownName(f"unknown accelerator {cfg.accelerator!r}; known: {', '.join(ACCELERATORS)}, calibrated")
        a = ACCELERATORS[cfg.accelerator]
        return Emulated(a["step_s"], a["batch"], a["source"], cfg.accelerator)
    return None
