"""Train stage: a tf.data pipeline over the TFRecord shards and a training loop timed step by step.

Each step is split into *wait* (blocked on the next batch from the input pipeline) and *compute* (the step
itself, synchronised by reading the loss back, so the time is real on any device). From these come the
input-wait fraction (starvation) and the accelerator utilisation of design.md. The model, checkpoints and
TensorBoard logs are written under the storage root.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402 - after the log level; this module is imported only to train

from ..accelerators import resolve as resolve_accelerator
from ..config import Train
from ..errors import DataError, StageInputError
from ..engines.base import proc_io
from ..fsutil import remove, remove_temporaries
from ..metrics import Sampler, auc, step_figures
from ..models import build as build_model, image_size, optimizer
from ..progress import Progress
from .checkpoints import files_written_since, save_model, save_weights, timed_save
from .common import StageContext
from .tfdata import dataset, named_data_loss, predict


def run(tfrecords_dir: Path, out: Path, cfg: Train, log_name: str = "run", progress=print) -> tuple[dict, list[dict], object]:
    """Train on tfrecords_dir/splits.json; write model, checkpoints and logs under out.

    Returns (figures, steps, model). I/O figures are this process's own counters over the whole training
    (reading shards, validation passes, checkpoints, the model, TensorBoard events); files_written counts the
    files under ``out`` that training created or rewrote."""
    t_start, wall_clock, io0 = time.perf_counter(), time.time(), proc_io()
    tf.keras.utils.set_random_seed(cfg.seed)
    splits = json.loads((tfrecords_dir / "splits.json").read_text())["splits"]
    train_files = [str(tfrecords_dir / s["path"]) for s in splits["train"]["shards"]]
    val_files = [str(tfrecords_dir / s["path"]) for s in splits.get("val", {}).get("shards", [])]
    n_train = splits["train"]["records"]
    if n_train < cfg.batch_size:
        raise DataError(f"{tfrecords_dir}: {n_train} training records, fewer than one batch of {cfg.batch_size}")
    steps_per_epoch = cfg.steps_per_epoch or n_train // cfg.batch_size
    n_tumor = sum(s["tumor"] for s in splits["train"]["shards"])
    # class weights: each class weighs half of the loss, whatever its share of the patches
    w_pos, w_neg = ((n_train / (2 * n_tumor), n_train / (2 * (n_train - n_tumor)))
                    if cfg.balance_classes and 0 < n_tumor < n_train else (1.0, 1.0))
    model = build_model(cfg)
    opt = optimizer(cfg, steps_per_epoch)
    bce = tf.keras.losses.BinaryCrossentropy()

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            weights = tf.where(y > 0.5, w_pos, w_neg)
            loss = bce(y[:, None], p, sample_weight=weights) + (tf.add_n(model.losses) if model.losses else 0.0)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    writer = tf.summary.create_file_writer(str(out / "logs" / log_name))
    it = iter(dataset(train_files, cfg, training=True))
    val_ds = dataset(val_files, cfg, training=False) if val_files else None
    steps, epochs, checkpoints = [], [], []
    wall_start = None
    validation_seconds = 0.0
    try:
        with Sampler() as sampler, writer.as_default(), \
                Progress(cfg.epochs * steps_per_epoch, "train", unit="step", lines=False) as bar:
            for epoch in range(cfg.epochs):
                t_epoch = time.perf_counter()
                for _ in range(steps_per_epoch):
                    t0 = time.perf_counter()
                    x, y, nbytes = next(it)
                    t1 = time.perf_counter()
                    loss = float(train_step(x, y))  # reading the loss back waits for the step to finish
                    t2 = time.perf_counter()
                    step = len(steps)
                    if step == 0:
                        wall_start = t2  # the first step (tracing, warm-up) is not measured
                    steps.append({"step": step, "epoch": epoch, "wait_seconds": t1 - t0, "compute_seconds": t2 - t1,
                                  "batch_size": int(y.shape[0]), "record_bytes": int(tf.reduce_sum(nbytes)), "loss": loss})
                    tf.summary.scalar("loss", loss, step=step)
                    tf.summary.scalar("wait_seconds", t1 - t0, step=step)
                    bar.done()
                wall_end = time.perf_counter()
                checkpoints.append({"epoch": epoch, **timed_save(save_weights, model,
                                                                    out / "checkpoints" / f"epoch-{epoch:03d}.weights.h5")})
                val = {}
                if val_ds is not None:
                    t_val = time.perf_counter()
                    probs, labels = predict(model, val_ds)
                    val = {"val_auc": auc(probs, labels), "val_images": int(len(labels)),
                           "val_seconds": time.perf_counter() - t_val}
                    validation_seconds += val["val_seconds"]
                    if val["val_auc"] is not None:
                        tf.summary.scalar("val_auc", val["val_auc"], step=len(steps))
                epochs.append({"epoch": epoch, "seconds": time.perf_counter() - t_epoch,
                               "loss": float(np.mean([s["loss"] for s in steps[-steps_per_epoch:]])), **val})
                bar.note(f"[train] epoch {epoch + 1}/{cfg.epochs}: loss {epochs[-1]['loss']:.4f}"
                         + (f", val AUC {val['val_auc']:.3f}" if val.get("val_auc") is not None else "")
                         + f" ({epochs[-1]['seconds']:.0f}s)", progress)
                # wall clock of the measured steps: validation and checkpoints excluded
                if epoch == 0:
                    measured_wall = wall_end - wall_start
                else:
                    measured_wall += wall_end - t_epoch
    except tf.errors.DataLossError as e:
        raise named_data_loss(train_files + val_files, e) from None
    model_path = out / "model.keras"
    saved = timed_save(save_model, model, model_path)
    writer.close()
    io1 = proc_io()
    figs = step_figures([s["wait_seconds"] for s in steps], [s["compute_seconds"] for s in steps],
                        [s["batch_size"] for s in steps], 0.0, measured_wall)
    figures = {"model": cfg.model, "image_size": image_size(cfg), "steps": len(steps),
               "images": int(sum(s["batch_size"] for s in steps)), **figs,
               "val_auc": epochs[-1].get("val_auc"), "epochs": epochs, "model_path": str(model_path),
               "seconds": time.perf_counter() - t_start, "startup_seconds": wall_start - t_start,
               "validation_seconds": validation_seconds, "checkpoints": checkpoints,
               "checkpoint_seconds": sum(c["seconds"] for c in checkpoints), "model_save": saved,
               **{k: io1[k] - io0[k] for k in io1}, "files_written": files_written_since(out, wall_clock),
               "record_bytes": int(sum(s["record_bytes"] for s in steps)),
               "cpu": sampler.summary(), "log_dir": str(out / "logs" / log_name)}
    return figures, steps, model


def drive(ctx: StageContext) -> dict:
    """Train on the shards of splits.json: in this process, or in ranks (distributed, emulated accelerators)."""
    import pandas as pd

    tfr = ctx.data / "tfrecords"
    if not (tfr / "splits.json").is_file():
        raise StageInputError(f"train: {tfr / 'splits.json'} not found; run the tfrecords stage first")
    cfg = ctx.workload.train
    if not (cfg.accelerator or cfg.step_time_s):  # a failed training must not leave an older model behind
        remove(ctx.data / "train" / "model.keras", ctx.data)
        if (ctx.data / "train").is_dir():
            remove_temporaries(ctx.data / "train", ctx.data)
    if cfg.accelerator or cfg.step_time_s or cfg.distribution != "none":
        figures = _train_processes(ctx, tfr, cfg)
    else:
        figures, steps, _ = run(tfr, ctx.data / "train", cfg, log_name=ctx.run_dir.name,
                                progress=lambda m: print(m, file=sys.stderr, flush=True))
        ctx.tables["train_steps"] = pd.DataFrame(steps)
        ctx.tables["train_epochs"] = pd.DataFrame(figures.pop("epochs"))
    ctx.summary["train"] = figures
    hosts: dict[str, dict] = {}
    for r in figures.get("ranks") or []:  # distributed: the hosts the ranks ran on
        h = hosts.setdefault(r["host"], {"ranks": 0, "images_per_s": 0.0, "bytes_read": 0, "bytes_written": 0})
        h["ranks"] += 1
        h["images_per_s"] += r.get("images_per_s") or 0.0
        h["bytes_read"] += r.get("bytes_read", 0)
        h["bytes_written"] += r.get("bytes_written", 0)
    return {"items": figures["steps"], "items_per_s": figures["measured_steps"] / figures["wall_seconds"],
            "work_seconds": figures["wall_seconds"], "startup_seconds": figures["startup_seconds"],
            "images": figures["images"], "images_per_s": figures["images_per_s"],
            **{k: figures[k] for k in ("bytes_read", "bytes_written", "read_calls", "write_calls", "files_written",
                                       "validation_seconds", "checkpoint_seconds") if k in figures},
            **({"hosts": hosts} if hosts else {}), "errors": [], "status": "ok"}


def _train_processes(ctx: StageContext, tfr: Path, cfg: Train) -> dict:
    """Distributed training, or emulated accelerators, in cfg.processes processes."""
    import pandas as pd

    from . import distributed

    splits = json.loads((tfr / "splits.json").read_text())["splits"]
    files = [str(tfr / s["path"]) for s in splits["train"]["shards"]]
    emu = resolve_accelerator(cfg, ctx.run_dir.parent)
    if emu:
        cfg = cfg.model_copy(update={"batch_size": emu.batch, "augment": False})
    steps = (cfg.steps_per_epoch or max(1, splits["train"]["records"] // (cfg.batch_size * cfg.processes))) * cfg.epochs
    mode = "emulated" if emu else cfg.distribution
    print(f"[train] {mode}: {cfg.processes} processes x {steps} steps"
          + (f", step {emu.step_s} s ({emu.source})" if emu else ""), file=sys.stderr)
    since = time.time()
    planned = ctx.plan.for_stage("train")  # a Dask cluster's hosts run the ranks of distributed training
    cluster = ctx.engine("train") if mode in ("multiworker", "horovod") and planned.name == "dask" and \
        planned.cluster else None
    if cluster is not None:
        print(f"[train] ranks on the hosts of the Dask cluster at {planned.address}: "
              f"{', '.join(cluster.by_host())}", file=sys.stderr)
    res = distributed.run(files, ctx.data / "train", cfg, mode, cfg.processes, steps, emu.step_s if emu else None,
                          ctx.workload.network.interface, cluster)
    if cluster is not None:
        ctx.summary["engine"].setdefault("stages", {})["train"] = cluster.topology()
    ctx.tables["train_steps"] = pd.DataFrame(res.pop("steps_table"))
    figures = {"model": cfg.model, "mode": mode, "emulated": bool(emu), "steps": steps * cfg.processes, **res,
               "record_bytes": int(ctx.tables["train_steps"]["record_bytes"].sum())}
    if emu:
        figures["accelerator"] = {"step_s": emu.step_s, "batch": emu.batch, "source": emu.source, "name": cfg.accelerator}
    else:
        figures["model_path"] = str(ctx.data / "train" / "model.keras")
        io0, t_val = proc_io(), time.perf_counter()  # the validation pass reads storage too
        model = tf.keras.models.load_model(figures["model_path"], compile=False)
        val = [str(tfr / s["path"]) for s in splits.get("val", {}).get("shards", [])]
        if val:
            probs, labels = predict(model, dataset(val, cfg, training=False))
            figures["val_auc"] = auc(probs, labels)
        io1 = proc_io()
        figures["validation_seconds"] = time.perf_counter() - t_val
        for k in io1:
            figures[k] += io1[k] - io0[k]
    figures["files_written"] = files_written_since(ctx.data / "train", since)
    return figures
