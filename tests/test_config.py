import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import ConfigError, load_profile, load_workload

from conftest import ROOT


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "w.toml"
    p.write_text('name = "t"\n' + text)
    return p


@pytest.mark.parametrize("text, key, expected", [
    ("[patches]\nsize = 0\n", "patches.size", "greater than 0"),
    ("[patches]\nsize = -224\n", "patches.size", "greater than 0"),
    ('[patches]\nsize = "224"\n', "patches.size", "valid integer"),
    ("[patches]\nsizes = 224\n", "patches.sizes", "unknown key"),
    ("colour = 1\n", "colour", "unknown key"),
    ('stages = ["masks", "pachtes"]\n', "stages.1", "'masks', 'patches', 'tfrecords', 'train' or 'infer'"),
    ('[dataset]\nkind = "camelyon16"\n', "dataset", "dataset.path is required"),
    ('[dataset]\nkind = "tcga"\n', "dataset.kind", "'camelyon16', 'camelyon17' or 'flat'"),
    ('[engine]\nname = "ray"\n', "engine.name", "'local', 'multiprocessing', 'dask' or 'spark'"),
    ("[masks]\nmedian_blur = 4\n", "masks", "odd number"),
    ("[tfrecords]\nval_fraction = 1.5\n", "tfrecords.val_fraction", "less than 1"),
    ('[engine]\nname = "multiprocessing"\nnodes = 2\n', "engine", "nodes = 2 needs a cluster"),
    ('[engine]\nname = "spark"\nmaster = "local[2]"\nnodes = 2\n', "engine", "spark here would run on this one host"),
    ("[engine]\nnodes = 0\n", "engine.nodes", "greater than 0"),
    ("[matrix]\nnodes = [1, 0]\n", "matrix.nodes.1", "greater than 0"),
])
def test_bad_workloads_name_file_key_and_expectation(tmp_path, text, key, expected):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_workload(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: {key}:"), msg
    assert expected in msg, msg


def test_missing_name_and_bad_toml(tmp_path):
    p = tmp_path / "w.toml"
    p.write_text("[patches]\nsize = 224\n")
    with pytest.raises(ConfigError, match=r"w\.toml: name: required key is missing"):
        load_workload(p)
    p.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"w\.toml: not valid TOML"):
        load_workload(p)
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_workload(tmp_path / "nope.toml")


def test_camelyon_path_relative_to_workload(tmp_path):
    (tmp_path / "data").mkdir()
    w = load_workload(write(tmp_path, '[dataset]\nkind = "camelyon16"\npath = "data"\n'))
    assert w.dataset.path == str((tmp_path / "data").resolve())


def test_shipped_workloads_and_profiles_validate():
    for p in sorted((ROOT / "workloads").glob("*.toml")):
        load_workload(p)
    for p in sorted((ROOT / "storage_profiles").glob("*.toml")):
        load_profile(str(p))
    w = load_workload(ROOT / "workloads" / "quickstart.toml")
    assert w.dataset.kind == "synthetic" and "masks" in w.stages


def test_cli_validate(tmp_path):
    bad = write(tmp_path, "[patches]\nsize = 0\n")
    r = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and f"{bad}: patches.size:" in r.stderr
    r = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(ROOT / "workloads" / "quickstart.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout


COMMANDS = ("synth", "validate", "run", "fio", "matrix", "report", "feed", "calibrate", "size", "runs")


def test_cli_help_lists_and_explains_every_command():
    r = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in COMMANDS:
        assert re.search(rf"^\s+{cmd}\s+\S", r.stdout, flags=re.M) or re.search(rf"^\s+{cmd}\n\s+\S", r.stdout, flags=re.M), cmd
        h = subprocess.run([sys.executable, "-m", "harness.cli", cmd, "--help"], capture_output=True, text=True)
        assert h.returncode == 0 and len(h.stdout) > 200, cmd


def test_matrix_nodes_apply_to_cluster_engines_and_embedded_ones_run_once_on_one(tmp_path):
    from harness.results.matrix import expand, label

    w = load_workload(write(tmp_path, '[engine]\naddress = "tcp://10.241.0.1:8786"\n'
                                      '[matrix]\nengines = ["multiprocessing", "dask"]\nworkers = [2]\nnodes = [1, 2, 4]\n'))
    configs = expand(w)
    assert [(c["engine"], c["nodes"]) for c in configs] == [("multiprocessing", 1), ("dask", 1), ("dask", 2),
                                                             ("dask", 4)]
    assert label(configs[-1]) == "dask x2 on 4 nodes @ local"
    assert all("nodes" not in c for c in expand(load_workload(write(tmp_path, "[matrix]\nworkers = [1, 2]\n"))))
