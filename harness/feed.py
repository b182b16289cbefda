"""How many emulated accelerators does a storage keep busy? The AU curve of ``wsibench feed``, recorded as a run.

Prepares the workload's TFRecords on the storage when they are missing (a run of its own), then searches: probes
of emulated accelerators (``stages.distributed.run``), doubling their number until AU falls below the threshold,
then bisecting; ``limit`` names what bounded a probe that missed.

Two modes. The probe (``search``): ``steps`` steps of the workload's own tf.data pipeline per accelerator, a
barrier across the ranks after every step (DLIO's ``comm.barrier()``), AU over the steps after the first. The
MLPerf mode (``mlperf_search``): MLPerf Storage's rules as published, each checked, a run that breaks one refused
with the rule's name (``RULES``). Both count what the storage delivered during the measured steps beside what the
ranks consumed (``delivered_counter``): a probe that consumed more than the storage delivered measured buffers or
caches, not the storage, and says so.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import accelerators
from .config import ConfigError, Workload, load_profile
from .metrics import cpu_busy
from .pipeline import RunOptions, run_stages
from .results import record
from .stages import distributed
from .storage import attached, drop_caches, iostats
from .storage.pagecache import resident_bytes
from .tfrecord_format import steps_per_epoch

# MLPerf Storage's rules (v1.0/v2.0 training, as published), by the name a refusal gives
RULES = {
    "sample_once": "each sample read once per epoch: every accelerator reads its own shards (as many shards as "
                   "accelerators at least), no sample twice in an epoch, at least 2 steps an epoch",
    "dataset_5x_memory": "the dataset at least 5x the host's memory, or caches defeated: the storage must deliver "
                         "every byte the accelerators consume (measured per epoch)",
    "warmup_and_5_runs": "one warm-up run, then 5 runs, every one of them with AU at or above the threshold",
    "step_barrier": "a barrier across the accelerators after every step",
    "workload_batch_and_step": "the workload's batch and step time (the accelerator's) for every accelerator",
}
DELIVERED_TOLERANCE = 0.99  # a storage measurement: the storage delivered at least this share of the bytes consumed


@dataclass(frozen=True)
class MLPerf:
    """The MLPerf mode's settings (``wsibench feed --mlperf``); runs < 5 or no warm-up break a rule."""
    epochs: int = 5           # MLPerf Storage's resnet50 workload: 5 epochs a run
    runs: int = 5             # measured runs, after the warm-up
    warmup: bool = True
    read_threads: int = 1     # DLIO's reader.read_threads (TFRecordDataset num_parallel_reads)
    prefetch: int = 2         # DLIO's reader.prefetch_size (batches)
    parse: str = "py_function"  # DLIO's: each batch parsed in a tf.py_function (tfdata.mlperf_dataset); or "graph"


def counted_between(before, after):
    """Bytes the storage delivered between two readings of its counter; None where either is missing, or where the
    counter fell (a page cache's resident bytes are a level, not a count: pages evicted in the window make the
    difference no count of what was read)."""
    if before is None or after is None or after < before:
        return None
    return after - before


def feed(workload: Workload, storage: str | None = None, results_dir: str | Path = "results",
         threshold: float = 0.9, max_accelerators: int = 16, steps: int = 30, strict: bool = False,
         repetitions: int = 1, observe: bool = False, barrier: bool = True, mlperf: MLPerf | None = None,
         hosts: int | None = None) -> dict:
    """``hosts``: on a lab profile with client hosts, the ranks are dealt over that many of them, each host reading
    through its own mount (as GPUs on several servers share one file system); else they run on this host."""
    results_dir = Path(results_dir).resolve()
    cfg = workload.train
    emu = accelerators.resolve(cfg, results_dir)
    if emu is None:
        raise ConfigError(f"{workload.source}: feed needs train.accelerator or train.step_time_s (the emulated step)")
    profile = load_profile(storage or workload.storage)
    if hosts and (profile.kind != "lab" or observe):
        raise ConfigError(f"feed --hosts {hosts}: only on a lab profile with client hosts (lab.client_hosts), "
                          f"without --observe (each client host reads through its own mount); {profile.name} is "
                          f"{'observed' if observe else profile.kind}")
    with attached(profile, results_dir, strict, observe, workload.name) as st:
        root = st.root
        placement = None
        if hosts:
            from .storage import lab

            placement = lab.client_prefixes(lab.status(st.real_root), hosts)
        tfr = root / workload.name / "tfrecords"
        if not (tfr / "splits.json").is_file():
            print(f"[feed] preparing TFRecords on {profile.name}", file=sys.stderr)
            run_stages(workload, RunOptions(stages=("masks", "patches", "tfrecords"), results_dir=results_dir,
                                            tags={"role": "prepare"}), st)
        engine = {"name": "emulated-accelerators", "workers": None, "address": None}
        with record.recording(results_dir, workload, st.record, engine, kind="feed") as rec:
            summary = rec.summary
            summary["feed"] = {"accelerator": {"name": cfg.accelerator, "step_s": emu.step_s, "batch": emu.batch,
                                               "source": emu.source}}
            shards = sorted(json.loads((tfr / "splits.json").read_text())["splits"]["train"]["shards"],
                            key=lambda s: s["path"])
            files = [str(tfr / s["path"]) for s in shards]
            emulated_cfg = cfg.model_copy(update={"batch_size": emu.batch, "augment": False})
            data = sum(Path(f).stat().st_size for f in files)
            memory = summary["environment"]["memory_bytes"]
            summary["feed"]["dataset"] = {  # MLPerf Storage's rule: under 5x RAM the page cache may serve it
                "bytes": data, "memory_bytes": memory, "fits_in_memory": data < memory,
                "potential_caching": data < 5 * memory and not profile.emulated,
                "shard_records": [s["records"] for s in shards]}
            counter, how = delivered_counter(st, files, hosts or 0)
            summary["feed"]["delivered_how"] = how
            summary["feed"]["client_hosts"] = hosts or None  # None: the ranks ran on this host
            progress = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
            out = root / workload.name / "feed"
            try:
                if mlperf:
                    result = mlperf_search(files, [s["records"] for s in shards], out, emulated_cfg, emu.step_s,
                                           mlperf, threshold, max_accelerators, counter, data, memory,
                                           profile.emulated, progress=progress, hosts=placement)
                else:
                    dropper = drop_caches if os.geteuid() == 0 else None  # before every probe, where allowed
                    result = search(files, out, emulated_cfg, emu.step_s, threshold, max_accelerators, steps,
                                    repetitions, dropper, progress=progress, io_snapshot=lambda: iostats.snapshot(root),
                                    storage_bandwidth=_stream_bandwidth(summary["storage"]["fio"]),
                                    barrier=barrier, delivered=counter, hosts=placement)
                summary["feed"] = result | summary["feed"]
            finally:
                rec.tables["feed_probes"] = pd.DataFrame([
                    {k: v for k, v in p.items() if k not in ("io_profile", "runs", "au_per_rank", "violations")}
                    for p in summary["feed"].get("probes", [])])
                rec.summary = summary = st.finish(summary)
    f = summary["feed"]
    if f.get("refused"):
        print(f"[feed] {profile.name}: refused: {f['refused']} (record {rec.dir})", file=sys.stderr)
    else:
        print(f"[feed] {profile.name}: at most {f['max_accelerators']} accelerators at AU >= {threshold}"
              f"{' (MLPerf mode)' if mlperf else ''}, bound by {f['bound_by']} (record {rec.dir})", file=sys.stderr)
    return summary


def delivered_counter(st, files: list[str], client_hosts: int = 0):
    """How to count the bytes the storage delivers while ``files`` are read: (counter, how), counter a function
    giving a cumulative byte count, whose growth over a window is what the storage delivered in it: an emulated
    storage's own FUSE server's count (exact), or, under a page cache (local disks, NFS; --observe reads through a
    passthrough over such a root), the bytes of the files the page cache holds (``storage.pagecache``: what came
    into it while they were read, as long as nothing was evicted meanwhile). None where nothing can count it:
    another FUSE file system (its client caches are invisible here). On the storage lab: what the first
    ``client_hosts`` client hosts received over their links where the ranks run there, else what the chunk
    servers sent."""
    if st.profile.emulated and iostats.snapshot(st.root) is not None:
        root = st.root
        return (lambda: (iostats.snapshot(root) or {}).get("bytes", {}).get("read"),
                "the emulated storage's own count of the bytes it served (its FUSE server; direct I/O, no page cache "
                "above it)")
    if st.profile.kind == "lab":
        from .storage import lab

        real_root = st.real_root

        if client_hosts:  # the ranks are dealt over the first client_hosts client hosts (lab.client_prefixes)
            doc = lab.status(real_root)
            ranks_on = [h["name"] for h in lab.client_hosts(doc)][:client_hosts] if doc else []

            def received():
                links = lab.link_bytes(lab.status(real_root))
                got = [links[h]["received_bytes"] for h in ranks_on if h in links]
                return sum(got) if len(got) == client_hosts else None
            if received() is not None:
                # not the chunk servers' sent bytes: over a shaped client link they also count what the shaping
                # dropped and TCP sent again (1.07-1.13 x the bytes read from 1 MB files over 40 Mbit/s client links
                # on the lab, where the client host received 1.01 x)
                return (received, f"the bytes the {client_hosts} client host(s) the ranks ran on received over their "
                                  "links (their veths' counters, after any shaping: the file system's data, TCP/IP "
                                  "headers included, about 1% over the payload, and the master's few replies)")

        def sent():
            links = lab.link_bytes(lab.status(real_root))
            servers = [v["sent_bytes"] for v in links.values() if v["role"] == "chunkserver"]
            return sum(servers) if servers else None
        if sent() is not None:
            return (sent, "the bytes the lab's chunk servers sent over their links (their veths' counters: the file "
                          "system's data, TCP/IP headers included, about 4% over the payload, and where a client's "
                          "link is shaped what its shaping dropped and TCP sent again; what a client's cache served "
                          "does not cross them)")
    fstype = st.record.get("fstype") or ""
    if fstype.startswith("fuse") and st.root == st.real_root:
        return None, (f"nothing: a {fstype} mount's client caches are invisible to the kernel; give the storage a "
                      "counter of its own (its statistics, or its network links')")
    real = [str(st.real_root / Path(f).relative_to(st.root)) for f in files]
    return (lambda: resident_bytes(real),
            "the page cache's growth over the shards (mincore): bytes that came from the storage into the cache "
            "while the ranks read (nothing evicted meanwhile; re-reads of cached pages are not storage reads)")


CPU_SATURATED = 0.9  # host CPU busy fraction from which a probe that misses its AU counts as CPU-bound
RANKS_CPU_HUNGRY = 0.5  # ... when the ranks themselves used at least this share of the cores (else: contended)


def limit(au: float, threshold: float, host_busy: float, ranks_cpu: float, read_bytes_per_s: float = 0.0,
          storage_bandwidth: float | None = None) -> str | None:
    """What bounded a probe that missed its AU: ``storage`` when its reads reached 85% of the storage's measured
    bandwidth (B/s, where known); else ``cpu`` (the host's cores saturated, by the load generator itself),
    ``contended`` (saturated by other processes: not a valid storage figure), ``storage`` (cores to spare)."""
    if au >= threshold:
        return None
    if storage_bandwidth and read_bytes_per_s >= 0.85 * storage_bandwidth:
        return "storage"
    if host_busy >= CPU_SATURATED:
        return "cpu" if ranks_cpu >= RANKS_CPU_HUNGRY else "contended"
    return "storage"


def delivered_check(consumed: float, delivered: float | None) -> tuple[bool | None, str | None]:
    """Whether a window measured the storage: it delivered at least ``DELIVERED_TOLERANCE`` of the bytes the ranks
    consumed (None: no counter). Returns (verdict, a sentence when it did not)."""
    if delivered is None or not consumed:
        return None, None
    if delivered >= DELIVERED_TOLERANCE * consumed:
        return True, None
    return False, (f"the accelerators consumed {consumed / 2**20:.1f} MiB, the storage delivered "
                   f"{delivered / 2**20:.1f} MiB ({delivered / consumed:.0%}): buffers filled before the measured "
                   "steps, the page cache or a client cache served the rest; not a storage measurement")


def _climb(probe, max_n: int) -> tuple[int, int | None, str | None]:
    """Doubling, then bisection, over accelerator counts: ``probe(n)`` answers True (AU held), False, or a string
    (the count cannot be measured: why). Returns (largest count that held, first that did not, why it stopped)."""
    good, bad, n, stop = 0, None, 1, None
    while n <= max_n:
        ok = probe(n)
        if isinstance(ok, str):
            return good, None, ok
        if ok:
            good, n = n, n * 2
        else:
            bad = n
            break
    if bad is None and good < max_n:  # between the last doubling and the cap
        ok = probe(max_n)
        if isinstance(ok, str):
            stop = ok
        elif ok:
            good = max_n
        else:
            bad = max_n
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        ok = probe(mid)
        if isinstance(ok, str):
            return good, bad, ok
        if ok:
            good = mid
        else:
            bad = mid
    return good, bad, stop


def search(files: list[str], out: Path, train_cfg, step_s: float, threshold: float = 0.9, max_n: int = 16,
           steps: int = 30, repetitions: int = 1, drop_caches=None, progress=print, io_snapshot=None,
           storage_bandwidth: float | None = None, barrier: bool = True, delivered=None,
           hosts: list[list[str]] | None = None) -> dict:
    """The largest number of emulated accelerators whose AU stays >= threshold: doubling, then bisection.

    Each probe runs ``repetitions`` times (AU mean, min, max and spread; the mean decides), after
    ``drop_caches()`` when given, with a barrier across the ranks after every step (``barrier``; else only after
    the first and the last), and records the host's CPU use: a probe that misses the threshold names its
    limit: ``storage`` when its reads reached 85% of ``storage_bandwidth`` (B/s, the storage's measured parallel
    read bandwidth, where known), else ``cpu`` when the host's cores were saturated, ``storage`` otherwise (on a
    shared host, busy cores alone do not say who is waiting for whom). It also records what the input
    pipeline cost the host: the ranks' own CPU seconds per sample over their measured steps (reading, parsing
    and, with train.decode, decoding), and from it the cores one accelerator needs at AU 1 and at the threshold
    (``cores_per_accelerator``, ``cores_per_accelerator_at_threshold``). ``io_snapshot()``, where the storage
    counts its requests (harness.storage.iostats), gives each probe the I/O profile of its first repetition.
    ``delivered`` (``delivered_counter``): the bytes the storage delivered during the measured steps, beside the
    bytes the steps consumed; a probe whose steps consumed more is not a storage measurement (``delivered_check``).
    ``hosts``: argv prefixes of the client hosts the ranks are dealt over (``distributed.launch``)."""
    probes: dict[int, dict] = {}
    demand = train_cfg.batch_size / step_s  # samples/s one accelerator consumes at AU 1

    def probe(n: int) -> bool:
        runs, profile, profiled_samples = [], None, None
        for i in range(repetitions):
            dropped = drop_caches() if drop_caches else False
            before = io_snapshot() if io_snapshot and i == 0 else None
            marks: dict = {}
            hooks = {t: (lambda r, t=t: marks.__setitem__(t, delivered())) for t in "MZ"} if callable(delivered) else None
            r = distributed.run(files, out, train_cfg, "emulated", n, steps, step_s, barrier=barrier, hooks=hooks,
                                hosts=hosts)
            if before is not None:
                profile = iostats.profile(iostats.delta(before, io_snapshot()))
                profiled_samples = sum(s["batch_size"] for s in r["steps_table"])  # every step's, the first too
            r["cpu_busy_fraction"] = r["host_cpu_busy_fraction"]  # over the measured steps, start-up excluded
            r["caches_dropped"] = dropped
            r["delivered_bytes"] = counted_between(marks.get("M"), marks.get("Z"))
            runs.append(r)
        aus = [r["accelerator_utilization"] for r in runs]
        mean = lambda k: sum(r[k] for r in runs) / len(runs)  # noqa: E731
        au = sum(aus) / len(aus)
        busy = mean("cpu_busy_fraction")
        consumed = mean("consumed_bytes")
        got = [r["delivered_bytes"] for r in runs]
        got = None if None in got else sum(got) / len(got)
        wall = mean("wall_seconds")
        verdict, why = delivered_check(consumed, got)
        probes[n] = {"accelerators": n, "au": au, "au_min": min(aus), "au_max": max(aus),
                     "au_spread": (max(aus) - min(aus)) / au if au else None, "repetitions": len(runs),
                     "au_min_rank": min(min(r["au_per_rank"]) for r in runs),
                     "au_per_rank": [a for r in runs for a in r["au_per_rank"]],
                     "barrier": barrier, "barrier_seconds": mean("barrier_seconds"),
                     "rank_hosts": sorted({rk["host"] for r in runs for rk in r["ranks"]}),
                     "input_wait_fraction": mean("input_wait_fraction"), "samples_per_s": mean("images_per_s"),
                     "mib_per_s": mean("mib_per_s"), "consumed_bytes": consumed,
                     "consumed_mib_per_s": mean("consumed_mib_per_s"), "delivered_bytes": got,
                     "delivered_mib_per_s": got / wall / 2**20 if got is not None and wall else None,
                     "storage_measurement": verdict, "not_a_storage_measurement": why,
                     "cpu_busy_fraction": busy, "ranks_cpu_fraction": mean("ranks_cpu_fraction"),
                     "caches_dropped": all(r["caches_dropped"] for r in runs)}
        probes[n]["limit"] = limit(au, threshold, busy, probes[n]["ranks_cpu_fraction"], mean("mib_per_s") * 2**20,
                                   storage_bandwidth)
        per_sample = [r["cpu_seconds_per_sample"] for r in runs if r.get("cpu_seconds_per_sample") is not None]
        if per_sample:
            cps = sum(per_sample) / len(per_sample)
            probes[n].update(cpu_seconds_per_sample=cps, cores_per_accelerator=cps * demand,
                             cores_per_accelerator_at_threshold=cps * demand * threshold,
                             bytes_per_sample=mean("bytes_per_sample"))
        if profile:
            probes[n].update(io_profile=profile, io_profile_samples=profiled_samples)
        p = probes[n]
        progress(f"[feed] {n} accelerators: AU {au:.3f}" + (f" ({min(aus):.3f}-{max(aus):.3f})" if len(runs) > 1 else "")
                 + f" (slowest rank {p['au_min_rank']:.3f}), {p['samples_per_s']:.0f} samples/s, consumed "
                 + f"{p['consumed_mib_per_s']:.1f} MiB/s" + (f", storage delivered {p['delivered_mib_per_s']:.1f} MiB/s"
                                                             if p["delivered_mib_per_s"] is not None else "")
                 + f", host CPU {busy:.0%} busy" + (f": {p['limit']}-bound" if p["limit"] else "")
                 + (" [not a storage measurement]" if verdict is False else ""))
        return au >= threshold

    good, bad, _ = _climb(probe, max_n)
    listed = [probes[k] for k in sorted(probes)]
    return {"mode": "probe", "threshold": threshold, "max_accelerators": good, "first_failing": bad,
            "step_s": step_s, "batch": train_cfg.batch_size, "steps_per_probe": steps, "repetitions": repetitions,
            "decode": train_cfg.decode, "barrier": barrier,
            "storage_measurement": (None if any(p["storage_measurement"] is None for p in listed)
                                    else all(p["storage_measurement"] for p in listed)),
            "bound_by": probes[bad]["limit"] if bad is not None else "max_accelerators (the cap)",
            "probes": listed}


def mlperf_search(files: list[str], records: list[int], out: Path, train_cfg, step_s: float, m: MLPerf,
                  threshold: float = 0.9, max_n: int = 16, delivered=None, dataset_bytes: int = 0,
                  memory_bytes: int = 0, emulated: bool = False, progress=print, drop=None,
                  hosts: list[list[str]] | None = None) -> dict:
    """MLPerf Storage's answer: the most accelerators whose warm-up and ``m.runs`` runs of ``m.epochs`` epochs all
    keep AU >= threshold (``mlperf_probe``), every rule checked (``RULES``); a broken rule refuses the result."""
    batch = train_cfg.batch_size
    five_x = bool(memory_bytes) and dataset_bytes >= 5 * memory_bytes
    if drop is None:
        drop = drop_caches if not five_x and not emulated and os.geteuid() == 0 else False
    violations = []
    if m.runs < 5 or not m.warmup:
        violations.append({"rule": "warmup_and_5_runs", "detail": f"{'a warm-up and ' if m.warmup else 'no warm-up, '}"
                           f"{m.runs} run{'s' * (m.runs != 1)}"})
    base = {"mode": "mlperf", "threshold": threshold, "step_s": step_s, "batch": batch, "epochs": m.epochs,
            "runs": m.runs, "warmup": m.warmup, "read_threads": m.read_threads, "prefetch": m.prefetch,
            "parse": m.parse,
            "decode": False, "barrier": True, "hosts": len(hosts) if hosts else 1,
            "caches": {"dataset_bytes": dataset_bytes, "memory_bytes": memory_bytes, "dataset_5x_memory": five_x,
                       "dropped_before_each_epoch": bool(drop), "emulated_storage": emulated,
                       "delivered_counted": delivered is not None}}
    if not five_x and delivered is None:
        violations.append({"rule": "dataset_5x_memory", "detail": (
            f"the dataset ({dataset_bytes / 2**30:.2f} GiB) is under 5x the host's memory "
            f"({memory_bytes / 2**30:.1f} GiB) and nothing counts what this storage delivers, so caches cannot be "
            "shown defeated")})
        return base | _verdict([], violations, 0, None, "refused before any run")
    probes: dict[int, dict] = {}

    def probe(n: int):
        if len(files) < n:
            return (f"{n} accelerators need {n} shards at least (each reads its own; the dataset has {len(files)}): "
                    f"rule {RULES['sample_once']!r}")
        steps = steps_per_epoch(records, n, batch)
        if steps < 2:
            return (f"{n} accelerators would take {steps} step{'s' * (steps != 1)} an epoch (AU needs 2): rule "
                    f"{RULES['sample_once']!r}")
        p = mlperf_probe(files, out, train_cfg, step_s, n, steps, m, threshold, delivered, drop, hosts)
        probes[n] = p
        runs = p["runs"]
        progress(f"[feed --mlperf] {n} accelerators: AU " + ", ".join(f"{r['au']:.3f}" for r in runs)
                 + (f" (warm-up {p['warmup_au']:.3f})" if p["warmup_au"] is not None else "")
                 + f"; slowest rank {p['au_min_rank']:.3f}; {p['samples_per_s']:.0f} samples/s, "
                 f"{p['mib_per_s']:.1f} MiB/s" + (f", storage delivered {p['delivered_mib_per_s']:.1f} MiB/s"
                                                  if p["delivered_mib_per_s"] is not None else "")
                 + ("" if p["passed"] else " [fails]") + "".join(f" [{v['rule']}]" for v in p["violations"]))
        return p["passed"]

    good, bad, stop = _climb(probe, max_n)
    for p in probes.values():
        violations += [dict(v, accelerators=p["accelerators"]) for v in p["violations"]]
    listed = [probes[k] for k in sorted(probes)]
    bound = (probes[bad]["limit"] if bad is not None else f"the dataset: {stop}" if stop
             else "max_accelerators (the cap)")
    return base | _verdict(listed, violations, good, bad, bound, base["hosts"])


def _verdict(probes: list[dict], violations: list[dict], good: int, bad: int | None, bound: str,
             hosts: int = 1) -> dict:
    rules = sorted({v["rule"] for v in violations}, key=list(RULES).index)
    refused = "; ".join(f"MLPerf Storage rule {r!r} ({RULES[r]}): "
                        + "; ".join(v["detail"] + (f" ({v['accelerators']} accelerators)" if v.get("accelerators") else "")
                                    for v in violations if v["rule"] == r)
                        for r in rules) or None
    return {"max_accelerators": good if not refused else None, "max_accelerators_measured": good,
            "first_failing": bad, "bound_by": bound, "valid": not refused, "refused": refused,
            "violations": violations, "rules": {k: {"rule": v, "kept": k not in rules} for k, v in RULES.items()},
            "accelerators_per_host": good / hosts, "probes": probes}


def mlperf_probe(files: list[str], out: Path, train_cfg, step_s: float, n: int, steps: int, m: MLPerf,
                 threshold: float = 0.9, delivered=None, drop=None, hosts: list[list[str]] | None = None) -> dict:
    """One accelerator count under MLPerf Storage's rules: the warm-up run (when ``m.warmup``) and ``m.runs`` runs,
    each a fresh start of ``n`` ranks (as each MLPerf run is a DLIO invocation of its own: a process's first epoch
    pays its pipeline's first start) running ``m.epochs`` epochs of ``steps`` steps; ``drop()`` before every epoch
    (the page cache), ``delivered`` (``delivered_counter``) read at every epoch's edges. Per run, as DLIO reports
    it: AU (the mean over epochs of the mean over ranks), the slowest rank's, samples/s (summed over ranks, the mean
    over epochs), MiB/s (samples/s x the bytes of a record, as read), and what the storage delivered."""
    import psutil

    total_runs = m.runs + int(m.warmup)
    spec = {"epochs": m.epochs, "runs": 1, "steps_per_epoch": steps, "read_threads": m.read_threads,
            "prefetch": m.prefetch, "parse": m.parse}
    edges, rank_epochs, ranks_all, cpu = [], [], [], []  # cpu: (before, after) of each measured run's epochs
    for run in range(total_runs):
        marks: list[tuple[str, float, int | None]] = []
        measured = not (m.warmup and run == 0)

        def hook(tag, _round, marks=marks, measured=measured):
            if tag == "E" and drop:
                drop()
            if measured and tag == "E" and not marks:
                cpu.append([psutil.cpu_times()])
            marks.append((tag, time.time(), delivered() if callable(delivered) else None))
            if measured and tag == "X" and len(marks) == 2 * m.epochs:
                cpu[-1].append(psutil.cpu_times())

        res = distributed.run(sorted(files), out, train_cfg, "emulated", n, steps, step_s,
                              hooks={t: (lambda r, t=t: hook(t, r)) for t in "EX"}, mlperf=spec, hosts=hosts)
        ranks = sorted(res["ranks"], key=lambda r: r["rank"])
        ranks_all += ranks
        edges += [(marks[i], marks[i + 1]) for i in range(0, len(marks) - 1, 2)]
        rank_epochs += [[dict(r["epochs"][k], run=run) for r in ranks] for k in range(m.epochs)]
    epochs = []
    for (e, x), per in zip(edges, rank_epochs):
        consumed = sum(p["consumed_bytes"] for p in per)
        got = counted_between(e[2], x[2])
        verdict, why = delivered_check(consumed, got)
        epochs.append({"run": per[0]["run"], "epoch": per[0]["epoch"],
                       "au": sum(p["accelerator_utilization"] for p in per) / n,
                       "au_per_rank": [p["accelerator_utilization"] for p in per],
                       "samples_per_s": sum(p["samples_per_s"] for p in per), "samples": sum(p["samples"] for p in per),
                       "consumed_bytes": consumed, "delivered_bytes": got, "seconds": x[1] - e[1],
                       "storage_measurement": verdict, "why": why,
                       "block_seconds": max(p["block_seconds"] for p in per),
                       "wait_seconds": sum(p["wait_seconds"] for p in per),
                       "barrier_seconds": sum(p["barrier_seconds"] for p in per),
                       "cpu_seconds": sum(p["cpu_seconds"] for p in per),
                       "bytes_read": sum(p["bytes_read"] for p in per)})
    runs = []
    for run in range(total_runs):
        es = [e for e in epochs if e["run"] == run]
        consumed = sum(e["consumed_bytes"] for e in es)
        samples = sum(e["samples"] for e in es)
        got = None if any(e["delivered_bytes"] is None for e in es) else sum(e["delivered_bytes"] for e in es)
        per_rank = [sum(e["au_per_rank"][i] for e in es) / len(es) for i in range(n)]
        sps = sum(e["samples_per_s"] for e in es) / len(es)
        seconds = sum(e["seconds"] for e in es)
        runs.append({"run": run, "warmup": m.warmup and run == 0, "au": sum(e["au"] for e in es) / len(es),
                     "au_per_rank": per_rank, "au_min_rank": min(per_rank), "samples_per_s": sps,
                     "mib_per_s": sps * consumed / samples / 2**20,
                     "delivered_bytes": got, "consumed_bytes": consumed,
                     "delivered_mib_per_s": got / seconds / 2**20 if got is not None and seconds else None,
                     "input_wait_fraction": sum(e["wait_seconds"] for e in es) / max(1e-9, sum(
                         e["wait_seconds"] + (steps - 1) * n * step_s for e in es)),
                     "barrier_seconds": sum(e["barrier_seconds"] for e in es),
                     "cpu_seconds": sum(e["cpu_seconds"] for e in es), "seconds": seconds,
                     "bytes_read": sum(e["bytes_read"] for e in es),
                     "epochs": [{k: e[k] for k in ("epoch", "au", "samples_per_s", "consumed_bytes", "delivered_bytes",
                                                   "seconds", "storage_measurement")} for e in es],
                     "storage_measurement": (None if any(e["storage_measurement"] is None for e in es)
                                             else all(e["storage_measurement"] for e in es))})
    measured = [r for r in runs if not r["warmup"]]
    violations = [{"rule": "dataset_5x_memory", "detail": f"run {e['run']} epoch {e['epoch'] + 1}: {e['why']}"}
                  for e in epochs if e["storage_measurement"] is False and not (m.warmup and e["run"] == 0)]
    mean = lambda k: sum(r[k] for r in measured) / len(measured)  # noqa: E731
    aus = [r["au"] for r in measured]
    wall = sum(r["seconds"] for r in measured)
    cores = os.cpu_count() or 1
    spans = [c for c in cpu if len(c) == 2]
    totals = [sum(b) - sum(a) for a, b in spans]
    busy = (sum(cpu_busy(a, b) * t for (a, b), t in zip(spans, totals)) / sum(totals)) if sum(totals) > 0 else None
    ranks_cpu = sum(r["cpu_seconds"] for r in measured) / (wall * cores) if wall else None
    samples = sum(sum(e["samples"] for e in epochs if e["run"] == r["run"]) for r in measured)
    consumed = sum(r["consumed_bytes"] for r in measured)
    passed = all(a >= threshold for a in aus) and not violations
    au = sum(aus) / len(aus)
    delivered_mib = [r["delivered_mib_per_s"] for r in measured]
    p = {"accelerators": n, "steps_per_epoch": steps, "runs": runs, "passed": passed, "violations": violations,
         "au": au, "au_median": sorted(aus)[len(aus) // 2], "au_min": min(aus), "au_max": max(aus),
         "au_spread": (max(aus) - min(aus)) / au if au else None, "repetitions": len(measured),
         "au_min_rank": min(r["au_min_rank"] for r in measured),
         "warmup_au": runs[0]["au"] if m.warmup else None,
         "input_wait_fraction": mean("input_wait_fraction"), "samples_per_s": mean("samples_per_s"),
         "mib_per_s": mean("mib_per_s"), "consumed_bytes": consumed,
         "delivered_bytes": None if any(r["delivered_bytes"] is None for r in measured)
         else sum(r["delivered_bytes"] for r in measured),
         "delivered_mib_per_s": None if None in delivered_mib else sum(delivered_mib) / len(delivered_mib),
         "storage_measurement": (None if any(r["storage_measurement"] is None for r in measured)
                                 else all(r["storage_measurement"] for r in measured)),
         "cpu_busy_fraction": busy, "ranks_cpu_fraction": ranks_cpu,
         "cpu_seconds_per_sample": sum(r["cpu_seconds"] for r in measured) / samples if samples else None,
         "bytes_per_sample": consumed / samples if samples else None,
         "caches_dropped": bool(drop), "startup_seconds": max(r["startup_seconds"] for r in ranks_all)}
    if p["cpu_seconds_per_sample"] is not None:
        demand = train_cfg.batch_size / step_s
        p.update(cores_per_accelerator=p["cpu_seconds_per_sample"] * demand,
                 cores_per_accelerator_at_threshold=p["cpu_seconds_per_sample"] * demand * threshold)
    p["limit"] = None if passed else ("caches" if violations else
                                      limit(min(aus), threshold, busy or 0.0, ranks_cpu or 0.0))
    return p


def _stream_bandwidth(fio_doc: dict | None) -> float | None:
    """The storage's parallel read bandwidth as ``wsibench fio`` measured it (its TFRecord streaming job), B/s."""
    return (((fio_doc or {}).get("jobs") or {}).get("tfrecord_stream") or {}).get("read_bw_bytes_per_s")
