"""Patch stage throughput under each engine and worker count, in one session (ratios are what to read).

Prepares a synthetic dataset and its masks once, then for each configuration starts the engine, warms its
workers up as a stage does (``Engine.warm``: imports), and times the patch stage's map over the training slides.
Start-up (engine start + warm-up: ``startup_seconds``, what a run pays once) is reported apart from the map
(``work_seconds``, over which patches/s are taken), as stages record them. Configurations run interleaved, one
engine alive at a time (each Spark configuration in a JVM of its own, as a run has), the order reversed every
other round, --repeat rounds.

Beside the rates, the CPU seconds that the engine's processes spent on the map, from /proc/PID/stat of every
process of the run's tree before and after it (children that ended counted where they were reaped): in total, by
role (``driver``: this process, with Dask's scheduler and pyspark's driver side; ``jvm``: Spark's JVM, driver
and executor in local mode; ``workers``: the Python worker processes, Spark's daemon and its forks included),
and inside the JVM by thread name (GC, JIT compilers, event loops, heartbeats; ``(ended threads)`` for threads
that ended during the map). On a shared machine wall time swings with the neighbours' load; the CPU an engine
spends beside the work itself does not. ``cold_workers``: workers that ran items without having been warmed up
(their imports counted as work). Ratios (each engine against multiprocessing at 2 workers; 1 -> 2 workers) are
taken within each round, then min / median / max.

--variant NAME:KEY=VALUE;KEY=VALUE names engine settings (Spark conf) that a configuration ENGINE[NAME]xW runs
with, so that settings are compared in the same rounds as the defaults.

Usage: python benchmarks/engine_scaling.py [--slides 16] [--size 12000] [--repeat 3] [--out DIR]
       [--configs multiprocessingx2,sparkx2,spark[noui]x2 --variant "noui:spark.ui.enabled=false"]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from harness.config import Masks, Patches
from harness.engines import make_engine, run_all  # noqa: E402
from harness.engines.base import import_module
from harness.slides import synth
from harness.slides.dataset import list_slides
from harness.stages import masks, patches

CONFIGS = [("multiprocessing", 1), ("multiprocessing", 2), ("dask", 1), ("dask", 2), ("spark", 1), ("spark", 2)]


TICK = os.sysconf("SC_CLK_TCK")
ROLES = ("driver", "jvm", "workers", "other")


def _stat(pid: int, task: int | None = None) -> tuple[str, float, float] | None:
    """(name, own CPU seconds, CPU seconds of its reaped children) from /proc/PID[/task/TID]/stat; None if gone."""
    path = f"/proc/{pid}/task/{task}/stat" if task else f"/proc/{pid}/stat"
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    name, rest = text[text.index("(") + 1: text.rindex(")")], text[text.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(v) / TICK for v in rest[11:15])
    return name, utime + stime, cutime + cstime


def _role(p: psutil.Process, me: int) -> str:
    if p.pid == me:
        return "driver"  # the benchmark's own process: stages' driver, Dask's scheduler and nannies, py4j
    try:
        if p.name() == "java":
            return "jvm"  # Spark local mode: driver and executor in one JVM
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return "other"
    if "python" in p.name() or "python" in cmd:
        return "workers"  # multiprocessing's and Dask's worker processes, Spark's pyspark.daemon and its forks
    return "other"


def _thread_group(name: str) -> str:
    """A JVM thread's name without its serial number (GC Thread#1 -> GC Thread, dispatcher-event-loop-0 -> ...)."""
    return re.sub(r"[\s#-]*\d+$", "", name) or name


def tree_snapshot() -> dict:
    """CPU seconds (user + system, /proc/PID/stat) of this process and every descendant alive now, by pid: its role,
    its own time, the time of its children that ended and were reaped (counted where they were reaped, so a worker
    that ends is not lost), and for JVMs each thread's time by thread name."""
    me = psutil.Process()
    procs = {}
    for p in [me, *me.children(recursive=True)]:
        st = _stat(p.pid)
        if st is None:
            continue
        role = _role(p, me.pid)
        threads = {}
        if role == "jvm":
            try:
                tids = os.listdir(f"/proc/{p.pid}/task")
            except OSError:
                tids = []
            for tid in tids:
                t = _stat(p.pid, int(tid))
                if t:
                    threads[int(tid)] = (t[0], t[1])
        procs[p.pid] = {"role": role, "own": st[1], "reaped": st[2], "threads": threads}
    return procs


def tree_cpu_delta(before: dict, after: dict) -> dict:
    """CPU seconds the run's processes spent between two snapshots: total, by role (driver / jvm / workers / other)
    and, inside the JVMs, by thread name (threads that ended in between: ``(ended threads)``)."""
    roles = dict.fromkeys(ROLES, 0.0)
    for snap, sign in ((after, 1), (before, -1)):
        for p in snap.values():
            roles[p["role"]] += sign * (p["own"] + p["reaped"])
    threads: dict[str, float] = {}
    for pid, p in after.items():
        if p["role"] != "jvm":
            continue
        old = before.get(pid, {"own": 0.0, "threads": {}})
        seen = 0.0
        for tid, (name, t) in p["threads"].items():
            was = old["threads"].get(tid)
            d = t - (was[1] if was and was[0] == name else 0.0)
            seen += d
            threads[_thread_group(name)] = threads.get(_thread_group(name), 0.0) + d
        gone = p["own"] - old["own"] - seen
        if abs(gone) >= 0.005:
            threads["(ended threads)"] = threads.get("(ended threads)", 0.0) + gone
    return {"total": sum(roles.values()), "roles": roles, "jvm_threads": threads}


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process and all its descendants alive now (JVM, workers, nannies),
    with the children they reaped."""
    return sum(p["own"] + p["reaped"] for p in tree_snapshot().values())


def spread(values: list[float]) -> dict:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def stop_spark_jvm() -> None:
    """End the JVM pyspark started: pyspark keeps it for the life of the process and the next SparkContext reuses
    it, with the JIT-compiled code and the JVM options of the first; a user's run starts its own."""
    import sys

    if "pyspark" not in sys.modules:
        return
    from pyspark import SparkContext

    gw = SparkContext._gateway
    if gw is None:
        return
    proc = getattr(gw, "proc", None)
    gw.shutdown()
    SparkContext._gateway = SparkContext._jvm = None
    if proc is not None:
        proc.stdin.close()  # the JVM exits when its stdin closes
        proc.wait(60)


def parse_configs(text: str, variants: dict[str, dict]) -> list[tuple[str, str, int, dict]]:
    """ENGINExW or ENGINE[VARIANT]xW, comma-separated -> (label, engine, workers, conf)."""
    out = []
    for c in text.split(","):
        head, w = c.strip().rsplit("x", 1)
        m = re.fullmatch(r"(\w+)(?:\[(\w+)\])?", head)
        if not m or (m.group(2) and m.group(2) not in variants):
            raise SystemExit(f"--configs: {c!r} is not ENGINExWORKERS or ENGINE[VARIANT]xWORKERS with a --variant")
        out.append((c.strip(), m.group(1), int(w), variants.get(m.group(2), {})))
    return out


def parse_variant(text: str) -> tuple[str, dict]:
    """NAME:key=value;key=value -> (NAME, {key: value})."""
    name, _, body = text.partition(":")
    conf = dict(kv.split("=", 1) for kv in body.split(";") if kv.strip())
    return name, conf


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=16, help="training slides")
    ap.add_argument("--size", type=int, default=12000)
    ap.add_argument("--repeat", type=int, default=3, help="rounds (every configuration once per round)")
    ap.add_argument("--configs", default=",".join(f"{e}x{w}" for e, w in CONFIGS),
                    help="comma-separated ENGINExWORKERS or ENGINE[VARIANT]xWORKERS (default: the six plain ones)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE;KEY=VALUE",
                    help="engine settings (Spark conf) under a name, for ENGINE[NAME]xW in --configs; repeatable")
    ap.add_argument("--out", help="working folder (default: a temporary one)")
    ap.add_argument("--patches-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where patches are written (default /dev/shm: engine and CPU scaling, not the disk)")
    a = ap.parse_args(argv)
    os.environ["WSIBENCH_QUIET"] = "1"
    configs = parse_configs(a.configs, dict(parse_variant(v) for v in a.variant))
    work = Path(a.out or tempfile.mkdtemp(prefix="wsibench-engines-"))
    ds = work / "dataset"
    if not (ds / "testing" / "reference.csv").exists():
        synth.generate(ds, a.slides, a.size, seed=3, tumor_fraction=0.5, test_fraction=0.0)
    mcfg = Masks()
    items = [dict(s, tumor_groups=mcfg.tumor_groups, exclusion_groups=mcfg.exclusion_groups)
             for s in list_slides(ds) if s["split"] == "training"]
    if not all((work / "masks" / f"{it['slide']}.json").exists() for it in items):
        for it in items:
            masks.run_slide(it, mcfg, str(work / "masks"))
    cfg = Patches(max_per_class=100000)
    out = Path(a.patches_dir or work) / "patches"
    fn = functools.partial(patches.run_slide, cfg=cfg, masks_dir=str(work / "masks"), out=str(out))
    seconds: dict[str, list[float]] = {}
    startup: dict[str, list[float]] = {}
    cpu: dict[str, list[dict]] = {}
    count = None
    loads = [os.getloadavg()[0]]
    for r in range(a.repeat):
        for label, name, w, conf in configs if r % 2 == 0 else configs[::-1]:  # one engine alive at a time: an
            t0 = time.perf_counter()                                           # idle cluster would take CPU from
            with make_engine(name, workers=w, conf=conf) as eng:              # the measured one
                warmed = set(eng.warm(functools.partial(import_module, patches.__name__)))
                shutil.rmtree(out, ignore_errors=True)
                s0, t1 = tree_snapshot(), time.perf_counter()
                res = run_all(eng, fn, items, progress=False)
                dt, s1 = time.perf_counter() - t1, tree_snapshot()
            stop_spark_jvm()
            assert not any(o.error for o in res), [o.error for o in res if o.error]
            n = sum(o.value["patches"] for o in res)
            assert count in (None, n)
            count = n
            used = tree_cpu_delta(s0, s1)
            used["cold_workers"] = len({o.worker for o in res} - warmed)  # ran items without the warm-up
            seconds.setdefault(label, []).append(dt)
            startup.setdefault(label, []).append(t1 - t0)
            cpu.setdefault(label, []).append(used)
            loads.append(os.getloadavg()[0])
            roles = ", ".join(f"{k} {v:.2f}" for k, v in used["roles"].items() if abs(v) >= 0.01)
            top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(used["jvm_threads"].items(), key=lambda kv: -kv[1])[:8]
                            if v >= 0.01)
            print(f"[engines] round {r + 1}/{a.repeat} {label}: {n / dt:.0f} patches/s, start-up {t1 - t0:.1f} s, "
                  f"{used['total']:.2f} CPU s ({roles}){'; JVM threads: ' + top if top else ''}; "
                  f"{used['cold_workers']} cold workers; load {loads[-1]:.1f}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    rate = {k: [count / s for s in v] for k, v in seconds.items()}

    def ratios(a_key: str, b_key: str) -> dict | None:
        if a_key in rate and b_key in rate:
            return spread([x / y for x, y in zip(rate[a_key], rate[b_key])])
        return None

    def by_role(runs: list[dict]) -> dict:
        return {k: spread([u["roles"][k] for u in runs]) for k in ROLES if any(abs(u["roles"][k]) >= 0.01 for u in runs)}

    def jvm_threads(runs: list[dict]) -> dict:
        names = sorted({t for u in runs for t in u["jvm_threads"]})
        med = {t: statistics.median([u["jvm_threads"].get(t, 0.0) for u in runs]) for t in names}
        return {t: round(v, 2) for t, v in sorted(med.items(), key=lambda kv: -kv[1]) if v >= 0.01}

    labels = [c[0] for c in configs]
    plain = [c for c in configs if c[3] == {}]
    engines = sorted({e for _, e, _, _ in plain}, key=[e for e, _ in CONFIGS].index)
    result = {"slides": len(items), "slide_px": a.size, "patches": count, "cpus": os.cpu_count(), "rounds": a.repeat,
              "patches_dir": str(out.parent), "load_average_1min": spread(loads),
              "variants": {name: conf for name, conf in map(parse_variant, a.variant)},
              "patches_per_s": {k: spread(rate[k]) for k in labels},
              "work_seconds": {k: spread(seconds[k]) for k in labels},
              "startup_seconds": {k: spread(startup[k]) for k in labels},
              "engine_cpu_seconds": {k: spread([u["total"] for u in cpu[k]]) for k in labels},
              "engine_cpu_seconds_by_role": {k: by_role(cpu[k]) for k in labels},
              "cold_workers": {k: max(u["cold_workers"] for u in cpu[k]) for k in labels},
              "jvm_cpu_seconds_by_thread_median": {k: jvm_threads(cpu[k]) for k in labels
                                                   if any(u["jvm_threads"] for u in cpu[k])},
              "vs_multiprocessing_2_workers": {k: ratios(k, "multiprocessingx2") for k in labels
                                               if k.endswith("x2") and k != "multiprocessingx2"},
              "scaling_1_to_2_workers": {e: ratios(f"{e}x2", f"{e}x1") for e in engines}}
    print(json.dumps(result, indent=1))
    if not a.out:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":  # spawned workers re-import this file: the guard keeps them from running it
    main()
