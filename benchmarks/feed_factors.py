"""What each difference between ``wsibench feed``'s first probe and MLPerf Storage's measurement does to the figure
(issue 29, item 1): a ladder of configurations on one storage and one accelerator count, each row changing one
thing from the row above, from the probe as it was (30 steps of the training pipeline: a 2,048-record shuffle
buffer, 4 shards interleaved, AUTOTUNE prefetch and parse, the rank's shards repeated, no barrier between steps) to
the MLPerf mode (DLIO 2.0's reader and timing, its parse in the graph, then in a tf.py_function as DLIO's), and the
MLPerf mode with its ranks on one core (placement).

Per row: AU over the steps after the first (feed's and DLIO's definition), AU with the first step counted (the
probe rows: what excluding it, after the buffers filled, did), the slowest rank's AU, samples/s, MiB/s the
accelerators consumed and MiB/s the storage delivered during the measured steps (``feed.delivered_counter``: an
emulated storage's FUSE count, a lab's chunk-server links, the page cache's growth), and whether a rank re-read its
shards within the probe (its steps take more records than its shards hold). The rows run ``--repetitions`` times,
the ladder forwards then backwards (the machine's load drifts), and the table gives medians; the load average is
recorded with every run.

    python benchmarks/feed_factors.py --results /tmp/vsd --storage shaped-emulated --accelerators 8 --step 0.5

It uses benchmarks/vs_dlio.py's dataset (``workloads/vs_dlio.toml``, prepared on local and copied into the
storage); writes feed_factors.json under --results/feed_factors/ and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (label, what changes from the row above)
LADDER = [
    ("probe as it was: 30 steps, shuffle buffer 2,048, 4 shards interleaved, AUTOTUNE, no barrier",
     {"kind": "probe", "steps": 30, "shuffle_buffer": 2048, "interleave_cycle": 4, "prefetch": -1,
      "parallel_calls": -1, "barrier": False}),
    ("+ a barrier across the ranks after every step", {"barrier": True}),
    ("+ no shuffle buffer", {"shuffle_buffer": 0}),
    ("+ DLIO's reader buffers: 1 shard at a time, 1 parse call, 2 batches prefetched",
     {"interleave_cycle": 1, "parallel_calls": 1, "prefetch": 2}),
    ("+ one epoch's steps, not 30 (no rank re-reads its shards)", {"steps": "epoch"}),
    ("MLPerf mode: DLIO's reader and timing, epochs of a new iterator each, a fresh start; parse in the graph",
     {"kind": "mlperf", "parse": "graph"}),
    ("+ each batch parsed in a tf.py_function, as DLIO 2.0's reader (its CPU cost)", {"parse": "py_function"}),
    ("+ every rank on one core (placement)", {"cpus": 1}),
]


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_row(cfg: dict, files: list[str], records: list[int], out: Path, train_cfg, step: float, n: int,
            epochs: int, counter) -> dict:
    """One run of one ladder row: its figures."""
    from harness import feed as F
    from harness.stages import distributed

    batch = train_cfg.batch_size
    epoch_steps = F.steps_per_epoch(records, n, batch)
    steps = epoch_steps if cfg["steps"] == "epoch" else cfg["steps"]
    cpus = None
    if cfg.get("cpus"):
        cpus = os.sched_getaffinity(0)
        os.sched_setaffinity(0, set(sorted(cpus)[:cfg["cpus"]]))  # the ranks inherit it
    try:
        if cfg["kind"] == "mlperf":
            m = F.MLPerf(epochs=epochs, runs=1, warmup=False, read_threads=1, prefetch=2, parse=cfg["parse"])
            p = F.mlperf_probe(files, out, train_cfg, step, n, epoch_steps, m, 0.9, counter, False)
            r = p["runs"][-1]
            return {"au": r["au"], "au_first_step_counted": None, "au_min_rank": r["au_min_rank"],
                    "samples_per_s": r["samples_per_s"], "consumed_mib_per_s": r["mib_per_s"],
                    "delivered_mib_per_s": r["delivered_mib_per_s"], "consumed_bytes": r["consumed_bytes"],
                    "delivered_bytes": r["delivered_bytes"], "steps": epoch_steps, "epochs": epochs,
                    "rereads": False}
        tc = train_cfg.model_copy(update={k: cfg[k] for k in ("shuffle_buffer", "interleave_cycle", "prefetch",
                                                              "parallel_calls")})
        marks: dict = {}
        hooks = {t: (lambda _r, t=t: marks.__setitem__(t, counter())) for t in "MZ"} if callable(counter) else None
        r = distributed.run(files, out, tc, "emulated", n, steps, step, barrier=cfg["barrier"], hooks=hooks)
        got = (marks["Z"] - marks["M"]) if None not in (marks.get("M"), marks.get("Z")) else None
        rows = r["steps_table"]  # every rank's every step, the first included
        busy = sum(s["wait_seconds"] + s["compute_seconds"] + s["barrier_seconds"] for s in rows)
        fewest = min(sum(records[k::n]) for k in range(n))
        return {"au": r["accelerator_utilization"],
                "au_first_step_counted": sum(s["compute_seconds"] for s in rows) / busy if busy else None,
                "au_min_rank": r["au_slowest_rank"], "samples_per_s": r["images_per_s"],
                "consumed_mib_per_s": r["consumed_mib_per_s"],
                "delivered_mib_per_s": got / r["wall_seconds"] / 2**20 if got is not None else None,
                "consumed_bytes": r["consumed_bytes"], "delivered_bytes": got, "steps": steps,
                "rereads": steps * batch > fewest}
    finally:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results", help="results folder (the dataset, feed_factors.json)")
    ap.add_argument("--storage", default="shaped-emulated", help="storage profile (default shaped-emulated)")
    ap.add_argument("--accelerators", type=int, default=8)
    ap.add_argument("--step", type=float, default=0.5, help="emulated step time, s (default 0.5)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2, help="the MLPerf rows' epochs (default 2)")
    ap.add_argument("--repetitions", type=int, default=2)
    ap.add_argument("--rows", default=None, help="ladder rows to run, e.g. 0,1,5 (default all)")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from benchmarks import vs_dlio
    from harness import feed as F
    from harness.config import load_profile, load_workload
    from harness.storage import attached, drop_caches

    res = Path(a.results).resolve()
    vs_dlio.prepare(res, [a.storage])
    wl = load_workload(str(vs_dlio.WORKLOAD))
    train_cfg = wl.train.model_copy(update={"batch_size": a.batch, "step_time_s": a.step, "augment": False,
                                            "decode": False})
    profile = load_profile(a.storage)
    rows_wanted = [int(x) for x in a.rows.split(",")] if a.rows else list(range(len(LADDER)))
    cfgs, cur = [], {}
    for label, change in LADDER:
        cur = dict(cur, **change)
        cfgs.append((label, dict(cur)))
    drop = drop_caches if os.geteuid() == 0 and not profile.emulated else None
    runs = []
    with attached(profile, res, workload=wl.name) as st:
        tfr = st.root / wl.name / "tfrecords"
        shards = sorted(json.loads((tfr / "splits.json").read_text())["splits"]["train"]["shards"],
                        key=lambda s: s["path"])
        files, records = [str(tfr / s["path"]) for s in shards], [s["records"] for s in shards]
        counter, how = F.delivered_counter(st, files)
        out = res / "feed_factors" / profile.name
        for rep in range(a.repetitions):
            for i in (rows_wanted if rep % 2 == 0 else rows_wanted[::-1]):
                if drop:
                    drop()
                l0 = loadavg()
                t0 = time.time()
                r = run_row(cfgs[i][1], files, records, out, train_cfg, a.step, a.accelerators, a.epochs, counter)
                r.update(row=i, repetition=rep, loadavg_before=l0, loadavg_after=loadavg(),
                         wall_seconds=time.time() - t0)
                runs.append(r)
                share = (f", delivered/consumed {r['delivered_bytes'] / r['consumed_bytes']:.2f}"
                         if r["delivered_bytes"] is not None and r["consumed_bytes"] else "")
                print(f"[feed_factors] row {i} rep {rep}: AU {r['au']:.3f} (slowest rank {r['au_min_rank']:.3f}), "
                      f"{r['samples_per_s']:.0f} samples/s, consumed {r['consumed_mib_per_s']:.1f} MiB/s{share}, "
                      f"load {l0:.1f}-{r['loadavg_after']:.1f}", flush=True)
    doc = {"storage": profile.name, "emulated": profile.emulated, "delivered_how": how, "accelerators": a.accelerators,
           "step_s": a.step, "batch": a.batch, "epochs": a.epochs, "files": len(files), "records": sum(records),
           "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu_count": os.cpu_count(),
           "ladder": [{"row": i, "label": cfgs[i][0], "config": cfgs[i][1]} for i in rows_wanted], "runs": runs}
    path = res / "feed_factors" / "feed_factors.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.is_file() else {"ladders": []}
    old["ladders"].append(doc)
    path.write_text(json.dumps(old, indent=1))
    print(table(doc))
    return 0


def table(doc: dict) -> str:
    """The ladder as a Markdown table: medians over the repetitions, the change in AU from the row above."""
    lines = [f"{doc['storage']}, {doc['accelerators']} accelerators, {doc['step_s']} s a step, batch {doc['batch']} "
             f"({doc['files']} shards, {doc['records']} records; {doc['when']})", "",
             "| # | configuration | AU | AU change | AU, first step counted | slowest rank | samples/s | consumed MiB/s "
             "| delivered MiB/s | delivered/consumed | rank re-reads | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    prev = None
    for lad in doc["ladder"]:
        rs = [r for r in doc["runs"] if r["row"] == lad["row"]]
        if not rs:
            continue
        med = lambda k: (statistics.median(r[k] for r in rs) if all(r[k] is not None for r in rs)  # noqa: E731
                         else None)
        au = med("au")
        share = (statistics.median(r["delivered_bytes"] / r["consumed_bytes"] for r in rs)
                 if all(r["delivered_bytes"] is not None and r["consumed_bytes"] for r in rs) else None)
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        lines.append(f"| {lad['row']} | {lad['label']} | {100 * au:.1f}% | "
                     f"{'' if prev is None else f'{100 * (au - prev):+.1f}'} | "
                     f"{f(med('au_first_step_counted') and 100 * med('au_first_step_counted'), '.1f')} | "
                     f"{100 * med('au_min_rank'):.1f}% | {med('samples_per_s'):.0f} | {med('consumed_mib_per_s'):.1f} | "
                     f"{f(med('delivered_mib_per_s'), '.1f')} | {f(share, '.2f')} | "
                     f"{'yes' if any(r['rereads'] for r in rs) else 'no'} | "
                     f"{min(r['loadavg_before'] for r in rs):.1f}-{max(r['loadavg_after'] for r in rs):.1f} |")
        prev = au
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
