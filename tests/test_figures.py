"""Figures an architect can defend: GPUs as NVML reports them, start-up kept apart from throughput, training I/O
counted by the training processes themselves, the topology that ran."""
import sys
import time
import types

import pytest

from harness import pipeline
from harness.config import parse_workload
from harness.metrics import Sampler
from harness.results.record import environment

from conftest import local_root


def fake_nvml(devices: list[dict]) -> types.ModuleType:
    """An NVML that answers with these devices (this machine has no GPU and no NVML library)."""
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    m.NVMLError = NVMLError
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: len(devices)
    m.nvmlDeviceGetHandleByIndex = lambda i: devices[i]
    m.nvmlDeviceGetName = lambda h: h["name"].encode()
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=h["total"], used=h["used"])
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=h["util"])
    m.nvmlSystemGetDriverVersion = lambda: b"999.1"
    return m


def test_gpus_are_null_when_nvml_cannot_be_asked_and_empty_when_it_answers_none(monkeypatch):
    import pynvml
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        has_nvml = True
    except pynvml.NVMLError:
        has_nvml = False
    if not has_nvml:  # as on the CI machine: no driver, so nobody can say whether there are GPUs
        assert environment()["gpus"] is None
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([]))
    assert environment()["gpus"] == []


def test_gpu_figures_when_there_is_a_gpu(monkeypatch):
    gpu = {"name": "NVIDIA H100 80GB HBM3", "total": 85_000_000_000, "used": 2_000_000_000, "util": 75}
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([gpu]))
    assert environment()["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85_000_000_000,
                                      "driver": "999.1"}]
    with Sampler(interval=0.02) as s:
        deadline = time.time() + 30
        while len(s.samples) < 3 and time.time() < deadline:  # a loaded machine may take a while
            time.sleep(0.05)
    summary = s.summary()
    assert summary["mean_gpu0_util_fraction"] == pytest.approx(0.75)
    assert summary["mean_gpu0_memory_bytes"] == 2_000_000_000


def test_the_topology_recorded_is_the_one_that_ran(dataset, tmp_path):
    """`local` runs one worker whatever is asked: the record, and the configuration it is grouped under, say 1."""
    from harness.results import config_key
    w = parse_workload({"name": "t", "stages": ["masks"], "dataset": {"kind": "camelyon16", "path": str(dataset)}})
    with local_root(str(tmp_path / "data")):
        s = pipeline.run(w, results_dir=tmp_path / "results", engine="local", workers=2)
    assert s["engine"]["workers"] == 1 and s["engine"]["workers_requested"] == 2
    assert s["engine"]["stages"]["masks"]["workers"] == 1 and s["stages"]["masks"]["workers_used"] == 1
    assert config_key(s) == "local x1 @ local"
