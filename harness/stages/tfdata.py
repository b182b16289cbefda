"""The training input pipeline: tf.data over TFRecord shards (parallel interleave, shuffle, parallel JPEG decode and
augmentation, batching, prefetch), and what reads it back (``predict``); a corrupt record named with its shard.

Used by the train stage (in the driver) and by every training rank (``stages.distributed``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402 - after the log level; this module is imported only to train

from ..config import Train
from ..errors import DataError, tf_cause
from ..models import image_size


def parse(raw, size: int, augment: bool, delay_ms: float = 0.0, seed: int = 0, decode: bool = True):
    """One serialised Example -> (image in [0, 1], label, bytes read); with ``decode`` false, the image stays
    its encoded bytes (MLPerf Storage's reader parses records and does not decode them)."""
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64)}
    ex = tf.io.parse_single_example(raw, spec)
    if not decode:
        return ex["image/encoded"], tf.cast(ex["image/class/label"], tf.float32), tf.strings.length(raw) + 16
    img = tf.io.decode_jpeg(ex["image/encoded"], channels=3)
    if delay_ms:
        img = tf.numpy_function(lambda a: (time.sleep(delay_ms / 1000), a)[1], [img], tf.uint8, stateful=True)
        img.set_shape([None, None, 3])
    img = tf.image.convert_image_dtype(img, tf.float32)
    if img.shape[0] != size:
        img = tf.image.resize(img, (size, size), method="area")
    if augment:
        img = tf.image.random_flip_left_right(img)
        img = tf.image.random_flip_up_down(img)
        img = tf.image.rot90(img, tf.random.uniform([], 0, 4, dtype=tf.int32))
        img = tf.image.random_brightness(img, 0.08)
        img = tf.image.random_saturation(img, 0.85, 1.15)
        img = tf.image.random_hue(img, 0.03)
        img = tf.clip_by_value(img, 0.0, 1.0)
    img = tf.ensure_shape(img, (size, size, 3))
    return img, tf.cast(ex["image/class/label"], tf.float32), tf.strings.length(raw) + 16


def dataset(files: list[str], cfg: Train, training: bool):
    auto = tf.data.AUTOTUNE
    calls = auto if cfg.parallel_calls == -1 else max(1, cfg.parallel_calls)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=cfg.seed, reshuffle_each_iteration=True).repeat()
    cycle = min(cfg.interleave_cycle, len(files))
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle, deterministic=not training,
                       num_parallel_calls=calls if calls == auto else min(calls, cycle))
    if training and cfg.shuffle_buffer:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=cfg.seed)
    size = image_size(cfg)
    ds = ds.map(lambda r: parse(r, size, training and cfg.augment, cfg.decode_delay_ms if training else 0.0,
                                decode=cfg.decode or not training),
                num_parallel_calls=calls, deterministic=not training)
    ds = ds.batch(cfg.batch_size, drop_remainder=training)
    if cfg.prefetch:
        ds = ds.prefetch(auto if cfg.prefetch == -1 else cfg.prefetch)
    return ds


def mlperf_dataset(files: list[str], batch: int, read_threads: int = 1, prefetch: int = 2, parse: str = "py_function"):
    """MLPerf Storage's TensorFlow reader (DLIO 2.0's TFReader): the shards in order, ``read_threads`` read at a
    time (TensorFlow's parallel interleave, as DLIO asks for it: reading ahead in threads even for 1), no shuffle,
    batches of whole records parsed, not decoded, repeated (as DLIO's ``.repeat()``: each record once per pass; an
    epoch stops after its steps, but its read-ahead runs on into the next pass, reads the storage serves and no
    step consumes) and ``prefetch`` batches ahead. ``parse``: ``py_function`` parses each batch as DLIO does, eagerly in a
    ``tf.py_function`` (Python, under the GIL: the CPU DLIO's reader costs a host), handing on a constant image of
    the record's size (DLIO's ``_resized_image``); ``graph`` parses it in the tf.data graph (cheaper). Yields
    (images, labels, bytes of the batch's records, framing included)."""
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64)}

    def parse_batch(raw):
        ex = tf.io.parse_example(raw, spec)
        return ex["image/encoded"], ex["image/class/label"], tf.reduce_sum(tf.strings.length(raw) + 16)

    def dlio_parse(raw):  # as DLIO 2.0's TFReader._parse_image: parse, then hand on a constant image
        ex = tf.io.parse_example(serialized=raw, features=spec)
        if not image:
            side = max(1, int(np.sqrt(int(tf.reduce_mean(tf.strings.length(raw))))))  # DLIO: sqrt(record_length)
            image.append(np.random.randint(255, size=(side, side), dtype=np.uint8))
        return image[0], ex["image/class/label"]

    image: list = []

    def py_parse(raw):
        x, y = tf.py_function(func=dlio_parse, inp=[raw], Tout=[tf.uint8, tf.int64])
        return x, y, tf.reduce_sum(tf.strings.length(raw) + 16)

    # num_parallel_reads as DLIO passes it, 1 included: TensorFlow then reads through a (legacy) parallel interleave,
    # worker threads that open 2 more shards ahead and buffer 2 records each; None would read on the caller's thread
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=read_threads)
    ds = ds.batch(batch, drop_remainder=True).map(py_parse if parse == "py_function" else parse_batch,
                                                  num_parallel_calls=1).repeat()
    return ds.prefetch(prefetch) if prefetch else ds


def predict(model, ds) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = [], []
    for x, y, _ in ds:
        probs.append(np.asarray(model(x, training=False)).reshape(-1))
        labels.append(y.numpy())
    if not probs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(probs), np.concatenate(labels)


def named_data_loss(files: list[str], error) -> DataError:
    """TensorFlow's DataLossError names no file: find the shard whose records fail their CRC, and name it."""
    from .. import tfrecord_format

    for f in files:
        try:
            for _ in tfrecord_format.read_records(f):
                pass
        except tfrecord_format.CorruptRecord as e:
            return DataError(f"{e} (TensorFlow: {tf_cause(error.message)})")
    return DataError(f"a corrupted record in one of {len(files)} shards under {Path(files[0]).parent}: "
                     f"{tf_cause(error.message)}")

