"""The cluster sizing model against a real parallel file system with several client hosts (the MooseFS lab).

For each lab shape (unshaped; chunk-server links at 80 Mbit/s; client links narrower than the servers'), the patch
stage and the TFRecord stage are measured on 1, 2 and 3 client hosts (namespace hosts, each its own mount, one Dask
worker each; ``engine.address = "lab"``; ``--hosts`` and ``--stages`` choose others), ``--repetitions`` times, N
hosts on a lab of N client hosts (a lab's idle client hosts share the machine's cores with the ones a run uses).
One client's view of the storage (``wsibench fio``) is measured on the lab of one client host, the servers' with
three clients at once (``wsibench fio --hosts 3``) on the lab of three. The
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
    """This process back in the root cpuacct group, and its own group removed: what is still in it (this process's
    own helpers, such as multiprocessing's resource tracker, which lives as long as it does) moved back too."""
    if cg:
        (cg.parent / "cgroup.procs").write_text(str(os.getpid()))
        for wait in range(50):  # the lab's last processes may still be ending
            for pid in (cg / "cgroup.procs").read_text().split():
                try:
                    (cg.parent / "cgroup.procs").write_text(pid)
                except OSError:  # ended meanwhile
                    pass
            try:
                cg.rmdir()
                return
            except OSError as e:
                if wait == 49:
                    print(f"[proof] {cg} not removed: {e}", file=sys.stderr)
                time.sleep(0.2)


def cpu_now(cg: Path | None) -> tuple[float, float | None]:
    """The CPU seconds so far the machine was busy or a hypervisor gave other guests (/proc/stat: all but idle and
    iowait), and the proof's own (its cgroup's)."""
    from harness.cputime import machine_cpu_seconds

    return machine_cpu_seconds(steal=True), (int((cg / "cpuacct.usage").read_text()) / 1e9 if cg else None)


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
    out/results. N client hosts are measured on a lab of N client hosts (``lab_sizes``), the topology under test:
    the lab's hosts share this machine's cores, and a client host a run does not use still runs its mount and its
    Dask worker beside the ones it does (2 idle client hosts made the unshaped patch stage on one host 8.4-9.0 s
    against 7.8-8.2 s on a lab of one, and one client's fio costs 4-35% more). So one client's view of the storage
    (``wsibench fio``'s jobs) is measured on a lab of one client host, and the servers' (``--hosts``, the parallel
    phases) on a lab of the most."""
    from harness import pipeline
    from harness.config import load_profile
    from harness.storage import attached, lab

    res = out / "results"
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(out / "local")
    doc = {"slides": slides, "size": size, "repetitions": repetitions, "shapes": {}, "load": [],
           "hosts": list(hosts), "stages": list(stages)}
    cg = own_cgroup()
    doc["local"] = local_demand(out, slides, size, progress, stages)
    try:
        for shape in SHAPES:
            entry = {"runs": []}
            for clients in lab_sizes(hosts):
                prof = profile_file(out, shape, clients)
                with attached(load_profile(str(prof)), res) as st:
                    progress(f"[proof] {shape}: lab of {clients} client host(s) up ({st.record['lab']['network']})")
                    characterise_shape(out, shape, clients, max(hosts), entry, fio, progress)
                    if clients not in hosts:  # a lab for one client's fio only
                        continue
                    progress(f"[proof] {shape}: preparing the slides and masks")
                    pipeline.run(workload(slides, size, nodes=clients), storage=str(prof), results_dir=res,
                                 stages=["masks"])
                    for rep in range(repetitions):
                        cpu0, t0, m0 = lab.cpu_by_process(lab.status(st.real_root)), time.time(), cpu_now(cg)
                        s = pipeline.run(workload(slides, size, nodes=clients), storage=str(prof), results_dir=res,
                                         stages=list(stages), fresh=True)
                        cpu1, m1 = lab.cpu_by_process(lab.status(st.real_root)), cpu_now(cg)
                        entry["runs"].append({"hosts": clients, "repetition": rep, "run_id": s["run_id"],
                                              "status": s["status"],
                                              "work_seconds": {k: s["stages"][k]["work_seconds"] for k in stages},
                                              "lab_cpu_seconds": lab.cpu_used(cpu0, cpu1),
                                              "wall_seconds": time.time() - t0, "load": os.getloadavg()[0],
                                              "free_cores": free_cores(m0, m1, time.time() - t0)})
                        progress(f"[proof] {shape} hosts {clients} rep {rep}: " + ", ".join(
                            f"{k} {v:.2f} s" for k, v in entry["runs"][-1]["work_seconds"].items()))
            doc["shapes"][shape] = entry
            (out / "measured.json").write_text(json.dumps(doc, indent=1))
    finally:
        release(cg)
    return doc


def lab_sizes(hosts: tuple[int, ...]) -> list[int]:
    """The labs a shape is measured on: one of each host count, and one of a single client host (one client's
    view of the storage is measured there) if no run uses it."""
    return sorted({1, *hosts})


def characterise_shape(out: Path, shape: str, clients: int, most: int, entry: dict, fio: dict, progress) -> None:
    """On the lab of one client host, one client's view (``wsibench fio``'s jobs on the client host,
    entry["fio_one_client"]); on the lab of ``most``, the servers' (the parallel phases of ``wsibench fio --hosts
    most``, entry["fio"], its jobs those of one client's view, not run again). Where the most is one host, one
    characterisation (jobs and parallel phases on that host) is both."""
    from harness.storage import fio as fio_mod

    if clients not in (1, most):
        return
    one = entry.get("fio_one_client") if clients > 1 else None
    keys = ["fio_one_client"] * (clients == 1) + ["fio"] * (clients == most)
    for key in keys:
        if key in entry:
            entry.setdefault(f"earlier_{key}", []).append(entry[key])
    what = (["one client's jobs"] if not one else []) + (["the parallel phases"] if clients == most else [])
    progress(f"[proof] {shape}: wsibench fio --hosts {clients} ({' and '.join(what)}) on a lab of {clients} "
             "client host(s)")
    path, _ = fio_mod.characterise(str(profile_file(out, shape, clients)), out / "results", hosts=clients,
                                   parallel_phases=clients == most,
                                   jobs_from=out / "results" / "fio" / one if one else None, progress=progress, **fio)
    for key in keys:
        entry[key] = path.name


def shape_costs(res: Path, entry: dict) -> dict:
    """The shape's pattern costs: one client's (its fio jobs) as measured on a lab of one client host, the servers'
    (the parallel phases) on the lab of the most (``collect``); a proof measured before it kept them apart has
    both from its ``fio --hosts``."""
    from harness.sizing import storage_costs

    doc = json.loads((res / "fio" / entry["fio"]).read_text())
    if entry.get("fio_one_client"):
        one = json.loads((res / "fio" / entry["fio_one_client"]).read_text())
        doc = dict(doc, jobs=one["jobs"], client_host=one.get("client_host"),
                   created_at=f"{one.get('created_at')} (one client host), {doc.get('created_at')} (the servers)")
    return storage_costs(doc)


def recharacterise(out: Path, fio: dict, progress=print) -> None:
    """The prediction's inputs measured again, the lab runs kept: the local run (the demand) and each measured
    shape's fio (one client's view on a lab of one client host, the servers' on a lab of the most: ``collect``);
    out/measured.json then points at the new ones (the model of what they measure changed, or the first ones were
    made on a busy machine)."""
    from harness.config import load_profile
    from harness.storage import attached

    doc, res = json.loads((out / "measured.json").read_text()), out / "results"
    doc.setdefault("earlier_local", []).append(doc["local"])
    hosts, stages = tuple(doc.get("hosts", HOSTS)), tuple(doc.get("stages", STAGES))
    doc["local"] = local_demand(out, doc["slides"], doc["size"], progress, stages)
    (out / "measured.json").write_text(json.dumps(doc, indent=1))
    for shape, entry in doc["shapes"].items():
        for clients in sorted({1, max(hosts)}):
            with attached(load_profile(str(profile_file(out, shape, clients))), res):
                characterise_shape(out, shape, clients, max(hosts), entry, fio, progress)
            (out / "measured.json").write_text(json.dumps(doc, indent=1))


def predict(out: Path, progress=print) -> dict:
    """Predicted against measured, per shape, stage and host count, from out/measured.json and the stored runs."""
    from harness.results import load
    from harness.sizing import stage_demand
    from harness.sizing.cluster import predict as predict_cluster

    doc = json.loads((out / "measured.json").read_text())
    res = out / "results"
    local = load(res / doc["local"])
    rows = []
    for shape, entry in doc["shapes"].items():
        costs = shape_costs(res, entry)
        ones = [r for r in entry["runs"] if r["hosts"] == 1 and r["status"] == "ok"]
        for stage in doc.get("stages", STAGES):
            demand = stage_demand(local, stage, res / doc["local"])
            # the one-host run of the median time of the stage (the first had been taken: on unshaped links the
            # fastest of three, 8.5 s against 9.2 and 9.4, and its machine CPU the least, 10.3 against 11.4, 11.8)
            one = sorted(ones, key=lambda r: r["work_seconds"][stage])[len(ones) // 2] if ones else None
            if one:  # the same operations, each item as the median one-host run on the lab measured it
                on_lab = stage_demand(load(res / one["run_id"]), stage, res / one["run_id"])
                demand_lab = dict(demand, item_table=on_lab["item_table"],
                                  source=f"{demand['source']}; items as {on_lab['source']} measured them")
            for n in doc.get("hosts", HOSTS):
                measured = [r["work_seconds"][stage] for r in entry["runs"] if r["hosts"] == n and r["status"] == "ok"]
                if not measured:
                    continue
                # the cores other tenants left the runs (measured with the proof's own cgroup), else all of them
                free = [r["free_cores"] for r in entry["runs"] if r["hosts"] == n and r.get("free_cores")]
                cores = statistics.median(free) if free else True
                med = statistics.median(measured)
                bases = [("local + fio", demand, False)]
                if one and n > 1:
                    bases.append(("one lab host + fio", demand_lab, True))
                for base, d, on_target in bases:
                    p = predict_cluster(d, costs, n, 1, lab=cores, on_target=on_target)
                    rows.append({"shape": shape, "stage": stage, "hosts": n, "from": base,
                                 "predicted_seconds": p["seconds"], "fluid_seconds": p["fluid_seconds"],
                                 "queueing": p["queueing"], "free_cores": None if cores is True else cores,
                                 "measured_min": min(measured), "measured_median": med, "measured_max": max(measured),
                                 "ratio": p["seconds"] / med, "binding": p["binding"],
                                 "busy": {k: round(v, 2) for k, v in p["busy_fraction"].items()}})
                    progress(f"{shape:<16} {stage:<10} {n} hosts from {base:<18}: predicted {p['seconds']:6.2f} s, "
                             f"measured {min(measured):6.2f} / {med:6.2f} / {max(measured):6.2f} s, ratio "
                             f"{p['seconds'] / med:5.2f}  ({p['binding']}; {rows[-1]['busy']}; cores free "
                             f"{'all' if cores is True else f'{cores:.2f}'})")
    (out / "proof.json").write_text(json.dumps({"rows": rows}, indent=1))
    return {"rows": rows}


FEED_SHAPE = "clients-40mbit"  # a client host's link binds: N hosts should feed N times one's accelerators


def feed_workload(slides: int, size: int):
    from harness.config import parse_workload

    return parse_workload({"name": "cproof-feed", "stages": ["masks", "patches", "tfrecords"],
                           "dataset": {"kind": "synthetic", "synthetic": {"slides": slides, "size": size, "seed": 7,
                                                                          "test_fraction": 0.0}},
                           "engine": {"name": "dask", "workers": 1, "address": "lab", "nodes": 1},
                           "patches": {"max_per_class": 400}, "tfrecords": {"shard_mb": 1, "val_fraction": 0.0},
                           "train": {"model": "small_cnn", "batch_size": 32, "step_time_s": 0.5, "decode": False}},
                          "cluster_sizing_proof")


def feed_file(out: Path, epochs: int) -> Path:
    return out / ("feed.json" if epochs == 1 else f"feed-{epochs}epochs.json")


def feed_collect(out: Path, slides: int, size: int, repetitions: int, hosts: tuple[int, ...] = (1, 2),
                 shape: str = FEED_SHAPE, per_host: float = 3.5, epochs: int = 1, counts: list[int] | None = None,
                 progress=print) -> dict:
    """``wsibench feed --mlperf``'s probe on 1 and 2 client hosts of the lab's ``shape`` (N hosts on a lab of N
    client hosts, as the stages are measured): per host count, the AU of
    the accelerator counts around the predicted largest one, ``repetitions`` times (one epoch a run, no warm-up: as
    the DLIO comparison runs it). The prediction (``budget.gpus_fed``'s bound: min(N x a host's link, the storage
    targets') / a sample's bytes / (samples/s an accelerator asks x AU 0.9)) uses the shape's ``wsibench fio --hosts``
    of the stage proof (out/measured.json) and the shards' bytes a record; the step is chosen so that one host's
    bound is ``per_host`` accelerators (mid-way between two counts, not on a rounding edge)."""
    from harness import feed as F, pipeline
    from harness.config import load_profile
    from harness.sizing.budget import gpus_fed
    from harness.sizing.figures import figure
    from harness.storage import attached, lab

    res = out / "results"
    doc = json.loads((out / "measured.json").read_text())
    costs = shape_costs(res, doc["shapes"][shape])
    wl = feed_workload(slides, size)
    threshold, batch = 0.9, wl.train.batch_size
    entry = None
    for n_hosts in hosts:  # N client hosts on a lab of N (a lab's idle client hosts share the machine's cores)
        prof = profile_file(out, shape, n_hosts)
        with attached(load_profile(str(prof)), res) as st:
            if entry is None:  # the shards, the step: once (every lab of the shape shares one root)
                tfr = st.root / wl.name / "tfrecords"
                if not (tfr / "splits.json").is_file():
                    progress(f"[proof] feed on {shape}: preparing the shards")
                    pipeline.run(wl, storage=str(prof), results_dir=res, stages=["masks", "patches", "tfrecords"])
                shards = sorted(json.loads((tfr / "splits.json").read_text())["splits"]["train"]["shards"],
                                key=lambda s: s["path"])
                files, records = [str(tfr / s["path"]) for s in shards], [s["records"] for s in shards]
                record_bytes = sum(Path(f).stat().st_size for f in files) / sum(records)
                train = {"bytes_per_sample": figure(record_bytes, "B", "the shards' bytes over their records")}

                def bound(n, step):  # wsibench size's answer (its "exact": the GPUs before whole ones are taken)
                    acc = {"name": "emulated", "step_s": step, "batch": batch, "images_per_s": batch / step}
                    return gpus_fed(None, {}, shape, costs, n, acc, threshold, train)

                step = round(per_host / bound(1, 1.0)["exact"], 3)  # accelerators grow with the step: one host's
                cfg = wl.train.model_copy(update={"step_time_s": step, "augment": False})
                m = F.MLPerf(epochs=epochs, runs=1, warmup=False)
                entry = {"shape": shape, "step_s": step, "batch": batch, "record_bytes": record_bytes,
                         "shards": len(files), "records": sum(records), "shard_records": records,
                         "threshold": threshold, "epochs": epochs, "hosts": {}}
                if feed_file(out, epochs).is_file():  # what was measured before with the same step is kept
                    old = json.loads(feed_file(out, epochs).read_text())
                    if old.get("step_s") == step and old.get("shape") == shape:
                        entry["hosts"] = old["hosts"]
            counter, _ = F.delivered_counter(st, files, n_hosts)  # what the ranks' client hosts received
            placement = lab.client_prefixes(lab.status(st.real_root), n_hosts)
            predicted = bound(n_hosts, step)
            best = int(predicted["value"])
            rows = (entry["hosts"].get(str(n_hosts)) or {}).get("rows", [])

            def measure(count):
                if any(r["accelerators"] == count for r in rows):  # measured before
                    return statistics.median(r["au"] for r in rows if r["accelerators"] == count)
                steps = F.steps_per_epoch(records, count, batch)
                for rep in range(repetitions):
                    p = F.mlperf_probe(files, out / "feed" / f"h{n_hosts}", cfg, step, count, steps, m, threshold,
                                       counter, None, placement)
                    run = p["runs"][-1]
                    rows.append({"accelerators": count, "repetition": rep, "au": run["au"],
                                 "samples_per_s": run["samples_per_s"], "mib_per_s": run["mib_per_s"],
                                 "delivered_mib_per_s": p["delivered_mib_per_s"], "limit": p["limit"],
                                 "cpu_busy_fraction": p["cpu_busy_fraction"],
                                 "bytes_read": run["bytes_read"], "consumed_bytes": run["consumed_bytes"],
                                 "load": os.getloadavg()[0]})
                    progress(f"[proof] feed {shape} {n_hosts} hosts, {count} accelerators rep {rep}: AU "
                             f"{run['au']:.3f}, {run['samples_per_s']:.0f} samples/s, {run['mib_per_s']:.2f} MiB/s")
                return statistics.median(r["au"] for r in rows if r["accelerators"] == count)

            tried = counts or list(range(max(1, best - 1), best + 3))
            held = [c for c in tried if measure(c) >= threshold]
            count = min(tried)
            while not held and count > 1 and not counts:  # none held: lower, until one does (the measured answer)
                count -= 1
                if measure(count) >= threshold:
                    held.append(count)
            entry["hosts"][str(n_hosts)] = {"predicted": predicted, "rows": rows}
            feed_file(out, epochs).write_text(json.dumps(entry, indent=1))
    return entry


def feed_from_rows(doc: dict, n_hosts: str) -> dict | None:
    """The proof's rows on ``n_hosts`` client hosts as an MLPerf-mode feed record's probes (``feed_hosts``'s input:
    each count's median AU, the bytes a sample, what the storage delivered, each run's bytes read); None where the
    rows do not say what the ranks read (measured before the proof recorded it)."""
    rows = (doc["hosts"].get(n_hosts) or {}).get("rows") or []
    if not rows or any("bytes_read" not in r for r in rows):
        return None
    probes = []
    for c in sorted({r["accelerators"] for r in rows}):
        mine = [r for r in rows if r["accelerators"] == c]
        probes.append({"accelerators": c, "au_median": statistics.median(r["au"] for r in mine),
                       "bytes_per_sample": doc["record_bytes"],
                       "delivered_mib_per_s": statistics.median(r["delivered_mib_per_s"] for r in mine),
                       "runs": [{"warmup": False, "bytes_read": r["bytes_read"], "epochs": [{}] * doc["epochs"]}
                                for r in mine]})
    return {"hosts": int(n_hosts), "batch": doc["batch"], "probes": probes,
            "dataset": {"shard_records": doc["shard_records"]}}


def feed_predict(out: Path, progress=print, epochs: int = 1) -> list[dict]:
    """Per host count: the predicted largest accelerator count against the measured one (the largest count whose
    median AU over the repetitions holds the threshold), and each count's predicted AU against its measured median,
    min and max. Two predictions: from the shape's fio alone (``budget.gpus_fed``'s bound: the supply over what the
    accelerators ask, at most 1), and, for more hosts than one, from the feed measured on one host
    (``feed_hosts``: wsibench size's answer where a feed ran on one host of the storage it sizes)."""
    from harness.sizing.costs import server_bandwidth
    from harness.sizing.feed_hosts import accelerators_on_hosts, au_on_hosts

    doc = json.loads(feed_file(out, epochs).read_text())
    stage_doc = json.loads((out / "measured.json").read_text())
    costs = shape_costs(out / "results", stage_doc["shapes"][doc["shape"]])
    one = feed_from_rows(doc, "1") if "shard_records" in doc else None
    out_rows = []
    for n_hosts, h in doc["hosts"].items():
        pred = h["predicted"]
        supply = pred["exact"]  # accelerators at AU = threshold, as a real number: floor() is the count
        counts = sorted({r["accelerators"] for r in h["rows"]})
        per = {c: [r["au"] for r in h["rows"] if r["accelerators"] == c] for c in counts}
        med = {c: statistics.median(v) for c, v in per.items()}
        passed = [c for c in counts if med[c] >= doc["threshold"]]
        measured = max(passed) if passed else f"fewer than {counts[0]}"  # none of the counts tried held it
        scaled = None
        if one and int(n_hosts) > 1:
            servers = server_bandwidth(costs, "read", int(n_hosts))  # as wsibench size takes it
            got = accelerators_on_hosts(one, int(n_hosts), doc["threshold"], servers)
            scaled = {"accelerators": got["accelerators"] if got else 0,
                      "au": {c: (au_on_hosts(one, c, int(n_hosts), servers) or {}).get("au") for c in counts}}
        out_rows.append({"hosts": int(n_hosts), "predicted_accelerators": int(supply), "measured_accelerators": measured,
                         "source": pred["source"],
                         "from_one_host": scaled and scaled["accelerators"],
                         "au": [{"accelerators": c, "predicted": min(1.0, doc["threshold"] * supply / c),
                                 "from_one_host": scaled and scaled["au"][c],
                                 "measured_min": min(per[c]), "measured_median": med[c], "measured_max": max(per[c]),
                                 "ratio": min(1.0, doc["threshold"] * supply / c) / med[c] if med[c] else None,
                                 "ratio_from_one_host": (scaled["au"][c] / med[c]
                                                         if scaled and scaled["au"][c] and med[c] else None)}
                                for c in counts]})
        progress(f"feed {doc['shape']} {n_hosts} hosts, {epochs} epoch(s) a run: predicted {int(supply)} accelerators "
                 f"from fio" + (f", {scaled['accelerators']} from the feed on one host" if scaled else "")
                 + f"; measured {measured} (AU >= {doc['threshold']}, step {doc['step_s']} s, batch {doc['batch']})")
        for a in out_rows[-1]["au"]:
            progress(f"    {a['accelerators']} accelerators: AU from fio {a['predicted']:.3f}"
                     + (f", from one host {a['from_one_host']:.3f}" if a["from_one_host"] is not None else "")
                     + f"; measured {a['measured_min']:.3f} / {a['measured_median']:.3f} / {a['measured_max']:.3f}; "
                     f"ratios {a['ratio']:.2f}"
                     + (f", {a['ratio_from_one_host']:.2f}" if a["ratio_from_one_host"] is not None else ""))
    (out / feed_file(out, epochs).name.replace("feed", "feed-proof")).write_text(json.dumps({"rows": out_rows},
                                                                                          indent=1))
    return out_rows


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
    ap.add_argument("--feed", action="store_true",
                    help=f"after the stages (or alone, on an out folder that has them): feed --mlperf's probe on 1 and "
                         f"2 client hosts of {FEED_SHAPE}, predicted from its fio --hosts (writes feed.json)")
    ap.add_argument("--feed-hosts", default="1,2", help="client host counts of the feed (default 1,2; counts "
                                                         "measured before with the same step are kept)")
    ap.add_argument("--feed-epochs", type=int, default=1, help="epochs a run of the feed's probes (default 1; "
                                                               "each count of epochs its own file)")
    ap.add_argument("--feed-counts", help="accelerator counts to measure, comma-separated (default: around the "
                                          "prediction, lower until one holds)")
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
    elif not a.predict_only and not (a.feed and (a.out / "measured.json").is_file()):
        collect(a.out, a.slides, a.size, a.repetitions, fio,
                progress=lambda m: print(m, file=sys.stderr, flush=True),
                hosts=tuple(int(h) for h in a.hosts.split(",")), stages=tuple(a.stages.split(",")))
    if a.feed and not a.predict_only:
        feed_collect(a.out, a.slides, a.size, a.repetitions, hosts=tuple(int(h) for h in a.feed_hosts.split(",")),
                     epochs=a.feed_epochs, counts=[int(c) for c in a.feed_counts.split(",")] if a.feed_counts else None,
                     progress=lambda m: print(m, file=sys.stderr, flush=True))
    predict(a.out)
    if feed_file(a.out, a.feed_epochs).is_file():
        feed_predict(a.out, epochs=a.feed_epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
