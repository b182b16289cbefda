"""``wsibench calibrate``: the real training step and inference throughput of the workload's model on this machine's
device, with Keras 3 on whatever backend the machine has: TensorFlow, JAX or PyTorch (many GPU images ship Keras
with JAX or PyTorch and no TensorFlow). Nothing here imports TensorFlow unless it is the backend.

Training: ``model.compile`` with the workload's optimizer (RMSProp with the reference's settings for Inception-v3)
and binary cross-entropy, then ``train_on_batch`` on random data; each step is synchronised by reading its loss
back (a Python float), so the time is the device's, not the launch queue's. Inference: ``predict_on_batch`` at the
infer stage's batch size (it returns host memory, so it is synchronised too); scoring a whole slide reads the
whole slide, so inference may need more read bandwidth per GPU than training does. First steps (tracing, XLA
compilation) are start-up, reported apart and not measured.
"""
from __future__ import annotations

import importlib.util
import os
import statistics
import time

from .accelerators import save_calibration

BACKENDS = ("tensorflow", "jax", "torch")


def choose_backend() -> str:
    """KERAS_BACKEND when set, else the first of TensorFlow, JAX, PyTorch that is installed (set for Keras)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    for b in BACKENDS:
        if importlib.util.find_spec(b) is not None:
            os.environ["KERAS_BACKEND"] = b
            return b
    from .errors import MissingExtra
    raise MissingExtra("calibrate needs Keras 3 with a backend: pip install keras and one of tensorflow, jax, torch")


def device(backend: str) -> str:
    """The device the backend computes on, by name."""
    if backend == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name") or gpus[0].name
        return "CPU"
    if backend == "jax":
        import jax
        d = jax.devices()[0]
        return f"{d.platform}: {getattr(d, 'device_kind', d)}"
    if backend == "torch":
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return "?"


def _timed(fn, warmup: int, steps: int) -> tuple[list[float], float]:
    first = None
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if i == 0:
            first = dt
        if i >= warmup:
            times.append(dt)
    return times, first


def run(cfg, infer_batch: int, steps: int = 10, warmup: int = 3, progress=print) -> dict:
    """Time ``steps`` training steps (after ``warmup``) of cfg's model at cfg.batch_size, and as many forward
    passes at ``infer_batch``; returns the calibration (step seconds median, min, max; images/s)."""
    backend = choose_backend()
    import keras
    import numpy as np

    from . import models

    keras.utils.set_random_seed(cfg.seed)
    size = models.image_size(cfg)
    model = models.build(cfg)
    model.compile(optimizer=models.optimizer(cfg, 100), loss="binary_crossentropy")
    rng = np.random.default_rng(cfg.seed)
    x = rng.random((cfg.batch_size, size, size, 3), dtype=np.float32)
    y = (rng.random((cfg.batch_size, 1)) > 0.5).astype(np.float32)
    progress(f"[calibrate] {cfg.model} on Keras {keras.__version__} / {backend} ({device(backend)}): "
             f"{warmup} + {steps} training steps at batch {cfg.batch_size}")
    losses = []

    def train_step():
        losses.append(float(np.asarray(model.train_on_batch(x, y)).reshape(-1)[0]))  # the loss read back: synchronised

    train, train_first = _timed(train_step, warmup, steps)
    xi = rng.random((infer_batch, size, size, 3), dtype=np.float32)
    progress(f"[calibrate] {warmup} + {steps} forward passes at the infer stage's batch {infer_batch}")

    def infer_step():
        np.asarray(model.predict_on_batch(xi))  # host memory: synchronised

    infer, infer_first = _timed(infer_step, warmup, steps)
    step = statistics.median(train)
    per = statistics.median(infer)
    return {"model": cfg.model, "batch": cfg.batch_size, "image_size": size, "mixed_precision": cfg.mixed_precision,
            "backend": backend, "keras": keras.__version__, "device": device(backend),
            "step_s": step, "step_s_min": min(train), "step_s_max": max(train), "steps": steps,
            "first_step_s": train_first, "images_per_s": cfg.batch_size / step,
            "loss_first": losses[0], "loss_last": losses[-1],
            "infer": {"batch": infer_batch, "batch_s": per, "batch_s_min": min(infer), "batch_s_max": max(infer),
                      "images_per_s": infer_batch / per, "first_batch_s": infer_first, "batches": steps},
            "how": "Keras 3 model.compile + train_on_batch (loss read back each step) and predict_on_batch, random "
                   f"data; medians of {steps} after {warmup} warm-up calls"}


def calibrate_workload(w, results_dir, model: str | None = None, batch: int | None = None,
                       infer_batch: int | None = None, steps: int = 10, warmup: int = 3, progress=print):
    """``wsibench calibrate``: ``run`` on the workload's model (or ``model``, at its own input size) and batch (or
    ``batch``), stored under <results>/calibration/. Returns (the calibration, its file)."""
    import datetime as dt
    import socket

    cfg = w.train.model_copy(update={k: v for k, v in (("model", model), ("batch_size", batch)) if v})
    if model and model != w.train.model:  # another model: its own input size, not the workload's
        cfg = cfg.model_copy(update={"image_size": None})
    result = run(cfg, infer_batch or w.infer.batch_size, steps, warmup, progress=progress)
    result.update(host=socket.gethostname(), created_at=dt.datetime.now().isoformat(timespec="seconds"))
    return result, save_calibration(results_dir, result)
