"""wsibench feed: how many emulated accelerators a storage keeps at AU >= the threshold."""
from __future__ import annotations

import argparse

from ..config import load_workload, parse_workload
from .options import parents


def add(sub):
    from ..accelerators import describe

    s = sub.add_parser("feed", parents=parents("workload", "storage", "results", "strict", "observe"),
                       help="find how many emulated accelerators a storage keeps at AU >= 90%%",
                       description="Emulated accelerators (a real tf.data pipeline per process, the model step "
                                   "replaced by a sleep of the accelerator's step time; train.accelerator or "
                                   "train.step_time_s in the workload) are added, doubling then bisecting, until AU "
                                   "falls below the threshold. The ranks pass a barrier after every step, as MLPerf "
                                   "Storage's engine (DLIO) does. Each probe counts the bytes the storage delivered "
                                   "during its measured steps beside those the ranks consumed: a probe that consumed "
                                   "more measured buffers or caches, not the storage, and says so. --mlperf applies "
                                   "MLPerf Storage's rules (each sample once per epoch, a warm-up and 5 runs that all "
                                   "pass, dataset >= 5x memory or caches defeated, the barrier) and refuses a result "
                                   f"that breaks one (exit status 3). Accelerators known: {describe()}; or "
                                   "'calibrated'.")
    s.add_argument("--threshold", type=float, default=0.9, help="AU to sustain (default 0.9)")
    s.add_argument("--max", type=int, default=16, help="most accelerators to try (default 16)")
    s.add_argument("--steps", type=int, default=30, help="steps per accelerator and probe (default 30; not --mlperf)")
    s.add_argument("--repetitions", type=int, default=1,
                   help="runs of each probe; the mean AU decides and the spread is reported (default 1; not --mlperf)")
    s.add_argument("--decode", action=argparse.BooleanOptionalAction, default=None,
                   help="decode each image (default: the workload's train.decode, true); --no-decode reads and "
                        "parses records only, as MLPerf Storage does, so the host's CPU does not cap the answer")
    s.add_argument("--barrier", action=argparse.BooleanOptionalAction, default=True,
                   help="a barrier across the ranks after every step (default; --no-barrier: only after the first "
                        "and the last step, to see what the barrier costs)")
    s.add_argument("--hosts", type=int, default=None,
                   help="on a lab profile with client hosts (storage_profiles/moosefs-lab-clients.toml): deal the "
                        "accelerators over this many client hosts, each reading through its own mount")
    m = s.add_argument_group("MLPerf mode")
    m.add_argument("--mlperf", action="store_true",
                   help="MLPerf Storage's rules and report: per accelerator count a warm-up run and --runs runs of "
                        "--epochs epochs, each accelerator reading its own shards once an epoch (DLIO's TensorFlow "
                        "reader: no shuffle, no decode), AU as DLIO computes it")
    m.add_argument("--epochs", type=int, default=5, help="epochs a run (default 5, MLPerf Storage's resnet50)")
    m.add_argument("--runs", type=int, default=5, help="runs after the warm-up (default 5; fewer breaks a rule)")
    m.add_argument("--no-warmup", dest="warmup", action="store_false", help="no warm-up run (breaks a rule)")
    m.add_argument("--read-threads", type=int, default=1,
                   help="shards each accelerator reads at once (DLIO's reader.read_threads; default 1)")
    m.add_argument("--prefetch", type=int, default=2, help="batches prefetched (DLIO's reader.prefetch_size; default 2)")
    return s


def run(a) -> int:
    from ..feed import MLPerf, feed

    w = load_workload(a.workload)
    if a.decode is not None:
        w = parse_workload(w.model_dump() | {"train": w.train.model_dump() | {"decode": a.decode}}, w.source)
    mlperf = MLPerf(a.epochs, a.runs, a.warmup, a.read_threads, a.prefetch) if a.mlperf else None
    if mlperf and a.decode:
        print("[feed] --mlperf reads and parses records, as MLPerf Storage does; --decode is ignored")
    s = feed(w, a.storage, a.results, a.threshold, a.max, a.steps, a.strict, a.repetitions, a.observe,
             barrier=a.barrier, mlperf=mlperf, hosts=a.hosts)
    f = s["feed"]
    return _print_mlperf(f) if mlperf else _print_probes(f)


def _mib(v) -> str:
    return f"{v:>9.1f}" if v is not None else f"{'?':>9}"


def _print_probes(f: dict) -> int:
    print(f"{'accelerators':>12} {'AU':>7} {'AU min':>7} {'AU max':>7} {'slowest':>7} {'samples/s':>10} "
          f"{'consumed':>9} {'delivered':>9} {'host CPU':>8} {'cores/acc':>9}  limit")
    for p in f["probes"]:
        print(f"{p['accelerators']:>12} {p['au']:>7.3f} {p['au_min']:>7.3f} {p['au_max']:>7.3f} "
              f"{p['au_min_rank']:>7.3f} {p['samples_per_s']:>10.0f} {_mib(p.get('consumed_mib_per_s'))} "
              f"{_mib(p.get('delivered_mib_per_s'))} {p['cpu_busy_fraction']:>8.0%} "
              f"{p.get('cores_per_accelerator_at_threshold') or 0:>9.2f}  {p['limit'] or ''}"
              + ("  NOT A STORAGE MEASUREMENT" if p.get("storage_measurement") is False else ""))
    print(f"max accelerators at AU >= {f['threshold']}: {f['max_accelerators']} (bound by {f['bound_by']}); "
          f"consumed, delivered: MiB/s the ranks' steps took and the storage delivered over the measured steps "
          f"(delivered counted by {f.get('delivered_how', '?')}); cores/acc: the input pipeline's CPU per "
          f"accelerator at AU {f['threshold']} ({'decoding' if f.get('decode', True) else 'bytes only, no decode'})")
    bad = [p for p in f["probes"] if p.get("storage_measurement") is False]
    if bad:
        print(f"not a storage measurement ({len(bad)} probe(s)): {bad[0]['not_a_storage_measurement']}; "
              "use --mlperf for MLPerf Storage's rules")
    return 0


def _print_mlperf(f: dict) -> int:
    print(f"MLPerf mode: batch {f['batch']}, {f['step_s']} s a step, {f['epochs']} epochs a run, "
          f"{'a warm-up and ' if f['warmup'] else ''}{f['runs']} runs per count, barrier every step, "
          f"read_threads {f['read_threads']}, prefetch {f['prefetch']}")
    print(f"{'accelerators':>12} {'run':>4} {'AU':>7} {'slowest':>7} {'samples/s':>10} {'MiB/s':>9} {'delivered':>9}")
    for p in f["probes"]:
        for r in p["runs"]:
            print(f"{p['accelerators']:>12} {'w' if r['warmup'] else r['run']:>4} {r['au']:>7.3f} "
                  f"{r['au_min_rank']:>7.3f} {r['samples_per_s']:>10.0f} {_mib(r['mib_per_s'])} "
                  f"{_mib(r['delivered_mib_per_s'])}")
        print(f"{'':>12} {'':>4} {'passes' if p['passed'] else 'fails'}" + (f" ({p['limit']})" if p["limit"] else ""))
    if f["refused"]:
        print(f"refused: {f['refused']}")
        if f.get("max_accelerators_measured"):
            print(f"(measured, not an MLPerf result: {f['max_accelerators_measured']} accelerators held AU >= "
                  f"{f['threshold']})")
        return 3
    print(f"max accelerators at AU >= {f['threshold']} (MLPerf Storage's rules): {f['max_accelerators']} on one "
          f"host (bound by {f['bound_by']}); MiB/s: samples/s x the bytes of a record, as DLIO reports it; "
          f"delivered: what the storage delivered, counted by {f.get('delivered_how', '?')}")
    return 0
