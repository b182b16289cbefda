"""Node counts on real clusters across distinct hosts: two network namespaces on a private bridge, each a host with
its own name running a Spark standalone worker and a Dask worker; master, scheduler and the test driver on the bridge
in the root namespace. ``engine.nodes`` restricts the stages to that many hosts; outputs stay byte-identical to
multiprocessing, and the run record says which host did what."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness import pipeline
from harness.config import parse_workload

from conftest import local_root
from hosts import bridged_hosts, dask_on_hosts, skip_reason, spark_on_hosts
from netcheck import Watch
from test_engines import outputs

REASON = skip_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.slow]
ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def bridge():
    with bridged_hosts(2) as b:
        yield b


@pytest.fixture(scope="module")
def clusters(bridge, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hosts")
    with dask_on_hosts(bridge, tmp, ROOT) as dask, spark_on_hosts(bridge, tmp) as spark:
        yield {"dask": {"address": dask}, "spark": {"master": spark}}


def run(tmp: Path, dataset: Path, engine: str, stages=("masks", "patches", "tfrecords"), **engine_opts):
    wl = parse_workload({"name": "t", "stages": list(stages), "dataset": {"kind": "camelyon16", "path": str(dataset)},
                         "tfrecords": {"shard_mb": 2, "val_fraction": 0.5},
                         "engine": {"name": engine, "workers": 1, **engine_opts}})
    with local_root(str(tmp / "data")):
        return pipeline.run(wl, results_dir=tmp / "results"), tmp / "data" / "t"


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    summary, data = run(tmp_path_factory.mktemp("mp"), dataset, "multiprocessing", workers=2)
    assert summary["status"] == "ok"
    return outputs(data)


@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_stages_on_one_and_two_hosts(engine, dataset, reference, bridge, clusters, tmp_path):
    names = {h.name for h in bridge.hosts}
    assert sum(k.endswith(".tfrecord") for k in reference) >= 2
    with Watch(allowed=[str(bridge.network)]) as watch:
        for nodes in (1, 2):
            summary, data = run(tmp_path / str(nodes), dataset, engine, nodes=nodes, **clusters[engine])
            assert summary["status"] == "ok", summary
            got = outputs(data)
            assert got.keys() == reference.keys()
            for k in reference:
                assert got[k] == reference[k], (engine, nodes, k)
            assert summary["engine"]["nodes"] == nodes and summary["engine"]["nodes_requested"] == nodes
            for stage in ("patches", "tfrecords"):
                rec = summary["stages"][stage]
                assert set(rec["hosts"]) <= names and len(rec["hosts"]) == nodes, (stage, rec["hosts"])
                assert sum(h["items"] for h in rec["hosts"].values()) == rec["items"]
                assert sum(h["bytes_written"] for h in rec["hosts"].values()) == rec["bytes_written"] > 0
                topo = summary["engine"]["stages"][stage]
                assert topo["nodes"] == nodes and set(topo["node_addresses"]) <= {h.address for h in bridge.hosts}
    assert not watch.exposed, watch.exposed  # the bridge's private range and loopback, nothing else
    assert not watch.isolated, watch.isolated  # ... by their binding, not for a loopback-only namespace
    assert any(addr in {h.address for h in bridge.hosts} for (_, _, addr, _) in watch.seen)  # it saw the hosts
    # the report: throughput against nodes, and the work each host did
    from harness.report import build
    from test_report import sections, text

    out = tmp_path / "report.html"
    info = build([tmp_path / "1" / "results", tmp_path / "2" / "results"], out)
    assert "nodes" in info["sections"] and "scaling" not in info["sections"]
    nodes_text = text(sections(out.read_text())["nodes"])
    assert 'aria-label="patch stage scaling with nodes"' in out.read_text() and "Work per host" in nodes_text
    assert all(name in nodes_text for name in names) and f"{engine} ×1 · 1 node" in text(out.read_text())


def test_more_nodes_than_the_cluster_has_is_a_clear_error(dataset, clusters, tmp_path, monkeypatch):
    from harness.engines import dask_engine
    from harness.errors import RunError

    monkeypatch.setattr(dask_engine, "NODES_WAIT_S", 1.0)
    with pytest.raises(RunError, match=r"engine.nodes = 3: the Dask cluster at .* has workers on 2 host"):
        run(tmp_path, dataset, "dask", stages=("masks",), nodes=3, **clusters["dask"])


@pytest.mark.parametrize("distribution", ["multiworker", "horovod"])
def test_distributed_training_with_ranks_on_two_hosts(distribution, dataset, bridge, clusters, tmp_path):
    """The Dask cluster's hosts run the ranks; they reach each other on the bridge (network.interface names it)."""
    import importlib.util

    if distribution == "horovod" and importlib.util.find_spec("horovod") is None:
        pytest.fail("horovod is not installed: scripts/test installs it with scripts/install-horovod")
    from hosts import IFACE

    wl = parse_workload({"name": "d", "stages": ["masks", "patches", "tfrecords", "train"],
                         "dataset": {"kind": "camelyon16", "path": str(dataset)},
                         "tfrecords": {"shard_mb": 0.3, "val_fraction": 0.5},
                         "engine": {"name": "multiprocessing", "workers": 2, "stages": {"train": "dask"},
                                    **clusters["dask"]},
                         "network": {"interface": IFACE},
                         "train": {"model": "small_cnn", "image_size": 32, "batch_size": 16, "augment": False,
                                   "distribution": distribution, "processes": 2, "steps_per_epoch": 30,
                                   "learning_rate": 3e-3}})
    with local_root(str(tmp_path / "data")):
        with Watch(allowed=[str(bridge.network)]) as watch:
            s = pipeline.run(wl, results_dir=tmp_path / "results")
    assert s["status"] == "ok", s.get("error")
    t = s["train"]
    assert t["mode"] == distribution and t["processes"] == 2
    r0, r1 = sorted(t["ranks"], key=lambda r: r["rank"])
    assert {r0["host"], r1["host"]} == {h.name for h in bridge.hosts}  # one rank on each host
    assert {r0["address"], r1["address"]} == {h.address for h in bridge.hosts}
    assert r0["weights_checksum"] == pytest.approx(r1["weights_checksum"], rel=1e-6)  # gradients really shared
    assert not set(r0["shards"]) & set(r1["shards"]) and t["val_auc"] is not None
    assert set(s["stages"]["train"]["hosts"]) == {h.name for h in bridge.hosts}
    assert s["engine"]["stages"]["train"]["nodes"] == 2
    assert not watch.exposed, watch.exposed
    assert not watch.isolated, watch.isolated  # the ranks on the bridge, not in a loopback-only namespace
    ranks_ports = {port for (_, _, addr, port) in watch.seen if addr in ("0.0.0.0", r0["address"], r1["address"])}
    assert ranks_ports  # the ranks' services were seen (and were on the bridge only)
