"""Training ranks on the hosts of a Dask cluster: distributed training across machines, without ssh.

When the train stage's engine is a Dask cluster (``engine.address``, or ``engine.stages.train = "dask"`` with it),
rank i runs on host i mod N of the cluster's hosts (``engine.nodes`` of them, else all): a worker on that host
starts it as a process of its own (``python -m harness.stages.distributed SPEC``), and the driver follows the
ranks through the workers until every one has written its result (rank-<i>.json, on the shared storage like the
spec, the shards and the start barrier).

The ranks' services open on the interface the workload names (``network.interface``, the same name on every host):

- MultiWorkerMirroredStrategy: TF_CONFIG lists each rank at its host's address on that interface and a port free
  there (TensorFlow's gRPC server binds every address of the host, whatever TF_CONFIG says).
- Horovod (Gloo): what ``horovodrun -H host1:1,host2:1`` does over ssh is done here by the cluster's workers: the
  driver opens Horovod's rendezvous server on its own address facing the cluster (the route to the scheduler),
  computes the slot plan (rank, local and cross ranks per host) with Horovod's own function, and each rank starts
  with the HOROVOD_* variables of its slot, HOROVOD_GLOO_IFACE naming the interface.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import MissingExtra, RunError
from ..network import interface_address
from ..procs import signals_deferred

_RANKS: dict[int, subprocess.Popen] = {}  # in a worker: the rank processes it started


def endpoint(interface: str) -> dict:
    """On a worker: its host's address on ``interface``, a port free there, and the host's name."""
    address = interface_address(interface)
    with socket.socket() as s:
        s.bind((address, 0))
        port = s.getsockname()[1]
    return {"address": address, "port": port, "host": socket.gethostname()}


def spawn(spec_file: str, log_file: str, env: dict) -> int:
    """On a worker: start one rank as a process of its own (importing harness as this worker does); its pid."""
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **env)
    with open(log_file, "w") as log:
        p = subprocess.Popen([sys.executable, "-m", "harness.stages.distributed", spec_file], stdout=log,
                             stderr=subprocess.STDOUT, env=full)
    _RANKS[p.pid] = p
    return p.pid


def poll(pid: int):
    """On a worker: the rank's exit code, None while it runs."""
    return _RANKS[pid].poll()


def kill(pid: int) -> None:
    p = _RANKS.get(pid)
    if p is not None and p.poll() is None:
        p.kill()
        p.wait()


def placements(engine, world: int) -> list[str]:
    """The worker that starts each rank: rank i on host i mod N (hosts in order), the hosts' first workers."""
    hosts = engine.by_host()
    order = sorted(hosts)
    return [hosts[order[i % len(order)]][0] for i in range(world)]


def launch(engine, specs: list[dict], out: Path, interface: str | None, timeout: float = 900) -> list[dict]:
    """Start the ranks of ``specs`` on the cluster of ``engine`` (a DaskEngine), wait for them, return their
    results; a failing rank stops the others and raises with its output."""
    if not interface:
        raise RunError("distributed training on a cluster's hosts opens its services on network.interface: name "
                       "the interface (the same on every host) that the hosts reach each other on")
    client = engine.client
    where = placements(engine, len(specs))
    ends = [client.run(endpoint, interface, workers=[w])[w] for w in where]
    mode = specs[0]["mode"]
    envs: list[dict] = [{} for _ in specs]
    server = None
    if mode == "multiworker":
        addresses = [f"{e['address']}:{e['port']}" for e in ends]
        specs = [dict(s, addresses=addresses) for s in specs]
    elif mode == "horovod":
        server, envs = _horovod(engine, ends, interface)
    out.mkdir(parents=True, exist_ok=True)
    pids = []
    try:
        for s, w, env in zip(specs, where, envs):
            f = out / f"spec-{s['rank']}.json"
            f.write_text(json.dumps(dict(s, launched_at=time.time())))
            log = out / f"rank-{s['rank']}.log"
            pids.append(client.run(spawn, str(f), str(log), env, workers=[w])[w])
        codes = _follow(client, where, pids, timeout)
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or failed: no rank trains on after the run's record
        with signals_deferred():
            for w, pid in zip(where, pids):
                with contextlib.suppress(Exception):  # a worker gone with its rank
                    client.run(kill, pid, workers=[w])
        raise
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    failed = [(i, rc) for i, rc in enumerate(codes) if rc != 0]
    if failed:
        rank, rc = failed[0]
        log = out / f"rank-{rank}.log"
        raise RunError(f"rank {rank} on {ends[rank]['host']} failed ({rc}):\n"
                       + (log.read_text()[-2500:] if log.is_file() else "(no output)"))
    results = [json.loads((out / f"rank-{s['rank']}.json").read_text()) for s in specs]
    for r, e in zip(results, ends):
        r["address"] = e["address"]
    return results


def _follow(client, where: list[str], pids: list[int], timeout: float) -> list:
    """Poll the ranks through their workers until all have ended; the first failure kills the rest."""
    deadline = time.time() + timeout
    codes: list = [None] * len(pids)
    while any(c is None for c in codes):
        for i, (w, pid) in enumerate(zip(where, pids)):
            if codes[i] is None:
                codes[i] = client.run(poll, pid, workers=[w])[w]
        if any(c not in (None, 0) for c in codes) or time.time() > deadline:
            for i, (w, pid) in enumerate(zip(where, pids)):
                if codes[i] is None:
                    client.run(kill, pid, workers=[w])
                    codes[i] = "timeout" if time.time() > deadline else "stopped"
            break
        time.sleep(0.5)
    return codes


def _horovod(engine, ends: list[dict], interface: str):
    """Horovod's rendezvous server on the driver's address facing the cluster, and each rank's HOROVOD_* set."""
    import threading

    try:
        from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
        from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer
    except ImportError:
        raise MissingExtra("horovod is not installed: run scripts/install-horovod (builds Horovod against "
                           "TensorFlow)") from None
    slots: dict[str, int] = {}
    for e in ends:
        slots[e["address"]] = slots.get(e["address"], 0) + 1
    plan = get_host_assignments(parse_hosts(",".join(f"{h}:{n}" for h, n in slots.items())), len(ends))
    driver = engine.driver_address()
    server = RendezvousHTTPServer((driver, 0), RendezvousHandler, False)  # on the cluster's side only
    server.init(plan)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    by_host: dict[str, list] = {}
    for slot in plan:
        by_host.setdefault(slot.hostname, []).append(slot)
    envs = []
    for e in ends:  # ranks in plan order: the k-th rank placed on a host takes that host's k-th slot
        slot = by_host[e["address"]].pop(0)
        envs.append({"HOROVOD_GLOO_RENDEZVOUS_ADDR": driver, "HOROVOD_GLOO_RENDEZVOUS_PORT": str(server.server_port),
                     "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo", "HOROVOD_GLOO_IFACE": interface,
                     "HOROVOD_HOSTNAME": slot.hostname, "HOROVOD_RANK": str(slot.rank),
                     "HOROVOD_SIZE": str(slot.size), "HOROVOD_LOCAL_RANK": str(slot.local_rank),
                     "HOROVOD_LOCAL_SIZE": str(slot.local_size), "HOROVOD_CROSS_RANK": str(slot.cross_rank),
                     "HOROVOD_CROSS_SIZE": str(slot.cross_size)})
    return server, envs
