"""The asv benchmarks never rot: asv finds them, one quick sample of each runs without failing, every one is
lower-is-better (what `asv continuous`, hence the regression gate, assumes), and asv's own environment is built
once with the heavy dependencies and reuses them for every commit."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHARED

ASV = str(Path(sys.executable).parent / "asv")
BENCH = ROOT / "benchmarks" / "bench_stages.py"


def benchmark_names() -> list[str]:
    """Every asv benchmark method of bench_stages.py: time_* and track_*."""
    tree = ast.parse(BENCH.read_text())
    return [f.name for c in tree.body if isinstance(c, ast.ClassDef) for f in c.body
            if isinstance(f, ast.FunctionDef) and f.name.startswith(("time_", "track_"))]


def test_every_benchmark_is_lower_is_better():
    """asv counts an increase as a regression: a throughput (higher is better) would make the gate fire on
    improvements and stay silent on slow-downs. Times are seconds; tracked figures are ratios of times."""
    names = benchmark_names()
    assert len(names) >= 12
    tracks = [n for n in names if n.startswith("track_")]
    assert tracks and all(n.endswith("_time_ratio") for n in tracks), tracks
    src = BENCH.read_text()
    assert all(f'{n}.unit = "ratio"' in src for n in tracks)


def test_asv_builds_one_environment_and_installs_each_commit_into_it():
    conf = json.loads((ROOT / "asv.conf.json").read_text())
    assert conf["environment_type"] == "virtualenv" and conf["pythons"] == ["3.11"]
    heavy = conf["matrix"]["req"]
    assert {"tensorflow-cpu", "pyspark", "dask", "distributed"} <= set(heavy)
    assert all(len(v) == 1 and v[0] for v in heavy.values()), "pinned: one environment, reused"
    install = " ".join(conf["install_command"])
    # asv's default adds --force-reinstall, which reinstalls every dependency (TensorFlow, Spark) per commit
    assert "{wheel_file}" in install and "--force-reinstall" not in install
    assert ".asv/" in (ROOT / ".gitignore").read_text().split()  # results, machine files and HTML stay out of git


@pytest.mark.slow
def test_asv_check_and_quick_run():
    env = dict(os.environ, PYTHONPATH=str(ROOT), WSIBENCH_BENCH_SMOKE="1")
    py = f"existing:{sys.executable}"
    if not (Path.home() / ".asv-machine.json").exists():
        subprocess.run([ASV, "machine", "--yes"], cwd=ROOT, env=env, check=True, capture_output=True)
    r = subprocess.run([ASV, "check", "-E", py], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "No problems found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([ASV, "run", "-E", py, "--quick", "--dry-run"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    real = (SHARED / "slides" / "CMU-1-Small-Region.svs").is_file()
    for name in benchmark_names():
        line = next((l for l in r.stdout.splitlines() if name[-30:] in l), None)  # asv shortens names from the left
        assert line is not None, name
        if "real" in name or "ratio" in name:
            assert real or "n/a" in line or "skipped" in line, line
    assert "failed" not in r.stdout.lower(), r.stdout[-3000:]


def fake_asv(tmp_path, table: str, rc: int) -> dict:
    """An environment whose `asv` prints the table `asv continuous` prints and exits as it does (1: worse)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    asv = venv / "bin" / "asv"
    # (`asv machine`, which the script runs first where this user has no machine file, answers nothing)
    asv.write_text(f"#!/bin/sh\n[ \"$1\" = machine ] && exit 0\necho \"$@\" > {tmp_path / 'args'}\n"
                   f"cat <<'EOT'\n{table}\nEOT\nexit {rc}\n")
    asv.chmod(0o755)
    return dict(os.environ, WSIBENCH_VENV=str(venv), HOME=str(tmp_path))  # no machine file: as on a fresh machine


TABLE = """| Change   | Before [4ed957b7] <main>   | After [b44ac2df] <pr>   |   Ratio | Benchmark (Parameter)                       |
|----------|----------------------------|-------------------------|---------|---------------------------------------------|
| +        | 223±40ms                   | 403±30ms                |    1.81 | bench_stages.Patches.time_patch_stage_jpeg  |
| !        | 1.2                        | failed                  |     n/a | bench_stages.RealSlide.track_x_time_ratio   |
| -        | 9.89593                    | 7.33802                 |    0.74 | bench_stages.RealSlide.track_y_time_ratio   |
SOME BENCHMARKS HAVE CHANGED SIGNIFICANTLY."""


def test_the_gate_names_each_regression_and_fails(tmp_path):
    env = fake_asv(tmp_path, TABLE, 1)
    r = subprocess.run([str(ROOT / "scripts" / "bench"), "--compare", "main", "--factor", "1.2", "-b", "Patches"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    args = (tmp_path / "args").read_text().split()
    assert args[:2] == ["continuous", "--interleave-rounds"] and args[args.index("--factor") + 1] == "1.2"
    assert args[-4:] == ["-b", "Patches", "main", "HEAD"]
    assert "REGRESSION: slower than 1.2 x main" in r.stderr
    assert "bench_stages.Patches.time_patch_stage_jpeg  223±40ms -> 403±30ms (x1.81)" in r.stderr
    assert "bench_stages.RealSlide.track_x_time_ratio  1.2 -> failed (xn/a), now failing" in r.stderr
    assert "track_y_time_ratio" not in r.stderr  # faster is not a regression


def test_the_gate_passes_when_nothing_got_slower(tmp_path):
    env = fake_asv(tmp_path, "\n".join(l for l in TABLE.splitlines() if not l.startswith(("| +", "| !"))), 0)
    r = subprocess.run([str(ROOT / "scripts" / "bench"), "--compare", "main"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "no benchmark slower than 1.1x main" in r.stderr, r.stderr
