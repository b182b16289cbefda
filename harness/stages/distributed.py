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
from ..network import free_port, interface_address, private_network
from ..procs import dies_with_parent, signals_deferred, stop_tree
from .barrier import Client, Server

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
    from ..metrics import Sampler, cpu_busy, step_figures
    from . import checkpoints, tfdata

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
    if spec.get("mlperf"):
        return _mlperf_rank(spec, cfg, rank, world, files)
    tf.keras.utils.set_random_seed(cfg.seed + rank)
    ds = tfdata.dataset(files, cfg, training=True)
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
    bar = Client(spec["step_barrier"], rank) if spec.get("step_barrier") else None
    every = bool(spec.get("barrier_every_step", True))
    if bar:  # emulated accelerators: the start, after step 0, every step (DLIO), and the end
        bar.wait("B")
    else:
        _barrier(Path(spec["barrier"]), rank, world)
    io0 = proc_io()
    sampler = Sampler().__enter__()
    t_first = io_first = None
    last = steps_n - 1
    for i in range(steps_n):
        t0 = time.perf_counter()
        try:
            x, y, nbytes = next(it)
        except tf.errors.DataLossError as e:
            raise tfdata.named_data_loss(files, e) from None
        t1 = time.perf_counter()
        if mode == "emulated":
            time.sleep(spec["step_s"])
            loss = None
        else:
            loss = float(step(x, y))
        t2 = time.perf_counter()
        if bar and (every or i in (0, last)):  # the measured window starts after step 0's, ends after the last
            bar.wait("M" if i == 0 else "Z" if i == last else "s")
        t3 = time.perf_counter()
        if i == 0:
            t_first, io_first, cpu_first, own_first = t3, proc_io(), psutil.cpu_times(), sum(os.times()[:2])
            startup = time.time() - spec["launched_at"]  # process start, imports, model, first batch and step
        rows.append({"step": i, "wait_seconds": t1 - t0, "compute_seconds": t2 - t1, "barrier_seconds": t3 - t2,
                     "batch_size": int(y.shape[0]), "record_bytes": int(tf.reduce_sum(nbytes)), "loss": loss})
    t_end, io_end = time.perf_counter(), proc_io()
    if bar:
        bar.close()
    host_busy = cpu_busy(cpu_first, psutil.cpu_times())  # the whole host's cores, over the measured steps
    own_cpu = sum(os.times()[:2]) - own_first  # this rank's CPU seconds (all its threads) over the same steps
    sampler.__exit__(None, None, None)
    figs = step_figures([r["wait_seconds"] for r in rows], [r["compute_seconds"] for r in rows],
                        [r["batch_size"] for r in rows], t_first, t_end)
    saved = None
    if mode != "emulated" and rank == 0:  # the chief alone writes the model
        saved = checkpoints.timed_save(checkpoints.save_model, model, Path(spec["model_dir"]) / "model.keras")
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
            # ... and the bytes of the records those steps consumed (read from wherever: storage, cache, buffers)
            "measured_record_bytes": sum(r["record_bytes"] for r in rows[1:]),
            "barrier_seconds": sum(r["barrier_seconds"] for r in rows[1:]),
            "loss_first": float(np.mean(losses[:5])) if losses else None,
            "loss_last": float(np.mean(losses[-5:])) if losses else None,
            "model_path": saved["path"] if saved else None, "model_save": saved,
            "weights_checksum": checksum, "weights_change_max": change, "cpu": sampler.summary(),
            "host_cpu_busy_fraction": host_busy, "cpu_seconds": own_cpu}


def _mlperf_rank(spec: dict, cfg, rank: int, world: int, files: list[str]) -> dict:
    """An emulated accelerator under MLPerf Storage's rules, timed as DLIO 2.0 times it. ``spec["mlperf"]``:
    runs (the warm-up first), epochs per run, steps per epoch (every rank the same: its records read once an epoch,
    no repeat, no shuffle buffer), read_threads, prefetch (batches). Per epoch: a new iterator over the rank's
    shards (DLIO starts each epoch at its first record), a barrier before (``E``: the driver drops caches and reads
    the storage's counters there) and after every step (the last one ``X``). AU = the nominal step time of steps
    2.. / (the epoch's wall, from before the iterator to after the last barrier, minus step 1's load and compute,
    the iterator's making included in step 1's load, as DLIO's generator makes it there): DLIO's statscounter.
    samples/s: every step, the first included, over the same wall."""
    import tensorflow as tf

    from . import tfdata

    m, step_s, batch = spec["mlperf"], spec["step_s"], cfg.batch_size
    steps = m["steps_per_epoch"]
    ds = tfdata.mlperf_dataset(files, batch, m["read_threads"], m["prefetch"], m.get("parse", "py_function"))
    bar = Client(spec["step_barrier"], rank)
    bar.wait("B")
    startup = time.time() - spec["launched_at"]
    epochs = []
    for run in range(m["runs"]):
        for epoch in range(m["epochs"]):
            bar.wait("E")
            cpu0 = sum(os.times()[:2])
            with open("/proc/self/io") as f:
                rchar0 = int(f.readline().split()[1])
            t_start = time.perf_counter()
            it = None
            first = None
            consumed = wait = barrier = 0.0
            for i in range(steps):
                t0 = time.perf_counter()
                try:
                    if it is None:  # in step 1's load, as DLIO's loader (a generator) makes its iterator there
                        it = iter(ds)
                        made = time.perf_counter() - t0
                    _, _, nbytes = next(it)
                except tf.errors.DataLossError as e:
                    raise tfdata.named_data_loss(files, e) from None
                except StopIteration:
                    raise RunError(f"rank {rank}: its shards ran out of records at step {i} of {steps}") from None
                t1 = time.perf_counter()
                time.sleep(step_s)
                t2 = time.perf_counter()
                consumed += int(nbytes)
                if i == 0:
                    first = t2 - t0
                else:
                    wait += t1 - t0
                barrier += bar.wait("X" if i == steps - 1 else "s")
            t_end = time.perf_counter()
            del it
            with open("/proc/self/io") as f:
                rchar1 = int(f.readline().split()[1])
            block = t_end - t_start
            epochs.append({"run": run, "epoch": epoch, "steps": steps, "samples": steps * batch,
                           "block_seconds": block, "first_step_seconds": first,
                           "accelerator_utilization": step_s * (steps - 1) / (block - first),
                           "samples_per_s": steps * batch / block, "wait_seconds": wait, "barrier_seconds": barrier,
                           "consumed_bytes": int(consumed), "bytes_read": rchar1 - rchar0, "iterator_seconds": made,
                           "cpu_seconds": sum(os.times()[:2]) - cpu0})
    bar.close()
    return {"rank": rank, "world": world, "host": socket.gethostname(), "pid": os.getpid(), "shards": files,
            "startup_seconds": startup, "epochs": epochs}


def _subset(files: list[str], rank: int, world: int) -> list[str]:
    """This rank's shards: every world-th one; ranks share shards only when there are fewer shards than ranks."""
    return files[rank::world] or [files[rank % len(files)]]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _wait_all(procs: list, timeout: float) -> list:
    """Wait for (popen, name) pairs; the first failure, whichever rank it is, stops the rest (ranks waiting on a
    barrier for a dead one would otherwise wait out their time-out). Returns [(name, returncode)]. Interrupted
    (Ctrl-C, SIGTERM) or past the timeout, it stops every process and all they started (``_stop``), and waits for
    them, before it returns or raises: nothing of the training writes after the run's record."""
    deadline = time.time() + timeout
    codes: dict = {}
    try:
        while len(codes) < len(procs):
            for p, name in procs:
                if name not in codes and p.poll() is not None:
                    codes[name] = p.returncode
            failed = any(rc != 0 for rc in codes.values())
            if failed or time.time() > deadline:
                _stop(procs)
                for p, name in procs:
                    if name not in codes:
                        codes[name] = "killed" if failed else "timeout"
                break
            time.sleep(0.05)
    except BaseException:
        _stop(procs)
        raise
    return [(name, codes[name]) for _, name in procs]


def _stop(procs: list) -> None:
    """Kill every process of ``procs`` with all its descendants and wait until they have ended; a second Ctrl-C
    or SIGTERM does not cut this short."""
    with signals_deferred():
        for p, _ in procs:
            if p.poll() is None:
                stop_tree(p.pid, group=True)
            p.wait()


def _popen(cmd: list[str], log) -> subprocess.Popen:
    """A rank or a launcher: its own process group (a terminal's Ctrl-C reaches the driver, which stops it) and
    killed if the process that starts it dies, SIGKILL included."""
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=dies_with_parent())


def _start_ranks(spec_files: list[str], out: Path) -> list:
    procs = []
    for f in spec_files:
        rank = json.loads(Path(f).read_text())["rank"]
        with open(out / f"rank-{rank}.log", "w") as log:
            procs.append((_popen([sys.executable, "-m", "harness.stages.distributed", f], log), rank))
    return procs


def launch(specs: list[dict], out: Path, isolate: bool, timeout: float = 900,
           hosts: list[list[str]] | None = None) -> list[dict]:
    """Start one process per rank spec (in a private network namespace when ``isolate``) and collect their
    results, raising with the failing rank's output. ``hosts``: argv prefixes that run a command on a host each
    (the storage lab's client hosts, each with its own mount): the ranks are dealt round-robin over them, each
    host's started there by one launcher."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for s in specs:
        f = out / f"spec-{s['rank']}.json"
        f.write_text(json.dumps(dict(s, launched_at=time.time())))
        files.append(str(f))
    if isolate:  # one namespace for all ranks, which talk over its loopback
        with open(out / "launcher.log", "w") as log:
            group = _popen(private_network([sys.executable, "-m", "harness.stages.distributed", "--ranks", str(out),
                                            *files]), log)
        codes = _wait_all([(group, "launcher")], timeout)
    elif hosts:
        groups = []
        for i, prefix in enumerate(hosts):
            with open(out / f"host-{i}.log", "w") as log:
                groups.append((_popen(prefix + [sys.executable, "-m", "harness.stages.distributed", "--ranks",
                                                 str(out), *files[i::len(hosts)]], log), f"host-{i}"))
        codes = _wait_all(groups, timeout)
    else:
        codes = _wait_all(_start_ranks(files, out), timeout)
    missing = [s["rank"] for s in specs if not (out / f"rank-{s['rank']}.json").is_file()]
    if missing or any(rc != 0 for _, rc in codes):
        first = [n for n, rc in codes if rc not in (0, "killed")]  # the one that failed, not those it took along
        rank = first[0] if first and first[0] != "launcher" and not str(first[0]).startswith("host-") \
            else missing[0] if missing else codes[0][0]
        log = out / f"rank-{rank}.log"
        launcher = out / (f"{first[0]}.log" if first and str(first[0]).startswith("host-") else "launcher.log")
        tail = (log.read_text() if log.is_file() and log.stat().st_size else
                launcher.read_text() if launcher.is_file() else "")[-2500:]
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
        proc = _popen(cmd if interface else private_network(cmd), log)
    ((_, rc),) = _wait_all([(proc, "horovodrun")], timeout)
    if rc != 0:
        raise RunError(f"horovodrun failed ({rc}):\n{(out / 'horovodrun.log').read_text()[-2500:]}")
    return [json.loads((out / f"rank-{i}.json").read_text()) for i in range(world)]


def aggregate(ranks: list[dict]) -> dict:
    """Figures over all ranks: AU = total compute / total measured wall, and the slowest rank's; samples/s and
    MiB/s summed (MiB/s from each rank's own read counter over its measured steps, ``consumed_mib_per_s`` from the
    records its steps took); I/O counters summed; start-up the slowest rank's."""
    wait = sum(r["wait_seconds"] for r in ranks)
    comp = sum(r["compute_seconds"] for r in ranks)
    wall = sum(r["wall_seconds"] for r in ranks)
    images = sum(sum(s["batch_size"] for s in r["steps"][1:]) for r in ranks)
    per_wall = max(r["wall_seconds"] for r in ranks) or 1e-9
    return {"processes": len(ranks), "input_wait_fraction": wait / (wait + comp) if wait + comp else None,
            "accelerator_utilization": comp / wall if wall else None,
            "au_per_rank": [r["accelerator_utilization"] for r in ranks],
            "au_slowest_rank": min((r["accelerator_utilization"] for r in ranks
                                    if r["accelerator_utilization"] is not None), default=None),
            "barrier_seconds": sum(r.get("barrier_seconds", 0.0) for r in ranks),
            "images_per_s": sum(r["images_per_s"] or 0 for r in ranks), "images": images,
            "mib_per_s": sum(r["measured_bytes_read"] / r["wall_seconds"] for r in ranks if r["wall_seconds"]) / 2**20,
            "consumed_bytes": sum(r.get("measured_record_bytes", 0) for r in ranks),
            "consumed_mib_per_s": sum(r.get("measured_record_bytes", 0) / r["wall_seconds"] for r in ranks
                                      if r["wall_seconds"]) / 2**20,
            "wall_seconds": per_wall, "measured_steps": sum(r["measured_steps"] for r in ranks),
            "startup_seconds": max(r.get("startup_seconds", 0.0) for r in ranks),
            "host_cpu_busy_fraction": sum(r["host_cpu_busy_fraction"] for r in ranks) / len(ranks),
            # the ranks' own share of the host's cores over the measured steps
            "ranks_cpu_fraction": sum(r["cpu_seconds"] for r in ranks) / (per_wall * (os.cpu_count() or 1)),
            "cpu_seconds_per_sample": (sum(r["cpu_seconds"] for r in ranks) / images) if images else None,
            "bytes_per_sample": (sum(r["measured_bytes_read"] for r in ranks) / images) if images else None,
            **{k: sum(r.get(k, 0) for r in ranks) for k in ("bytes_read", "bytes_written", "read_calls", "write_calls")}}


def run(files: list[str], out: Path, train_cfg, mode: str, world: int, steps: int, step_s: float | None = None,
        interface: str | None = None, cluster=None, barrier: bool = True, hooks: dict | None = None,
        mlperf: dict | None = None, hosts: list[list[str]] | None = None) -> dict:
    """Train (or emulate) with ``world`` ranks; returns aggregate figures plus every rank's own.
    ``interface``: open the ranks' services on this interface instead of a private loopback-only namespace.
    ``cluster``: a Dask cluster engine whose hosts run the ranks (``cluster_ranks``), else this host.
    Emulated accelerators pass a barrier (``stages.barrier``) after every step (``barrier``; else only after step 0
    and the last, which bound the measured window), where ``hooks`` ({tag: fn(round)}) run with every rank stopped.
    ``mlperf``: MLPerf Storage's epochs and runs instead of ``steps`` (``_mlperf_rank``). ``hosts`` (emulated
    ranks): argv prefixes of the hosts the ranks are dealt over (``launch``), else this host."""
    work = out / "ranks" / f"{mode}-{world}-{int(time.time() * 1000)}"  # rank specs, logs and results
    base = {"mode": mode, "world": world, "files": files, "train": train_cfg.model_dump(), "steps": steps,
            "step_s": step_s, "out": str(work), "model_dir": str(out), "barrier": str(work / "barrier"),
            "mlperf": mlperf}
    server = None
    if mode == "emulated":
        server = Server(world, interface_address(interface) if cluster is not None and interface else None, hooks)
        base.update(step_barrier=server.address, barrier_every_step=barrier or bool(mlperf))
    try:
        if cluster is not None:
            from . import cluster_ranks

            ranks = cluster_ranks.launch(cluster, [dict(base, rank=i) for i in range(world)], work, interface)
        elif mode == "horovod":
            ranks = horovod_launch(base, world, work, interface)
        else:
            host = interface_address(interface) if interface else "127.0.0.1"
            addresses = [f"{host}:{free_port(host)}" for _ in range(world)] if mode == "multiworker" else None
            ranks = launch([dict(base, rank=i, addresses=addresses) for i in range(world)], work,
                           isolate=mode == "multiworker" and not interface, hosts=hosts if mode == "emulated" else None)
    finally:
        if server is not None:
            server.close()
    if server is not None and server.error:
        raise RunError(f"step barrier: {server.error}")
    if mlperf:
        return {"mode": mode, "ranks": ranks, "barrier_rounds": server.rounds}
    agg = aggregate(ranks)
    if server is not None:  # emulated: every step's barrier, or only the measured window's edges
        agg.update(barrier=barrier, barrier_rounds=len(server.rounds))
    return {"mode": mode, **agg,
            "ranks": [{k: v for k, v in r.items() if k != "steps"} for r in ranks],
            "steps_table": [dict(s, rank=r["rank"]) for r in ranks for s in r["steps"]]}


def main(argv=None):
    argv = list(argv or sys.argv[1:])
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
