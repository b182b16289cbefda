"""The cluster sizing model against a real parallel file system with several client hosts (the MooseFS lab).

For each lab shape (unshaped; chunk-server links at 80 Mbit/s; client links narrower than the servers'), the lab runs
with 3 client hosts (namespace hosts, each its own mount, one Dask worker each). Per shape: ``wsibench fio --hosts 3``
(one client's view, then the servers' with three clients at once), then the patch stage and the TFRecord stage,
measured on 1, 2 and 3 client hosts (``engine.address = "lab"``, ``nodes`` 1..3; ``--hosts`` and ``--stages`` choose
others), ``--repetitions`` times. The
predictions use nothing measured on the lab but the fio characterisation: the stages' demand comes from one run of
the same workload on ``local`` storage, observed (every request counted), with each item's CPU time.

  python benchmarks/cluster_sizing_proof.py --out /tmp/cproof --slides 12 --size 8192 --repetitions 3
  python benchmarks/cluster_sizing_proof.py --out /tmp/cproof --predict-only     # again from the stored runs
  python benchmarks/cluster_sizing_proof.py --out /tmp/cproof --recharacterise   # the inputs measured again

Prints a table (predicted, measured min / median / max, ratio of medians) and writes proof.json under --out.
Root, /dev/fuse, ip and tc needed (the lab's requirements); MooseFS from Debian (scripts/setup installs it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

SHAPES = {"unshaped": {}, "servers-80mbit": {"server_link_mbit": 80}, "clients-40mbit": {"client_link_mbit": 40}}
STAGES = ("patches", "tfrecords")
HOSTS = (1, 2, 3)
# harness is imported inside the functions: asv imports every module under benchmarks/ to discover its suite


def profile_file(out: Path, shape: str, clients: int = 3) -> Path:
    """A lab profile of the shape; every shape shares one root (and so the servers' data: prepared once)."""
    p = out / "profiles" / f"lab-{shape}.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    table = "".join(f"{k} = {v}\n" for k, v in SHAPES[shape].items())
    p.write_text(f'kind = "lab"\nroot = "{{results}}/lab/proof/mnt"\nfstype = "fuse"\ncreate = true\n'
                 f"[lab]\nchunkservers = 2\ngoal = 2\nclient_hosts = {clients}\nworkers_per_host = 1\n{table}")
    return p


def workload(slides: int, size: int, nodes: int | None = None, engine: str = "dask"):
    from harness.config import parse_workload

    eng = {"name": engine, "workers": 1} | ({"address": "lab", "nodes": nodes} if nodes else {})
    return parse_workload({"name": "cproof", "stages": ["masks", "patches", "tfrecords"],
                           "dataset": {"kind": "synthetic", "synthetic": {"slides": slides, "size": size, "seed": 7,
                                                                          "test_fraction": 0.0}},
                           "engine": eng, "patches": {"max_per_class": 400},
                           "tfrecords": {"shards": 6}}, "cluster_sizing_proof")


def own_cgroup() -> Path | None:
    """A cpuacct cgroup (v1) holding this process and everything it starts from now on (the lab's keeper and
    daemons, the client hosts' workers), to tell the CPU the proof used from what other tenants of a shared
    machine took; None where there is no cgroup v1 cpuacct."""
    base = Path("/sys/fs/cgroup/cpuacct")
    if not (base / "cpuacct.usage").exists():
        return None
    cg = base / f"wsibench-proof-{os.getpid()}"
    cg.mkdir(exist_ok=True)
    (cg / "cgroup.procs").write_text(str(os.getpid()))
    return cg


def release(cg: Path | None) -> None:
    """This process back in the root cpuacct group, and its own group removed (everything it started has ended)."""
    if cg:
        (cg.parent / "cgroup.procs").write_text(str(os.getpid()))
        for wait in range(50):  # the lab's last processes may still be ending
            try:
                cg.rmdir()
                return
            except OSError as e:
                if wait == 49:
                    print(f"[proof] {cg} not removed: {e}", file=sys.stderr)
                time.sleep(0.2)


def cpu_now(cg: Path | None) -> tuple[float, float | None]:
    """The machine's busy CPU seconds so far (/proc/stat: all but idle and iowait) and the proof's own (its
    cgroup's)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    busy = (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")
    return busy, (int((cg / "cpuacct.usage").read_text()) / 1e9 if cg else None)


def free_cores(before: tuple, after: tuple, wall: float) -> float | None:
    """The cores other tenants left the proof during ``wall`` seconds: this machine's cores less what they used."""
    if before[1] is None or wall <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.1, (os.cpu_count() or 1) - max(0.0, others) / wall)


def local_demand(out: Path, slides: int, size: int, progress=print, stages: tuple[str, ...] = STAGES) -> str:
    """The stages' demand: the workload on local storage, observed, with the engine the lab runs use (Dask: its
    workers spend CPU on each item beside the item's own, 3.52 against 2.67 CPU s for this patch stage under
    multiprocessing); the run's id."""
    from harness import pipeline

    os.environ["WSIBENCH_LOCAL_ROOT"] = str(out / "local")
    progress("[proof] the demand: the workload on local storage, observed")
    base = workload(slides, size, engine="dask")
    pipeline.run(base, storage="local", results_dir=out / "results", stages=["masks"])
    return pipeline.run(base, storage="local", results_dir=out / "results", stages=list(stages), fresh=True,
                        observe=True)["run_id"]


def collect(out: Path, slides: int, size: int, repetitions: int, fio: dict, progress=print,
            hosts: tuple[int, ...] = HOSTS, stages: tuple[str, ...] = STAGES) -> dict:
    """Run everything (each shape of SHAPES on ``hosts`` client hosts, the ``stages``); the runs' records stay under
    out/results."""
    from harness import pipeline
    from harness.config import load_profile
    from harness.storage import attached, fio as fio_mod, lab

    res = out / "results"
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(out / "local")
    doc = {"slides": slides, "size": size, "repetitions": repetitions, "shapes": {}, "load": [],
           "hosts": list(hosts), "stages": list(stages)}
    clients = max(hosts)
    cg = own_cgroup()
    doc["local"] = local_demand(out, slides, size, progress, stages)
    try:
        for shape in SHAPES:
            prof = profile_file(out, shape, clients)
            with attached(load_profile(str(prof)), res) as st:
                progress(f"[proof] {shape}: lab up ({st.record['lab']['network']}); preparing the slides and masks")
                pipeline.run(workload(slides, size, nodes=clients), storage=str(prof), results_dir=res,
                             stages=["masks"])
                progress(f"[proof] {shape}: wsibench fio --hosts {clients}")
                path, _ = fio_mod.characterise(str(prof), res, hosts=clients, progress=progress, **fio)
                entry = {"fio": path.name, "runs": []}
                for rep in range(repetitions):
                    for n in hosts:
                        cpu0, t0, m0 = lab.cpu_by_process(lab.status(st.real_root)), time.time(), cpu_now(cg)
                        s = pipeline.run(workload(slides, size, nodes=n), storage=str(prof), results_dir=res,
                                         stages=list(stages), fresh=True)
                        cpu1, m1 = lab.cpu_by_process(lab.status(st.real_root)), cpu_now(cg)
                        entry["runs"].append({"hosts": n, "repetition": rep, "run_id": s["run_id"], "status": s["status"],
                                              "work_seconds": {k: s["stages"][k]["work_seconds"] for k in stages},
                                              "lab_cpu_seconds": lab.cpu_used(cpu0, cpu1),
                                              "wall_seconds": time.time() - t0, "load": os.getloadavg()[0],
                                              "free_cores": free_cores(m0, m1, time.time() - t0)})
                        progress(f"[proof] {shape} hosts {n} rep {rep}: " + ", ".join(
                            f"{k} {v:.2f} s" for k, v in entry["runs"][-1]["work_seconds"].items()))
                doc["shapes"][shape] = entry
            (out / "measured.json").write_text(json.dumps(doc, indent=1))
    finally:
        release(cg)
    return doc


def recharacterise(out: Path, fio: dict, progress=print) -> None:
    """The prediction's inputs measured again, the lab runs kept: the local run (the demand) and each measured
    shape's servers (its lab up again, ``wsibench fio --hosts 3``); out/measured.json then points at the new ones
    (the model of what they measure changed, or the first ones were made on a busy machine)."""
    from harness.config import load_profile
    from harness.storage import attached, fio as fio_mod

    doc, res = json.loads((out / "measured.json").read_text()), out / "results"
    doc.setdefault("earlier_local", []).append(doc["local"])
    hosts, stages = tuple(doc.get("hosts", HOSTS)), tuple(doc.get("stages", STAGES))
    doc["local"] = local_demand(out, doc["slides"], doc["size"], progress, stages)
    (out / "measured.json").write_text(json.dumps(doc, indent=1))
    for shape, entry in doc["shapes"].items():
        prof = profile_file(out, shape, max(hosts))
        with attached(load_profile(str(prof)), res):
            progress(f"[proof] {shape}: wsibench fio --hosts {max(hosts)} again")
            path, _ = fio_mod.characterise(str(prof), res, hosts=max(hosts), progress=progress, **fio)
        entry.setdefault("earlier_fio", []).append(entry["fio"])
        entry["fio"] = path.name
        (out / "measured.json").write_text(json.dumps(doc, indent=1))


def predict(out: Path, progress=print) -> dict:
    """Predicted against measured, per shape, stage and host count, from out/measured.json and the stored runs."""
    from harness.results import load
    from harness.sizing import stage_demand, storage_costs
    from harness.sizing.cluster import predict as predict_cluster

    doc = json.loads((out / "measured.json").read_text())
    res = out / "results"
    local = load(res / doc["local"])
    rows = []
    for shape, entry in doc["shapes"].items():
        costs = storage_costs(json.loads((res / "fio" / entry["fio"]).read_text()))
        for stage in doc.get("stages", STAGES):
            demand = stage_demand(local, stage, res / doc["local"])
            for n in doc.get("hosts", HOSTS):
                measured = [r["work_seconds"][stage] for r in entry["runs"] if r["hosts"] == n and r["status"] == "ok"]
                if not measured:
                    continue
                # the cores other tenants left the runs (measured with the proof's own cgroup), else all of them
                free = [r["free_cores"] for r in entry["runs"] if r["hosts"] == n and r.get("free_cores")]
                cores = statistics.median(free) if free else True
                p = predict_cluster(demand, costs, n, 1, lab=cores)
                med = statistics.median(measured)
                rows.append({"shape": shape, "stage": stage, "hosts": n, "predicted_seconds": p["seconds"],
                             "free_cores": None if cores is True else cores,
                             "measured_min": min(measured), "measured_median": med, "measured_max": max(measured),
                             "ratio": p["seconds"] / med, "binding": p["binding"],
                             "busy": {k: round(v, 2) for k, v in p["busy_fraction"].items()}})
                progress(f"{shape:<16} {stage:<10} {n} hosts: predicted {p['seconds']:6.2f} s, measured "
                         f"{min(measured):6.2f} / {med:6.2f} / {max(measured):6.2f} s, ratio {p['seconds'] / med:5.2f}"
                         f"  ({p['binding']}; {rows[-1]['busy']}; cores free {'all' if cores is True else f'{cores:.2f}'})")
    (out / "proof.json").write_text(json.dumps({"rows": rows}, indent=1))
    return {"rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--slides", type=int, default=12)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--shapes", help="comma-separated subset of: " + ", ".join(SHAPES))
    ap.add_argument("--hosts", default="1,2,3", help="client host counts to measure, comma-separated (default 1,2,3; "
                                                     "the lab gets as many client hosts as the largest)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"stages to measure (default {','.join(STAGES)})")
    ap.add_argument("--predict-only", action="store_true", help="predict from out/measured.json and its runs")
    ap.add_argument("--recharacterise", action="store_true",
                    help="measure the prediction's inputs again (the local run, each shape's fio --hosts 3), keep the "
                         "lab runs, then predict")
    ap.add_argument("--fio-size", type=int, default=64, help="MiB per file of the fio jobs (default 64)")
    ap.add_argument("--fio-runtime", type=float, default=2.0, help="seconds per time-based fio job (default 2)")
    a = ap.parse_args(argv)
    if a.shapes:
        for s in set(SHAPES) - set(a.shapes.split(",")):
            del SHAPES[s]
    a.out.mkdir(parents=True, exist_ok=True)
    fio = {"size_mib": a.fio_size, "runtime": a.fio_runtime, "small_files": 300}
    if a.recharacterise:
        recharacterise(a.out, fio, progress=lambda m: print(m, file=sys.stderr, flush=True))
    elif not a.predict_only:
        collect(a.out, a.slides, a.size, a.repetitions, fio,
                progress=lambda m: print(m, file=sys.stderr, flush=True),
                hosts=tuple(int(h) for h in a.hosts.split(",")), stages=tuple(a.stages.split(",")))
    predict(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
