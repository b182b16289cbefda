"""How the lab's one machine schedules a stage's threads: the evidence for the cluster model's ``lab_cores_queue``.

Runs the patch stage of the cluster proof's workload on the unshaped MooseFS lab with 1 and 3 client hosts, each
under ``perf sched record``, and reads the kernel's scheduler events back: how many wake-ups there were and how few
of them moved a thread to another core, how long each core was busy, and how long one core idled while threads
woken onto the other waited there. Where wake-ups stay on their core, the cores are queues apart, not one pool: a
step of an item's chain waits for its own core while the other may idle (the machine was 1.67-1.72 of 2 cores busy
on 3 hosts in the cluster proof, where a pooled queue would keep them 1.95 busy).

  python benchmarks/lab_cores_trace.py --out /tmp/trace        # about 3 minutes; needs perf (Debian's linux-perf)

perf's own work is in the traces (it slows the stage by about a fifth); the figures compare 1 and 3 hosts under
the same recording, not a run without it.
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SWITCH = re.compile(r"prev_comm=(.*) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+)")
WAKING = re.compile(r"comm=(.*) pid=(\d+) prio=\d+ target_cpu=(\d+)")
FORK = re.compile(r"child_comm=(.*) child_pid=(\d+)")
MIGRATE = re.compile(r"pid=(\d+) prio=\d+ orig_cpu=(\d+) dest_cpu=(\d+)")


def cls(comm: str) -> str:
    for name in ("mfschunkserver", "mfsmount", "mfsmaster", "python"):
        if comm.startswith(name):
            return name
    return "other"


def schedule(trace: Path, cpus: int, items: int, driver: int) -> dict:
    """The scheduler's figures over a ``perf sched record`` trace (``cpus`` cores; ``items`` the stage's; ``driver``
    the pid of this process, whose own threads are not workers)."""
    out = subprocess.Popen(["perf", "script", "-i", str(trace), "-F", "comm,pid,tid,cpu,time,event,trace"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1 << 20)
    running = dict.fromkeys(range(cpus), 0)  # core -> the thread on it (0: idle)
    waiting: dict[int, int] = {}  # a runnable thread not running -> the core it waits on
    busy, counts, last = Counter(), Counter(), None
    idle_beside_waiting = 0.0
    timeline: dict[int, list] = {}  # thread -> [(time, "run" / "queue" / "sleep", the thread that woke it)]
    comm: dict[int, str] = {}
    tgid: dict[int, int] = {}
    for line in out.stdout:
        try:
            head, rest = line.split("]", 1)
            who, cpu = head.rsplit("[", 1)
            cpu = int(cpu)
            ids = who.split()[-1].split("/")
            tgid[int(ids[1])] = int(ids[0])
            waker = int(ids[1])
            stamp, event, fields = rest.split(None, 2)
            t = float(stamp.rstrip(":"))
        except (ValueError, IndexError):
            continue
        if last is not None and t > last:
            dt = t - last
            busy[sum(1 for p in running.values() if p)] += dt
            if any(not running[c] for c in running) and any(running.get(c) for c in waiting.values()):
                idle_beside_waiting += dt  # a core idles while a thread waits on another, busy one
        last = t
        if event.startswith("sched:sched_switch"):
            m = SWITCH.search(fields)
            if m:
                prev, state, nxt = int(m.group(2)), m.group(3), int(m.group(5))
                comm[prev], comm[nxt] = m.group(1), m.group(4)
                if prev:
                    if state.startswith("R"):
                        waiting[prev] = cpu  # preempted: runnable on this core
                    timeline.setdefault(prev, []).append((t, "queue" if state.startswith("R") else "sleep", None))
                waiting.pop(nxt, None)
                running[cpu] = nxt
                if nxt:
                    timeline.setdefault(nxt, []).append((t, "run", None))
        elif event.startswith("sched:sched_waking"):
            m = WAKING.search(fields)
            if m and int(m.group(2)) not in running.values():
                woken = int(m.group(2))
                comm[woken] = m.group(1)
                waiting[woken] = int(m.group(3))
                counts["wakings"] += 1
                if not timeline.get(woken) or timeline[woken][-1][1] != "queue":
                    timeline.setdefault(woken, []).append((t, "queue", waker))
        elif event.startswith("sched:sched_migrate_task"):
            m = MIGRATE.search(fields)
            if m:
                counts["migrations"] += 1
                if int(m.group(1)) in waiting:
                    waiting[int(m.group(1))] = int(m.group(3))
        elif event.startswith("sched:sched_process_fork"):
            m = FORK.search(fields)
            if m:  # a new thread runs for the one that made it
                comm[int(m.group(2))] = m.group(1)
                timeline.setdefault(int(m.group(2)), []).append((t, "queue", waker))
    span = sum(busy.values())
    return {"trace_seconds": span, "wakings": counts["wakings"], "migrations": counts["migrations"],
            "busy_cores_seconds": {str(k): v for k, v in sorted(busy.items())},
            "busy_cores_mean": sum(k * v for k, v in busy.items()) / span if span else None,
            "core_idle_beside_waiting_seconds": idle_beside_waiting,
            "critical_path_per_item": critical_path(timeline, comm, tgid, driver, items)}


def critical_path(timeline: dict, comm: dict, tgid: dict, driver: int, items: int) -> dict:
    """The workers' time an item, split by what their path was doing: each worker's own running and waiting for a
    core, and for each of its waits, the thread that woke it, back through the threads that woke that one, to the
    wait's start: their running and their waiting for a core, by process (a wake-up from an interrupt, or a link
    the trace lacks, is "other")."""
    times = {k: [e[0] for e in v] for k, v in timeline.items()}
    # the workers: Python threads of other processes than this one that the client mounts woke most
    woke = Counter(k for k, v in timeline.items() if cls(comm.get(k, "")) == "python" and tgid.get(k) != driver
                   for e in v if e[1] == "queue" and e[2] and cls(comm.get(e[2], "")) == "mfsmount")
    workers = [k for k, n in woke.items() if n > 1000]
    acc = Counter()

    def walk(tid: int, t: float, stop: float) -> None:
        while t > stop:
            if tid not in timeline:
                acc["other"] += t - stop
                return
            i = bisect.bisect_left(times[tid], t) - 1
            if i < 0:
                acc["other"] += t - stop
                return
            t0, state, waker = timeline[tid][i]
            start = max(t0, stop)
            if state == "sleep":  # not the waker it was said to be
                acc["other"] += t - stop
                return
            acc[f"{cls(comm.get(tid, ''))} {'running' if state == 'run' else 'waiting for a core'}"] += t - start
            t = start
            if state == "queue":
                if waker is None:
                    continue  # preempted: its own running before
                tid = waker

    for w in workers:
        v = timeline[w]
        for (t0, state, _), (t1, nxt, waker) in zip(v, v[1:]):
            if state == "run":
                acc["worker running"] += t1 - t0
            elif state == "queue":
                acc["worker waiting for a core"] += t1 - t0
            elif nxt == "queue" and waker:
                walk(waker, t1, t0)
            else:
                acc["other"] += t1 - t0
    return {"workers": len(workers), "seconds": sum(acc.values()) / items,
            **{k: v / items for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}}


def trace_stage(out: Path, hosts: int, slides: int, size: int, progress=print) -> dict:
    """The patch stage on ``hosts`` client hosts of the unshaped lab, under ``perf sched record``."""
    import cluster_sizing_proof as cp

    from harness import pipeline
    from harness.config import load_profile
    from harness.storage import attached

    res = out / "results"
    prof = cp.profile_file(out, "unshaped", hosts)
    data = out / f"perf-{hosts}.data"
    with attached(load_profile(str(prof)), res):
        pipeline.run(cp.workload(slides, size, nodes=hosts), storage=str(prof), results_dir=res, stages=["masks"])
        perf = subprocess.Popen(["perf", "sched", "record", "-a", "-o", str(data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        try:
            rec = pipeline.run(cp.workload(slides, size, nodes=hosts), storage=str(prof), results_dir=res,
                               stages=["patches"], fresh=True)
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait()
    progress(f"[trace] {hosts} hosts: patch stage {rec['stages']['patches']['work_seconds']:.2f} s under perf; "
             f"reading the trace")
    return {"hosts": hosts, "work_seconds": rec["stages"]["patches"]["work_seconds"],
            **schedule(data, os.cpu_count() or 1, slides, os.getpid())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the lab, its runs and the traces")
    ap.add_argument("--slides", type=int, default=12)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--hosts", default="1,3", help="client host counts, comma-separated")
    a = ap.parse_args()
    if not shutil.which("perf"):
        sys.exit("lab_cores_trace: needs perf (Debian: apt install linux-perf)")
    if not Path("/sys/kernel/tracing/events").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=False)
    a.out.mkdir(parents=True, exist_ok=True)
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(a.out / "local")
    rows = [trace_stage(a.out, int(h), a.slides, a.size) for h in a.hosts.split(",")]
    (a.out / "lab_cores_trace.json").write_text(json.dumps(rows, indent=1))
    print(f"{'hosts':>5} {'stage s':>8} {'wake-ups':>9} {'moves':>6} {'cores busy':>10} "
          f"{'a core idle while threads wait on the other':>44}")
    for r in rows:
        print(f"{r['hosts']:>5} {r['work_seconds']:>8.2f} {r['wakings']:>9} "
              f"{r['migrations'] / max(1, r['wakings']):>6.1%} {r['busy_cores_mean']:>10.2f} "
              f"{r['core_idle_beside_waiting_seconds']:>8.2f} s of {r['trace_seconds']:.2f} s traced")


if __name__ == "__main__":
    main()
