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
    against 3.8 and 4.0)."""
    rows = [(r["file_bytes"], r["seconds_per_file"]) for r in ((probe or {}).get("sizes") or {}).values()]
    fit = line(rows)
    if not fit:
        return {}
    (b0, t0), (b1, t1) = sorted(rows)[0], sorted(rows)[-1]
    src = (f"{when}: small_files_packed (wsibench: files read whole, their bytes appended to one stream), "
           f"{t0 * 1e3:.2f} ms a {b0 // 1024} KiB file, {t1 * 1e3:.2f} ms a {b1 // 1024} KiB file")
    return {"packed_fixed": figure(fit[0], "s per file", src), "packed_per_byte": figure(fit[1], "s per B", src)}


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
    return {
        # small files read whole, each one's bytes appended to a stream being written (its further reads and the
        # stream's writes in the probe's time)
        "packed": packed * (pf + file_bytes * pb) if packed else 0.0,
        # a file written whole: the 32 KiB pattern, its bytes adjusted at the write stream's speed
        "files_written": None if fw is None or not w_stream else
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
        "unlinks": None if cost(costs, "unlink") is None else p["unlinks"] * cost(costs, "unlink"),
    }


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
