"""A stage on a cluster: N client hosts, W workers each, sharing a parallel file system's servers.

The stage's items (slides, shards) are taken, heaviest first, by the first free of the N x W workers (as the engines
do). Each item asks for its share of the stage's measured demand: its own CPU seconds (the worker's, as measured),
and its share of the stage's bytes and operations (counted by the FUSE passthrough in an observed run). What an item
can get is limited by:

- **its own chain**: one worker does its CPU and its requests one after the other, so an item takes at least its
  CPU seconds plus what its I/O patterns cost one after the other on the target (``pattern_seconds``, with the
  costs one client host measured: the client's read-ahead at the opens that read from a file's start among them,
  less what its reads and its files' writes hide of each other where they travel apart);
- **its host's link**: the read and write bandwidth one client reaches (``wsibench fio``, one host), shared by that
  host's workers; its reads carry their bytes and the client's read-ahead (``costs.read_ahead``);
- **the servers**: the storage targets' aggregate read and write bandwidth, the small files they take per second
  and the metadata server's operations per second (``wsibench fio --hosts N``: several clients at once), shared by
  every worker of every host;
- **the cores**: each host's own, or, in the lab, this one machine's, which every namespace host and the lab's own
  servers and clients share (their CPU per byte and per operation was measured with the parallel phases).

A fluid simulation gives the stage's time: while a set of items runs, each progresses at the rate that max-min
fairness allows under those capacities (progressive filling: every running item's rate rises together until a
resource is full or an item reaches its own chain's pace; the items using that resource stay there, the others
rise on). When one ends, its worker takes the next item. The resource that is full for the longest share of the
time is what binds. The answer for N hosts is then min(N x a client's limit, the servers' limit) where storage
binds, the chains where it does not, and the cores where neither does.

The fluid lets a few workers keep a resource full; they cannot while they do their own work between requests, and
a request waits behind the others'. Where the resource the fluid finds full is one all hosts share (the storage
targets, the metadata server), mean value analysis of the closed network (``queueing``: the workers, each thinking
for its chain less its time at that resource, then queueing there) gives the pace its queue allows, and the fluid's
time is stretched by the fluid's steady pace over it. The lab's cores (one machine's, which every host shares) are
not one pool: each core queues the threads woken on it (``lab_cores_queue``).

Where the demand was measured on the target itself, on one client host (``on_target``), each item's chain is its
measured time, its bytes on the links the lab's link counters' (the client's read-ahead included), and its load on
the cores its share of the machine's busy CPU: what one host measured there, spread over N.
"""
from __future__ import annotations

import os
import time

from .costs import cost, pattern_seconds, read_ahead, server_bandwidth, small_file_beyond
from .demand import patterns
from .figures import SMALL_FILE_BYTES, SizingError

RESOURCES = {  # name -> what it is, for the answer's "what binds"
    "chain": "each item's own chain (CPU and I/O one after the other on one worker)",
    "link_read": "client hosts' link, reads", "link_write": "client hosts' link, writes",
    "server_read": "storage targets' read bandwidth", "server_write": "storage targets' write bandwidth",
    "server_files": "storage targets' small files per second",
    "server_io": "storage targets' links, reads and writes together", "metadata": "metadata server's operations per second",
    "cores": "host CPU cores",
}


def item_demands(demand: dict, target: dict, lab_cores: bool, on_target: bool = False) -> list[dict]:
    """Per item of a stage's measured ``demand`` (``stage_demand`` of an observed run), what it asks of each
    resource on a storage of these ``target`` costs (``storage_costs``). ``on_target``: the run was on this very
    storage (one client host): each item's chain is its measured seconds, its bytes on the links and servers what
    the lab's clients received and sent for it (the client's read-ahead included: a slide's reads carried 2.3 times
    their bytes over MooseFS's links), and its load on the cores its share of the machine's busy CPU (the engine's,
    the storage's and the kernel's network work, which neither the item's own CPU nor the lab's processes count),
    where the run's record has them."""
    prof, items = demand.get("io_profile"), demand.get("item_table")
    if not prof:
        raise SizingError(f"{demand['source']}: no io_profile (run it with --observe, or on an emulated profile)")
    if items is None or not len(items) or "cpu_seconds" not in items:
        raise SizingError(f"{demand['source']}: no per-item table with CPU seconds")
    p = patterns(prof)
    read_share = _shares(items, "bytes_read")
    write_share = _shares(items, "bytes_written")
    ops = {k: (v or {}).get("count", 0) for k, v in prof["ops"].items()}
    # what the client reads ahead of the stage's opens from a file's start: on the links with its bytes read
    ahead = (read_ahead(p, target) or (0.0, 0.0))[0]
    out = []
    for i, row in enumerate(items.itertuples(index=False)):
        rs, ws = read_share[i], write_share[i]
        mine = {k: v * (ws if k in ("files_written", "extra_writes", "renames", "unlinks", "bytes_written") else rs)
                for k, v in p.items() if k not in ("file_bytes", "write_bytes", "read_bytes", "from_start")}
        mine.update(file_bytes=p["file_bytes"], write_bytes=p["write_bytes"], read_bytes=p["read_bytes"],
                    from_start=tuple((kind, unread, n * rs) for kind, unread, n in p["from_start"]))
        chain_io = sum(v or 0.0 for v in pattern_seconds(mine, target).values())
        cpu = float(getattr(row, "cpu_seconds") or 0.0)
        read, written = mine["bytes_read"] + ahead * rs, mine["bytes_written"]
        if on_target:
            read, written = _col(row, "wire_read_bytes", read), _col(row, "wire_written_bytes", written)
        meta = sum((ops.get(op, 0) * (rs if op == "open" else ws)) / cost(target, f"server_{op}")
                   for op in ("create", "open", "rename", "unlink") if cost(target, f"server_{op}"))
        lab_cpu = 0.0
        if lab_cores:
            lab_cpu = (read * (cost(target, "lab_cpu_per_byte_read") or 0.0)
                       + mine["bytes_written"] * (cost(target, "lab_cpu_per_byte_written") or 0.0)
                       + mine["files_written"] * (cost(target, "lab_cpu_per_file") or 0.0)
                       + sum(ops.get(op, 0) * (rs if op in ("open", "getattr") else ws)
                             * (cost(target, f"lab_cpu_per_{LAB_CPU_OF.get(op, op)}") or 0.0)
                             for op in ("open", "create", "rename", "unlink", "getattr")))
        small = small_file_seconds(mine, target)
        ra, wa = cost(target, "server_read_bandwidth"), cost(target, "server_write_bandwidth")
        io = (read / ra if ra else 0.0) + (written / wa if wa else 0.0) + small
        chain, cores = cpu + chain_io, cpu + lab_cpu
        if on_target:
            chain = float(getattr(row, "seconds", 0.0) or 0.0) or chain
            cores = _col(row, "machine_cpu_seconds", cores)
        out.append({"item": getattr(row, "item", i), "order": float(getattr(row, "seconds", 0.0) or 0.0),
                    "chain": chain, "cpu": cpu, "lab_cpu": lab_cpu,
                    "use": {"link_read": read, "link_write": written, "server_read": read, "server_write": written,
                            "server_files": small, "server_io": io, "metadata": meta, "cores": cores}})
    return out


def _col(row, name: str, otherwise: float) -> float:
    v = getattr(row, name, None)
    return otherwise if v is None or v != v else float(v)  # absent, or NaN (no such figure for this item)


LAB_CPU_OF = {"getattr": "stat"}  # a stage's getattrs cost the lab what the stat phase measured, each


def small_file_seconds(p: dict, target: dict) -> float:
    """The servers' time the small files of ``p`` take beyond their bytes (which the targets' write bandwidth
    carries): ``costs.small_file_beyond`` a file, at the stage's file size (as ``budget`` counts it)."""
    files = p["files_written"]
    if not files or p["bytes_written"] / files > 2 * SMALL_FILE_BYTES:
        return 0.0
    return files * (small_file_beyond(target, p["file_bytes"]) or 0.0)


def _shares(items, column: str) -> list[float]:
    if column in items and items[column].fillna(0).sum() > 0:
        col = items[column].fillna(0).astype(float)
        return list(col / col.sum())
    return [1.0 / len(items)] * len(items)


def capacities(target: dict, hosts: int, cores_per_host: float | None, lab_cores: bool | float) -> dict:
    """Each shared resource's capacity per second: per host (keyed (name, host)) or for all (keyed name)."""
    cap = {}
    for side in ("read", "write"):
        bw = cost(target, f"{side}_bandwidth")
        if side == "read":  # a link carries at least what one stream drove it at: parallel streams through a shaped
            # link can stall in TCP's retransmission back-off (1.4 MB/s where one stream got 4.2, 40 Mbit/s)
            bw = max(bw or 0.0, cost(target, "read_one_stream") or 0.0) or None
        if bw:
            for h in range(hosts):
                cap[(f"link_{side}", h)] = bw
        sbw = server_bandwidth(target, side, hosts)
        if sbw:
            cap[f"server_{side}"] = sbw
    if cost(target, "server_small_files"):
        cap["server_files"] = 1.0  # demands are in seconds of the servers' per-file time (small_file_seconds)
    mixed = cost(target, "server_mixed_capacity")
    if mixed:  # reads, writes and small files share the servers' links as measured: a second-per-second budget
        cap["server_io"] = mixed
    cap["metadata"] = 1.0  # demands are in seconds of the metadata server's time
    if lab_cores:  # True: this machine's cores; a number: the cores measured free for the lab on a shared machine
        cap["cores"] = float(os.cpu_count() or 1) if lab_cores is True else float(lab_cores)
    elif cores_per_host:
        for h in range(hosts):
            cap[("cores", h)] = cores_per_host
    return cap


def simulate(items: list[dict], hosts: int, workers_per_host: int, cap: dict) -> dict:
    """The fluid simulation (see the module): the stage's seconds, and each resource's busy share of them."""
    queue = sorted(items, key=lambda d: -d["order"])
    slots = [(h, w) for w in range(workers_per_host) for h in range(hosts)]
    running: dict[tuple, dict] = {}  # slot -> {item, left (fraction)}
    t, busy = 0.0, {}
    for slot in slots:
        if queue:
            running[slot] = {"d": queue.pop(0), "left": 1.0}
    while running:
        rates, full = _rates(running, cap)
        step = min(j["left"] / rates[s] for s, j in running.items())
        for k in full:
            busy[k] = busy.get(k, 0.0) + step
        t += step
        for s in list(running):
            running[s]["left"] -= rates[s] * step
            if running[s]["left"] <= 1e-9:
                del running[s]
                if queue:
                    running[s] = {"d": queue.pop(0), "left": 1.0}
    return {"seconds": t, "busy_fraction": {(k if isinstance(k, str) else k[0]): v / t if t else 0.0
                                            for k, v in busy.items()}}


def _key(name: str, host: int, cap: dict):
    return (name, host) if (name, host) in cap else name


def _rates(running: dict, cap: dict) -> tuple[dict, set]:
    """Max-min fair progress rates (fractions of an item per second) of the running items, by progressive filling:
    every unfrozen item's rate rises by the same amount until a resource is full (its items freeze) or an item
    reaches its own chain's pace (it freezes); the resources that filled."""
    use = {s: {_key(k, s[0], cap): v for k, v in j["d"]["use"].items() if v and _key(k, s[0], cap) in cap}
           for s, j in running.items()}
    return _rates_from(running, use, dict(cap), 0.0)


def _rates_from(running: dict, use: dict, left: dict, base: float) -> tuple[dict, set]:
    rates = {s: base for s in running}
    free, full = set(running), set()
    while free:
        limit, which = float("inf"), None
        for s in free:
            c = running[s]["d"]["chain"]
            if c > 0 and 1.0 / c - rates[s] < limit:
                limit, which = 1.0 / c - rates[s], ("chain", s)
        for k, c in left.items():
            demand = sum(use[s].get(k, 0.0) for s in free)
            if demand > 0 and max(c, 0.0) / demand < limit:
                limit, which = max(c, 0.0) / demand, ("resource", k)
        if which is None:
            break
        limit = max(limit, 0.0)
        frozen = {which[1]} if which[0] == "chain" else {s for s in free if use[s].get(which[1], 0.0) > 0}
        full.add("chain" if which[0] == "chain" else which[1])
        for s in free:
            rates[s] += limit
        for k in left:
            left[k] -= sum(use[s].get(k, 0.0) * limit for s in free)
        free -= frozen
    return rates, full


def predict(demand: dict, target: dict, hosts: int, workers_per_host: int, lab: bool | float,
            cores_per_host: float | None = None, on_target: bool = False) -> dict:
    """The stage's seconds on ``hosts`` client hosts of ``workers_per_host`` workers each, on a storage of these
    ``target`` costs, from the measured ``demand`` of an observed run; with what binds (the resource busy longest)
    and each resource's busy share. ``lab``: the hosts share this machine's cores with the lab's servers (True: all
    of them; a number: the cores free for the lab, measured on a shared machine: ``free_cores``). ``on_target``:
    the demand was measured on this storage itself, on one client host (``item_demands``)."""
    items = item_demands(demand, target, lab, on_target)
    cap = capacities(target, hosts, cores_per_host, lab)
    if on_target:  # a host's link carries at least what it carried in the run there (its items one after another)
        for side in ("read", "write"):
            seen = sum(d["use"][f"link_{side}"] for d in items) / (sum(d["chain"] for d in items) or float("inf"))
            for h in range(hosts):
                if (f"link_{side}", h) in cap:
                    cap[(f"link_{side}", h)] = max(cap[(f"link_{side}", h)], seen)
    sim = simulate(items, hosts, workers_per_host, cap)
    busy = sim["busy_fraction"]
    binding = max(busy, key=busy.get) if busy else "chain"
    # the resource the fluid finds full, where all hosts' workers share it, is a queue they reach between their
    # own work: how much slower than the fluid's steady pace it goes (``queueing``)
    if binding == "cores" and "cores" in cap:  # the lab's one machine (a host's own are ("cores", h)): its cores
        # queue each thread apart (``lab_cores_queue``)
        queued = lab_cores_queue(items, hosts * workers_per_host, workers_per_host, cap["cores"])
    else:
        queued = queueing(items, hosts * workers_per_host, cap, binding, _alone(cap, binding)) \
            if binding in QUEUES else None
    seconds = sim["seconds"]
    if queued and queued["stretch"] > 1.0 + 1e-9:  # a queue, not the fluid's full resource, sets the pace
        seconds, binding = seconds * queued["stretch"], queued["station"]
    return {"stage": demand["stage"], "seconds": seconds, "fluid_seconds": sim["seconds"], "queueing": queued,
            "hosts": hosts, "workers_per_host": workers_per_host,
            "binding": binding, "binding_what": RESOURCES.get(binding, binding), "busy_fraction": busy,
            "capacities": {(k if isinstance(k, str) else f"{k[0]}[{k[1]}]"): v for k, v in cap.items()},
            "items": len(items)}


QUEUES = ("server_read", "server_write", "server_files", "server_io", "metadata", "cores")  # shared by all hosts


def _alone(cap: dict, station: str) -> float:
    """The share of the storage targets' ``station`` bandwidth one request alone gets: no more than its client
    host's link carries (a host's link at 40 Mbit/s draws 5 MB/s from servers that give two hosts 9)."""
    side = {"server_read": "read", "server_write": "write"}.get(station)
    link = cap.get((f"link_{side}", 0)) if side else None
    return min(1.0, link / cap[station]) if link and cap.get(station) else 1.0


def queueing(items: list[dict], customers: int, cap: dict, station: str, alone: float = 1.0) -> dict | None:
    """How much slower than the fluid's steady pace a stage goes whose ``customers`` workers queue at the shared
    resource ``station`` (``stretch``: the fluid's items a second over the queue's), by mean value analysis of the
    closed network (the machine-repairman model): each worker takes an item, spends its think time (its chain less
    its time at the resource) then waits at the resource, which ``cap`` gives its capacity. The fluid lets a few
    workers keep a resource full; a queue is not full while its workers think, and a request waits behind the
    others' (the MooseFS lab's chunk-server links at 80 Mbit/s: 2 client hosts at 0.78 of the fluid's pace, where
    the items were measured on one host there). ``alone``: the share of the resource one request gets by itself
    (``_alone``: its client's link over the servers'); j requests at once get min(j x alone, 1) of it between
    them, a load-dependent station (exact MVA with marginal queue-length probabilities): where one client's link is
    half the servers', two requests from two hosts do not wait for each other. The lab's cores are queues of their
    own (``lab_cores_queue``); a host's own cores, on a real cluster, only its own workers share, so ``cores`` per
    host stays the fluid's. None where the items ask it nothing."""
    if not items or customers < 1 or not cap.get(station):
        return None
    n_items = len(items)
    chain = sum(d["chain"] for d in items) / n_items
    demand = sum(d["use"].get(station, 0.0) for d in items) / n_items / cap[station]  # at the whole resource
    if demand <= 0:
        return None
    alone = min(1.0, max(alone, 1e-9))
    think = max(0.0, chain - demand / alone)  # a lone request holds the resource at its own share
    p = [1.0]  # p[j]: the probability j requests are at the resource, with n - 1 customers
    for n in range(1, customers + 1):
        resp = sum(j * demand / min(j * alone, 1.0) * p[j - 1] for j in range(1, n + 1))
        rate = n / (think + resp)  # items a second
        q = [rate * demand / min(j * alone, 1.0) * p[j - 1] for j in range(1, n + 1)]
        p = [max(0.0, 1.0 - sum(q))] + q
    fluid = min(customers / chain if chain > 0 else float("inf"), 1.0 / demand)  # the fluid's steady pace
    return {"stretch": max(1.0, fluid / rate), "station": station, "think_seconds": think, "items_per_s": rate,
            "fluid_items_per_s": fluid, "utilisation": rate * demand, "customers": customers, "alone": alone}


def lab_cores_queue(items: list[dict], customers: int, per_host: int, cores: float) -> dict | None:
    """The pace of ``customers`` workers whose items share the lab's one machine of ``cores`` cores, where each
    item's ``chain`` was measured (or predicted) with ``per_host`` workers on one client host, and its ``use`` of
    the cores is its share of the machine's busy CPU.

    An item's chain is a relay of short steps through the worker, its host's mount, the master and the chunk
    servers, each a thread woken on its core. The kernel mostly wakes a thread on the core it last ran on
    (``benchmarks/lab_cores_trace.py``, the unshaped patch stage under ``perf sched``, twice: it moved a thread to
    the other core 18-24% as often as it woke one on one host, 7-8% as often on three; a core idled while threads
    waited on the other for 3.9-4.4 s of 9.0-10.1 s traced on one host, 1.6-1.9 s of 7.1-7.5 s on three; an item's
    path waited for a core 0.27 s on one host, 0.83 s on three), so the cores are queues apart, not one pool as a
    model of two servers has them: a step waits for its own core's work ahead of it while the other core may idle.
    At a load ``u`` of each core, a step's time grows as 1 / (1 - u) (a processor-sharing queue), so an item's time
    is its steps' own time ``s`` over 1 - u; with ``n`` workers at ``x`` items a second each, u = n x load / (cores
    x t), which gives t = s + n x load / cores. One host measured t = chain with its ``per_host`` workers, so s =
    chain less per_host x load / cores, and on ``customers`` workers every item takes chain + (customers - per_host)
    x load / cores: each further worker's load on the cores, spread over them, is added to every item's time.
    (The pooled queue of ``queueing``, a woken step taking the first free core, had kept the cores 1.95 of 2 busy on 3
    hosts and predicted the unshaped stages 0.75-0.92 of their measured times; the machine was 1.67-1.72 cores busy.)"""
    if not items or customers < 1 or not cores:
        return None
    chain = sum(d["chain"] for d in items) / len(items)
    load = sum(d["use"].get("cores", 0.0) for d in items) / len(items)
    if load <= 0 or chain <= 0:
        return None
    own = max(chain, per_host * load / cores)  # no faster than its host's own load on the cores lets it go
    seconds = own + (customers - per_host) * load / cores
    rate, fluid = customers / seconds, min(customers / chain, cores / load)
    return {"stretch": max(1.0, fluid / rate), "station": "cores", "item_seconds": seconds, "items_per_s": rate,
            "fluid_items_per_s": fluid, "utilisation": rate * load / cores, "customers": customers}


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def free_cores(seconds: float = 2.0) -> float:
    """The cores this machine gives a CPU-bound load now: as many spinning processes as it has cores, for
    ``seconds``, their CPU time over the wall time. On a shared machine the lab's hosts get what others leave."""
    import multiprocessing as mp

    n = os.cpu_count() or 1
    ctx = mp.get_context("fork")
    t0, c0 = time.perf_counter(), os.times()
    procs = [ctx.Process(target=_spin, args=(seconds,)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    c1 = os.times()
    wall = time.perf_counter() - t0
    return min(float(n), (c1.children_user + c1.children_system - c0.children_user - c0.children_system) / wall)
