"""The same pipeline under every engine, on real clusters started on 127.0.0.1."""
import os
import signal
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from harness import pipeline
from harness.config import parse_workload
from harness.engines import make_engine, run_all

from clusters import dask_cluster, spark_standalone
from conftest import ENGINES, local_root
from netcheck import Watch


@pytest.fixture(scope="module")
def spark_master(tmp_path_factory):
    with spark_standalone(tmp_path_factory.mktemp("spark")) as master:
        yield master


@pytest.fixture(scope="module")
def dask_address(tmp_path_factory):
    with dask_cluster(tmp_path_factory.mktemp("dask")) as address:
        yield address


def run(tmp: Path, dataset: Path, engine: str, stages=("masks", "patches", "tfrecords"), per_stage=None, **engine_opts):
    wl = parse_workload({"name": "t", "stages": list(stages), "dataset": {"kind": "camelyon16", "path": str(dataset)},
                         "tfrecords": {"shard_mb": 2, "val_fraction": 0.5},
                         "engine": {"name": engine, "workers": 2, "stages": per_stage or {}, **engine_opts}})
    with local_root(str(tmp / "data")):
        return pipeline.run(wl, results_dir=tmp / "results"), tmp / "data" / "t"


def outputs(data: Path) -> dict:
    """Everything the stages produced, by relative path: bytes of masks, shards, indexes, patches; manifests as rows."""
    out = {}
    for p in sorted(data.rglob("*")):
        rel = str(p.relative_to(data))
        if p.is_dir() or rel.startswith("masks/") and p.suffix == ".json":
            continue  # mask records name the dataset path, which differs per copy
        out[rel] = pd.read_parquet(p).to_dict("list") if p.suffix == ".parquet" else p.read_bytes()
    return out


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    summary, data = run(tmp_path_factory.mktemp("mp"), dataset, "multiprocessing")
    assert summary["status"] == "ok"
    return outputs(data)


@pytest.mark.slow
def test_dask_and_spark_clusters_give_identical_outputs(dataset, reference, dask_address, spark_master, tmp_path):
    assert sum(k.endswith(".tfrecord") for k in reference) >= 2 and sum(k.endswith(".jpg") for k in reference) > 500
    for engine, opts in (("dask", {"address": dask_address}), ("spark", {"master": spark_master})):
        summary, data = run(tmp_path / engine, dataset, engine, **opts)
        assert summary["status"] == "ok", summary
        topo = summary["engine"]["stages"]["patches"]
        assert topo["name"] == engine and topo["workers"] == 2
        assert topo["address"] == (dask_address if engine == "dask" else spark_master)
        got = outputs(data)
        assert got.keys() == reference.keys()
        for k in reference:
            assert got[k] == reference[k], (engine, k)
        workers = pd.read_parquet(next((tmp_path / engine / "results").glob("*/patches.parquet"))).worker
        assert workers.nunique() == 2  # both workers did work


@pytest.mark.slow
def test_embedded_engines_and_per_stage_hybrid(dataset, reference, tmp_path):
    summary, data = run(tmp_path, dataset, "multiprocessing", stages=("masks", "patches", "tfrecords"),
                        per_stage={"patches": "spark", "tfrecords": "dask"})
    assert summary["status"] == "ok"
    st = summary["engine"]["stages"]
    assert (st["masks"]["name"], st["patches"]["name"], st["tfrecords"]["name"]) == ("multiprocessing", "spark", "dask")
    assert st["patches"]["address"].startswith("local[2")
    assert outputs(data) == reference


@pytest.mark.slow
def test_dask_worker_killed_mid_patch_stage(dataset, reference, dask_address, tmp_path):
    from dask.distributed import Client

    with Client(dask_address) as c:
        pids = c.run(os.getpid)
    killed = []

    def killer():
        patches = tmp_path / "data" / "t" / "patches"
        deadline = time.time() + 120
        while time.time() < deadline and not list(patches.glob("*/*.jpg")):
            time.sleep(0.005)
        pid = next(iter(pids.values()))
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    t = threading.Thread(target=killer)
    t.start()
    summary, data = run(tmp_path, dataset, "dask", stages=("masks", "patches", "tfrecords"), address=dask_address)
    t.join()
    assert killed
    assert summary["status"] == "ok" and summary["stages"]["patches"]["items"] == 4
    got = outputs(data)
    assert got.keys() == reference.keys()  # every patch file exactly once, nothing extra, nothing missing
    for k in reference:
        assert got[k] == reference[k], k
    with Client(dask_address) as c:  # the nanny replaced the killed worker
        c.wait_for_workers(2, timeout=60)
        assert killed[0] not in c.run(os.getpid).values()


def _flaky(path: str) -> str:
    """Fails on its first call for a path (a marker file remembers), succeeds on the second."""
    marker = Path(path)
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError(f"transient failure on {marker.name}")
    return marker.read_text()


def _always_fails(x):
    raise ValueError(f"item {x} is broken")


@pytest.mark.parametrize("engine", ENGINES)
def test_retries_then_recorded_failure(engine, tmp_path, monkeypatch):
    here = str(Path(__file__).parent)  # the workers import this module's functions
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    with make_engine(engine, workers=2, retries=1, conf={"spark.executorEnv.PYTHONPATH": here}) as eng:
        out = run_all(eng, _flaky, [str(tmp_path / f"m{i}") for i in range(3)], progress=False)
        assert [o.error for o in out] == [None] * 3 and [o.value for o in out] == ["failed once"] * 3
        out = run_all(eng, _always_fails, [1, 2], progress=False)
        assert [o.error for o in out] == ["ValueError: item 1 is broken", "ValueError: item 2 is broken"]


@pytest.mark.parametrize("engine", ENGINES)
def test_failing_slide_is_reported_under_every_engine(engine, dataset, tmp_path_factory):
    broken = tmp_path_factory.getbasetemp() / "broken-dataset"
    if not broken.exists():
        shutil.copytree(dataset, broken)
        (broken / "training" / "tumor" / "tumor_002.tif").write_bytes(b"II*\x00garbage")
    tmp = tmp_path_factory.mktemp(engine)
    summary, data = run(tmp, broken, engine, stages=("masks", "patches"))
    assert summary["status"] == "partial"
    for stage in ("masks", "patches"):
        errors = summary["stages"][stage]["errors"]
        assert [e["item"] for e in errors] == ["tumor_002"]
    assert "tumor_002.tif: cannot open slide" in summary["stages"]["masks"]["errors"][0]["error"]
    done = sorted(p.stem for p in (data / "patches" / "manifests").glob("*.parquet"))
    assert done == ["normal_001", "normal_002", "tumor_001"]


@pytest.mark.slow
def test_nothing_listens_beyond_loopback(dataset, dask_address, spark_master, tmp_path):
    """Embedded and cluster engines: every socket the run's processes (and the clusters') listen on is loopback."""
    assert spark_master.pids
    with Watch(extra_pids=spark_master.pids) as watch:
        for engine, opts in (("dask", {}), ("spark", {}), ("dask", {"address": dask_address}),
                             ("spark", {"master": spark_master})):
            summary, _ = run(tmp_path / f"{engine}-{len(opts)}", dataset, engine, stages=("masks",), **opts)
            assert summary["status"] == "ok"
    ports = {port for (_, _, _, port) in watch.seen}
    assert int(dask_address.rsplit(":", 1)[1]) in ports and int(spark_master.rsplit(":", 1)[1]) in ports
    assert not watch.exposed, watch.exposed
    # safe by their own binding: none was excused for living in a loopback-only namespace (test_netcheck's controls)
    assert not watch.isolated, watch.isolated


def test_batches_pack_items_by_estimated_work_heaviest_first():
    from harness.engines.base import batches, heaviest_first

    items = [{"shard": f"s{i}", "rows": [0] * n} for i, n in enumerate([5, 40, 10, 30, 20, 25, 15, 35])]
    assert heaviest_first(items) == [1, 7, 3, 5, 4, 6, 2, 0]
    parts = batches(items, slots=2, per_slot=2)  # 4 batches of 180/4 = 45 records each, as near as they pack
    assert sorted(i for p in parts for i in p) == list(range(8))
    work = [sum(len(items[i]["rows"]) for i in p) for p in parts]
    assert work == sorted(work, reverse=True) and max(work) - min(work) <= 10
    assert batches(items[:3], slots=2, per_slot=4) == [[1], [2], [0]]  # fewer items than batches: one each


def _frozen(_):
    import gc
    return gc.get_freeze_count()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_warm_workers_keep_their_imports_out_of_the_collector(engine, monkeypatch):
    """Spark's Python workers collect garbage after every task: with a stage's imports in the heap, that full
    scan cost ~0.1 s per task. Warmed up, a worker has frozen what it imported: a collection skips it."""
    import functools

    from harness.engines.base import import_module

    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    with make_engine(engine, workers=2, conf={"spark.executorEnv.PYTHONPATH": here}) as eng:
        eng.warm(functools.partial(import_module, "harness.stages.patches"))
        out = run_all(eng, _frozen, list(range(6)), progress=False)
    assert all(o.value > 10_000 for o in out), [o.value for o in out]


_FIRST_ITEM = """
import gc, json, sys
from harness.config import Masks, Patches
from harness.engines.base import import_module, warm_up
from harness.stages import masks, patches
item, out = json.loads(sys.argv[1]), sys.argv[2]
masks.run_slide(item, Masks(), out + "/masks")  # before the warm-up, as the masks stage runs before patches
warm_up(lambda: import_module("harness.stages.patches"))
before = set(sys.modules)
patches.run_slide(item, Patches(), out + "/masks", out + "/patches")
gc.collect()
print(json.dumps({"imported": sorted(set(sys.modules) - before), "tracked": len(gc.get_objects())}))
"""


def test_a_warmed_up_worker_imports_nothing_in_its_first_item(dataset, tmp_path):
    """The default warm-up loads what a stage's first item would: pyarrow imported pandas (~360 modules, ~0.5 CPU
    seconds) when the patch stage built its first manifest, inside the timed item and outside the frozen heap, so
    Spark's Python workers scanned it at every task's collection; tifffile and the JPEG codecs likewise."""
    import json
    import subprocess
    import sys

    from harness.config import Masks
    from harness.slides.dataset import list_slides

    m = Masks()
    item = dict(next(s for s in list_slides(dataset) if s["slide"] == "tumor_001"), tumor_groups=m.tumor_groups,
                exclusion_groups=m.exclusion_groups)
    res = subprocess.run([sys.executable, "-c", _FIRST_ITEM, json.dumps(item), str(tmp_path)], capture_output=True,
                         text=True, check=True)
    got = json.loads(res.stdout.splitlines()[-1])
    heavy = [m for m in got["imported"] if m.split(".")[0] in ("pandas", "tifffile", "imagecodecs", "pyarrow")]
    assert not heavy, heavy
    assert got["tracked"] < 5_000, got  # what a collection still scans: the item's leftovers, not libraries


@pytest.mark.slow
def test_spark_batches_keep_each_item_apart(tmp_path, monkeypatch):
    """Several items per Spark task, each with its own outcome; one that kills its worker fails alone, and the
    other items of its batch, run again, complete."""
    import functools

    from harness.engines.base import batches
    from harness.engines.isolate import guarded
    from harness.engines.spark_engine import PER_SLOT
    from test_faults import HERE, abort_on_bad

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
    items = [f"x{k}" for k in range(9)] + ["bad"] + [f"y{k}" for k in range(10)]
    assert max(map(len, batches(items, 2, PER_SLOT))) > 1  # really batched
    fn = functools.partial(guarded, abort_on_bad, str(tmp_path / "inflight"))
    with make_engine("spark", workers=2, retries=1, conf={"spark.executorEnv.PYTHONPATH": HERE}) as eng:
        out = run_all(eng, fn, items, progress=False)
    assert [o.item for o in out] == items and [o.index for o in out] == list(range(len(items)))
    good = [o for o in out if o.item != "bad"]
    assert [o.value for o in good] == [x * 2 for x in items if x != "bad"] and not any(o.error for o in good)
    assert all(o.worker and o.seconds > 0 and "bytes_read" in o.io for o in good)
    assert len({o.seconds for o in good}) > 1  # measured one by one, not a batch's time shared out
    (bad,) = [o for o in out if o.item == "bad"]
    assert bad.error.startswith("WorkerCrashed: bad: the worker process running it died"), bad.error


_JVM_OF = """
import json, sys, psutil
from harness.engines import make_engine
conf = json.loads(sys.argv[1])
with make_engine("spark", workers=1, conf=conf) as eng:
    java = [p for p in psutil.Process().children(recursive=True) if p.name() == "java"]
    print(json.dumps([p.cmdline() for p in java]))
"""


LEAN_JVM = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


@pytest.mark.slow
@pytest.mark.parametrize("conf, present, absent", [
    ({}, LEAN_JVM, []),
    ({"spark.driver.extraJavaOptions": "-XX:+UseParallelGC"}, ["-XX:+UseParallelGC"], LEAN_JVM)])
def test_spark_starts_its_jvm_lean_unless_the_workload_says_otherwise(conf, present, absent):
    """The JVM a Spark engine starts runs without the optimising JIT compiler and with the serial collector (on a
    host with as many task slots as cores, their CPU came out of the work: benchmarks/engine_scaling.py); a
    workload's own spark.driver.extraJavaOptions replaces them. A fresh process each: pyspark keeps its JVM."""
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _JVM_OF, json.dumps(conf)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (cmdline,) = json.loads(res.stdout.splitlines()[-1])
    assert all(o in cmdline for o in present) and not any(o in cmdline for o in absent), cmdline
