"""Step 1, what a storage costs: each I/O pattern's cost from a profile's ``wsibench fio`` characterisation (or its
vendor figures), and what a stage's patterns take one after the other on it."""
from __future__ import annotations

from .figures import MiB, SMALL_FILE_BYTES, figure

PROBED_OPS = ("create", "stat", "open", "rename", "unlink")  # the metadata phases of `wsibench fio --hosts`


def storage_costs(fio_doc: dict | None, reference: dict | None = None, name: str = "") -> dict:
    """The cost of each I/O pattern on a storage, from its fio characterisation; bandwidths from its vendor
    figures where fio never ran. Keys: file_write, file_read, read_fixed, write_fixed (seconds), read_stream,
    write_stream (bytes/s, one stream), rename, open, unlink, create (seconds), read_bandwidth, write_bandwidth
    (bytes/s, several streams); each a ``figure``."""
    out = {}
    if fio_doc:
        j = fio_doc.get("jobs", {})
        when = f"wsibench fio {name or fio_doc.get('profile')}{' --observe' if fio_doc.get('observed') else ''} " \
               f"({fio_doc.get('created_at', '?')})"

        def get(job, key, scale=1.0):
            v = (j.get(job) or {}).get(key)
            return None if v is None else v * scale

        for key, job in (("file_write", "jpeg_small_writes"), ("file_read", "jpeg_small_reads")):
            fps = get(job, "files_per_s")
            if fps:
                out[key] = figure(1 / fps, "s per 32 KiB file", f"{when}: {job}, {fps:.0f} files/s one after the other")
        f8 = get("jpeg_small_writes_8k", "files_per_s")
        if f8 and get("jpeg_small_writes", "files_per_s"):  # a file written whole at two sizes: its close flushes
            # its bytes to the servers, at their pace (80 Mbit/s chunk-server links: 1.1 ms a 8 KiB file, 3.5 ms a
            # 32 KiB one), not at the client's buffered write stream's (4 GB/s into mfsmount's cache)
            points = [(8192, 1 / f8), (SMALL_FILE_BYTES, out["file_write"]["value"])]
            fit = line(points)
            if fit:
                how = f"{when}: jpeg_small_writes_8k and jpeg_small_writes, " + " and ".join(
                    f"{t * 1e3:.2f} ms a {b // 1024} KiB file" for b, t in points)
                out["file_write_fixed"] = figure(fit[0], "s per file written whole", how)
                out["file_write_per_byte"] = figure(fit[1], "s per B of a file written whole", how)
        for side, fixed_job, bw_job in (("read", "read_latency", "slide_seq_read"),
                                        ("write", "write_latency", "checkpoint_write")):
            fixed = get(fixed_job, f"{side}_mean_latency_s")
            big = get(bw_job, f"{side}_mean_latency_s")
            if fixed:
                out[f"{side}_fixed"] = figure(fixed, "s per request", f"{when}: {fixed_job}, mean latency of 4 KiB {side}s")
            if fixed and big and big > fixed:
                out[f"{side}_stream"] = figure(MiB / (big - fixed), "B/s",
                                               f"{when}: {bw_job} (1 MiB requests, {big * 1e3:.2f} ms) less {fixed_job}")
            bw = get("tfrecord_stream" if side == "read" else "checkpoint_write", f"{side}_bw_bytes_per_s")
            if bw:
                out[f"{side}_bandwidth"] = figure(bw, "B/s", f"{when}: " + (
                    "tfrecord_stream (parallel 1 MiB streams)" if side == "read" else "checkpoint_write (1 MiB, fsync)"))
        one = get("slide_seq_read", "read_bw_bytes_per_s")
        if one:
            out["read_one_stream"] = figure(one, "B/s", f"{when}: slide_seq_read (one stream of 1 MiB reads)")
        for key, job in (("rename", "file_rename"), ("open", "file_open"), ("unlink", "file_delete"),
                         ("create", "file_create")):
            v = get(job, "mean_latency_s")
            if v is not None:
                out[key] = figure(v, "s", f"{when}: {job} ({(j.get(job) or {}).get('tool', 'fio')}), mean")
        out.update(packed_costs(j.get("small_files_packed"), when))
        out.update(read_ahead_costs(j.get("read_ahead"), when))
        out.update(overlap_cost(j.get("tiles_and_files"), when))
        out.update(server_costs(fio_doc, when))
    for key, unit_key in (("read_bandwidth", "read"), ("write_bandwidth", "write")):
        if key not in out and reference:
            gib = next((v for k, v in reference.items() if k.startswith(unit_key) and "gib_s" in k
                        and isinstance(v, (int, float))), None)
            if gib:
                out[key] = figure(gib * 2**30, "B/s", f"vendor figure in the profile: {reference.get('source', '')}")
    return out


def packed_costs(probe: dict | None, when: str) -> dict:
    """A small file read whole with its bytes appended to a stream being written (``small_files_packed``, timed at
    two file sizes): a fixed cost a file and a cost a byte, the line through the two. Reads and the stream's writes
    at once cost what the storage makes of them together: on MooseFS the writes go at the rate the chunk servers
    take them (the client's write cache does not hold a stream), and they share the servers' egress with the reads
    where the links are the servers' (80 Mbit/s: 2.9 ms an 18 KB file, against 1.3 ms read alone and 2.0 ms
    written alone), not where the client's link carries them in its other direction (40 Mbit/s client links: 4.5
    against 3.8 and 4.0).

    The probe is a Python loop timed from its first open to its last close: its time a file includes its own CPU
    (the loop and its calls), which a stage's item, whose own CPU seconds its chain adds, counts again; a file's cost
    is the probe's time less its CPU, where the probe measured it (the MooseFS lab's unshaped links, five cluster
    proofs: 0.50-0.58 ms a 16 KiB file, 0.06-0.09 ms of it the probe's CPU; the 0.43-0.49 ms beyond it matched the
    TFRecord stage's own time beyond its CPU there, 0.45-0.50 ms a patch, where the stage predicted from local
    storage had read 1.05-1.22 of its measured time)."""
    rows = [(r["file_bytes"], r["seconds_per_file"] - (r.get("caller_cpu_seconds") or 0.0) / r["files"])
            for r in ((probe or {}).get("sizes") or {}).values()]
    fit = line(rows)
    if not fit:
        return {}
    (b0, t0), (b1, t1) = sorted(rows)[0], sorted(rows)[-1]
    src = (f"{when}: small_files_packed (wsibench: files read whole, their bytes appended to one stream), less "
           f"its own CPU, {t0 * 1e3:.2f} ms a {b0 // 1024} KiB file, {t1 * 1e3:.2f} ms a {b1 // 1024} KiB file")
    return {"packed_fixed": figure(fit[0], "s per file", src), "packed_per_byte": figure(fit[1], "s per B", src)}


def overlap_cost(probe: dict | None, when: str) -> dict:
    """How much of one client's reads and its files' writes go on at once (``read_write_overlap``, 0-1), from the
    ``tiles_and_files`` probe: 64 KiB tiles read, 32 KiB files written whole, each alone and in pairs. 1 where a
    pair takes the longer one's time (the reads and the writes travel apart: a client link's two directions; on the
    lab's 40 Mbit/s client links 13.6 ms a tile, 7.0 a file, 13.8 a pair), 0 where it takes the sum (one path, or
    the cores, carry both)."""
    parts = (probe or {}).get("parts") or {}
    t = {k: v["runtime_s"] / v["count"] for k, v in parts.items() if v.get("count")}
    if not all(t.get(k) for k in ("tiles", "files", "both")):
        return {}
    f = max(0.0, min(1.0, (t["tiles"] + t["files"] - t["both"]) / min(t["tiles"], t["files"])))
    return {"read_write_overlap": figure(f, "share of the shorter side hidden", (
        f"{when}: tiles_and_files (wsibench: {t['tiles'] * 1e3:.2f} ms a 64 KiB tile read, {t['files'] * 1e3:.2f} ms "
        f"a 32 KiB file written whole, {t['both'] * 1e3:.2f} ms the two one after the other)"))}


def read_ahead_costs(probe: dict | None, when: str) -> dict:
    """What an open reading from a file's start costs beyond its bytes (``read_ahead``: opens reading from the start
    of a 32 MiB file against as many reading elsewhere in it), per kind of open (its first read alone; a run from the
    start going on): the bytes the client host received beyond those read, and the seconds, each less the
    baseline's (an open reading elsewhere). MooseFS's mfsmount drops a file's cache at its open and reads ahead
    from its start (the lab, unshaped links: 0.2-0.5 MB an open alone, 1.1-1.4 MB one going on); local storage: none."""
    kinds = (probe or {}).get("kinds") or {}
    base = kinds.get("elsewhere") or {}
    if base.get("received_bytes") is None or not base.get("opens"):
        return {}
    out = {}
    for kind in READ_AHEAD_KINDS:
        k = kinds.get(kind) or {}
        if k.get("received_bytes") is None or not k.get("opens"):
            continue
        extra = (k["received_bytes"] - k["read_bytes"]) / k["opens"] \
            - (base["received_bytes"] - base["read_bytes"]) / base["opens"]
        secs = k["runtime_s"] / k["opens"] - base["runtime_s"] / base["opens"]
        how = (f"{when}: read_ahead (wsibench: {k['opens']} opens reading from a 32 MiB file's start, "
               f"{kind.replace('_', ' ')}, against {base['opens']} reading elsewhere; the bytes the client host's "
               f"interfaces received beyond those read, {extra / 1e6:.3g} MB an open)")
        out[f"read_ahead_{kind}"] = figure(max(0.0, extra), "B per open from a file's start", how)
        out[f"read_ahead_{kind}_seconds"] = figure(max(0.0, secs), "s per open from a file's start", how)
    return out


READ_AHEAD_KINDS = ("alone", "went_on")  # opens from a file's start: their first read alone, or a run going on


def read_ahead(p: dict, costs: dict) -> tuple[float, float] | None:
    """The bytes and seconds the read-ahead of ``p``'s opens from a file's start (``patterns``' ``from_start``)
    costs on a storage of these ``costs`` (``read_ahead_costs``): an open's figure where the file had at least
    that much unread beyond what the open read, else the unread share of it. (0, 0) where ``p`` has no such opens;
    None where it has some and the characterisation lacks the probe."""
    nbytes = seconds = 0.0
    for kind, unread, opens in p.get("from_start") or ():
        if not unread:  # the open read the whole file: nothing ahead of it
            continue
        r, t = cost(costs, f"read_ahead_{kind}"), cost(costs, f"read_ahead_{kind}_seconds")
        if r is None or t is None:
            return None
        share = min(1.0, unread / r) if r else 0.0
        nbytes += opens * r * share
        seconds += opens * t * share
    return nbytes, seconds


def line(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(seconds a file, seconds a byte) of the line through the smallest and largest of (bytes, seconds) ``points``,
    neither below 0; None without two sizes."""
    if len(points) < 2:
        return None
    (b0, t0), (b1, t1) = sorted(points)[0], sorted(points)[-1]
    if b1 <= b0:
        return None
    per_byte = max(0.0, (t1 - t0) / (b1 - b0))
    return max(0.0, t1 - b1 * per_byte), per_byte


CLIENT_BOUND = 0.9  # a parallel phase's hosts each at this share of one host's own rate: their links bound it


def server_costs(fio_doc: dict, when: str) -> dict:
    """What the servers deliver to several clients at once (``wsibench fio --hosts N``'s parallel phases): the
    storage targets' aggregate read and write bandwidth, small files written per second, the metadata server's
    operations per second by type; and, in the lab, the CPU its own processes (servers and clients) spend per byte
    and per operation, since they share the machine's cores with the workers."""
    par = (fio_doc or {}).get("parallel")
    if not par:
        return {}
    ph, n = par["phases"], par["hosts"]
    src = f"{when}: parallel phases on {n} client hosts at once"
    out = {"server_hosts_measured": figure(n, "client hosts", src)}
    w, r = ph.get("write") or {}, ph.get("read") or {}
    if w.get("write_bw_bytes_per_s"):
        out["server_write_bandwidth"] = figure(w["write_bw_bytes_per_s"], "B/s", f"{src}, 1 MiB writes through fsync")
    if r.get("read_bw_bytes_per_s"):
        out["server_read_bandwidth"] = figure(r["read_bw_bytes_per_s"], "B/s", f"{src}, 1 MiB reads")
    jobs = fio_doc.get("jobs") or {}
    alone = {"read": (jobs.get("slide_seq_read") or {}).get("read_bw_bytes_per_s"),
             "write": (jobs.get("checkpoint_write") or {}).get("write_bw_bytes_per_s")}
    for side, p in (("read", r), ("write", w)):
        per = [h.get(f"{side}_bw_bytes_per_s") or 0.0 for h in p.get("per_host") or []]
        if per and alone[side] and min(per) >= CLIENT_BOUND * alone[side]:
            # every host as fast as one stream of one host alone: its own link bound the phase, not the servers
            out[f"server_{side}_client_bound"] = figure(
                n, "client hosts", f"{src}: each host's {side}s at {min(per) / 1e6:.1f}-{max(per) / 1e6:.1f} MB/s, "
                f"as one stream of one host alone ({alone[side] / 1e6:.1f} MB/s): the servers gave at least the sum "
                "and their limit was not reached")
    mx = ph.get("mixed") or {}
    if mx.get("mixed_read_bw_bytes_per_s") and r.get("read_bw_bytes_per_s") and w.get("write_bw_bytes_per_s"):
        share = mx["mixed_read_bw_bytes_per_s"] / r["read_bw_bytes_per_s"] + \
            mx["mixed_write_bw_bytes_per_s"] / w["write_bw_bytes_per_s"]
        # under 1, reads and writes at once got less than one shared link gives: they competed for something
        # besides the servers, this machine's cores (the lab's CPU per byte is counted as such), not a server limit
        out["server_mixed_capacity"] = figure(max(share, 1.0), "of reads alone + of writes alone",
                                              f"{src}: reads and writes at once, each as a share of its rate alone "
                                              "(1: they share the servers' links; 2: independent)"
                                              + (f"; {share:.2f} measured, taken as 1: below 1 the phase competed "
                                                 "for the cores, not the links" if share < 1 else ""))
    sw = ph.get("small_writes") or {}
    if sw.get("files_per_s"):
        out["server_small_files"] = figure(sw["files_per_s"], "files/s", f"{src}, 32 KiB files written whole")
    if sw.get("small_files"):
        out["server_small_file_bytes"] = figure(sw["small_bytes"] / sw["small_files"], "B per file",
                                                f"{src}, the small files' size")
    s8 = ph.get("small_writes_8k") or {}
    if sw.get("files_per_s") and s8.get("files_per_s") and sw.get("small_files") and s8.get("small_files"):
        # the servers' time a file at two sizes: a fixed time a file and a time a byte, the line through the two
        points = [(x["small_bytes"] / x["small_files"], 1.0 / x["files_per_s"]) for x in (s8, sw)]
        fit = line(points)
        if fit:
            how = f"{src}: small files written whole at two sizes, " + " and ".join(
                f"{1 / t:,.0f} files/s of {b / 1024:.0f} KiB" for b, t in sorted(points))
            out["server_small_file_fixed"] = figure(fit[0], "s of the servers' time a file", how)
            out["server_small_file_per_byte"] = figure(fit[1], "s of the servers' time a B", how)
    for op in PROBED_OPS:
        v = (ph.get(op) or {}).get(f"{op}_per_s")
        if v:
            out[f"server_{op}"] = figure(v, "operations/s", f"{src}, {op} one after the other on each host's streams")
    cpu = {k: sum((p.get("lab_cpu_seconds") or {}).values()) for k, p in ph.items()}
    # what a phase costs before any work (the hosts' mounts starting, the master registering them): the idle
    # phase's CPU, taken off every phase's (a fixed cost divided by 900 metadata operations had made a stat look
    # as costly as a create: 0.7 against 0.8 ms)
    idle = cpu.pop("idle", 0.0)
    cpu = {k: max(0.0, v - idle) for k, v in cpu.items()}
    if any(cpu.values()):
        lab = (f"{src}: CPU of the lab's master, chunk servers and clients during the phase, less an idle "
               f"phase's ({idle:.2f} CPU s)")
        if w.get("write_bytes"):
            out["lab_cpu_per_byte_written"] = figure(cpu["write"] / w["write_bytes"], "CPU s per B", lab)
        if r.get("read_bytes"):
            out["lab_cpu_per_byte_read"] = figure(cpu["read"] / r["read_bytes"], "CPU s per B", lab)
        for op in PROBED_OPS:  # each kind its own: a stat the client's caches answer costs little, a create a lot
            n = (ph.get(op) or {}).get("metadata_operations")
            if n:
                out[f"lab_cpu_per_{op}"] = figure(cpu[op] / n, f"CPU s per {op}", lab)
        if sw.get("small_files") and "lab_cpu_per_byte_written" in out:
            per_file = (cpu["small_writes"] - sw["small_bytes"] * out["lab_cpu_per_byte_written"]["value"]) / \
                sw["small_files"]
            out["lab_cpu_per_file"] = figure(max(per_file, 0.0), "CPU s per file written", lab)
    return out


def small_file_beyond(costs: dict, file_bytes: float | None = None) -> float | None:
    """The servers' time a small file written whole takes beyond its bytes at the storage targets' write bandwidth
    (which carries them with the stage's other bytes), for files of ``file_bytes``: from the parallel phase's two
    sizes (a fixed time a file and a time a byte) where both ran, else from its 32 KiB files alone (the same time a
    file beyond its bytes, whatever its size); None without the phase. At least 0."""
    wa = cost(costs, "server_write_bandwidth")
    fixed, per_byte = cost(costs, "server_small_file_fixed"), cost(costs, "server_small_file_per_byte")
    size = cost(costs, "server_small_file_bytes") or SMALL_FILE_BYTES
    if fixed is not None and per_byte is not None:
        b = size if file_bytes is None else file_bytes
        return max(0.0, fixed + b * per_byte - (b / wa if wa else 0.0))
    fa = cost(costs, "server_small_files")
    return None if not fa else max(0.0, 1.0 / fa - (size / wa if wa else 0.0))


def cost(costs: dict, key: str) -> float | None:
    """The value of one of ``costs`` (``storage_costs``); None where the characterisation lacks it."""
    return (costs.get(key) or {}).get("value")


def server_bandwidth(costs: dict, side: str, hosts: int) -> float | None:
    """The storage targets' ``side`` bandwidth as a limit for ``hosts`` client hosts: None where fio measured it
    through client links that bound it (``server_{side}_client_bound``) with at least as many hosts, for then it is
    only a floor, the servers' limit not reached."""
    if hosts <= (cost(costs, f"server_{side}_client_bound") or 0):
        return None
    return cost(costs, f"server_{side}_bandwidth")


def small_files_read(p: dict) -> bool:
    """Whether the files a stage opens are small files read whole (a patch, a JPEG: up to twice the 32 KiB of
    ``wsibench fio``'s small files a file), not large files read in parts (a slide, a shard)."""
    return bool(p["files_read"]) and p["bytes_read"] / p["files_read"] <= 2 * SMALL_FILE_BYTES


def pattern_seconds(p: dict, costs: dict) -> dict:
    """Seconds each pattern of ``p`` (``patterns``) takes one after the other on a storage of these ``costs``;
    None for a pattern the characterisation does not cover."""
    def request(side: str, nbytes: float) -> float | None:
        fixed, stream = cost(costs, f"{side}_fixed"), cost(costs, f"{side}_stream")
        return None if fixed is None or not stream else fixed + nbytes / stream

    w_stream, r_stream = cost(costs, "write_stream"), cost(costs, "read_stream")
    fw, fr = cost(costs, "file_write"), cost(costs, "file_read")
    wf, wb = cost(costs, "file_write_fixed"), cost(costs, "file_write_per_byte")
    small = small_files_read(p)
    file_bytes = p["bytes_read"] / p["files_read"] if p["files_read"] else 0.0  # a file read's bytes
    pf, pb = cost(costs, "packed_fixed"), cost(costs, "packed_per_byte")
    packed = 0.0
    if pf is not None and pb is not None and small and p["extra_writes"]:
        # small files read whole while a stream is written (a shard packing patches): a write of the stream a file
        # read, costed together as the packed probe measured them; what is left of either, as alone
        packed = min(p["files_read"], p["extra_writes"])
        p = dict(p, files_read=p["files_read"] - packed, extra_writes=p["extra_writes"] - packed,
                 extra_reads=max(0.0, p["extra_reads"] * (1.0 - packed / p["files_read"])))
    ahead = read_ahead(p, costs)
    out = {
        # small files read whole, each one's bytes appended to a stream being written (its further reads and the
        # stream's writes in the probe's time)
        "packed": packed * (pf + file_bytes * pb) if packed else 0.0,
        # a file written whole: where fio wrote them at two sizes, a fixed cost and a cost a byte (its close flushes
        # its bytes); else the 32 KiB pattern, its bytes adjusted at the write stream's speed
        "files_written": p["files_written"] * (wf + p["file_bytes"] * wb) if wf is not None and wb is not None
        else None if fw is None or not w_stream else
        p["files_written"] * max(0.0, fw + (p["file_bytes"] - SMALL_FILE_BYTES) / w_stream),
        # a small file read whole: the 32 KiB pattern, its bytes adjusted at the read stream's speed (patches of
        # 18 KB cost a link-bound client about half a 32 KiB file's time)
        "files_read": None if fr is None else p["files_read"] * (
            max(0.0, fr + (file_bytes - SMALL_FILE_BYTES) / r_stream) if small and r_stream else fr),
        # a small file's bytes are in its read pattern (a file read whole): its further read requests (the rest of
        # it, the read that finds its end) cost a request each, not its bytes again
        "extra_reads": None if request("read", p["read_bytes"]) is None else
        p["extra_reads"] * (cost(costs, "read_fixed") if small else request("read", p["read_bytes"])),
        "extra_writes": None if request("write", p["write_bytes"]) is None else p["extra_writes"] * request("write", p["write_bytes"]),
        "renames": None if cost(costs, "rename") is None else p["renames"] * cost(costs, "rename"),
        # an open reading from a file's start: the client's read-ahead from there (``read_ahead``)
        "read_ahead": None if ahead is None else ahead[1],
        "unlinks": None if cost(costs, "unlink") is None else p["unlinks"] * cost(costs, "unlink"),
    }
    # a worker's reads and its files' writes at once, as far as they travel apart (``overlap_cost``): the shorter
    # side's hidden share comes off
    reads = sum(out[k] or 0.0 for k in ("files_read", "extra_reads", "read_ahead"))
    writes = sum(out[k] or 0.0 for k in ("files_written", "extra_writes"))
    out["reads_and_writes_at_once"] = -(cost(costs, "read_write_overlap") or 0.0) * min(reads, writes)
    return out


def extra_seconds(p: dict, measured_on: dict, target: dict) -> dict:
    """What the patterns of ``p`` cost more (or less) on ``target`` than on the storage they were measured on,
    per pattern, in seconds of one worker's time; patterns either characterisation lacks count 0 (named)."""
    a, b = pattern_seconds(p, measured_on), pattern_seconds(p, target)
    out, missing = {}, []
    for k in a:
        if a[k] is None or b[k] is None:
            if p.get(k):
                missing.append(k)
            out[k] = 0.0
        else:
            out[k] = b[k] - a[k]
    return {"by_pattern": out, "total": sum(out.values()), "not_characterised": missing}


def sources(costs: dict) -> str:
    """The characterisations ``costs`` came from, named once each (``wsibench fio NAME (when)``)."""
    srcs = sorted({c["source"].split(":")[0] for c in costs.values()})
    return "; ".join(srcs) or "no characterisation"
