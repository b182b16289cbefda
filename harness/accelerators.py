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

_H100 = ("measured on one NVIDIA H100 80GB HBM3 (2026-11): Inception-v3, 224 px, one logit, RMSProp as in the "
         "reference, training step")
_TORCH = _H100 + ", PyTorch 2.11 eager, channels-last"
_JAX = _H100 + ", Keras 3.15 on JAX with this project's InceptionV3 definition (harness.models), float32"

# batch: images per step; step_s: seconds per step; model: what it trains (sizing matches it to a workload's model)
ACCELERATORS = {
    "h100-resnet50": {"step_s": 0.224, "batch": 400, "model": "resnet50", "source": "MLPerf Storage resnet50 workload: 0.224 s per batch of 400 on H100"},
    "a100-resnet50": {"step_s": 0.435, "batch": 400, "model": "resnet50", "source": "MLPerf Storage resnet50 workload: 0.435 s per batch of 400 on A100"},
    "cpu2-inception_v3": {"step_s": 1.8, "batch": 16, "model": "inception_v3", "source": "measured on this project's 2-core CI machine: Inception-v3, 224 px, batch 16 (domain.md)"},
    # Measured on a real GPU (issue 14): PyTorch eager (bf16 autocast, or TF32 matmuls), and Keras 3 on JAX
    "h100-inception_v3-bf16-b32": {"step_s": 0.0563, "batch": 32, "model": "inception_v3", "source": f"{_TORCH}, bf16: batch 32, 0.0563 s (launch-bound)"},
    "h100-inception_v3-bf16-b64": {"step_s": 0.0544, "batch": 64, "model": "inception_v3", "source": f"{_TORCH}, bf16: batch 64, 0.0544 s"},
    "h100-inception_v3-bf16-b128": {"step_s": 0.0569, "batch": 128, "model": "inception_v3", "source": f"{_TORCH}, bf16: batch 128, 0.0569 s (2,250 images/s)"},
    "h100-inception_v3-bf16-b256": {"step_s": 0.0693, "batch": 256, "model": "inception_v3", "source": f"{_TORCH}, bf16: batch 256, 0.0693 s (3,695 images/s)"},
    "h100-inception_v3-tf32-b32": {"step_s": 0.0581, "batch": 32, "model": "inception_v3", "source": f"{_TORCH}, TF32: batch 32, 0.0581 s (launch-bound)"},
    "h100-inception_v3-tf32-b64": {"step_s": 0.0416, "batch": 64, "model": "inception_v3", "source": f"{_TORCH}, TF32: batch 64, 0.0416 s"},
    "h100-inception_v3-tf32-b128": {"step_s": 0.0492, "batch": 128, "model": "inception_v3", "source": f"{_TORCH}, TF32: batch 128, 0.0492 s (2,600 images/s)"},
    "h100-inception_v3-tf32-b256": {"step_s": 0.0840, "batch": 256, "model": "inception_v3", "source": f"{_TORCH}, TF32: batch 256, 0.0840 s (3,048 images/s)"},
    "h100-inception_v3-keras-jax-b64": {"step_s": 0.0479, "batch": 64, "model": "inception_v3", "source": f"{_JAX}: batch 64, 0.0479 s"},
    "h100-inception_v3-keras-jax-b128": {"step_s": 0.0650, "batch": 128, "model": "inception_v3", "source": f"{_JAX}: batch 128, 0.0650 s (1,969 images/s; first step about 40 s, XLA)"},
}

# The host side of the same H100 machine: JPEG decode of 224-px patches, and a real data loader feeding that GPU
# (bf16, batch 128, CPU decode, files in the page cache). Sizing uses them for the cores a GPU needs for decode.
HOST_DECODE = {
    "pil-1core": {"images_per_s": 1819, "source": "one CPU core of the H100 host, PIL: 1,819 224-px JPEG patches/s"},
    "libjpeg-turbo-1core": {"images_per_s": 2964, "source": "one CPU core of the H100 host, libjpeg-turbo via torchvision: 2,964 patches/s"},
    "nvjpeg-h100": {"images_per_s": 15538, "source": "nvJPEG batched on the H100 itself: 15,538 patches/s"},
}
LOADER_AU = {  # decode workers (CPU cores) -> AU of one H100 training Inception-v3 bf16 at batch 128
    1: 0.31, 2: 0.74, 4: 0.995, 8: 0.996,
    "source": "a data loader with N CPU decode workers feeding one H100 (bf16, batch 128, Inception-v3): AU 0.31, "
              "0.74, 0.995, 0.996 with 1, 2, 4, 8 workers (files in the page cache)",
}


@dataclass(frozen=True)
class Emulated:
    step_s: float
    batch: int
    source: str
    name: str | None = None


def describe() -> str:
    return "; ".join(f"{k} ({v['step_s']} s per batch of {v['batch']})" for k, v in ACCELERATORS.items())


def profile(name: str, results_dir: Path | None = None) -> dict:
    """An accelerator's figures for sizing: {name, model, batch, step_s, images_per_s, source, and where a
    calibration measured it, infer_images_per_s}. ``name`` is a registry entry or the file name of a stored
    calibration (``wsibench calibrate``)."""
    if name in ACCELERATORS:
        a = ACCELERATORS[name]
        return {"name": name, **a, "images_per_s": a["batch"] / a["step_s"], "infer_images_per_s": None}
    found = sorted((Path(results_dir or "results") / "calibration").glob(f"{name}*.json"))
    if not found:
        raise UnknownName(f"unknown accelerator {name!r}; known: {', '.join(ACCELERATORS)}, or a calibration "
                          f"under {Path(results_dir or 'results') / 'calibration'}")
    c = json.loads(found[-1].read_text())
    return {"name": found[-1].stem, "model": c["model"], "batch": c["batch"], "step_s": c["step_s"],
            "images_per_s": c["batch"] / c["step_s"], "infer_images_per_s": (c.get("infer") or {}).get("images_per_s"),
            "infer_batch": (c.get("infer") or {}).get("batch"),
            "source": f"wsibench calibrate on {c.get('device', '?')} ({c.get('backend', 'tensorflow')}, "
                      f"{c.get('host', '?')}, {c.get('created_at', '?')}): {found[-1].name}"}


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
