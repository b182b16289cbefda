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
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import MissingExtra, RunError

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
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
    import tensorflow as tf

    from .. import models
    from ..config import Train
    from ..metrics import step_figures
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
        bce = tf.keras.losses.BinaryCrossentropy(reduction="sum_over_batch_size")

        def grads_of(x, y):
            with tf.GradientTape() as tape:
                p = model(x, training=True)
                loss = bce(y[:, None], p)
            return loss, tape.gradient(loss, model.trainable_variables)

        if mode == "horovod":
            for v in model.variables:  # the same start everywhere (Keras 3: broadcast by hand)
                v.assign(hvd.broadcast(v, root_rank=0))

            @tf.function
            def step(x, y):
                loss, grads = grads_of(x, y)
                grads = [hvd.allreduce(g, op=hvd.Average) for g in grads]
                opt.apply_gradients(zip(grads, model.trainable_variables))
                return loss
        else:
            @tf.function
            def replica_step(x, y):
                loss, grads = grads_of(x, y)
                ctx = tf.distribute.get_replica_context()
                grads = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, grads)
                opt.apply_gradients(zip(grads, model.trainable_variables),
                                    **({"skip_gradients_aggregation": True} if _accepts_skip(opt) else {}))
                return loss

            def step(x, y):
                return strategy.run(replica_step, args=(x, y))
    it = iter(ds)
    rows = []
    _barrier(Path(spec["barrier"]), rank, world)
    t_first = None
    for i in range(steps_n):
        t0 = time.perf_counter()
        x, y, nbytes = next(it)
        t1 = time.perf_counter()
        if mode == "emulated":
            time.sleep(spec["step_s"])
            loss = None
        else:
            loss = float(step(x, y))
        t2 = time.perf_counter()
        if i == 0:
            t_first = t2
        rows.append({"step": i, "wait_seconds": t1 - t0, "compute_seconds": t2 - t1, "batch_size": int(y.shape[0]),
                     "bytes_read": int(tf.reduce_sum(nbytes)), "loss": loss})
    t_end = time.perf_counter()
    figs = step_figures([r["wait_seconds"] for r in rows], [r["compute_seconds"] for r in rows],
                        [r["batch_size"] for r in rows], t_first, t_end)
    saved = None
    if mode != "emulated" and rank == 0:  # the chief alone writes the model
        saved = str(Path(spec["model_dir"]) / "model.keras")
        tr.save_model(model, Path(saved))
    losses = [r["loss"] for r in rows if r["loss"] is not None]
    checksum = float(sum(float(tf.reduce_sum(tf.cast(v, tf.float64))) for v in model.trainable_variables)) \
        if mode != "emulated" else None  # equal on every rank when gradients are really synchronised
    return {"rank": rank, "world": world, "host": socket.gethostname(), "pid": os.getpid(), "shards": files,
            **figs, "bytes_read": int(sum(r["bytes_read"] for r in rows[1:])), "steps": rows,
            "loss_first": float(np.mean(losses[:5])) if losses else None,
            "loss_last": float(np.mean(losses[-5:])) if losses else None, "model_path": saved,
            "weights_checksum": checksum}


def _subset(files: list[str], rank: int, world: int) -> list[str]:
    """This rank's shards: every world-th one; ranks share shards only when there are fewer shards than ranks."""
    return files[rank::world] or [files[rank % len(files)]]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _accepts_skip(opt) -> bool:
    import inspect
    return "skip_gradients_aggregation" in inspect.signature(opt.apply_gradients).parameters


def launch(specs: list[dict], out: Path, timeout: float = 900) -> list[dict]:
    """Start one process per rank spec and collect their results (raising with the failing rank's stderr)."""
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for s in specs:
        f = out / f"spec-{s['rank']}.json"
        f.write_text(json.dumps(s))
        log = open(out / f"rank-{s['rank']}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "harness.stages.distributed", str(f)],
                                       stdout=log, stderr=subprocess.STDOUT), log, s["rank"]))
    deadline = time.time() + timeout
    failed = None
    for p, log, rank in procs:
        try:
            rc = p.wait(max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = "timeout"
        log.close()
        if rc != 0 and failed is None:
            failed = (rank, rc)
    if failed:
        for p, _, _ in procs:
            p.kill()
        tail = (out / f"rank-{failed[0]}.log").read_text()[-2500:]
        raise RunError(f"rank {failed[0]} failed ({failed[1]}):\n{tail}")
    return [json.loads((out / f"rank-{s['rank']}.json").read_text()) for s in specs]


def horovod_launch(spec: dict, world: int, out: Path, timeout: float = 900) -> list[dict]:
    """Horovod with Gloo on this host: horovodrun starts the ranks."""
    import shutil
    hr = shutil.which("horovodrun") or str(Path(sys.executable).parent / "horovodrun")
    if not Path(hr).exists():
        raise MissingExtra("horovod is not installed: run scripts/install-horovod (builds Horovod against TensorFlow)")
    out.mkdir(parents=True, exist_ok=True)
    f = out / "spec-horovod.json"
    f.write_text(json.dumps(spec))
    with open(out / "horovodrun.log", "w") as log:
        r = subprocess.run([hr, "-np", str(world), "-H", f"localhost:{world}", "--gloo", "--network-interface", "lo",
                            sys.executable, "-m", "harness.stages.distributed", str(f)],
                           stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    if r.returncode != 0:
        raise RunError(f"horovodrun failed ({r.returncode}):\n{(out / 'horovodrun.log').read_text()[-2500:]}")
    return [json.loads((out / f"rank-{i}.json").read_text()) for i in range(world)]


def aggregate(ranks: list[dict]) -> dict:
    """Figures over all ranks: AU = total compute / total measured wall; samples/s and MiB/s summed."""
    wait = sum(r["wait_seconds"] for r in ranks)
    comp = sum(r["compute_seconds"] for r in ranks)
    wall = sum(r["wall_seconds"] for r in ranks)
    images = sum(sum(s["batch_size"] for s in r["steps"][1:]) for r in ranks)
    per_wall = max(r["wall_seconds"] for r in ranks) or 1e-9
    return {"processes": len(ranks), "input_wait_fraction": wait / (wait + comp) if wait + comp else None,
            "accelerator_utilization": comp / wall if wall else None,
            "au_per_rank": [r["accelerator_utilization"] for r in ranks],
            "images_per_s": sum(r["images_per_s"] or 0 for r in ranks), "images": images,
            "mib_per_s": sum(r["bytes_read"] / r["wall_seconds"] for r in ranks if r["wall_seconds"]) / 2**20,
            "wall_seconds": per_wall}


def run(files: list[str], out: Path, train_cfg, mode: str, world: int, steps: int, step_s: float | None = None) -> dict:
    """Train (or emulate) with ``world`` ranks; returns aggregate figures plus every rank's own."""
    work = out / "ranks" / f"{mode}-{world}-{int(time.time() * 1000)}"  # rank specs, logs and results
    base = {"mode": mode, "world": world, "files": files, "train": train_cfg.model_dump(), "steps": steps,
            "step_s": step_s, "out": str(work), "model_dir": str(out), "barrier": str(work / "barrier")}
    if mode == "horovod":
        ranks = horovod_launch(base, world, work)
    else:
        addresses = [f"127.0.0.1:{_free_port()}" for _ in range(world)] if mode == "multiworker" else None
        ranks = launch([dict(base, rank=i, addresses=addresses) for i in range(world)], work)
    agg = aggregate(ranks)
    return {"mode": mode, **agg, "ranks": [{k: v for k, v in r.items() if k != "steps"} for r in ranks],
            "steps_table": [dict(s, rank=r["rank"]) for r in ranks for s in r["steps"]]}


def feed(files: list[str], out: Path, train_cfg, step_s: float, threshold: float = 0.9, max_n: int = 16,
         steps: int = 30, progress=print) -> dict:
    """The largest number of emulated accelerators whose AU stays >= threshold: doubling, then bisection."""
    probes: dict[int, dict] = {}

    def probe(n: int) -> bool:
        r = run(files, out, train_cfg, "emulated", n, steps, step_s)
        probes[n] = {"accelerators": n, "au": r["accelerator_utilization"], "au_min_rank": min(r["au_per_rank"]),
                     "input_wait_fraction": r["input_wait_fraction"], "samples_per_s": r["images_per_s"],
                     "mib_per_s": r["mib_per_s"]}
        progress(f"[feed] {n} accelerators: AU {r['accelerator_utilization']:.3f}, "
                 f"{r['images_per_s']:.0f} samples/s, {r['mib_per_s']:.1f} MiB/s")
        return r["accelerator_utilization"] >= threshold

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
            "batch": train_cfg.batch_size, "steps_per_probe": steps,
            "probes": [probes[k] for k in sorted(probes)]}


def main(argv=None):
    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    result = _rank_main(spec)
    out = Path(spec["out"]) / f"rank-{result['rank']}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
