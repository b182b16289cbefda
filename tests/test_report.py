"""Run records, matrix runs, the runs listing and the HTML report, from real small runs."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.config import parse_workload
from harness import matrix, pipeline
from harness.results import find_runs, load, table



def workload(dataset, **kw):
    d = {"name": "r", "stages": ["masks", "patches", "tfrecords", "train", "infer"],
         "dataset": {"kind": "camelyon16", "path": str(dataset)}, "patches": {"max_per_class": 80},
         "tfrecords": {"shard_mb": 1, "val_fraction": 0.5},
         "train": {"model": "small_cnn", "image_size": 32, "epochs": 1, "steps_per_epoch": 12, "batch_size": 16},
         "infer": {"stride": 448}, **kw}
    return parse_workload(d)


@pytest.fixture(scope="module")
def results(dataset, tmp_path_factory):
    """Two real runs of the whole pipeline in different configurations, with a fio characterisation of `local`."""
    res = tmp_path_factory.mktemp("results")
    env = dict(os.environ, WSIBENCH_LOCAL_ROOT=str(res / "data"))
    r = subprocess.run([sys.executable, "-m", "harness.cli", "fio", "local", "--results", str(res), "--size", "16",
                        "--runtime", "0.5", "--small-files", "50", "--no-direct"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(res / "data")
    try:
        a = pipeline.run(workload(dataset, engine={"name": "multiprocessing", "workers": 2}), results_dir=res)
        b = pipeline.run(workload(dataset, engine={"name": "local", "workers": 1}), results_dir=res, fresh=True)
    finally:
        del os.environ["WSIBENCH_LOCAL_ROOT"]
    assert a["status"] == b["status"] == "ok"
    return res, a, b


def test_report_has_every_section_with_numbers(results, tmp_path):
    res, a, b = results
    out, csv = tmp_path / "report.html", tmp_path / "table.csv"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(res), "-o", str(out), "--csv", str(csv)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = out.read_text()
    sections = dict(re.findall(r'<section id="(\w+)"><h2>[^<]*</h2>(.*?)</section>', doc, flags=re.S))
    assert list(sections) == ["summary", "throughput", "scaling", "breakdown", "starvation", "storage", "quality",
                              "heatmaps", "environment"]
    for run in (a, b):
        assert run["run_id"] in sections["summary"]
        assert f"{run['stages']['patches']['patches_per_s']:,.1f}" in sections["summary"]
        assert f"{run['train']['input_wait_fraction']:,.3f}" in sections["starvation"]
        assert f"{run['train']['val_auc']:,.3f}" in sections["quality"]
    assert "multiprocessing x2 @ local" in sections["summary"] and "local x1 @ local" in sections["summary"]
    for s in ("throughput", "scaling", "breakdown", "starvation", "quality"):
        assert "<svg" in sections[s], s
    assert "patch-level ROC" in sections["quality"]
    for job in ("slide_seq_read", "jpeg_small_writes", "tfrecord_stream", "checkpoint_write"):
        assert job in sections["storage"]
    assert sections["heatmaps"].count('<img alt="heatmap') == 2
    assert a["environment"]["cpu_model"] in sections["environment"]
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", doc)  # self-contained: nothing to fetch
    df = pd.read_csv(csv)
    assert set(df.run_id) == {a["run_id"], b["run_id"]} and df.patches_patches_per_s.notna().all()


def test_report_renders_in_headless_chromium(results, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (scripts/setup installs it)")
    res, _, _ = results
    out = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "harness.cli", "report", str(res), "-o", str(out)], check=True)
    shot = tmp_path / "shot.png"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                        "--window-size=1200,3000", f"--screenshot={shot}", out.as_uri()],
                       capture_output=True, text=True, timeout=120)
    console = [l for l in r.stderr.splitlines() if ":CONSOLE" in l or "ERR_FILE_NOT_FOUND" in l]
    assert not console, console  # the page has no script: any console line is an error (a failed load)
    px = np.asarray(Image.open(shot).convert("L"), float)
    assert px.shape == (3000, 1200) and px.std() > 20 and (px < 128).mean() > 0.01  # text and plots, not blank


def test_records_round_trip_and_a_failed_run_is_listed(results, dataset, tmp_path):
    res, a, _ = results
    runs = [load(p) for p in find_runs([res])]
    df = table(runs)
    df.to_parquet(tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(df, back)
    steps = pd.read_parquet(Path(a["_dir"] if "_dir" in a else res / a["run_id"]) / "train_steps.parquet")
    assert len(steps) == a["train"]["steps"]
    # a run that fails: inference with no model on a fresh storage root
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(tmp_path / "empty")
    try:
        with pytest.raises(RuntimeError, match="no model"):
            pipeline.run(workload(dataset), stages=["infer"], results_dir=res)
    finally:
        del os.environ["WSIBENCH_LOCAL_ROOT"]
    failed = [s for s in (load(p) for p in find_runs([res])) if s["status"] == "failed"]
    assert len(failed) == 1 and "StageInputError: infer: no model at" in failed[0]["error"]
    r = subprocess.run([sys.executable, "-m", "harness.cli", "runs", "--results", str(res)], capture_output=True, text=True)
    assert r.returncode == 0
    line = next(l for l in r.stdout.splitlines() if failed[0]["run_id"] in l)
    assert "failed: StageInputError: infer: no model" in line
    assert sum(a["run_id"] in l and " ok" in l for l in r.stdout.splitlines()) == 1


def test_matrix_repetitions_and_reuse(dataset, tmp_path):
    w = parse_workload({"name": "m", "stages": ["masks", "patches"],
                        "dataset": {"kind": "camelyon16", "path": str(dataset)}, "patches": {"max_per_class": 60},
                        "matrix": {"engines": ["local", "multiprocessing"], "workers": [1, 2], "repetitions": 2,
                                   "measure": ["patches"]}})
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(tmp_path / "data")
    try:
        doc = matrix.run(w, tmp_path / "results")
    finally:
        del os.environ["WSIBENCH_LOCAL_ROOT"]
    assert json.loads((tmp_path / "results" / doc["matrix_id"] / "matrix.json").read_text()) == doc
    # local runs one worker whatever is asked: one configuration, not two named after a count that never ran
    assert len(doc["configurations"]) == 3 and len(doc["runs"]) == 6
    rows = {r["config"]: r for r in doc["results"]}
    assert set(rows) == {"local x1 @ local", "multiprocessing x1 @ local", "multiprocessing x2 @ local"}
    for r in rows.values():
        assert r["n"] == 2 and r["min"] <= r["mean"] <= r["max"] and r["std"] >= 0
        assert r["flagged"] == (r["spread"] > 0.05)
    runs = [load(p) for p in find_runs([tmp_path / "results"])]
    prep = [s for s in runs if s["tags"].get("role") == "prepare"]
    assert len(prep) == 1 and list(prep[0]["stages"]) == ["masks"]  # prerequisites made once per storage root
    measured = [s for s in runs if s["tags"].get("role") == "measure"]
    assert all(list(s["stages"]) == ["patches"] and s["stages"]["patches"]["skipped"] == 0 for s in measured)
    assert all(s["stages"]["patches"]["files_written"] > 0 for s in measured)  # cut afresh, not resumed


def test_failed_configurations_are_listed_and_the_matrix_exits_non_zero(dataset, tmp_path):
    missing = tmp_path / "missing.toml"
    missing.write_text(f'root = "{tmp_path}/not/mounted"\n')
    wl = tmp_path / "m.toml"
    wl.write_text(f'name = "m"\nstages = ["masks", "patches"]\n[dataset]\nkind = "camelyon16"\npath = "{dataset}"\n'
                  f'[patches]\nmax_per_class = 20\n[matrix]\nengines = ["local"]\nstorage = ["local", "{missing}"]\n'
                  f'repetitions = 2\nmeasure = ["patches"]\n')
    env = dict(os.environ, WSIBENCH_LOCAL_ROOT=str(tmp_path / "data"))
    r = subprocess.run([sys.executable, "-m", "harness.cli", "matrix", str(wl), "--results", str(tmp_path / "res")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr[-2000:]
    doc = json.loads(next((tmp_path / "res").glob("matrix-*/matrix.json")).read_text())
    rows = {r["config"]: r for r in doc["results"]}
    bad = rows[f"local x1 @ {missing}"]
    assert bad["status"] == "failed" and bad["n"] == 0 and bad["failed"] == 2
    assert all("does not exist (is it mounted?)" in e["error"] for e in bad["errors"])
    assert rows["local x1 @ local"]["status"] == "ok" and rows["local x1 @ local"]["n"] == 2
    assert "FAILED repetition 0" in r.stdout and "does not exist" in r.stdout


def test_a_measured_set_with_a_gap_is_refused(dataset, tmp_path):
    from harness.config import ConfigError
    w = parse_workload({"name": "m", "dataset": {"kind": "camelyon16", "path": str(dataset)},
                        "matrix": {"measure": ["masks", "tfrecords"]}})
    with pytest.raises(ConfigError, match="matrix.measure: masks, tfrecords leaves a gap"):
        matrix.run(w, tmp_path / "results")
