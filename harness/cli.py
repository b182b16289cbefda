"""wsibench command line: thin commands over the harness."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

from .config import ENGINES, STAGES, load_workload
from .errors import WsibenchError

EPILOG = "Run 'wsibench COMMAND --help' for the options of each command."


def cmd_synth(a) -> int:
    from .engines import make_engine
    from .slides import synth

    t0 = time.perf_counter()
    with make_engine(a.engine, a.workers) as eng:
        recs = synth.generate(a.out, a.slides, a.size, a.seed, a.tumor_fraction, a.test_fraction, a.mpp, engine=eng,
                              difficulty=a.difficulty)
    if a.zip_annotations:
        synth.zip_annotations(a.out)
    dt = time.perf_counter() - t0
    mp = len(recs) * a.size ** 2 / 1e6  # level-0 megapixels
    print(json.dumps({"out": a.out, "slides": len(recs), "seconds": round(dt, 2),
                      "megapixels_per_s": round(mp / dt, 1), "bytes": sum(r["bytes"] for r in recs)}))
    return 0


def cmd_validate(a) -> int:
    if a.explain is not None:
        from .docs import workload_reference_text
        from .errors import UnknownName

        try:
            print(workload_reference_text(a.explain))
        except KeyError:
            raise UnknownName(f"--explain {a.explain}: no such key or table; try `wsibench validate --explain` "
                              "for them all") from None
        if not a.workload:
            return 0
    elif not a.workload:
        print("error: validate needs a workload file (or --explain, for the reference of every key)", file=sys.stderr)
        return 2
    from .config import load_profile
    from .slides import dataset

    w = load_workload(a.workload)
    for name in dict.fromkeys([w.storage, *w.matrix.storage]):  # the profiles it names must exist and be valid
        load_profile(name)
    print(f"{a.workload}: ok (workload {w.name!r}: stages {', '.join(w.stages)}, dataset {w.dataset.kind}, "
          f"engine {w.engine.name} x{w.engine.workers}, storage {w.storage})")
    ds = w.dataset
    if ds.kind == "synthetic" or a.no_data:
        if ds.kind == "synthetic":
            sy = ds.synthetic
            print(f"dataset: synthetic, {sy.slides} slides of {sy.size} px (seed {sy.seed}, difficulty "
                  f"{sy.difficulty:g}), made by the run")
        return 0
    s = dataset.scan(ds.path, ds.kind, ds.test_centers)
    _, record, errors = dataset.resolve(s, ds)
    print(f"dataset {ds.path}: layout {s.layout}" + (" (detected)" if ds.kind == "auto" else ""))
    print(dataset.table(record))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_run(a) -> int:
    from . import pipeline

    w = load_workload(a.workload)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()] if a.stages else None
    summary = pipeline.run(w, stages=stages, storage=a.storage, results_dir=a.results, engine=a.engine,
                           workers=a.workers, nodes=a.nodes, strict=a.strict, drop_caches=a.drop_caches,
                           observe=a.observe,
                           wait_if_busy=a.if_busy == "wait")
    from pathlib import Path

    from .report import build

    run_dir = Path(a.results) / summary["run_id"]
    build([run_dir], run_dir / "report.html", title=f"wsibench run {summary['run_id']}")
    print(json.dumps({"run_id": summary["run_id"], "status": summary["status"],
                      "record": str(run_dir), "report": str(run_dir / "report.html"),
                      "stages": {k: {f: v.get(f) for f in ("seconds", "items", "patches", "status")}
                                 for k, v in summary["stages"].items()}}, indent=1))
    return 0 if summary["status"] == "ok" else 3


def cmd_fio(a) -> int:
    from pathlib import Path

    from .config import load_profile
    from .storage import attach, fio

    from .storage import iostats

    profile = load_profile(a.profile)
    observe = a.observe and profile.emulate is None  # emulated profiles are that passthrough already
    with attach(profile, Path(a.results), a.strict) as (root, storage), contextlib.ExitStack() as stack:
        if observe:
            root = stack.enter_context(iostats.observed(root, Path(a.results), profile.name))
        direct = a.direct if a.direct is not None else (profile.emulate is None and not observe)
        print(f"[fio] {profile.name}: {root} ({storage['fstype']}{', emulated' if profile.emulated else ''}"
              f"{', observed through the counting passthrough' if observe else ''}), "
              f"{len(fio.JOBS)} jobs of about {a.runtime:g}s", file=sys.stderr)
        result = fio.run(root, a.size, a.runtime, a.small_files, a.streams, direct)
    out = fio.save(Path(a.results), profile.name, {"storage": storage, **result}, observed=observe)
    rows = []
    for name, j in result["jobs"].items():
        bw = j.get("read_bw_bytes_per_s") or j.get("write_bw_bytes_per_s") or 0
        mean = j.get("read_mean_latency_s") or j.get("write_mean_latency_s") or j.get("mean_latency_s")
        p99 = j.get("read_p99_latency_s") or j.get("write_p99_latency_s") or j.get("p99_latency_s")
        rows.append(f"  {name:<18} {bw / 2**20:9.1f} MiB/s  {j.get('read_iops') or j.get('write_iops') or 0:9.0f} IOPS"
                    + (f"  mean {mean * 1e3:.3f} ms" if mean else "") + (f"  p99 {p99 * 1e3:.3f} ms" if p99 else "")
                    + (f"  {j['files_per_s']:.0f} files/s" if j.get("files_per_s") else ""))
    print("\n".join(rows))
    print(f"[fio] characterisation: {out}", file=sys.stderr)
    return 0


def cmd_matrix(a) -> int:
    from pathlib import Path

    from . import matrix

    w = load_workload(a.workload)
    measure = [x.strip() for x in a.measure.split(",")] if a.measure else None
    doc = matrix.run(w, Path(a.results), measure, a.repetitions, a.strict, a.drop_caches)
    print(f"{'configuration':<44} {'stage':<10} {'n':>2} {'mean':>10} {'std':>8} {'min':>10} {'max':>10}  spread")
    for r in doc["results"]:
        if r["n"]:
            print(f"{r['config']:<44} {r['stage']:<10} {r['n']:>2} {r['mean']:>10.1f} {r['std']:>8.1f} "
                  f"{r['min']:>10.1f} {r['max']:>10.1f}  {r['spread']:.1%}{'  FLAGGED: > 5%' if r['flagged'] else ''}")
        for f in r["errors"]:
            print(f"{r['config']:<44} {r['stage']:<10}  FAILED repetition {f.get('repetition')}: {f['error']}")
    print(f"[matrix] {Path(a.results) / doc['matrix_id'] / 'matrix.json'}", file=sys.stderr)
    return 0 if not doc["failed"] else 3


def cmd_report(a) -> int:
    from pathlib import Path

    from .report import build

    out = Path(a.output)
    html, pdf = (out.with_suffix(".html"), out) if out.suffix.lower() == ".pdf" else \
        (out, out.with_suffix(".pdf") if a.pdf else None)
    info = build(a.runs, html, a.csv, a.title, baseline=a.baseline, pdf=pdf)
    print(f"[report] {info['runs']} runs, {info['configurations']} configurations"
          + (f", baseline {info['baseline']}" if info["configurations"] > 1 else "")
          + f": {info['out']}" + (f", {info['pdf']}" if pdf else "")
          + (f" (table: {a.csv})" if a.csv else ""))
    return 0


def cmd_runs(a) -> int:
    from .results import load_all, table, unrecorded

    runs, unreadable = load_all([a.results])
    runs += unrecorded([a.results])
    for line in unreadable:  # records of another schema version: named, with what to run; the others are listed
        print(f"warning: {line}", file=sys.stderr)
    if not runs:
        print(f"no {'readable ' if unreadable else ''}runs under {a.results}")
        return 1 if unreadable else 0
    df = table(runs)
    head = ["run_id", "workload", "engine", "workers", "nodes", "storage", "status"]
    extra = [c for c in ("patches_patches_per_s", "train_images_per_s", "train_input_wait_fraction",
                         "train_val_auc", "infer_slide_auc") if c in df]
    out = df[head + extra].copy()
    out["storage"] = [f"{s} (emulated)" if e else s for s, e in zip(df.storage, df.emulated)]
    out["status"] = [f"{st}: {err}" if st != "ok" and isinstance(err, str) else st for st, err in zip(df.status, df.error)]
    with __import__("pandas").option_context("display.max_colwidth", 60, "display.width", 200):
        print(out.rename(columns=lambda c: c.replace("_patches_per_s", " patches/s").replace("_images_per_s", " images/s"))
              .to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0


def cmd_calibrate(a) -> int:
    import datetime as dt
    import socket

    from . import calibrate
    from .accelerators import save_calibration

    w = load_workload(a.workload)
    cfg = w.train.model_copy(update={k: v for k, v in (("model", a.model), ("batch_size", a.batch)) if v})
    if a.model and a.model != w.train.model:  # another model: its own input size, not the workload's
        cfg = cfg.model_copy(update={"image_size": None})
    result = calibrate.run(cfg, a.infer_batch or w.infer.batch_size, a.steps, a.warmup,
                           progress=lambda m: print(m, file=sys.stderr, flush=True))
    result.update(host=socket.gethostname(), created_at=dt.datetime.now().isoformat(timespec="seconds"))
    out = save_calibration(a.results, result)
    print(json.dumps(result, indent=1))
    print(f"[calibrate] {out}; use it with train.accelerator = \"calibrated\", or in wsibench size --accelerator "
          f"{out.stem}", file=sys.stderr)
    return 0


def cmd_feed(a) -> int:
    from .feed import feed

    w = load_workload(a.workload)
    if a.decode is not None:
        from .config import parse_workload
        w = parse_workload(w.model_dump() | {"train": w.train.model_dump() | {"decode": a.decode}}, w.source)
    s = feed(w, a.storage, a.results, a.threshold, a.max, a.steps, a.strict, a.repetitions, a.observe)
    f = s["feed"]
    print(f"{'accelerators':>12} {'AU':>7} {'AU min':>7} {'AU max':>7} {'samples/s':>10} {'MiB/s':>8} {'host CPU':>8} "
          f"{'cores/acc':>9}  limit")
    for p in f["probes"]:
        print(f"{p['accelerators']:>12} {p['au']:>7.3f} {p['au_min']:>7.3f} {p['au_max']:>7.3f} "
              f"{p['samples_per_s']:>10.0f} {p['mib_per_s']:>8.1f} {p['cpu_busy_fraction']:>8.0%} "
              f"{p.get('cores_per_accelerator_at_threshold') or 0:>9.2f}  {p['limit'] or ''}")
    print(f"max accelerators at AU >= {f['threshold']}: {f['max_accelerators']} (bound by {f['bound_by']}); "
          f"cores/acc: the input pipeline's CPU per accelerator at AU {f['threshold']} "
          f"({'decoding' if f.get('decode', True) else 'bytes only, no decode'})")
    return 0


def cmd_size(a) -> int:
    from pathlib import Path

    from . import accelerators, sizing
    from .config import load_profile
    from .results import find_runs, load
    from .storage import fio

    results = Path(a.results)
    runs = [load(p) for p in find_runs(a.runs)]
    runs = [s for s in runs if s.get("status") in ("ok", "partial")]
    acc = accelerators.profile(a.accelerator, results)
    measured = {}
    for s in runs:
        st = s.get("storage") or {}
        doc = fio.latest(results, st.get("profile"), observed=bool(st.get("observe"))) or st.get("fio")
        if doc and st.get("profile") not in measured:
            measured[st["profile"]] = sizing.storage_costs(doc, st.get("reference"), st.get("profile"))
    names = a.storage or sorted({(s.get("storage") or {}).get("profile") for s in runs} - {None})
    storages = {}
    for name in names:
        prof = load_profile(name)
        storages[prof.name] = sizing.storage_costs(fio.latest(results, prof.name), dict(prof.reference), prof.name)
    doc = sizing.size(runs, acc, storages, a.slides_per_day, a.gpus, a.epochs, a.threshold, a.dataset_slides,
                      a.workers, measured)
    out = sizing.save(results, doc)
    print(sizing.text(doc))
    print(f"[size] {out} (and {out.with_suffix('.csv').name}); wsibench report {results} shows it", file=sys.stderr)
    return 0


def _unit(text: str) -> float:
    """A number from 0 to 1 (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"{v:g} is not between 0 and 1")
    return v


def _options() -> dict[str, argparse.ArgumentParser]:
    """Options shared by several commands, defined once (argparse parents)."""
    def parent(*args, **kw):
        p = argparse.ArgumentParser(add_help=False)
        p.add_argument(*args, **kw)
        return p
    return {
        "results": parent("--results", default="results", help="results folder (default ./results)"),
        "storage": parent("--storage", help="storage profile name (storage_profiles/NAME.toml) or path "
                                            "(default: the workload's)"),
        "strict": parent("--strict", action="store_true",
                         help="refuse a storage root whose file-system type differs from the profile's claim"),
        "drop_caches": parent("--drop-caches", action="store_true",
                              help="drop the page cache before each stage (root only), so reads come from storage"),
        "workload": parent("workload", help="workload TOML file"),
        "observe": parent("--observe", action="store_true",
                          help="count every I/O request (per stage: operations, sizes, latencies, a timeline) "
                               "through an unthrottled FUSE passthrough of the storage root (root and /dev/fuse "
                               "needed); emulated profiles always count"),
    }


def build_parser() -> argparse.ArgumentParser:
    from .accelerators import describe as accelerators
    from .models import MODELS

    o = _options()
    p = argparse.ArgumentParser(prog="wsibench", epilog=EPILOG,
                                description="Benchmark the whole digital-pathology pipeline (annotations -> masks -> "
                                            "patches -> TFRecords -> training -> inference) on real engines and storage.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, parents=(), **kw):
        return sub.add_parser(name, parents=[o[k] for k in parents], **kw)

    s = command("synth", help="generate a synthetic CAMELYON16-like dataset (pyramidal TIFFs + ASAP XML)",
                description="Generate pyramidal, tiled, JPEG-compressed slides with lesion annotations in the "
                            "CAMELYON16 folder layout. Deterministic for a seed.")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--slides", type=int, default=8, help="number of slides in all (default 8)")
    s.add_argument("--size", type=int, default=8192, help="level-0 width and height in pixels (default 8192)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--tumor-fraction", type=float, default=0.5, help="share of slides with lesions (default 0.5)")
    s.add_argument("--test-fraction", type=float, default=0.25, help="share of each class kept for testing/ (default 0.25)")
    s.add_argument("--mpp", type=float, default=0.25, help="microns per pixel at level 0 (default 0.25)")
    s.add_argument("--difficulty", type=_unit, default=0.55,
                   help="0 (easy) to 1 (hard): stain variation between slides, tumour texture closer to normal, "
                        "micro-metastases and isolated tumour cells (default 0.55)")
    s.add_argument("--zip-annotations", action="store_true",
                   help="ship the annotations as lesion_annotations.zip per split, as the CAMELYON16 release does")
    s.add_argument("--engine", default="multiprocessing", choices=ENGINES, help="engine that generates slides in parallel")
    s.add_argument("--workers", type=int, default=2, help="parallel slide writers (default 2)")
    s.set_defaults(fn=cmd_synth)

    s = command("validate", help="check a workload file and its dataset, before any work; --explain: every key",
                description="Parse and validate a workload TOML (errors name the file, the key and what was "
                            "expected), then check a real dataset itself: its layout, slides per split and class, "
                            "annotations matched or not, labels, exclusions, printed as a short table. Exits 1 "
                            "when the dataset would stop a run (a tumor slide without annotation, a slide "
                            "without label, unless the workload excludes them). --explain prints every key of "
                            "workloads and storage profiles with its type, default and meaning (also in "
                            "docs/workload-reference.md).")
    s.add_argument("workload", nargs="?", help="workload TOML file")
    s.add_argument("--explain", nargs="?", const="", metavar="SECTION",
                   help="print the reference of every key, or of those under SECTION (e.g. train, engine.stages)")
    s.add_argument("--no-data", action="store_true", help="check the workload file only, not the dataset")
    s.set_defaults(fn=cmd_validate)

    s = command("run", ["workload", "storage", "results", "strict", "drop_caches", "observe"],
                help="run a workload's stages and write a run record",
                description=f"Run the pipeline stages ({', '.join(STAGES)}) of a workload and record "
                            "throughput, I/O and errors per stage under the results folder: "
                            "RESULTS/<run_id>/summary.json, whose every key is documented in docs/run-record.md "
                            "(JSON Schema: docs/run-record.schema.json).")
    s.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)} (default: the workload's)")
    s.add_argument("--engine", choices=ENGINES,
                   help="engine for every stage, overriding the workload's (and its per-stage choices)")
    s.add_argument("--workers", type=int, help="worker processes of embedded engines (default: the workload's)")
    s.add_argument("--nodes", type=int, help="hosts of the cluster engines (engine.address / engine.master) that "
                                             "run the stages (default: the workload's engine.nodes, else all)")
    s.add_argument("--if-busy", choices=["wait", "fail"], default="wait",
                   help="when another run uses the workload's folder on this storage: wait for it (default) or fail")
    s.set_defaults(fn=cmd_run)

    s = command("fio", ["results", "strict", "observe"],
                help="characterise a storage profile's root with fio jobs that mirror the pipeline",
                description="Run fio jobs that mirror this pipeline's I/O (slide reads, small JPEG writes, "
                            "TFRecord streaming, checkpoint writes) on a profile's root; the result is stored "
                            "under RESULTS/fio/ and attached to later runs on that profile.")
    s.add_argument("profile", help="storage profile name or path")
    s.add_argument("--size", type=int, default=256, help="MiB per file for the large jobs (default 256)")
    s.add_argument("--runtime", type=float, default=5.0, help="seconds per time-based job (default 5)")
    s.add_argument("--small-files", type=int, default=2000, help="files in the small-file job (default 2000)")
    s.add_argument("--streams", type=int, default=4, help="parallel TFRecord readers (default 4)")
    s.add_argument("--direct", action=argparse.BooleanOptionalAction, default=None,
                   help="O_DIRECT I/O (default: on for real roots, off for emulated ones, which never cache)")
    s.set_defaults(fn=cmd_fio)

    s = command("matrix", ["workload", "results", "strict", "drop_caches"],
                help="run engines x workers x nodes x storage x repetitions of a workload's measured stages",
                description="Run the product of the workload's [matrix] (engines, workers, nodes of the cluster "
                            "engines, storage, repetitions). "
                            "Stages not under measurement are prepared once per storage root and reused; the "
                            "measured stages start fresh each time. Repetitions give mean, std, min and max; "
                            "configurations spreading by more than 5%% are flagged.")
    s.add_argument("--measure", help="comma-separated stages to measure (default: the workload's matrix.measure)")
    s.add_argument("--repetitions", type=int, help="repetitions per configuration (default: the workload's)")
    s.set_defaults(fn=cmd_matrix)

    s = command("report", help="write a comparison report of runs (self-contained HTML, and PDF)",
                description="Build one HTML file (plots inline, no script, no network) from run folders, or "
                            "folders of runs; with -o NAME.pdf or --pdf also an A4 PDF printed by headless "
                            "Chromium. First the answer: per configuration each stage's throughput, training AU "
                            "and input wait, accelerators fed, as ratios against a baseline; then throughput per "
                            "stage, scaling with workers and with nodes (where several counts ran), time per stage, "
                            "AU, feed curves, storage and fio, model quality, heatmaps, workloads, machines, "
                            "engine topology and every run. Sections without data are left out.")
    s.add_argument("runs", nargs="+", help="run folders (results/<run_id>) or folders holding them (results/)")
    s.add_argument("-o", "--output", default="report.html",
                   help="file to write: NAME.html, or NAME.pdf for the PDF with NAME.html beside it "
                        "(default report.html)")
    s.add_argument("--pdf", action="store_true", help="also print the HTML to a PDF beside it (A4)")
    s.add_argument("--baseline", metavar="CONFIG",
                   help="configuration the others are compared with: its label as the report prints it (e.g. "
                        "'nfs-emulated' or 'multiprocessing ×2 @ local'), or a unique part of it "
                        "(default: the first configuration run)")
    s.add_argument("--csv", help="also write the comparison table as CSV, for pandas")
    s.add_argument("--title", default="wsibench comparison report", help="the report's title")
    s.set_defaults(fn=cmd_report)

    s = command("feed", ["workload", "storage", "results", "strict", "observe"],
                help="find how many emulated accelerators a storage keeps at AU >= 90%%",
                description="Emulated accelerators (a real tf.data pipeline per process, the model step "
                            "replaced by a sleep of the accelerator's step time; train.accelerator or "
                            "train.step_time_s in the workload) are added, doubling then bisecting, until AU "
                            f"falls below the threshold. Accelerators known: {accelerators()}; or 'calibrated'.")
    s.add_argument("--threshold", type=float, default=0.9, help="AU to sustain (default 0.9)")
    s.add_argument("--max", type=int, default=16, help="most accelerators to try (default 16)")
    s.add_argument("--steps", type=int, default=30, help="steps per accelerator and probe (default 30)")
    s.add_argument("--repetitions", type=int, default=1,
                   help="runs of each probe; the mean AU decides and the spread is reported (default 1)")
    s.add_argument("--decode", action=argparse.BooleanOptionalAction, default=None,
                   help="decode each image (default: the workload's train.decode, true); --no-decode reads and "
                        "parses records only, as MLPerf Storage does, so the host's CPU does not cap the answer")
    s.set_defaults(fn=cmd_feed)

    s = command("calibrate", ["workload", "results"],
                help="measure the real training step and inference throughput of the workload's model here",
                description="Time training steps (model.compile + train_on_batch, the loss read back each step) and "
                            "forward passes at the infer stage's batch (predict_on_batch) of the workload's model, "
                            "random data, on this machine's device, with Keras 3 on the backend installed: "
                            "TensorFlow, JAX or PyTorch (KERAS_BACKEND chooses; TensorFlow is not needed). Stored "
                            "under RESULTS/calibration/ for train.accelerator = 'calibrated' and wsibench size.")
    s.add_argument("--model", choices=list(MODELS), help="override the workload's model")
    s.add_argument("--batch", type=int, help="override the workload's training batch size")
    s.add_argument("--infer-batch", type=int, help="inference batch (default: the workload's infer.batch_size)")
    s.add_argument("--steps", type=int, default=10, help="measured steps and forward passes (default 10)")
    s.add_argument("--warmup", type=int, default=3, help="unmeasured first calls: tracing, compilation (default 3)")
    s.set_defaults(fn=cmd_calibrate)

    s = command("size", ["results"], help="size a cluster's storage from measured runs: bandwidth, operations, "
                                          "capacity per stage; slides/day and GPUs each storage can take",
                description="From measured runs (wsibench run, with --observe or on an emulated profile for the "
                            "operation counts; wsibench feed for the training input), an accelerator profile and each "
                            "storage profile's fio characterisation (wsibench fio; else its vendor figures): per "
                            "stage the read/write bandwidth, operations/s, creates/s, capacity and host cores the "
                            "target needs; per storage the slides a day it can preprocess, what binds it, the "
                            "predicted stage times and workers needed, and the GPUs it can feed; decode cores per "
                            "GPU. Every figure names the measurement it came from. Written to RESULTS/sizing/ as "
                            "JSON and CSV; wsibench report shows it.")
    s.add_argument("runs", nargs="+", help="run folders, or folders holding them")
    s.add_argument("--accelerator", default="h100-inception_v3-bf16-b128",
                   help="accelerator training the model: a registry name (see wsibench feed --help) or a stored "
                        "calibration's name (default h100-inception_v3-bf16-b128)")
    s.add_argument("--gpus", type=int, default=8, help="GPUs training at once (default 8)")
    s.add_argument("--slides-per-day", type=float, default=1000, help="slides to preprocess per day (default 1000)")
    s.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    s.add_argument("--dataset-slides", type=int, help="slides in the training set, for capacity (default: a day's)")
    s.add_argument("--storage", action="append", help="storage profile to answer for (repeat; default: the runs')")
    s.add_argument("--workers", type=int, help="preprocessing workers for the stage-time predictions (default: measured)")
    s.add_argument("--threshold", type=float, default=0.9, help="AU to sustain (default 0.9)")
    s.set_defaults(fn=cmd_size)

    s = command("runs", ["results"], help="list recorded runs with their headline figures",
                description="List the runs under a results folder: id, workload, engine, workers, storage, "
                            "status (with the error of failed runs) and headline figures. Records of schema "
                            "version 1 and 2 are read (docs/run-record.md); a record of another version is "
                            "named on stderr, with what to run, and the others are listed.")
    s.set_defaults(fn=cmd_runs)
    return p


def main(argv=None) -> int:
    import signal

    from .errors import Interrupted

    def terminate(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)  # like Ctrl-C: the run records that it was interrupted
    try:
        return args.fn(args)
    except WsibenchError as e:  # the user's to fix: one line; anything else is a bug and keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
