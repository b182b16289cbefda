"""``wsibench feed --mlperf`` side by side with DLIO 2.0, MLPerf Storage's own engine, on the same TFRecord shards,
the same storage, batch, step time and epochs: AU, samples/s and MiB/s per accelerator count, and the largest
count at AU >= the threshold, for each engine. Runs interleave (DLIO then wsibench, then the other way round), so
both see the same load; the figures are medians of the repetitions.

It installs nothing. DLIO is found through ``WSIBENCH_DLIO_PYTHON`` (a Python that imports dlio_benchmark and
mpi4py) or a ``dlio_benchmark`` script on PATH (its interpreter), and ``mpirun`` on PATH (or ``WSIBENCH_MPIRUN``);
without them the benchmark says what is missing and exits 0 without measuring. Installing DLIO 2.0 where its
declared NVIDIA DALI and torch cannot be installed (they are not imported for TensorFlow + TFRecord):

    apt-get install -y openmpi-bin libopenmpi-dev
    python -m venv /opt/dlio && /opt/dlio/bin/pip install tensorflow-cpu numpy pandas h5py pillow pyyaml psutil
    /opt/dlio/bin/pip install --no-deps dlio-benchmark==2.0.0 hydra-core==1.3.2 omegaconf==2.3.0 \\
        antlr4-python3-runtime==4.9.3 mpi4py pydftracer==1.0.2 pybind11
    export WSIBENCH_DLIO_PYTHON=/opt/dlio/bin/python

Each storage is a ``--storage`` argument (a profile name or a profile's TOML path): local, an emulated profile,
or a real mount's profile. The dataset (``workloads/vs_dlio.toml``: TFRecords with DLIO's ``image`` and ``size``
features) is prepared on local once and copied into each emulated profile's backing folder; DLIO reads it through
a folder of symlinks (``train/`` and an empty ``valid/``, as its reader requires) into the storage's root, so
both engines read the same files through the same mount. The page cache is dropped before every run (root); on a
storage with a page cache (not emulated), wsibench's MLPerf mode also drops it before every epoch (its rule:
datasets under 5x memory), DLIO cannot. Where the storage counts what it delivers, both engines' delivered bytes
are recorded.

    python benchmarks/vs_dlio.py --results /tmp/vsd --storage local --step 0.1 --counts 2,4,6,8
    python benchmarks/vs_dlio.py --results /tmp/vsd --storage shaped-emulated --step 0.5 --counts 4,6,7,8

Writes vs_dlio.json (every run) under --results/vs_dlio/ and prints a Markdown table per storage.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "workloads" / "vs_dlio.toml"
# harness is imported inside the functions: asv imports every module under benchmarks/ to discover its suite


def find_dlio() -> tuple[dict | None, str]:
    """(the DLIO installation: python, mpirun, version), or (None, what is missing)."""
    py = os.environ.get("WSIBENCH_DLIO_PYTHON")
    if not py:
        script = shutil.which("dlio_benchmark")
        if script:
            first = Path(script).read_text(errors="replace").splitlines()[0]
            py = first[2:].strip() if first.startswith("#!") else None
    if not py:
        return None, ("DLIO 2.0 not found: set WSIBENCH_DLIO_PYTHON to a Python that imports dlio_benchmark, or put "
                      "dlio_benchmark on PATH (install steps: see this script's docstring)")
    r = subprocess.run([py, "-c", "import importlib.metadata as m, dlio_benchmark, mpi4py; "
                        "print(m.version('dlio-benchmark'))"], capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"{py} cannot import dlio_benchmark and mpi4py: {r.stderr.strip().splitlines()[-1:]}"
    mpirun = os.environ.get("WSIBENCH_MPIRUN") or shutil.which("mpirun")
    if not mpirun:
        return None, "mpirun not found (Open MPI: apt-get install openmpi-bin), or set WSIBENCH_MPIRUN"
    return {"python": py, "mpirun": mpirun, "version": r.stdout.strip()}, ""


DLIO_WORKLOAD = """# written by wsibench benchmarks/vs_dlio.py: read an existing dataset, no generation, eval or checkpoint
model: wsibench_tf
framework: tensorflow
workflow: {{generate_data: False, train: True, evaluation: False, checkpoint: False, profiling: False}}
dataset:
  data_folder: {data}
  format: tfrecord
  num_files_train: {files}
  num_files_eval: 0
  num_samples_per_file: {spf}
  record_length: {record_length}
  num_subfolders_train: 0
  num_subfolders_eval: 0
  keep_files: True
reader:
  data_loader: tensorflow
  batch_size: {batch}
  read_threads: {read_threads}
  computation_threads: 1
  prefetch_size: {prefetch}
  sample_shuffle: "off"
train: {{epochs: {epochs}, computation_time: {step}, seed: 123}}
checkpoint: {{checkpoint_folder: {out}/checkpoints, layer_parameters: []}}
metric: {{au: {threshold}}}
"""


def run_dlio(dlio: dict, data: Path, n: int, out: Path, files: int, spf: int, record_length: float, batch: int,
             step: float, epochs: int, read_threads: int, prefetch: int, threshold: float,
             timeout: float = 1800) -> dict:
    """One DLIO run (mpirun -np n); its summary: AU (mean over epochs of the ranks' mean), per epoch, the slowest
    rank's (from <rank>_output.json), samples/s, MiB/s (DLIO's, of the declared record length) and wall time."""
    if out.exists():
        shutil.rmtree(out)
    (out / "config" / "workload").mkdir(parents=True)
    (out / "checkpoints").mkdir()
    (out / "config" / "workload" / "wsibench_tf.yaml").write_text(DLIO_WORKLOAD.format(
        data=data, files=files, spf=spf, record_length=record_length, batch=batch, read_threads=read_threads,
        prefetch=prefetch, epochs=epochs, step=step, out=out, threshold=threshold))
    cmd = [dlio["mpirun"], "--allow-run-as-root", "-np", str(n), "--bind-to", "none", "--oversubscribe",
           dlio["python"], "-m", "dlio_benchmark.main", "--config-dir", str(out / "config"), "workload=wsibench_tf",
           f"++workload.output.folder={out}", f"hydra.run.dir={out}/hydra"]
    env = dict(os.environ, DFTRACER_ENABLE="0", TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.time()
    with open(out / "stdout.log", "w") as log:
        r = subprocess.run(cmd, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    wall = time.time() - t0
    if r.returncode != 0 or not (out / "summary.json").is_file():
        raise RuntimeError(f"DLIO failed ({r.returncode}): {(out / 'stdout.log').read_text()[-2000:]}")
    s = json.loads((out / "summary.json").read_text())
    m = s["metric"]
    per_rank = []
    for f in sorted(out.glob("*_output.json")):
        o = json.loads(f.read_text())
        eps = [k for k in o if k.isdigit()]
        per_rank.append(statistics.mean(statistics.mean(o[e]["au"].values()) for e in eps) / 100)
    return {"au": m["train_au_mean_percentage"] / 100, "au_epochs": [a / 100 for a in m["train_au_percentage"]],
            "au_min_rank": min(per_rank) if per_rank else None,
            "samples_per_s": m["train_throughput_mean_samples_per_second"],
            "mib_per_s": m["train_io_mean_MB_per_second"], "wall_seconds": wall,
            "steps_per_epoch": int(spf * files / batch / n)}


def stage(files: list[str], folder: Path) -> Path:
    """DLIO's layout: <folder>/train/ (symlinks to the shards, sorted names) and an empty <folder>/valid/."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "train").mkdir(parents=True)
    (folder / "valid").mkdir()
    for f in files:
        (folder / "train" / Path(f).name).symlink_to(f)
    return folder


def prepare(res: Path, storages: list[str]) -> None:
    """The dataset on local (a wsibench run), copied into each emulated profile's backing folder."""
    from harness import pipeline
    from harness.config import load_profile, load_workload

    wl = load_workload(str(WORKLOAD))
    os.environ.setdefault("WSIBENCH_LOCAL_ROOT", str(res / "data"))
    local = Path(os.environ["WSIBENCH_LOCAL_ROOT"]) / wl.name / "tfrecords"
    if not (local / "splits.json").is_file():
        pipeline.run(wl, stages=["masks", "patches", "tfrecords"], results_dir=res)
    from harness.storage import attached

    for name in storages:
        p = load_profile(name)
        if p.kind == "emulated":  # into the backing folder, past the throttle
            dest = Path(p.throttle.backing.replace("{results}", str(res))) / wl.name / "tfrecords"
            if not (dest / "splits.json").is_file():
                shutil.copytree(local, dest, dirs_exist_ok=True)
        elif p.kind == "lab":  # through the lab's mount (its links: slow where shaped)
            with attached(p, res, workload=wl.name) as st:
                dest = st.root / wl.name / "tfrecords"
                if not (dest / "splits.json").is_file():
                    print(f"[vs_dlio] copying the dataset into {p.name}", flush=True)
                    shutil.copytree(local, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("splits.json"))
                    shutil.copy(local / "splits.json", dest / "splits.json")  # last: its presence says complete


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def compare(res: Path, storage: str, counts: list[int], repetitions: int, step: float, batch: int, epochs: int,
            read_threads: int, prefetch: int, threshold: float, dlio: dict, progress=print) -> dict:
    from harness import feed as F
    from harness.config import load_profile, load_workload
    from harness.storage import attached, drop_caches

    wl = load_workload(str(WORKLOAD))
    cfg = wl.train.model_copy(update={"batch_size": batch, "step_time_s": step, "augment": False, "decode": False})
    profile = load_profile(storage)
    work = res / "vs_dlio" / profile.name
    root = os.geteuid() == 0
    with attached(profile, res, workload=wl.name) as st:
        tfr = st.root / wl.name / "tfrecords"
        shards = sorted(json.loads((tfr / "splits.json").read_text())["splits"]["train"]["shards"],
                        key=lambda s: s["path"])
        files = [str(tfr / s["path"]) for s in shards]
        records = [s["records"] for s in shards]
        size = sum(Path(f).stat().st_size for f in files)
        spf, record_length = min(records), size / sum(records)
        data = stage(files, work / "dlio-data")
        counter, how = F.delivered_counter(st, files)
        # one run a repetition, each a fresh start of the ranks, like a DLIO invocation (no warm-up: DLIO has none)
        m = F.MLPerf(epochs=epochs, runs=1, warmup=False, read_threads=read_threads, prefetch=prefetch)
        per_epoch_drop = drop_caches if root and not profile.emulated else False
        rows = []
        for n in counts:
            steps = F.steps_per_epoch(records, n, batch)
            for rep in range(repetitions):
                for engine in (("dlio", "wsibench") if rep % 2 == 0 else ("wsibench", "dlio")):
                    if root:
                        drop_caches()
                    load0, c0 = loadavg(), counter() if callable(counter) else None
                    if engine == "dlio":
                        r = run_dlio(dlio, data, n, work / f"dlio-n{n}-r{rep}", len(files), spf, record_length, batch,
                                     step, epochs, read_threads, prefetch, threshold)
                        c1 = counter() if callable(counter) else None
                        r["delivered_bytes"] = None if c0 is None or c1 is None else c1 - c0
                        r["consumed_bytes"] = r["steps_per_epoch"] * batch * n * epochs * record_length
                    else:
                        t0 = time.time()
                        p = F.mlperf_probe(files, work / "wsibench", cfg, step, n, steps, m, threshold, counter,
                                           per_epoch_drop)
                        run = p["runs"][-1]
                        r = {"au": run["au"], "au_epochs": [e["au"] for e in run["epochs"]],
                             "au_min_rank": run["au_min_rank"], "samples_per_s": run["samples_per_s"],
                             "mib_per_s": run["mib_per_s"], "warmup_au": p["warmup_au"],
                             "wall_seconds": time.time() - t0, "steps_per_epoch": steps,
                             "delivered_bytes": run["delivered_bytes"], "consumed_bytes": run["consumed_bytes"],
                             "storage_measurement": run["storage_measurement"]}
                    r.update(engine=engine, storage=profile.name, accelerators=n, repetition=rep,
                             loadavg_before=load0, loadavg_after=loadavg())
                    rows.append(r)
                    (work / "rows.json").write_text(json.dumps(rows, indent=1))  # kept as it goes: a stopped run's
                    progress(f"[vs_dlio] {profile.name} n={n} rep {rep} {engine}: AU {r['au']:.3f} (slowest rank "
                             f"{r['au_min_rank']:.3f}), {r['samples_per_s']:.0f} samples/s, {r['mib_per_s']:.1f} "
                             f"MiB/s, load {load0:.1f}-{r['loadavg_after']:.1f}")
    return {"storage": profile.name, "emulated": profile.emulated, "delivered_how": how, "step_s": step,
            "batch": batch, "epochs": epochs, "read_threads": read_threads, "prefetch": prefetch, "files": len(files),
            "records": sum(records), "record_bytes": record_length, "rows": rows,
            "summary": summarise(rows, counts, threshold)}


def terms(folder: Path, step: float, since: float = 0.0) -> list[dict]:
    """Where each engine's AU went, per run, from its ranks' own step timings: per measured step (steps 2..), the
    mean over ranks and epochs of the seconds spent waiting for input (``wait``: the storage and the reader) and of
    the rest of the step beyond the step time (``rest``: the barrier, the sleep's overshoot, the engine's own per-step
    work: scheduling and synchronisation on a shared host). AU = step / (step + wait + rest). DLIO's from
    ``<rank>_output.json`` (load, proc, compute, au: block - proc[0] = sum(compute[1:]) / AU); wsibench's from its
    ranks' epochs (first step, wait, block)."""
    out = []
    for d in sorted(folder.glob("dlio-n*-r*")):
        if d.stat().st_mtime < since:
            continue
        n, rep = (int(x) for x in d.name[6:].split("-r"))
        w, r = [], []
        for f in d.glob("*_output.json"):
            o = json.loads(f.read_text())
            for e in (k for k in o if k.isdigit()):
                load, proc, comp = (o[e][k]["block1"] if isinstance(o[e][k], dict) else o[e][k]
                                    for k in ("load", "proc", "compute"))
                au = (o[e]["au"]["block1"] if isinstance(o[e]["au"], dict) else o[e]["au"]) / 100
                k = len(comp) - 1
                denom = sum(comp[1:]) / au
                w.append(sum(load[1:]) / k)
                r.append((denom - sum(comp[1:]) - sum(load[1:])) / k)
        if w:
            out.append({"engine": "dlio", "accelerators": n, "repetition": rep, "wait": statistics.mean(w),
                        "rest": statistics.mean(r)})
    for d in sorted((folder / "wsibench" / "ranks").glob("emulated-*"), key=lambda p: int(p.name.rsplit("-", 1)[1])):
        w, r, n = [], [], None
        if int(d.name.rsplit("-", 1)[1]) / 1000 < since:
            continue
        for f in d.glob("rank-*.json"):
            o = json.loads(f.read_text())
            n = o["world"]
            for e in o.get("epochs", []):
                k = e["steps"] - 1
                w.append(e["wait_seconds"] / k)
                r.append((e["block_seconds"] - e["first_step_seconds"] - k * step - e["wait_seconds"]) / k)
        if w:
            out.append({"engine": "wsibench", "accelerators": n, "folder": d.name, "wait": statistics.mean(w),
                        "rest": statistics.mean(r)})
    return out


def summarise(rows: list[dict], counts: list[int], threshold: float) -> dict:
    """Per count and engine: median AU, samples/s, MiB/s; per engine the largest count whose median AU (and every
    smaller count's tried) held the threshold; whether the engines agree (within one accelerator; AU within 5
    points at every count)."""
    med = {}
    for n in counts:
        for e in ("dlio", "wsibench"):
            rs = [r for r in rows if r["accelerators"] == n and r["engine"] == e]
            if rs:
                med[n, e] = {k: statistics.median(r[k] for r in rs) for k in ("au", "samples_per_s", "mib_per_s")}
                med[n, e]["au_runs"] = [r["au"] for r in rs]
                med[n, e]["au_min_rank"] = statistics.median(r["au_min_rank"] for r in rs)
                got = [r.get("delivered_bytes") for r in rs]
                if None not in got:
                    med[n, e]["delivered_share"] = statistics.median(
                        g / r["consumed_bytes"] for g, r in zip(got, rs) if r["consumed_bytes"])

    def largest(e):
        good = 0
        for n in sorted(counts):
            if (n, e) in med and med[n, e]["au"] >= threshold:
                good = n
            else:
                break
        return good

    maxes = {e: largest(e) for e in ("dlio", "wsibench")}
    diffs = {n: 100 * (med[n, "wsibench"]["au"] - med[n, "dlio"]["au"]) for n in counts
             if (n, "dlio") in med and (n, "wsibench") in med}
    return {"per_count": [{"accelerators": n, **{e: med.get((n, e)) for e in ("dlio", "wsibench")},
                           "au_difference_points": diffs.get(n)} for n in counts],
            "max_accelerators": maxes, "max_within_one": abs(maxes["dlio"] - maxes["wsibench"]) <= 1,
            "au_within_5_points": all(abs(d) <= 5 for d in diffs.values()),
            "largest_au_difference_points": max((abs(d) for d in diffs.values()), default=None)}


def table(c: dict) -> str:
    s = c["summary"]
    lines = [f"{c['storage']}, {c.get('when', '')} ({c['step_s']} s a step, batch {c['batch']}, {c['epochs']} epochs, read_threads "
             f"{c['read_threads']}, prefetch {c['prefetch']}; {c['files']} shards, {c['records']} records of "
             f"{c['record_bytes'] / 1024:.1f} KiB)", "",
             "| accelerators | DLIO AU (runs) | wsibench AU (runs) | difference | DLIO samples/s | wsibench samples/s "
             "| DLIO MiB/s | wsibench MiB/s | delivered/consumed (DLIO, wsibench) | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in s["per_count"]:
        rs = [r for r in c["rows"] if r["accelerators"] == p["accelerators"]]
        load = (f"{min(r['loadavg_before'] for r in rs):.1f}-{max(r['loadavg_after'] for r in rs):.1f}"
                if rs else "-")
        d, w = p["dlio"] or {}, p["wsibench"] or {}
        runs = lambda x: ", ".join(f"{100 * a:.1f}" for a in x.get("au_runs", []))  # noqa: E731
        share = lambda x: f"{x['delivered_share']:.2f}" if x.get("delivered_share") is not None else "-"  # noqa: E731
        lines.append(f"| {p['accelerators']} | {100 * d.get('au', float('nan')):.1f}% ({runs(d)}) | "
                     f"{100 * w.get('au', float('nan')):.1f}% ({runs(w)}) | {p['au_difference_points'] or 0:+.1f} | "
                     f"{d.get('samples_per_s', 0):.0f} | {w.get('samples_per_s', 0):.0f} | {d.get('mib_per_s', 0):.1f} | "
                     f"{w.get('mib_per_s', 0):.1f} | {share(d)}, {share(w)} | {load} |")
    lines += ["", f"largest count at AU >= 90%: DLIO {s['max_accelerators']['dlio']}, wsibench "
                  f"{s['max_accelerators']['wsibench']} (within one: {s['max_within_one']}); AU within 5 points at "
                  f"every count: {s['au_within_5_points']} (largest difference "
                  f"{s['largest_au_difference_points'] or 0:.1f} points)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results", help="results folder (the dataset, the runs, vs_dlio.json)")
    ap.add_argument("--storage", action="append", help="storage profile (repeatable; default local)")
    ap.add_argument("--counts", default="1,2,4,6,8", help="accelerator counts (default 1,2,4,6,8)")
    ap.add_argument("--repetitions", type=int, default=3, help="runs of each engine per count (default 3)")
    ap.add_argument("--step", type=float, default=0.1, help="emulated step time, s (default 0.1)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--read-threads", type=int, default=1)
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--since", type=float, default=0.0, help="--terms: runs started after this Unix time only")
    ap.add_argument("--terms", metavar="FOLDER", help="only print where AU went in the runs under FOLDER "
                    "(<results>/vs_dlio/<storage>), per engine and count: input wait and the rest, per step")
    a = ap.parse_args(argv)
    if a.terms:
        ts = terms(Path(a.terms), a.step, a.since)
        print("| engine | accelerators | runs | input wait, ms a step | rest (barrier, overshoot, per-step work), "
              "ms a step |\n|---|---|---|---|---|")
        for e in ("dlio", "wsibench"):
            for n in sorted({t["accelerators"] for t in ts if t["engine"] == e}):
                g = [t for t in ts if t["engine"] == e and t["accelerators"] == n]
                print(f"| {e} | {n} | {len(g)} | {1000 * statistics.median(t['wait'] for t in g):.1f} | "
                      f"{1000 * statistics.median(t['rest'] for t in g):.1f} |")
        return 0
    dlio, missing = find_dlio()
    if dlio is None:
        print(f"[vs_dlio] skipped: {missing}")
        return 0
    res = Path(a.results).resolve()
    storages = a.storage or ["local"]
    counts = [int(c) for c in a.counts.split(",")]
    sys.path.insert(0, str(ROOT))
    prepare(res, storages)
    out = res / "vs_dlio" / "vs_dlio.json"
    doc = json.loads(out.read_text()) if out.is_file() else {"comparisons": []}
    for s in storages:
        c = compare(res, s, counts, a.repetitions, a.step, a.batch, a.epochs, a.read_threads, a.prefetch,
                    a.threshold, dlio, progress=lambda m: print(m, flush=True))
        c.update(dlio=dlio, when=time.strftime("%Y-%m-%d %H:%M:%S %Z"), cpu_count=os.cpu_count(), parse="py_function")
        doc["comparisons"].append(c)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1))
        print(table(c), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
