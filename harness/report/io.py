"""The pipeline's own I/O, as the counting passthrough saw it (``stages.<stage>.io_profile``, ``io_timeline.parquet``),
and the sizing answers of ``wsibench size`` (``<results>/sizing/*.json``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import plots
from .context import STAGE_NAMES, Context
from .html import esc, figure, head, mib, note, num, swatch, table

OPS = ("open", "create", "read", "write", "rename", "unlink", "getattr", "mkdir", "fsync")


def _profiled(ctx: Context) -> list[tuple]:
    """(configuration, its newest run with an I/O profile) for every configuration that has one."""
    out = []
    for c in ctx.configs.values():
        runs = [s for s in c.runs if any((r or {}).get("io_profile") for r in (s.get("stages") or {}).values())]
        if runs:
            out.append((c, runs[-1]))
    return out


def _ms(v) -> str:
    return num(None if v is None else v * 1e3)


def _sizes(prof: dict, kind: str) -> str:
    s = (prof.get("request_sizes") or {}).get(kind)
    if not s:
        return ""
    top = sorted(s["histogram"].items(), key=lambda kv: -kv[1])[:3]
    return (f"mean {num(s['mean_bytes'] / 1024)} KiB<br>"
            + ", ".join(f"{_kib(int(lo))}: {c:,}" for lo, c in top))


def _kib(lo: int) -> str:
    return f"{lo} B+" if lo < 1024 else f"{lo // 1024} KiB+" if lo < 2**20 else f"{lo // 2**20} MiB+"


def _timeline(run: dict, label: str) -> str | None:
    path = Path(run.get("_dir", "")) / "io_timeline.parquet"
    if not path.is_file():
        return None
    t = pd.read_parquet(path)
    if t.empty:
        return None
    plt = plots.pyplot()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(plots.FULL_IN, 3.2), sharex=True)
    start = t["unix_second"].min()
    x = t["unix_second"] - start
    a1.bar(x, t["bytes_read"] / 2**20, width=1.0, color="#0072B2", label="read", align="edge")
    a1.bar(x, t["bytes_written"] / 2**20, width=1.0, bottom=t["bytes_read"] / 2**20, color="#E69F00",
           label="written", align="edge")
    a1.set_ylabel("MiB per second")
    a1.legend(loc="upper right", frameon=False)
    a2.bar(x, t["data_ops"], width=1.0, color="#009E73", label="reads and writes", align="edge")
    a2.bar(x, t["metadata_ops"], width=1.0, bottom=t["data_ops"], color="#CC79A7", label="metadata", align="edge")
    a2.set_ylabel("requests per second")
    a2.set_xlabel("seconds since the first stage began")
    a2.legend(loc="upper right", frameon=False)
    for i, (stage, g) in enumerate(t.groupby("stage", sort=False)):
        s0 = g["unix_second"].min() - start
        a1.axvline(s0, color="#555", lw=0.6, ls=":")
        a1.text(s0 + 0.2, a1.get_ylim()[1] * (0.95 - 0.12 * (i % 3)), stage, fontsize=7, va="top")
    return figure(plots.svg(fig, f"I/O timeline of {label}"),
                  f"{esc(label)}: bytes and requests per second as the storage saw them, stage by stage.")


def render(ctx: Context) -> str | None:
    """Per configuration and stage: operations by type with their latency percentiles, request sizes, bytes; a
    timeline of the newest run."""
    profiled = _profiled(ctx)
    if not profiled:
        return None
    out = note("Counted by wsibench's FUSE passthrough (<code>--observe</code>, or an emulated profile): every request "
               "the kernel sent it. Latency: from a request's arrival in the passthrough to its answer (an emulated "
               "profile's throttle included; the kernel's own round trip not); percentiles from histograms in quarter "
               "powers of two (within 9%). getattr counts lookups as well as stats.")
    for c, run in profiled:
        out += f"<h3>{swatch(c)}</h3>"
        rows, size_rows = [], []
        for stage, rec in (run.get("stages") or {}).items():
            prof = (rec or {}).get("io_profile")
            if not prof:
                continue
            ops = prof["ops"]
            counted = [o for o in OPS if (ops.get(o) or {}).get("count")]
            for i, op in enumerate(counted):
                o = ops[op]
                rows.append([f"{esc(STAGE_NAMES.get(stage, stage))}" if i == 0 else "", esc(op), num(o["count"]),
                             num(o.get("per_s")), _ms(o.get("p50_latency_s")), _ms(o.get("p90_latency_s")),
                             _ms(o.get("p99_latency_s"))])
            rows.append(["", '<span class="u">all</span>', num(prof["operations"]), num(prof["operations_per_s"]),
                         "", "", ""])
            size_rows.append([esc(STAGE_NAMES.get(stage, stage)), mib(prof["bytes_read"]), mib(prof["bytes_written"]),
                              _sizes(prof, "read"), _sizes(prof, "write")])
        out += table([head("stage"), head("operation"), head("count"), head("rate", "per s"), head("p50", "ms"),
                      head("p90", "ms"), head("p99", "ms")], rows, align="llrrrrr",
                     caption=f"Requests by type, run {esc(run['run_id'])}; rates over the stage's wall time")
        out += table([head("stage"), head("read", "MiB"), head("written", "MiB"), head("read requests", "sizes"),
                      head("write requests", "sizes")], size_rows, align="lrrll",
                     caption="Bytes, and request sizes: the mean, and the commonest size classes (requests in each)")
        tl = _timeline(run, c.label)
        if tl:
            out += tl
    return out


def sizing(ctx: Context) -> str | None:
    """The newest sizing answer: what the target needs per stage, and per storage what it can take."""
    docs = getattr(ctx, "sizing", None) or []
    if not docs:
        return None
    doc = docs[-1]
    t = doc["target"]
    acc = t["accelerator"]
    notes: list[str] = []

    def cell(f):
        if not f or f.get("value") is None:
            return num(None)
        notes.append(f["source"])
        v, unit = f["value"], f["unit"]
        shown = (f"{mib(v)} MiB/s" if unit == "B/s" else f"{num(v / 2**30)} GiB" if unit == "B" else
                 f"{num(v)} {esc(unit)}")
        return f'{shown}<sup>{len(notes)}</sup>'

    intro = (f"<p>For {num(t['slides_per_day'])} slides a day and {t['gpus']} × {esc(acc['name'])} "
             f"({num(acc['images_per_s'])} images/s each) training {t['epochs']} epoch(s) at AU ≥ {t['threshold']:.0%}, "
             f"from {len(doc.get('inputs', []))} measured run(s) (<code>wsibench size</code>, "
             f"{esc(Path(doc.get('_file', '')).name)}).</p>")
    rows = []
    for stage, st in doc["stages"].items():
        req = st.get("required") or {}
        rows.append([esc(STAGE_NAMES.get(stage, stage)), cell(req.get("read_bytes_per_s")),
                     cell(req.get("write_bytes_per_s")), cell(req.get("operations_per_s")),
                     cell(req.get("creates_per_s")), cell(req.get("capacity_bytes")), cell(req.get("host_cores"))])
    need = table([head("stage"), head("read"), head("write"), head("operations"), head("creates"), head("capacity"),
                  head("host cores")], rows, align="lrrrrrr", caption="What the target needs of storage and hosts")
    dec = doc["stages"].get("train", {}).get("decode_cores_per_gpu") or []
    decode = ("<p>Decode on the training hosts: " + "; ".join(cell(f) for f in dec) + ".</p>") if dec else ""
    srows = []
    for name, s in doc["storages"].items():
        per = [f"{esc(k)}: {cell(r['per_worker'])}" for k, r in s["stages"].items() if r.get("per_worker")]
        spd = s.get("slides_per_day")
        srows.append([esc(name), cell(spd) + (f'<br><span class="u">{esc(spd["stage"])}, {esc(spd["binding"])}</span>'
                                              if spd else ""), "<br>".join(per), cell(s.get("gpus_fed"))])
    per_storage = table([head("storage"), head("slides/day", "at most"), head("per worker", "predicted"),
                         head("GPUs fed")], srows, align="lrrr",
                        caption="What each storage can take: bandwidth limits from its fio characterisation (or "
                                "vendor figures); per-worker rates from the measured runs and the storages' "
                                "pattern costs")
    sources = "<ol class=\"note\">" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ol>"
    return intro + need + decode + per_storage + note("Where each figure comes from:") + sources
