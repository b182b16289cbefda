"""The sizing model against what it has not seen: from runs on ``local`` (observed: --observe) and each emulated
profile's fio characterisation, predict the patch stage's time and feed's most accelerators on ``nfs-emulated``
and ``beegfs-emulated``, then measure them there. Root and /dev/fuse needed.

Each repetition measures local, then the emulated profiles, one after the other (the machine is shared: the
figures are min / median / max over the repetitions, and predictions are made from each repetition's local run).

  python benchmarks/sizing_proof.py --slides 10 --size 16384 --repetitions 3 --out /tmp/proof
  python benchmarks/sizing_proof.py --skip-feed ...       # the patch stage alone

Prints a table (predicted, measured min / median / max, median ratio) and writes proof.json under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

EMULATED = ("nfs-emulated", "beegfs-emulated")
# harness is imported inside the functions: asv imports every module under benchmarks/ to discover its suite


def characterise(res: Path, profile: str, observe: bool = False, size_mb: int = 64, runtime: float = 2.0,
                 small_files: int = 500) -> dict:
    """``wsibench fio`` on a profile (through the counting passthrough when ``observe``); the stored document."""
    from harness.storage import characterisations

    cmd = [sys.executable, "-m", "harness.cli", "fio", profile, "--results", str(res), "--size", str(size_mb),
           "--runtime", str(runtime), "--small-files", str(small_files)] + (["--observe"] if observe else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"wsibench fio {profile} failed: {r.stderr[-2000:]}")
    return characterisations.latest(res, profile, observed=observe)


def place(res: Path, workload: str, folders: tuple[str, ...]) -> None:
    """Copy the workload's prepared folders from local into each emulated profile's backing folder (once)."""
    for p in EMULATED:
        dest = res / "emulated" / p / "backing" / workload
        for sub in folders:
            if not (dest / sub).exists():
                shutil.copytree(res / "data" / workload / sub, dest / sub)


def patch_proof(res: Path, slides: int, size: int, repetitions: int, workers: int = 2, fio_args: dict | None = None,
                progress=print) -> dict:
    """Predicted and measured patch-stage seconds (work, start-up excluded) on each emulated profile. Each
    repetition characterises the three storages with fio, then runs the stage on each: its predictions use its
    own characterisations and its own local run (the machine's load drifts over minutes)."""
    from harness import pipeline, sizing
    from harness.config import parse_workload

    os.environ["WSIBENCH_LOCAL_ROOT"] = str(res / "data")
    wl = parse_workload({"name": "proof", "stages": ["masks", "patches"],
                         "dataset": {"kind": "synthetic", "synthetic": {"slides": slides, "size": size, "seed": 5,
                                                                        "test_fraction": 0.2}},
                         "engine": {"name": "multiprocessing", "workers": workers},
                         "patches": {"max_per_class": 400}})
    if not (res / "data" / "proof" / "masks").exists():
        pipeline.run(wl, stages=["masks"], results_dir=res)
    place(res, "proof", ("dataset", "masks"))
    measured = {p: [] for p in ("local", *EMULATED)}
    predicted = {p: [] for p in EMULATED}
    for rep in range(repetitions):
        costs = {"local": sizing.storage_costs(characterise(res, "local", True, **(fio_args or {})))}
        for p in EMULATED:
            costs[p] = sizing.storage_costs(characterise(res, p, **(fio_args or {})))
        for p in ("local", *EMULATED):
            s = pipeline.run(wl, stages=["patches"], storage=p, results_dir=res, fresh=True, observe=p == "local",
                             tags={"proof": p, "repetition": rep})
            st = s["stages"]["patches"]
            measured[p].append(st["work_seconds"])
            if p == "local":
                demand = sizing.stage_demand(s | {"_dir": str(res / s["run_id"])}, "patches")
                for q in EMULATED:
                    predicted[q].append(sizing.predict_stage(demand, costs["local"], costs[q])["seconds"])
            progress(f"[proof] patches, repetition {rep + 1}: {p} {st['work_seconds']:.2f} s"
                     + (" (predicted " + ", ".join(f"{q} {predicted[q][-1]:.2f} s" for q in EMULATED) + ")"
                        if p == "local" else ""))
    ratios = {q: [a / b for a, b in zip(predicted[q], measured[q])] for q in EMULATED}  # each repetition's own
    return {"measured_seconds": measured, "predicted_seconds": predicted, "ratios": ratios,
            "patches": s["stages"]["patches"]["patches"], "workers": workers, "slides": slides, "size": size}


def feed_proof(res: Path, slides: int, size: int, patch_px: int, quality: int, batch: int, step_s: float,
               max_n: int, steps: int = 30, fio_args: dict | None = None, progress=print) -> dict:
    """Predicted and measured most accelerators (and the samples/s at the first failing count) on each emulated
    profile, from a feed on local (observed) and the profiles' fio characterisations. Records are bytes only
    (train.decode = false)."""
    from harness import pipeline, sizing
    from harness.config import parse_workload
    from harness.feed import feed
    from harness.storage import characterisations

    os.environ["WSIBENCH_LOCAL_ROOT"] = str(res / "data")
    wl = parse_workload({"name": "feedproof", "stages": ["masks", "patches", "tfrecords"],
                         "dataset": {"kind": "synthetic", "synthetic": {"slides": slides, "size": size, "seed": 5,
                                                                        "test_fraction": 0.2}},
                         "engine": {"name": "multiprocessing", "workers": 2},
                         "patches": {"max_per_class": 400, "size": patch_px, "jpeg_quality": quality},
                         "tfrecords": {"shard_mb": 4, "val_fraction": 0.2},
                         "train": {"model": "small_cnn", "step_time_s": step_s, "batch_size": batch, "decode": False}})
    if not (res / "data" / "feedproof" / "tfrecords" / "splits.json").exists():
        pipeline.run(wl, results_dir=res)
    place(res, "feedproof", ("tfrecords",))
    costs = {p: sizing.storage_costs(characterisations.latest(res, p) or characterise(res, p, **(fio_args or {}))) for p in EMULATED}
    out = {}
    local = feed(wl, "local", res, 0.9, max_n, steps=steps, observe=True)
    demand = sizing.feed_demand(local)
    out["local"] = {"measured": local["feed"]["max_accelerators"], "bound_by": local["feed"]["bound_by"]}
    for p in EMULATED:
        pred = sizing.predict_feed(demand, costs[p])
        s = feed(wl, p, res, 0.9, max_n, steps=steps)
        f = s["feed"]
        fail = next((q for q in f["probes"] if q["accelerators"] == f["first_failing"]), None)
        out[p] = {"predicted": min(pred["max_accelerators"], max_n), "predicted_uncapped": pred["max_accelerators"],
                  "measured": f["max_accelerators"],
                  "predicted_samples_per_s": pred["samples_per_s"], "binding": pred["binding"],
                  "measured_samples_per_s_at_first_failing": fail["samples_per_s"] if fail else None,
                  "first_failing": f["first_failing"]}
        progress(f"[proof] feed on {p}: predicted {pred['max_accelerators']} ({pred['binding']}, "
                 f"{pred['samples_per_s']:.0f} samples/s), measured {f['max_accelerators']}")
    out["demand"] = {k: v for k, v in demand.items() if k != "probes"}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/sizing-proof", help="results folder (default results/sizing-proof)")
    ap.add_argument("--slides", type=int, default=10)
    ap.add_argument("--size", type=int, default=16384, help="slide side in px (default 16384)")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-feed", action="store_true")
    ap.add_argument("--feed-max", type=int, default=8, help="most emulated accelerators tried (default 8)")
    ap.add_argument("--feed-batch", type=int, default=64, help="emulated batch (default 64)")
    ap.add_argument("--feed-step", type=float, default=0.2, help="emulated step in seconds (default 0.2)")
    ap.add_argument("--skip-patches", action="store_true")
    a = ap.parse_args()
    res = Path(a.out).resolve()
    res.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WSIBENCH_QUIET", "1")
    fio_args = {"size_mb": 128, "runtime": 4.0, "small_files": 1000}
    doc = {} if a.skip_patches else {"patches": patch_proof(res, a.slides, a.size, a.repetitions, a.workers, fio_args,
                                                            progress=lambda m: print(m, file=sys.stderr, flush=True))}
    if not a.skip_feed:
        doc["feed"] = feed_proof(res, 6, 8192, 448, 100, a.feed_batch, a.feed_step, a.feed_max, fio_args=fio_args,
                                 progress=lambda m: print(m, file=sys.stderr, flush=True))
    (res / "proof.json").write_text(json.dumps(doc, indent=1))
    p = doc.get("patches")
    if p:
        print_patches(p, a.repetitions)
    if "feed" in doc:
        print("feed, most accelerators at AU >= 0.9 (decode off):")
        for q in EMULATED:
            f = doc["feed"][q]
            print(f"  {q:<16} predicted {f['predicted']} ({f['binding']}, {f['predicted_samples_per_s']:.0f} samples/s)"
                  f", measured {f['measured']} (first failing {f['first_failing']}: "
                  f"{f['measured_samples_per_s_at_first_failing'] or 0:.0f} samples/s)")
    print(f"[proof] {res / 'proof.json'}", file=sys.stderr)
    return 0


def print_patches(p: dict, repetitions: int) -> None:
    print(f"patch stage, {p['slides']} slides of {p['size']} px, {p['patches']} patches, {p['workers']} workers "
          f"(work seconds, {repetitions} repetitions):")
    print(f"  {'storage':<16} {'predicted s':>20} {'measured s':>20} {'predicted/measured':>20}")
    rng = lambda v, f=".2f": f"{min(v):{f}}/{statistics.median(v):{f}}/{max(v):{f}}"  # noqa: E731
    for q, m in p["measured_seconds"].items():
        pr, r = p["predicted_seconds"].get(q), p["ratios"].get(q)
        print(f"  {q:<16} {rng(pr) if pr else '(measured on)':>20} {rng(m):>20} {rng(r) if r else '':>20}")
    print("  (min/median/max over the repetitions; each ratio pairs a repetition's prediction with its measurement)")


if __name__ == "__main__":
    sys.exit(main())
