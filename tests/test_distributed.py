"""Distributed training (tf.distribute multi-worker, Horovod) and emulated accelerators (AU, feed)."""
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np

import pandas as pd
import pytest

from harness import pipeline
from harness.feed import feed
from harness.config import parse_workload
from harness.metrics import step_figures
from harness.stages.distributed import aggregate

from conftest import local_root
from netcheck import Watch


def test_au_arithmetic_by_hand():
    # four steps; the first (warm-up) is excluded: wait 1+2+0 = 3 s, compute 3+3+4 = 10 s, measured wall 15 s
    f = step_figures([5, 1, 2, 0], [1, 3, 3, 4], [8, 8, 8, 8], wall_start=100.0, wall_end=115.0)
    assert f["measured_steps"] == 3 and f["wait_seconds"] == 3 and f["compute_seconds"] == 10
    assert f["input_wait_fraction"] == pytest.approx(3 / 13)
    assert f["accelerator_utilization"] == pytest.approx(10 / 15)
    assert f["images_per_s"] == pytest.approx(24 / 15)
    # two ranks: AU = total compute / total wall; samples/s add up
    ranks = [{"wait_seconds": 1.0, "compute_seconds": 9.0, "wall_seconds": 10.0, "images_per_s": 10.0,
              "accelerator_utilization": 0.9, "measured_bytes_read": 2**20 * 10, "steps": [{"batch_size": 4}] * 26,
              "measured_steps": 25, "bytes_read": 100, "host_cpu_busy_fraction": 0.6, "cpu_seconds": 4.0},
             {"wait_seconds": 5.0, "compute_seconds": 5.0, "wall_seconds": 10.0, "images_per_s": 6.0,
              "accelerator_utilization": 0.5, "measured_bytes_read": 2**20 * 20, "steps": [{"batch_size": 4}] * 16,
              "measured_steps": 15, "bytes_read": 50, "host_cpu_busy_fraction": 0.4, "cpu_seconds": 2.0}]
    a = aggregate(ranks)
    assert a["accelerator_utilization"] == pytest.approx(14 / 20) and a["input_wait_fraction"] == pytest.approx(6 / 20)
    assert a["images_per_s"] == 16.0 and a["mib_per_s"] == pytest.approx(3.0) and a["images"] == 4 * 25 + 4 * 15
    assert a["measured_steps"] == 40 and a["bytes_read"] == 150
    assert a["host_cpu_busy_fraction"] == pytest.approx(0.5) and a["ranks_cpu_fraction"] == pytest.approx(6 / (10 * os.cpu_count()))


def test_feed_names_what_bounded_a_probe():
    from harness.feed import limit
    assert limit(0.95, 0.9, 1.0, 1.0) is None  # it kept its accelerators busy
    assert limit(0.5, 0.9, 0.97, 0.9) == "cpu"  # the ranks themselves used the cores up
    assert limit(0.5, 0.9, 0.97, 0.1) == "contended"  # others did: no storage figure to read
    assert limit(0.5, 0.9, 0.40, 0.3) == "storage"  # cores to spare, the data did not come


def _workload(dataset, **train):
    return parse_workload({"name": "d", "stages": ["masks", "patches", "tfrecords"],
                           "dataset": {"kind": "camelyon16", "path": str(dataset)},
                           "tfrecords": {"shard_mb": 0.3, "val_fraction": 0.5},
                           "train": {"model": "small_cnn", "image_size": 32, "batch_size": 16, "augment": False,
                                     **train}})


@pytest.fixture(scope="module")
def prepared(dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    with local_root(str(tmp / "data")):
        s = pipeline.run(_workload(dataset), results_dir=tmp / "results")
    assert s["status"] == "ok" and s["stages"]["tfrecords"]["shards"] >= 4
    return tmp


def _train(prepared, dataset, **train):
    with local_root(str(prepared / "data")):
        return pipeline.run(_workload(dataset, **train), stages=["train"], results_dir=prepared / "results")


def _check_two_workers(s, prepared):
    t = s["train"]
    assert s["status"] == "ok" and t["processes"] == 2 and len(t["ranks"]) == 2
    r0, r1 = sorted(t["ranks"], key=lambda r: r["rank"])
    assert r0["pid"] != r1["pid"] and not set(r0["shards"]) & set(r1["shards"])  # each reads its own shards
    assert r0["weights_checksum"] == pytest.approx(r1["weights_checksum"], rel=1e-6)  # gradients really shared
    # it learns: each rank's last batches below the loss of a classifier that learned nothing (ln 2 for balanced
    # classes), and the model separates the validation patches. Not "last below first": each is 5 batches of one
    # rank, and one rank's last 5 read 0.427 against its first 0.246 in a run whose validation AUC was 1.0
    assert max(r0["loss_last"], r1["loss_last"]) < np.log(2) and t["val_auc"] >= 0.9, (r0, r1, t["val_auc"])
    assert r0["model_path"] and r1["model_path"] is None  # the chief alone saves
    models = list((prepared / "data" / "d" / "train").glob("*.keras"))
    assert [m.name for m in models] == ["model.keras"]
    steps = pd.read_parquet(prepared / "results" / s["run_id"] / "train_steps.parquet")
    assert set(steps["rank"]) == {0, 1} and len(steps) == t["steps"]
    assert 0 <= t["input_wait_fraction"] < 1 and 0 < t["accelerator_utilization"] <= 1 and t["val_auc"] is not None


def _no_exposed_services(watch):
    """The ranks' services (TensorFlow's gRPC server binds 0.0.0.0) were reachable only over loopback: seen bound
    beyond loopback inside their private loopback-only namespace, which is the point (harness.network)."""
    assert watch.isolated, f"no rank service seen in a loopback-only namespace: {watch.seen}"
    assert not watch.exposed, watch.exposed


@pytest.mark.slow
def test_multiworker_mirrored_two_processes(prepared, dataset):
    with Watch() as watch:
        s = _train(prepared, dataset, distribution="multiworker", processes=2, steps_per_epoch=40, learning_rate=3e-3)
    assert s["train"]["mode"] == "multiworker"
    _check_two_workers(s, prepared)
    _no_exposed_services(watch)


@pytest.mark.slow
def test_horovod_two_processes(prepared, dataset):
    if importlib.util.find_spec("horovod") is None:
        pytest.fail("horovod is not installed: scripts/test installs it with scripts/install-horovod")
    (prepared / "data" / "d" / "train" / "model.keras").unlink(missing_ok=True)
    with Watch() as watch:
        s = _train(prepared, dataset, distribution="horovod", processes=2, steps_per_epoch=40, learning_rate=3e-3)
    assert s["train"]["mode"] == "horovod"
    _check_two_workers(s, prepared)
    _no_exposed_services(watch)


def _feed(prepared, dataset, storage: str, max_n: int, repetitions: int = 1, steps: int = 16):
    wl = _workload(dataset, step_time_s=0.1, shuffle_buffer=64)
    with local_root(str(prepared / "data")):
        return feed(wl, storage, prepared / "results", 0.9, max_n, steps=steps, repetitions=repetitions)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="emulated storage needs FUSE and root")
def test_feed_finds_fewer_accelerators_on_slow_storage(prepared, dataset, tmp_path, monkeypatch):
    local = _feed(prepared, dataset, "local", 4)["feed"]
    one = local["probes"][0]
    assert one["accelerators"] == 1 and one["au"] >= 0.9  # a light step keeps one accelerator busy on local disk
    assert local["max_accelerators"] >= 2
    slow_profile = tmp_path / "slow.toml"
    throttle = 1.5e6  # B/s: read_mb_s below
    slow_profile.write_text(f'root = "{tmp_path}/mnt"\nfstype = "fuse"\nkind = "emulated"\ncreate = true\n'
                            f'[throttle]\nbacking = "{tmp_path}/backing"\nread_mb_s = {throttle / 1e6}\n'
                            f'latency_ms = 1.0\n')
    shutil.copytree(prepared / "data" / "d" / "tfrecords", tmp_path / "backing" / "d" / "tfrecords")
    # the storage's read bandwidth as `wsibench fio` would have measured it: the throttle's (no fio run here)
    monkeypatch.setattr("harness.feed._stream_bandwidth", lambda fio_doc: throttle)
    s = _feed(prepared, dataset, str(slow_profile), 4)
    slow = s["feed"]
    aus = [p["au"] for p in slow["probes"]]
    assert min(aus) < 0.9 and aus == sorted(aus, reverse=True)  # AU falls as accelerators are added
    assert slow["max_accelerators"] < local["max_accelerators"]
    failing = [p for p in slow["probes"] if p["au"] < 0.9]
    seen = [{k: p[k] for k in ("accelerators", "au", "mib_per_s", "cpu_busy_fraction", "ranks_cpu_fraction", "limit")}
            for p in slow["probes"]]
    # a probe that misses reads at the throttle's rate, measured by the ranks' own counters: never above it (the
    # emulated storage's bucket has no burst and its files no page cache) and not far below (the ranks wait on
    # the storage, not on anything else); the ranks leave the cores idle
    assert failing and all(0.7 * throttle <= p["mib_per_s"] * 2**20 <= 1.1 * throttle for p in failing), seen
    assert all(p["ranks_cpu_fraction"] < 0.5 for p in failing), seen
    # ... and, the storage's bandwidth known, the feed says the storage bounded it, however busy the host
    assert any(p["limit"] == "storage" for p in failing), seen
    assert s["storage"]["emulated"] and (prepared / "results" / s["run_id"] / "feed_probes.parquet").is_file()


def _shards_of(prepared, out: Path, n: int, per: int) -> list[str]:
    """n shards of exactly ``per`` records each, taken from the prepared shards."""
    from harness import tfrecord_format
    src = sorted((prepared / "data" / "d" / "tfrecords").glob("train-*.tfrecord"))
    records = [d for p in src for _, d in tfrecord_format.read_records(p)][: n * per]
    out.mkdir(parents=True)
    paths = []
    for i in range(n):
        p = out / f"s{i}.tfrecord"
        p.write_bytes(b"".join(tfrecord_format.frame(d) for d in records[i * per:(i + 1) * per]))
        paths.append(str(p))
    return paths


def _by_hand(files: list[str], cfg) -> list[np.ndarray]:
    """One step of SGD (momentum 0.9: its first step is w1 = w0 - lr g) on all the records of ``files`` as one
    batch, computed here: the model built from the seed the chief builds it from (rank 0: cfg.seed), its records
    read with tfrecord_format and decoded as the input pipeline documents (JPEG, [0, 1], area-resized), the mean
    binary cross-entropy's gradient from a GradientTape, and the weight decay's own gradient added to the gradient
    of each convolution kernel (small_cnn regularises those alone): wd w, as the reference's TF-slim
    l2_regularizer(wd) adds wd x sum(w^2) / 2 to the loss (issue 25)."""
    import tensorflow as tf

    from harness import models, tfrecord_format

    images, labels = [], []
    for f in files:
        for _, data in tfrecord_format.read_records(f):
            ex = tf.train.Example.FromString(data).features.feature
            img = tf.image.convert_image_dtype(tf.io.decode_jpeg(ex["image/encoded"].bytes_list.value[0], channels=3),
                                               tf.float32)
            images.append(tf.image.resize(img, (cfg.image_size, cfg.image_size), method="area"))
            labels.append(float(ex["image/class/label"].int64_list.value[0]))
    x, y = tf.stack(images), tf.constant(labels)[:, None]
    tf.keras.utils.set_random_seed(cfg.seed)
    model = models.build(cfg)
    with tf.GradientTape() as tape:
        p = tf.clip_by_value(model(x, training=True), 1e-7, 1 - 1e-7)
        loss = -tf.reduce_mean(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
    grads = tape.gradient(loss, model.trainable_variables)
    out = []
    for v, g in zip(model.trainable_variables, grads):
        decay = cfg.weight_decay * v.numpy() if "conv2d" in v.path and v.path.endswith("kernel") else 0.0
        out.append(v.numpy() - cfg.learning_rate * (g.numpy() + decay))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["multiworker", "horovod"])
def test_two_ranks_with_half_batches_take_the_step_one_rank_takes_with_the_whole(mode, prepared, tmp_path):
    """One SGD step on 2 ranks x 8 records, and on 1 rank x 16 records, each against the step computed here by
    hand on the same 16 records (``_by_hand``), weight decay included (the reference's, as in single-process
    training) and without it. (SGD, because Adam's first step is blind to the gradient's scale, and a doubled
    gradient would pass.)"""
    if mode == "horovod" and importlib.util.find_spec("horovod") is None:
        pytest.fail("horovod is not installed: scripts/test installs it with scripts/install-horovod")
    import tensorflow as tf
    from harness.config import Train
    from harness.stages import distributed

    files = _shards_of(prepared, tmp_path / "shards", 2, 8)
    runs, expected = {}, {}
    for world, decay in ((1, 0.05), (2, 0.05), (2, 0.0)):
        cfg = Train(model="small_cnn", image_size=32, batch_size=16 // world, optimizer="sgd", learning_rate=0.5,
                    augment=False, shuffle_buffer=0, interleave_cycle=1, seed=3, weight_decay=decay)
        out = tmp_path / f"w{world}-{decay}"
        res = distributed.run(files, out, cfg, mode, world, steps=1)
        model = tf.keras.models.load_model(out / "model.keras", compile=False)
        runs[world, decay] = [np.asarray(v) for v in model.trainable_weights]
        expected[world, decay] = _by_hand(files, cfg)
        step = max(float(np.abs(a - b).max()) for a, b in zip(expected[world, decay], _by_hand(files, cfg.model_copy(
            update={"learning_rate": 1e-30}))))  # the hand step's largest move of a weight
        assert step > 1e-3, step  # the step really moves the weights
        got = max(float(np.abs(a - b).max()) for a, b in zip(runs[world, decay], expected[world, decay]))
        assert got < 1e-4 * step, (world, decay, got, step, res["ranks"][0]["weights_change_max"])  # 2e-7 here
    decay_term = max(float(np.abs(a - b).max()) for a, b in zip(expected[2, 0.05], expected[2, 0.0]))
    assert decay_term > 1e-2 * step  # the weight decay is a material part of the step the runs matched


@pytest.mark.slow
def test_feed_probes_repeat_and_say_what_bounds_them(prepared, dataset):
    s = _feed(prepared, dataset, "local", 1, repetitions=3, steps=8)
    f = s["feed"]
    (p,) = f["probes"]
    assert p["repetitions"] == 3 and p["au_min"] <= p["au"] <= p["au_max"] and p["au_spread"] >= 0
    assert 0 < p["cpu_busy_fraction"] <= 1
    assert p["caches_dropped"] == (os.geteuid() == 0)
    assert f["dataset"]["fits_in_memory"] is True and f["dataset"]["bytes"] > 0
    assert f["bound_by"].startswith("max_accelerators") or p["limit"] in ("cpu", "storage")
    probes = pd.read_parquet(prepared / "results" / s["run_id"] / "feed_probes.parquet")
    assert list(probes["repetitions"]) == [3]


@pytest.mark.slow
def test_feed_measures_decode_cpu_per_accelerator_and_can_read_bytes_only(prepared, dataset):
    """train.decode: decoding costs the input pipeline CPU per sample; bytes only (MLPerf Storage's way) costs less;
    each probe says how many cores one accelerator needs at AU 1 and at the threshold."""
    wl = {True: _workload(dataset, step_time_s=0.05), False: _workload(dataset, step_time_s=0.05, decode=False)}
    with local_root(str(prepared / "data")):
        probes = {d: feed(w, "local", prepared / "results", 0.9, 1, steps=12)["feed"]["probes"][0]
                  for d, w in wl.items()}
    for p in probes.values():
        assert p["cpu_seconds_per_sample"] > 0 and p["bytes_per_sample"] > 1000
        assert p["cores_per_accelerator"] == pytest.approx(p["cpu_seconds_per_sample"] * 16 / 0.05)
        assert p["cores_per_accelerator_at_threshold"] == pytest.approx(0.9 * p["cores_per_accelerator"])
    assert probes[False]["cpu_seconds_per_sample"] < 0.8 * probes[True]["cpu_seconds_per_sample"]
    with pytest.raises(Exception, match="train.decode = false needs emulated accelerators"):
        _workload(dataset, decode=False)
