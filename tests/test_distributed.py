"""Distributed training (tf.distribute multi-worker, Horovod) and emulated accelerators (AU, feed)."""
import importlib.util
import os
import shutil

import pandas as pd
import pytest

from harness import pipeline
from harness.feed import feed
from harness.config import parse_workload
from harness.metrics import step_figures
from harness.stages.distributed import aggregate


def test_au_arithmetic_by_hand():
    # four steps; the first (warm-up) is excluded: wait 1+2+0 = 3 s, compute 3+3+4 = 10 s, measured wall 15 s
    f = step_figures([5, 1, 2, 0], [1, 3, 3, 4], [8, 8, 8, 8], wall_start=100.0, wall_end=115.0)
    assert f["measured_steps"] == 3 and f["wait_seconds"] == 3 and f["compute_seconds"] == 10
    assert f["input_wait_fraction"] == pytest.approx(3 / 13)
    assert f["accelerator_utilization"] == pytest.approx(10 / 15)
    assert f["images_per_s"] == pytest.approx(24 / 15)
    # two ranks: AU = total compute / total wall; samples/s add up
    ranks = [{"wait_seconds": 1.0, "compute_seconds": 9.0, "wall_seconds": 10.0, "images_per_s": 10.0,
              "accelerator_utilization": 0.9, "bytes_read": 2**20 * 10, "steps": [{"batch_size": 4}] * 26},
             {"wait_seconds": 5.0, "compute_seconds": 5.0, "wall_seconds": 10.0, "images_per_s": 6.0,
              "accelerator_utilization": 0.5, "bytes_read": 2**20 * 20, "steps": [{"batch_size": 4}] * 16}]
    a = aggregate(ranks)
    assert a["accelerator_utilization"] == pytest.approx(14 / 20) and a["input_wait_fraction"] == pytest.approx(6 / 20)
    assert a["images_per_s"] == 16.0 and a["mib_per_s"] == pytest.approx(3.0) and a["images"] == 4 * 25 + 4 * 15


def _workload(dataset, **train):
    return parse_workload({"name": "d", "stages": ["masks", "patches", "tfrecords"],
                           "dataset": {"kind": "camelyon16", "path": str(dataset)},
                           "tfrecords": {"shard_mb": 0.3, "val_fraction": 0.5},
                           "train": {"model": "small_cnn", "image_size": 32, "batch_size": 16, "augment": False,
                                     **train}})


@pytest.fixture(scope="module")
def prepared(dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(tmp / "data")
    try:
        s = pipeline.run(_workload(dataset), results_dir=tmp / "results")
    finally:
        del os.environ["WSIBENCH_LOCAL_ROOT"]
    assert s["status"] == "ok" and s["stages"]["tfrecords"]["shards"] >= 4
    return tmp


def _train(prepared, dataset, **train):
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(prepared / "data")
    try:
        return pipeline.run(_workload(dataset, **train), stages=["train"], results_dir=prepared / "results")
    finally:
        del os.environ["WSIBENCH_LOCAL_ROOT"]


def _check_two_workers(s, prepared):
    t = s["train"]
    assert s["status"] == "ok" and t["processes"] == 2 and len(t["ranks"]) == 2
    r0, r1 = sorted(t["ranks"], key=lambda r: r["rank"])
    assert r0["pid"] != r1["pid"] and not set(r0["shards"]) & set(r1["shards"])  # each reads its own shards
    assert r0["weights_checksum"] == pytest.approx(r1["weights_checksum"], rel=1e-6)  # gradients really shared
    assert (r0["loss_last"] + r1["loss_last"]) < (r0["loss_first"] + r1["loss_first"])  # it learns
    assert r0["model_path"] and r1["model_path"] is None  # the chief alone saves
    models = list((prepared / "data" / "d" / "train").glob("*.keras"))
    assert [m.name for m in models] == ["model.keras"]
    steps = pd.read_parquet(prepared / "results" / s["run_id"] / "train_steps.parquet")
    assert set(steps["rank"]) == {0, 1} and len(steps) == t["steps"]
    assert 0 <= t["input_wait_fraction"] < 1 and 0 < t["accelerator_utilization"] <= 1 and t["val_auc"] is not None


def test_multiworker_mirrored_two_processes(prepared, dataset):
    s = _train(prepared, dataset, distribution="multiworker", processes=2, steps_per_epoch=40, learning_rate=3e-3)
    assert s["train"]["mode"] == "multiworker"
    _check_two_workers(s, prepared)


def test_horovod_two_processes(prepared, dataset):
    if importlib.util.find_spec("horovod") is None:
        pytest.fail("horovod is not installed: scripts/test installs it with scripts/install-horovod")
    (prepared / "data" / "d" / "train" / "model.keras").unlink(missing_ok=True)
    s = _train(prepared, dataset, distribution="horovod", processes=2, steps_per_epoch=40, learning_rate=3e-3)
    assert s["train"]["mode"] == "horovod"
    _check_two_workers(s, prepared)


def _feed(prepared, dataset, storage: str, max_n: int):
    wl = _workload(dataset, step_time_s=0.1)
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(prepared / "data")
    try:
        return feed(wl, storage, prepared / "results", 0.9, max_n, steps=16)
    finally:
        del os.environ["WSIBENCH_LOCAL_ROOT"]


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="emulated storage needs FUSE and root")
def test_feed_finds_fewer_accelerators_on_slow_storage(prepared, dataset, tmp_path):
    local = _feed(prepared, dataset, "local", 4)["feed"]
    one = local["probes"][0]
    assert one["accelerators"] == 1 and one["au"] >= 0.9  # a light step keeps one accelerator busy on local disk
    assert local["max_accelerators"] >= 2
    slow_profile = tmp_path / "slow.toml"
    slow_profile.write_text(f'root = "{tmp_path}/mnt"\nfstype = "fuse"\nemulated = true\ncreate = true\n'
                            f'[emulate]\nbacking = "{tmp_path}/backing"\nread_mb_s = 1.5\nlatency_ms = 1.0\n')
    shutil.copytree(prepared / "data" / "d" / "tfrecords", tmp_path / "backing" / "d" / "tfrecords")
    s = _feed(prepared, dataset, str(slow_profile), 4)
    slow = s["feed"]
    aus = [p["au"] for p in slow["probes"]]
    assert min(aus) < 0.9 and aus == sorted(aus, reverse=True)  # AU falls as accelerators are added
    assert slow["max_accelerators"] < local["max_accelerators"]
    assert s["storage"]["emulated"] and (prepared / "results" / s["run_id"] / "feed_probes.parquet").is_file()
