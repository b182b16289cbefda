"""wsibench command line: thin commands over the harness."""
from __future__ import annotations

import argparse
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
        recs = synth.generate(a.out, a.slides, a.size, a.seed, a.tumor_fraction, a.test_fraction, a.mpp, engine=eng)
    dt = time.perf_counter() - t0
    mp = len(recs) * a.size ** 2 / 1e6  # level-0 megapixels
    print(json.dumps({"out": a.out, "slides": len(recs), "seconds": round(dt, 2),
                      "megapixels_per_s": round(mp / dt, 1), "bytes": sum(r["bytes"] for r in recs)}))
    return 0


def cmd_validate(a) -> int:
    from .config import load_profile

    w = load_workload(a.workload)
    for name in dict.fromkeys([w.storage, *w.matrix.storage]):  # the profiles it names must exist and be valid
        load_profile(name)
    print(f"{a.workload}: ok (workload {w.name!r}: stages {', '.join(w.stages)}, dataset {w.dataset.kind}, "
          f"engine {w.engine.name} x{w.engine.workers}, storage {w.storage})")
    return 0


def cmd_run(a) -> int:
    from . import pipeline

    w = load_workload(a.workload)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()] if a.stages else None
    summary = pipeline.run(w, stages=stages, storage=a.storage, results_dir=a.results, engine=a.engine,
                           workers=a.workers, nodes=a.nodes, strict=a.strict, drop_caches=a.drop_caches,
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

    profile = load_profile(a.profile)
    with attach(profile, Path(a.results), a.strict) as (root, storage):
        direct = a.direct if a.direct is not None else profile.emulate is None
        print(f"[fio] {profile.name}: {root} ({storage['fstype']}{', emulated' if profile.emulated else ''}), "
              f"{len(fio.JOBS)} jobs of about {a.runtime:g}s", file=sys.stderr)
        result = fio.run(root, a.size, a.runtime, a.small_files, a.streams, direct)
    out = fio.save(Path(a.results), profile.name, {"storage": storage, **result})
    rows = []
    for name, j in result["jobs"].items():
        bw = j.get("read_bw_bytes_per_s") or j.get("write_bw_bytes_per_s") or 0
        p99 = j.get("read_p99_latency_s") or j.get("write_p99_latency_s")
        rows.append(f"  {name:<18} {bw / 2**20:9.1f} MiB/s  {j.get('read_iops') or j.get('write_iops') or 0:9.0f} IOPS"
                    + (f"  p99 {p99 * 1e3:.2f} ms" if p99 else "")
                    + (f"  {j['files_per_s']:.0f} files/s" if "files_per_s" in j else ""))
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
    from .results import find_runs, load, table, unrecorded

    runs = [load(p) for p in find_runs([a.results])] + unrecorded([a.results])
    if not runs:
        print(f"no runs under {a.results}")
        return 0
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

    from .accelerators import save_calibration
    from .stages import train

    w = load_workload(a.workload)
    cfg = w.train.model_copy(update={k: v for k, v in (("model", a.model), ("batch_size", a.batch)) if v})
    print(f"[calibrate] {cfg.model}, batch {cfg.batch_size}: {a.steps} steps after 3 warm-up steps", file=sys.stderr)
    result = train.calibrate(cfg, a.steps)
    result.update(host=socket.gethostname(), created_at=dt.datetime.now().isoformat(timespec="seconds"))
    out = save_calibration(a.results, result)
    print(json.dumps(result, indent=1))
    print(f"[calibrate] {out}; use it with train.accelerator = \"calibrated\"", file=sys.stderr)
    return 0


def cmd_feed(a) -> int:
    from .feed import feed

    w = load_workload(a.workload)
    s = feed(w, a.storage, a.results, a.threshold, a.max, a.steps, a.strict, a.repetitions)
    f = s["feed"]
    print(f"{'accelerators':>12} {'AU':>7} {'AU min':>7} {'AU max':>7} {'samples/s':>10} {'MiB/s':>8} {'host CPU':>8}  limit")
    for p in f["probes"]:
        print(f"{p['accelerators']:>12} {p['au']:>7.3f} {p['au_min']:>7.3f} {p['au_max']:>7.3f} "
              f"{p['samples_per_s']:>10.0f} {p['mib_per_s']:>8.1f} {p['cpu_busy_fraction']:>8.0%}  {p['limit'] or ''}")
    print(f"max accelerators at AU >= {f['threshold']}: {f['max_accelerators']} (bound by {f['bound_by']})")
    return 0


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
    s.add_argument("--engine", default="multiprocessing", choices=ENGINES, help="engine that generates slides in parallel")
    s.add_argument("--workers", type=int, default=2, help="parallel slide writers (default 2)")
    s.set_defaults(fn=cmd_synth)

    s = command("validate", ["workload"], help="check a workload file and report every problem",
                description="Parse and validate a workload TOML; errors name the file, the key and what was expected.")
    s.set_defaults(fn=cmd_validate)

    s = command("run", ["workload", "storage", "results", "strict", "drop_caches"],
                help="run a workload's stages and write a run record",
                description=f"Run the pipeline stages ({', '.join(STAGES)}) of a workload and record "
                            "throughput, I/O and errors per stage under the results folder.")
    s.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)} (default: the workload's)")
    s.add_argument("--engine", choices=ENGINES,
                   help="engine for every stage, overriding the workload's (and its per-stage choices)")
    s.add_argument("--workers", type=int, help="worker processes of embedded engines (default: the workload's)")
    s.add_argument("--nodes", type=int, help="hosts of the cluster engines (engine.address / engine.master) that "
                                             "run the stages (default: the workload's engine.nodes, else all)")
    s.add_argument("--if-busy", choices=["wait", "fail"], default="wait",
                   help="when another run uses the workload's folder on this storage: wait for it (default) or fail")
    s.set_defaults(fn=cmd_run)

    s = command("fio", ["results", "strict"],
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

    s = command("feed", ["workload", "storage", "results", "strict"],
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
    s.set_defaults(fn=cmd_feed)

    s = command("calibrate", ["workload", "results"], help="measure the real training step time of the workload's model here",
                description="Time training steps of the workload's model (random data, synchronised) on this "
                            "machine's device; stored under RESULTS/calibration/ for train.accelerator = "
                            "'calibrated'.")
    s.add_argument("--model", choices=list(MODELS), help="override the workload's model")
    s.add_argument("--batch", type=int, help="override the workload's batch size")
    s.add_argument("--steps", type=int, default=10, help="measured steps (default 10)")
    s.set_defaults(fn=cmd_calibrate)

    s = command("runs", ["results"], help="list recorded runs with their headline figures",
                description="List the runs under a results folder: id, workload, engine, workers, storage, "
                            "status (with the error of failed runs) and headline figures.")
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
