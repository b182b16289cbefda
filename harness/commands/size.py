"""wsibench size: a storage answer from measured runs (bandwidth, operations, capacity; slides a day, GPUs fed)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path



def add(sub):
    s = sub.add_parser("size",
                       help="size a cluster's storage from measured runs: bandwidth, operations, capacity per stage; "
                            "slides/day and GPUs each storage can take",
                       description="From measured runs (wsibench run, with --observe or on an emulated profile for "
                                   "the operation counts; wsibench feed for the training input), an accelerator "
                                   "profile and each storage profile's fio characterisation (wsibench fio; else its "
                                   "vendor figures): per stage the read/write bandwidth, operations/s, creates/s, "
                                   "capacity and host cores the target needs; per storage the slides a day it can "
                                   "preprocess, what binds it, the predicted stage times and workers needed, and the "
                                   "GPUs it can feed; decode cores per GPU. Every figure names the measurement it "
                                   "came from. For a cluster (--hosts, --workers-per-host, --cores-per-host) and the "
                                   "target's slides (--slide-size): per storage and stage what binds (a client "
                                   "host's link, cores, chains or folder locks times N; the storage targets or the "
                                   "metadata server, from wsibench fio --hosts N), its time and headroom (a run of the "
                                   "same workload on one of the storages, one host, gives that storage's items as "
                                   "measured there), and the "
                                   "slides a day from one budget of preprocessing, training and inference within "
                                   "--window-hours; the metadata server against the patch stage's creates; capacity "
                                   "and inodes (docs/sizing.md). Written to RESULTS/sizing/ as JSON and CSV; "
                                   "wsibench report shows it.")
    s.add_argument("--results", help="where the answer is written (RESULTS/sizing/) and calibrations and fio "
                                     "characterisations are looked for besides the folders given (default: the "
                                     "first folder given: a results folder, or a run folder's own)")
    s.add_argument("runs", nargs="+", help="run folders, or folders holding them (their fio/ characterisations are "
                                            "looked for there too)")
    s.add_argument("--accelerator", default="h100-inception_v3-bf16-b128",
                   help="accelerator training the model: a registry name (see wsibench feed --help) or a stored "
                        "calibration's name (default h100-inception_v3-bf16-b128)")
    s.add_argument("--gpus", type=int, default=8, help="GPUs training at once (default 8)")
    s.add_argument("--slides-per-day", type=float, default=1000, help="slides to preprocess per day (default 1000)")
    s.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    s.add_argument("--dataset-slides", type=int, help="slides in the training set, for capacity and training's time (default: a day's: "
                        "training then runs over each day's slides)")
    s.add_argument("--storage", action="append", help="storage profile to answer for (repeat; default: the runs')")
    s.add_argument("--workers", type=int,
                   help="preprocessing workers for the stage-time predictions (default: measured)")
    s.add_argument("--threshold", type=float, default=0.9, help="AU to sustain (default 0.9)")
    c = s.add_argument_group("the target cluster")
    c.add_argument("--hosts", type=positive_int, default=1,
                   help="client hosts in the target cluster, sharing the storage (default 1); the servers' own limits "
                        "come from wsibench fio PROFILE --hosts N")
    c.add_argument("--workers-per-host", type=positive_int,
                   help="preprocessing workers on each host (default: as the runs measured)")
    c.add_argument("--cores-per-host", type=positive_float, help="CPU cores of each host (default: this host's)")
    c.add_argument("--window-hours", type=positive_float, default=24.0,
                   help="the batch window preprocessing, training and inference share, one after the other (default "
                        "24: a day)")
    c.add_argument("--slide-size", type=slide_size, default="camelyon16",
                   help="the target's slides: a side in pixels (e.g. 150000 or 150k), camelyon16 (its typical slide "
                        "and its patches a slide; the default), or measured (slides like the runs'); each stage's "
                        "per-slide demand is scaled from the runs' slides by area, tissue area or patches")
    return s


def run(a) -> int:
    from .. import sizing

    results = Path(a.results) if a.results else results_folder(Path(a.runs[0]))
    doc = sizing.answer(a.runs, results, accelerator=a.accelerator, storages=a.storage,
                        slides_per_day=a.slides_per_day, gpus=a.gpus, epochs=a.epochs, threshold=a.threshold,
                        dataset_slides=a.dataset_slides, workers=a.workers, hosts=a.hosts,
                        workers_per_host=a.workers_per_host, cores_per_host=a.cores_per_host,
                        window_hours=a.window_hours, slide_size=a.slide_size)
    out = sizing.save(results, doc)
    print(sizing.text(doc))
    print(f"[size] {out} (and {out.with_suffix('.csv').name}); wsibench report {results} shows it", file=sys.stderr)
    return 0


def results_folder(path: Path) -> Path:
    """Where the answer goes without --results: the results folder given (a run folder's own, above it)."""
    return path.parent if (path / "summary.json").is_file() else path


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not 1 or more")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{v:g} is not more than 0")
    return v


def slide_size(text: str):
    from ..sizing.slides import parse_slide_size

    try:
        return parse_slide_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
