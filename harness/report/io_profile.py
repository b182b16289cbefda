"""The Storage I/O section: the pipeline's own I/O, as the counting passthrough saw it (``stages.<stage>.io_profile``,
``io_timeline.parquet``)."""
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


LABEL_PT = 7  # the stage names' font size


def _label_rows(starts: list[tuple[str, float]], xmax: float, data_per_in: float) -> list[tuple[str, float, str, int]]:
    """Where each stage's name goes in the strip above the plots: (name, x, alignment, row). A name starts right of
    its stage's line, or ends left of it where it would run past the plot's end; a name that would touch one
    already in a row goes one row up. ``data_per_in``: seconds per inch of the axes (a width no less than theirs,
    so that the names take no less room than they will)."""
    from matplotlib.textpath import TextPath

    pad, gap = 0.04 * data_per_in, 0.08 * data_per_in
    ends: list[float] = []  # the right end of the last name in each row
    out = []
    for name, s0 in sorted(starts, key=lambda kv: kv[1]):
        w = TextPath((0, 0), name, size=LABEL_PT).get_extents().width / 72 * data_per_in
        if s0 + pad + w <= xmax or s0 - pad - w < 0:
            x, ha, lo, hi = s0 + pad, "left", s0 + pad, s0 + pad + w
        else:
            x, ha, lo, hi = s0 - pad, "right", s0 - pad - w, s0 - pad
        row = next((r for r, end in enumerate(ends) if end + gap <= lo), len(ends))
        if row == len(ends):
            ends.append(hi)
        else:
            ends[row] = hi
        out.append((name, x, ha, row))
    return out


def _timeline(run: dict, label: str) -> str | None:
    """Bytes and requests per second of a run, stage by stage: each stage's start a dotted line across both plots,
    its name in a strip above them (clear of the other names: in rows), the legends right of the plots (clear of
    the names and the bars)."""
    path = Path(run.get("_dir", "")) / "io_timeline.parquet"
    if not path.is_file():
        return None
    t = pd.read_parquet(path)
    if t.empty:
        return None
    start = t["unix_second"].min()
    x = t["unix_second"] - start
    xmax = float(x.max()) + 1.0
    starts = [(str(stage), float(g["unix_second"].min() - start)) for stage, g in t.groupby("stage", sort=False)]
    # the axes are at least 4 in wide on a 6.4 in figure (y labels left, legends right take the rest)
    labels = _label_rows(starts, xmax, xmax / 4.0)
    rows = 1 + max(r for *_, r in labels)
    strip_in = 0.17 * rows + 0.04
    plt = plots.pyplot()
    fig, (a0, a1, a2) = plt.subplots(3, 1, figsize=(plots.FULL_IN, 3.2 + strip_in), sharex=True,
                                     gridspec_kw={"height_ratios": [strip_in, 1.25, 1.25]})
    a1.bar(x, t["bytes_read"] / 2**20, width=1.0, color="#0072B2", label="read", align="edge")
    a1.bar(x, t["bytes_written"] / 2**20, width=1.0, bottom=t["bytes_read"] / 2**20, color="#E69F00",
           label="written", align="edge")
    a1.set_ylabel("MiB per second")
    a2.bar(x, t["data_ops"], width=1.0, color="#009E73", label="reads and writes", align="edge")
    a2.bar(x, t["metadata_ops"], width=1.0, bottom=t["data_ops"], color="#CC79A7", label="metadata", align="edge")
    a2.set_ylabel("requests per second")
    a2.set_xlabel("seconds since the first stage began")
    for ax in (a1, a2):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)
    a0.set_xlim(0, xmax)
    a0.set_ylim(-0.5, rows - 0.5)
    a0.axis("off")
    for name, lx, ha, row in labels:
        s0 = dict(starts)[name]
        for ax in (a1, a2):
            ax.axvline(s0, color="#555", lw=0.6, ls=":")
        a0.plot([s0, s0], [-0.5, row], color="#555", lw=0.6, ls=":")
        a0.text(lx, row, name, fontsize=LABEL_PT, va="center", ha=ha)
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
