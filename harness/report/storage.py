"""The storage under the runs: what each profile is (mount, emulation) and what fio measured on it."""
from __future__ import annotations

from .context import Context
from ..storage.lab import describe
from .html import breakable, esc, head, note, num, pct, setting, table, times

JOBS = {  # what each fio job of ``wsibench fio`` mirrors
    "slide_seq_read": "slide read, sequential 1 MiB",
    "slide_tile_read": "slide tiles, random 64 KiB",
    "jpeg_small_writes": "patch JPEGs, 32 KiB files",
    "tfrecord_stream": "TFRecord streams, 1 MiB",
    "checkpoint_write": "checkpoint write, 1 MiB + fsync",
}
MOUNT_OPTIONS = ("vers", "rsize", "wsize", "nconnect", "proto", "hard", "soft", "timeo", "actimeo", "ro", "rw")


def _profiles(ctx: Context) -> dict[str, dict]:
    """Each storage profile of the compared runs, as its latest run recorded it."""
    out = {}
    for c in ctx.configs.values():
        for s in c.runs:
            out[c.storage] = s.get("storage") or {}
    return out


def _emulation(e: dict) -> str:
    if not e:
        return ""
    parts = [f"read {setting(e.get('read_mb_s'))} MB/s" if e.get("read_mb_s") else "",
             f"write {setting(e.get('write_mb_s'))} MB/s" if e.get("write_mb_s") else "",
             f"{setting(e.get('iops'))} IOPS" if e.get("iops") else "",
             f"{setting(e.get('latency_ms'))} ms an operation" if e.get("latency_ms") else "",
             f"{setting(e.get('metadata_ms'))} ms a metadata call" if e.get("metadata_ms") else ""]
    return "throttled FUSE: " + ", ".join(p for p in parts if p)


def _lab(lab: dict) -> str:
    """What a lab run ran on: a real file system whose servers and clients share one machine."""
    links = ", ".join(f"{role} {setting(v)} Mbit/s" for role, v in (lab.get("links_mbit") or {}).items() if v)
    hosts = len(lab.get("client_hosts") or [])
    return (f"{lab.get('file_system', 'MooseFS')} on one machine: a master and {len(lab.get('chunkservers') or [])} "
            f"chunk servers on network-namespace hosts, goal {lab.get('goal')}"
            + (f", {hosts} client host{'s' if hosts != 1 else ''} each with its own mount" if hosts else "")
            + f"; links {links or 'unshaped'} (tc tbf, no added delay)")


def _fio_how(f: dict | None) -> str:
    if not f:
        return "not characterised"
    when = str(f.get("created_at") or "")
    when = f"{when[:4]}-{when[4:6]}-{when[6:8]} {when[9:11]}:{when[11:13]}" if len(when) >= 13 else when
    return (f"{f.get('fio_version', 'fio')} on {when}: {setting(f.get('size_mb'))} MiB files, "
            f"{setting(f.get('runtime_s'))} s a timed job, {'direct' if f.get('direct') else 'buffered'} I/O")


def render(ctx: Context) -> str | None:
    profiles = _profiles(ctx)
    if not profiles:
        return None
    names = list(profiles)
    props = [("file system", lambda s: esc(str(s.get("fstype") or "?"))
              + (f" (claimed {esc(str(s['fstype_expected']))})" if s.get("fstype_expected")
                 and s.get("fstype_expected") != s.get("fstype") else "")),
             ("emulated", lambda s: '<span class="badge emu">EMULATED</span>' if s.get("emulated") else "no"),
             ("emulation", lambda s: esc(_emulation(s.get("emulation") or {}))),
             ("lab", lambda s: '<span class="badge lab">LAB</span> ' + esc(_lab(s["lab"])) if s.get("lab") else ""),
             ("lab servers lost", lambda s: esc("; ".join(describe(e) for e in (s.get("lab") or {}).get("lost") or []))),
             ("scaled from", lambda s: esc(str((s.get("reference") or {}).get("scaled_from") or ""))),
             ("mount source", lambda s: esc(str((s.get("mount") or {}).get("source") or ""))),
             ("mount options", lambda s: esc(", ".join(
                 k if v is True else f"{k}={v}" for k, v in ((s.get("mount") or {}).get("options") or {}).items()
                 if k in MOUNT_OPTIONS))),
             ("root", lambda s: f"<code>{breakable(str(s.get('root') or ''), '/')}</code>"),
             ("fio", lambda s: esc(_fio_how(s.get("fio"))))]
    rows = [[esc(k)] + [fn(profiles[n]) for n in names] for k, fn in props]
    rows = [r for r in rows if any(c for c in r[1:])]
    out = table([head("storage")] + [head(n) for n in names], rows, align="l" * (len(names) + 1), fit=False)

    base = ctx.baseline.storage
    fio_rows = []
    for job, what in JOBS.items():
        for n in names:
            j = ((profiles[n].get("fio") or {}).get("jobs") or {}).get(job)
            if not j:
                continue
            bw = j.get("read_bw_bytes_per_s") or j.get("write_bw_bytes_per_s")
            b = ((profiles.get(base, {}).get("fio") or {}).get("jobs") or {}).get(job) or {}
            bbw = b.get("read_bw_bytes_per_s") or b.get("write_bw_bytes_per_s")
            p99 = j.get("read_p99_latency_s") or j.get("write_p99_latency_s")
            fio_rows.append([f'{esc(what)}<br><span class="u">{esc(job)}</span>', esc(n),
                             num(bw / 2**20 if bw else None),
                             times(bw / bbw) if bw and bbw and n != base else ("base" if n == base else ""),
                             num(j.get("read_iops") or j.get("write_iops")), num(p99 * 1e3 if p99 else None),
                             num(j.get("files_per_s"))])
    if fio_rows:
        out += table([head("pipeline I/O", "fio job"), head("storage"), head("bandwidth", "MiB/s"), head("vs base"),
                      head("IOPS"), head("p99 latency", "ms"), head("files/s")], fio_rows, align="llrrrrr",
                     caption=f"fio jobs mirroring the pipeline's I/O, one at a time (settings above); × against "
                             f"the baseline's storage ({esc(base)})")
    else:
        out += note("No fio characterisation recorded for these profiles (run <code>wsibench fio PROFILE</code> "
                    "before the runs: it is attached to later runs on that profile).")
    cache = ctx.cached()
    if cache:
        p = cache[-1]["page_cache"]
        out += note(f"Page cache: the dataset ({num((p.get('dataset_bytes') or 0) / 2**20)} MiB) is "
                    f"{pct(p.get('dataset_to_memory'))} of memory and caches were not dropped on {len(cache)} run(s): "
                    "their reads may not have reached the storage.")
    return out
