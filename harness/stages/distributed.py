"""Training in several processes: tf.distribute's MultiWorkerMirroredStrategy, Horovod (Gloo), and emulated
accelerators (MLPerf Storage / DLIO style: a real tf.data pipeline per process, the model step replaced by a
sleep of the accelerator's step time).

Each rank reads its own subset of the shards (files[rank::world]) from the storage root, times every step as
wait (next batch) and compute, and writes its figures to rank-<i>.json; the driver aggregates them. Ranks start
together behind a file barrier, after their (slow) TensorFlow imports, so that they really compete for storage.

Run one rank: ``python -m harness.stages.distributed SPEC.json``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import MissingExtra, RunError

def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _barrier(folder: Path, rank: int, world: int, timeout: float = 300) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ready-{rank}").touch()
    deadline = time.time() + timeout
    while len(list(folder.glob("ready-*"))) < world:
        if time.time() > deadline:
            raise TimeoutError(f"rank {rank}: the other ranks did not start within {timeout:.0f}s")
        time.sleep(0.01)


def _rank_main(spec: dict) -> dict:
    mode, rank, world = spec["mode"], spec.get("rank", 0), spec["world"]
    if mode == "multiworker":
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": spec["addresses"]},
                                              "task": {"type": "worker", "index": rank}})
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import psutil
    import tensorflow as tf

    from .. import models
    from ..config import Train
    from ..engines.base import proc_io
    from ..metrics import Sampler, step_figures
    from . import train as tr

    cfg = Train.model_validate(spec["train"])
    steps_n = spec["steps"]
    hvd = strategy = None
    if mode == "horovod":  # horovodrun starts the ranks: each learns its rank here
        import horovod.tensorflow as hvd
        hvd.init()
        rank, world = hvd.rank(), hvd.size()
    elif mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    files = _subset(spec["files"], rank, world)
    tf.keras.utils.set_random_seed(cfg.seed + rank)
    ds = tr.dataset(files, cfg, training=True)
    if mode != "emulated":
        scope = strategy.scope() if strategy else _null()
        with scope:
            model = models.build(cfg)
            opt = models.optimizer(cfg, steps_n)
        # reduction "sum": the scaling below is ours alone (Keras divides "mean" losses by the replica count
        # under tf.distribute on its own, which a custom loop must not rely on unknowingly)
        bce = tf.keras.losses.BinaryCrossentropy(reduction="sum")

        def grads_of(x, y, replicas):
            """This replica's share of the global objective, the global batch's mean loss plus the weight decay:
            summed over ``replicas`` replicas, the shares make the whole. Returns (local mean loss, gradients)."""
            with tf.GradientTape() as tape:
                n = tf.cast(tf.shape(y)[0], tf.float32)
                summed = bce(y[:, None], model(x, training=True))
                decay = tf.add_n(model.losses) if model.losses else 0.0
                share = summed / (n * replicas) + decay / replicas
            return summed / n, tape.gradient(share, model.trainable_variables)

        if mode == "horovod":
            for v in model.variables:  # the same start everywhere (Keras 3: broadcast by hand)
                v.assign(hvd.broadcast(v, root_rank=0))

            @tf.function
            def step(x, y):  # one collective: the average of the ranks' gradients
                loss, grads = grads_of(x, y, 1)
                grads = [hvd.allreduce(g, op=hvd.Average) for g in grads]
                opt.apply_gradients(zip(grads, model.trainable_variables))
                return loss
        else:
            @tf.function
            def replica_step(x, y):
                # one collective: Keras 3 sums the replicas' gradients inside apply_gradients
                loss, grads = grads_of(x, y, world)
                opt.apply_gradients(zip(grads, model.trainable_variables))
                return loss

            def step(x, y):
                return strategy.run(replica_step, args=(x, y))
    it = iter(ds)
    rows = []
    start_weights = [np.array(v) for v in model.trainable_variables] if mode != "emulated" else []
    _barrier(Path(spec["barrier"]), rank, world)
    io0 = proc_io()
    sampler = Sampler().__enter__()
    t_first = io_first = None
    for i in range(steps_n):
        t0 = time.perf_counter()
        try:
            x, y, nbytes = next(it)
        except tf.errors.DataLossError as e:
            raise tr.named_data_loss(files, e) from None
        t1 = time.perf_counter()
        if mode == "emulated":
            time.sleep(spec["step_s"])
            loss = None
        else:
            loss = float(step(x, y))
        t2 = time.perf_counter()
        if i == 0:
            t_first, io_first, cpu_first, own_first = t2, proc_io(), psutil.cpu_times(), sum(os.times()[:2])
            startup = time.time() - spec["launched_at"]  # process start, imports, model, first batch and step
        rows.append({"step": i, "wait_seconds": t1 - t0, "compute_seconds": t2 - t1, "batch_size": int(y.shape[0]),
                     "record_bytes": int(tf.reduce_sum(nbytes)), "loss": loss})
    t_end, io_end = time.perf_counter(), proc_io()
    host_busy = cpu_busy(cpu_first, psutil.cpu_times())  # the whole host's cores, over the measured steps
    own_cpu = sum(os.times()[:2]) - own_first  # this rank's CPU seconds (all its threads) over the same steps
    sampler.__exit__(None, None, None)
    figs = step_figures([r["wait_seconds"] for r in rows], [r["compute_seconds"] for r in rows],
                        [r["batch_size"] for r in rows], t_first, t_end)
    saved = None
    if mode != "emulated" and rank == 0:  # the chief alone writes the model
        saved = tr.timed_save(tr.save_model, model, Path(spec["model_dir"]) / "model.keras")
    io_final = proc_io()
    losses = [r["loss"] for r in rows if r["loss"] is not None]
    checksum = float(sum(float(tf.reduce_sum(tf.cast(v, tf.float64))) for v in model.trainable_variables)) \
        if mode != "emulated" else None  # equal on every rank when gradients are really synchronised
    change = max((float(np.abs(np.array(v) - w).max()) for v, w in zip(model.trainable_variables, start_weights)),
                 default=None) if start_weights else None  # the largest change of a weight over the run
    return {"rank": rank, "world": world, "host": socket.gethostname(), "pid": os.getpid(), "shards": files,
            **figs, "startup_seconds": startup, "steps": rows,
            # this process's own counters: from the start barrier to the end (model save included) ...
            **{k: io_final[k] - io0[k] for k in io0},
            # ... and over the measured steps alone (the storage throughput the accelerator saw)
            "measured_bytes_read": io_end["bytes_read"] - io_first["bytes_read"],
            "loss_first": float(np.mean(losses[:5])) if losses else None,
            "loss_last": float(np.mean(losses[-5:])) if losses else None,
            "model_path": saved["path"] if saved else None, "model_save": saved,
            "weights_checksum": checksum, "weights_change_max": change, "cpu": sampler.summary(),
            "host_cpu_busy_fraction": host_busy, "cpu_seconds": own_cpu}


def _subset(files: list[str], rank: int, world: int) -> list[str]:
    """This rank's shards: every world-th one; ranks share shards only when there are fewer shards than ranks."""
    return files[rank::world] or [files[rank % len(files)]]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# --- launching ranks ---------------------------------------------------------------------------------------
#
# Ranks that talk to each other open services: TensorFlow's gRPC server (MultiWorkerMirroredStrategy) binds
# 0.0.0.0 whatever TF_CONFIG says, and horovodrun opens a rendezvous server on every interface. So by default
# those ranks run in a network namespace of their own whose only interface is loopback: what they open is
# reachable by nothing but each other. A workload that runs across hosts names the interface instead
# (network.interface), and the services are then opened on it, as the user asked.

def private_network(cmd: list[str]) -> list[str]:
    """``cmd`` in a new network namespace with loopback only (root, or user namespaces, needed)."""
    unshare = shutil.which("unshare")
    if unshare and os.geteuid() == 0:
        base = [unshare, "--net", "--fork"]
    elif unshare and subprocess.run([unshare, "--net", "--map-root-user", "true"], capture_output=True).returncode == 0:
        base = [unshare, "--net", "--map-root-user", "--fork"]
    else:
        raise RunError("distributed training opens services that bind every interface (TensorFlow's gRPC server, "
                       "horovodrun's rendezvous); wsibench runs them in a private network namespace, which needs "
                       "root or user namespaces here (unshare). Run as root, or set network.interface = \"NAME\" "
                       "in the workload to open them on that interface (multi-host runs).")
    return [*base, "--", sys.executable, "-m", "harness.stages.distributed", "--loopback-up", "--", *cmd]


def _loopback_up() -> None:
    """Bring lo up (SIOCGIFFLAGS / SIOCSIFFLAGS), in a fresh network namespace where it starts down."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))  # IFF_UP


def _wait_all(procs: list, timeout: float) -> list:
    """Wait for (popen, name) pairs; the first failure kills the rest. Returns [(name, returncode)]."""
    deadline = time.time() + timeout
    codes = []
    for p, name in procs:
        try:
            rc = p.wait(max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = "timeout"
        codes.append((name, rc))
        if rc != 0:
            for q, _ in procs:
                q.kill()
    return codes


def _start_ranks(spec_files: list[str], out: Path) -> list:
    procs = []
    for f in spec_files:
        rank = json.loads(Path(f).read_text())["rank"]
        log = open(out / f"rank-{rank}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "harness.stages.distributed", f], stdout=log,
                                       stderr=subprocess.STDOUT), rank))
        log.close()
    return procs


def launch(specs: list[dict], out: Path, isolate: bool, timeout: float = 900) -> list[dict]:
    """Start one process per rank spec (in a private network namespace when ``isolate``) and collect their
    results, raising with the failing rank's output."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for s in specs:
        f = out / f"spec-{s['rank']}.json"
        f.write_text(json.dumps(dict(s, launched_at=time.time())))
        files.append(str(f))
    if isolate:  # one namespace for all ranks, which talk over its loopback
        with open(out / "launcher.log", "w") as log:
            group = subprocess.Popen(private_network([sys.executable, "-m", "harness.stages.distributed",
                                                      "--ranks", str(out), *files]), stdout=log, stderr=subprocess.STDOUT)
        codes = _wait_all([(group, "launcher")], timeout)
    else:
        codes = _wait_all(_start_ranks(files, out), timeout)
    missing = [s["rank"] for s in specs if not (out / f"rank-{s['rank']}.json").is_file()]
    if missing or any(rc != 0 for _, rc in codes):
        rank = missing[0] if missing else codes[0][0]
        log = out / f"rank-{rank}.log"
        tail = (log.read_text() if log.is_file() else (out / "launcher.log").read_text())[-2500:]
        raise RunError(f"rank {rank} failed ({dict(codes)}):\n{tail}")
    return [json.loads((out / f"rank-{s['rank']}.json").read_text()) for s in specs]


def horovod_launch(spec: dict, world: int, out: Path, interface: str | None, timeout: float = 900) -> list[dict]:
    """Horovod with Gloo on this host: horovodrun starts the ranks (in a private network namespace unless the
    workload named an interface)."""
    hr = shutil.which("horovodrun") or str(Path(sys.executable).parent / "horovodrun")
    if not Path(hr).exists():
        raise MissingExtra("horovod is not installed: run scripts/install-horovod (builds Horovod against TensorFlow)")
    out.mkdir(parents=True, exist_ok=True)
    f = out / "spec-horovod.json"
    f.write_text(json.dumps(dict(spec, launched_at=time.time())))
    cmd = [hr, "-np", str(world), "-H", f"localhost:{world}", "--gloo", "--network-interface", interface or "lo",
           sys.executable, "-m", "harness.stages.distributed", str(f)]
    with open(out / "horovodrun.log", "w") as log:
        r = subprocess.run(cmd if interface else private_network(cmd), stdout=log, stderr=subprocess.STDOUT,
                           timeout=timeout)
    if r.returncode != 0:
        raise RunError(f"horovodrun failed ({r.returncode}):\n{(out / 'horovodrun.log').read_text()[-2500:]}")
    return [json.loads((out / f"rank-{i}.json").read_text()) for i in range(world)]


def interface_address(name: str) -> str:
    """The IPv4 address of a named network interface."""
    import psutil

    for a in psutil.net_if_addrs().get(name, []):
        if a.family == socket.AF_INET:
            return a.address
    raise RunError(f"network.interface {name!r}: no such interface with an IPv4 address here "
                   f"(known: {', '.join(psutil.net_if_addrs())})")


def aggregate(ranks: list[dict]) -> dict:
    """Figures over all ranks: AU = total compute / total measured wall; samples/s and MiB/s summed (MiB/s from
    each rank's own read counter over its measured steps); I/O counters summed; start-up the slowest rank's."""
    wait = sum(r["wait_seconds"] for r in ranks)
    comp = sum(r["compute_seconds"] for r in ranks)
    wall = sum(r["wall_seconds"] for r in ranks)
    images = sum(sum(s["batch_size"] for s in r["steps"][1:]) for r in ranks)
    per_wall = max(r["wall_seconds"] for r in ranks) or 1e-9
    return {"processes": len(ranks), "input_wait_fraction": wait / (wait + comp) if wait + comp else None,
            "accelerator_utilization": comp / wall if wall else None,
            "au_per_rank": [r["accelerator_utilization"] for r in ranks],
            "images_per_s": sum(r["images_per_s"] or 0 for r in ranks), "images": images,
            "mib_per_s": sum(r["measured_bytes_read"] / r["wall_seconds"] for r in ranks if r["wall_seconds"]) / 2**20,
            "wall_seconds": per_wall, "measured_steps": sum(r["measured_steps"] for r in ranks),
            "startup_seconds": max(r.get("startup_seconds", 0.0) for r in ranks),
            "host_cpu_busy_fraction": sum(r["host_cpu_busy_fraction"] for r in ranks) / len(ranks),
            # the ranks' own share of the host's cores over the measured steps
            "ranks_cpu_fraction": sum(r["cpu_seconds"] for r in ranks) / (per_wall * (os.cpu_count() or 1)),
            "cpu_seconds_per_sample": (sum(r["cpu_seconds"] for r in ranks) / images) if images else None,
            "bytes_per_sample": (sum(r["measured_bytes_read"] for r in ranks) / images) if images else None,
            **{k: sum(r.get(k, 0) for r in ranks) for k in ("bytes_read", "bytes_written", "read_calls", "write_calls")}}


def run(files: list[str], out: Path, train_cfg, mode: str, world: int, steps: int, step_s: float | None = None,
        interface: str | None = None, cluster=None) -> dict:
    """Train (or emulate) with ``world`` ranks; returns aggregate figures plus every rank's own.
    ``interface``: open the ranks' services on this interface instead of a private loopback-only namespace.
    ``cluster``: a Dask cluster engine whose hosts run the ranks (``cluster_ranks``), else this host."""
    work = out / "ranks" / f"{mode}-{world}-{int(time.time() * 1000)}"  # rank specs, logs and results
    base = {"mode": mode, "world": world, "files": files, "train": train_cfg.model_dump(), "steps": steps,
            "step_s": step_s, "out": str(work), "model_dir": str(out), "barrier": str(work / "barrier")}
    if cluster is not None:
        from . import cluster_ranks

        ranks = cluster_ranks.launch(cluster, [dict(base, rank=i) for i in range(world)], work, interface)
    elif mode == "horovod":
        ranks = horovod_launch(base, world, work, interface)
    else:
        host = interface_address(interface) if interface else "127.0.0.1"
        addresses = [f"{host}:{_free_port(host)}" for _ in range(world)] if mode == "multiworker" else None
        ranks = launch([dict(base, rank=i, addresses=addresses) for i in range(world)], work,
                       isolate=mode == "multiworker" and not interface)
    agg = aggregate(ranks)
    return {"mode": mode, **agg, "ranks": [{k: v for k, v in r.items() if k != "steps"} for r in ranks],
            "steps_table": [dict(s, rank=r["rank"]) for r in ranks for s in r["steps"]]}


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


def cpu_busy(before, after) -> float:
    """The host's CPU busy fraction between two psutil.cpu_times() readings (all cores)."""
    idle = lambda t: t.idle + getattr(t, "iowait", 0.0)  # noqa: E731
    total = sum(after) - sum(before)
    return 1.0 - (idle(after) - idle(before)) / total if total > 0 else 0.0


def feed(files: list[str], out: Path, train_cfg, step_s: float, threshold: float = 0.9, max_n: int = 16,
         steps: int = 30, repetitions: int = 1, drop_caches=None, progress=print, io_snapshot=None,
         storage_bandwidth: float | None = None) -> dict:
    """The largest number of emulated accelerators whose AU stays >= threshold: doubling, then bisection.

    Each probe runs ``repetitions`` times (AU mean, min, max and spread; the mean decides), after
    ``drop_caches()`` when given, and records the host's CPU use: a probe that misses the threshold names its
    limit: ``storage`` when its reads reached 85% of ``storage_bandwidth`` (B/s, the storage's measured parallel
    read bandwidth, where known), else ``cpu`` when the host's cores were saturated, ``storage`` otherwise (on a
    shared host, busy cores alone do not say who is waiting for whom). It also records what the input
    pipeline cost the host: the ranks' own CPU seconds per sample over their measured steps (reading, parsing
    and, with train.decode, decoding), and from it the cores one accelerator needs at AU 1 and at the threshold
    (``cores_per_accelerator``, ``cores_per_accelerator_at_threshold``). ``io_snapshot()``, where the storage
    counts its requests (harness.storage.iostats), gives each probe the I/O profile of its first repetition."""
    from ..storage import iostats

    probes: dict[int, dict] = {}
    demand = train_cfg.batch_size / step_s  # samples/s one accelerator consumes at AU 1

    def probe(n: int) -> bool:
        runs, profile, profiled_samples = [], None, None
        for i in range(repetitions):
            dropped = drop_caches() if drop_caches else False
            before = io_snapshot() if io_snapshot and i == 0 else None
            r = run(files, out, train_cfg, "emulated", n, steps, step_s)
            if before is not None:
                profile = iostats.profile(iostats.delta(before, io_snapshot()))
                profiled_samples = sum(s["batch_size"] for s in r["steps_table"])  # every step's, the first too
            r["cpu_busy_fraction"] = r["host_cpu_busy_fraction"]  # over the measured steps, start-up excluded
            r["caches_dropped"] = dropped
            runs.append(r)
        aus = [r["accelerator_utilization"] for r in runs]
        mean = lambda k: sum(r[k] for r in runs) / len(runs)  # noqa: E731
        au = sum(aus) / len(aus)
        busy = mean("cpu_busy_fraction")
        probes[n] = {"accelerators": n, "au": au, "au_min": min(aus), "au_max": max(aus),
                     "au_spread": (max(aus) - min(aus)) / au if au else None, "repetitions": len(runs),
                     "au_min_rank": min(min(r["au_per_rank"]) for r in runs),
                     "input_wait_fraction": mean("input_wait_fraction"), "samples_per_s": mean("images_per_s"),
                     "mib_per_s": mean("mib_per_s"), "cpu_busy_fraction": busy,
                     "ranks_cpu_fraction": mean("ranks_cpu_fraction"),
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
                 + f", {p['samples_per_s']:.0f} samples/s, {p['mib_per_s']:.1f} MiB/s, host CPU {busy:.0%} busy"
                 + (f": {p['limit']}-bound" if p["limit"] else ""))
        return au >= threshold

    good, bad, n = 0, None, 1
    while n <= max_n:
        if probe(n):
            good, n = n, n * 2
        else:
            bad = n
            break
    if bad is None and good < max_n and max_n not in probes:  # between the last doubling and the cap
        if probe(max_n):
            good = max_n
        else:
            bad = max_n
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if probe(mid):
            good = mid
        else:
            bad = mid
    return {"threshold": threshold, "max_accelerators": good, "first_failing": bad, "step_s": step_s,
            "batch": train_cfg.batch_size, "steps_per_probe": steps, "repetitions": repetitions,
            "decode": train_cfg.decode,
            "bound_by": probes[bad]["limit"] if bad is not None else "max_accelerators (the cap)",
            "probes": [probes[k] for k in sorted(probes)]}


def main(argv=None):
    argv = list(argv or sys.argv[1:])
    if argv[0] == "--loopback-up":  # inside a fresh network namespace: lo up, then the command
        _loopback_up()
        os.execvp(argv[2], argv[2:])
    if argv[0] == "--ranks":  # start every rank here and wait for them
        codes = _wait_all(_start_ranks(argv[2:], Path(argv[1])), 900)
        sys.exit(next((1 for _, rc in codes if rc != 0), 0))
    spec = json.loads(Path(argv[0]).read_text())
    result = _rank_main(spec)
    out = Path(spec["out"]) / f"rank-{result['rank']}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
