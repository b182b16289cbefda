"""Pipeline performance: each stage's throughput per configuration, scaling with workers, where the time goes."""
from __future__ import annotations

import numpy as np

from . import plots
from .context import STAGE_NAMES, Context
from .html import cap, esc, figure, head, mib, note, num, swatch, table, times


def _bars(ctx: Context, stage: str, data: list) -> str:
    """One stage's throughput per configuration: bars in the configurations' colours, whiskers min–max, values
    and ratios at the bars' ends."""
    col = ctx.headline(stage)
    plt = plots.pyplot()
    lines = max(len(plots.wrap(c.label).splitlines()) for c, _ in data)
    fig, ax = plt.subplots(figsize=(plots.HALF_IN, plots.bar_height(len(data), lines)))
    top = max(st.max for _, st in data)
    for i, (c, st) in enumerate(data):
        ax.barh(i, st.mean, height=0.7, **plots.bar_style(c))
        if st.n > 1:
            ax.errorbar(st.mean, i, xerr=[[st.mean - st.min], [st.max - st.mean]], color="black", lw=0.8, capsize=2)
        r = ctx.ratio(c, col)
        ax.text(st.max + top * 0.02, i, num(st.mean) + (f"  {times(r)}" if r and c is not ctx.base_for(c) else ""),
                va="center", fontsize=7)
    ax.set_xlim(0, top * 1.35)
    ax.set_yticks(range(len(data)), [plots.wrap(c.label) for c, _ in data])
    ax.set_ylim(len(data) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(ctx.unit(stage))
    ax.set_title(cap(STAGE_NAMES[stage]), loc="left")
    return figure(plots.svg(fig, f"{STAGE_NAMES[stage]} throughput per configuration"),
                  f"{cap(esc(STAGE_NAMES[stage]))}: {esc(ctx.unit(stage))}, mean of the runs"
                  + (", whiskers min–max" if any(st.n > 1 for _, st in data) else "") + "; × against the baseline.")


def throughput(ctx: Context) -> str | None:
    """Per stage, a bar plot where several configurations ran it (one bar compares nothing), and one table."""
    stages = ctx.stages()
    if not stages:
        return None
    figs, rows = [], []
    for s in stages:
        col = ctx.headline(s)
        data = [(c, st) for c in ctx.pipeline if (st := ctx.stat(c, col))]
        if len(data) > 1:
            figs.append(_bars(ctx, s, data))
        for c, st in data:
            rec = ctx.rows(c)
            spread = st.n > 1
            rows.append([f'{esc(STAGE_NAMES[s])}<br><span class="u">{esc(ctx.unit(s))}</span>', swatch(c),
                         num(st.mean), num(st.min if spread else None), num(st.max if spread else None), str(st.n)]
                        + ([times(ctx.ratio(c, col)) if c is not ctx.base_for(c) else "base"] if ctx.comparing else [])
                        + [num(_mean(rec, f"{s}_seconds")), mib(_mean(rec, f"{s}_bytes_read")),
                           mib(_mean(rec, f"{s}_bytes_written"))])
    grid = (f'<div class="grid">{"".join(figs)}</div>'
            + note("Bars in each configuration's colour, hatched where the storage is emulated.")) if figs else ""
    return grid + table(
        [head("stage", "unit"), head("configuration"), head("mean"), head("min"), head("max"), head("runs")]
        + ([head("vs base")] if ctx.comparing else [])
        + [head("time", "s"), head("read", "MiB"), head("written", "MiB")],
        rows, align="ll" + "r" * (len(rows[0]) - 2),
        caption="Throughput in each stage's unit; min and max where a configuration ran more than once; time: the "
                "stage's wall time; read and written: bytes counted from the workers' /proc/PID/io; means of the runs",
        fit=False)


def _mean(rows, column: str):
    return rows[column].mean() if column in rows else None


def _series(ctx: Context, stage: str, by: str = "workers") -> dict[tuple, list]:
    """Configurations differing only in their worker (or node) count, grouped: (workload, engine, storage) ->
    configs. Worker series hold one node count; node series any worker counts (a node brings its workers)."""
    out: dict[tuple, list] = {}
    for c in ctx.pipeline:
        if getattr(c, by) and ctx.stat(c, ctx.headline(stage)):
            out.setdefault((c.workload, c.engine, c.storage) + ((c.nodes,) if by == "workers" else ()), []).append(c)
    return {k[:3]: sorted(v, key=lambda c: getattr(c, by)) for k, v in out.items()
            if len({getattr(c, by) for c in v}) > 1}


def scaling(ctx: Context, by: str = "workers") -> str | None:
    """Only where a configuration ran with several worker (node) counts: one point per run carries no scaling."""
    figs, rows = [], []
    for s in ctx.stages():
        series = _series(ctx, s, by)
        if not series:
            continue
        col = ctx.headline(s)
        plt = plots.pyplot()
        fig, ax = plt.subplots(figsize=(plots.HALF_IN, 2.9))
        workers = sorted({getattr(c, by) for cs in series.values() for c in cs})
        ends = []
        for (workload, engine, storage), cs in series.items():
            stats = [ctx.stat(c, col) for c in cs]
            w = [getattr(c, by) for c in cs]
            ax.plot(w, [st.mean for st in stats], color="#555", lw=1,
                    ls="--" if cs[0].emulated else "-", zorder=2)
            ideal = [stats[0].mean * x / w[0] for x in w]
            ax.plot(w, ideal, color="#999", lw=0.8, ls=":", zorder=1)
            for c, x, st in zip(cs, w, stats):
                ax.errorbar(x, st.mean, yerr=[[st.mean - st.min], [st.max - st.mean]] if st.n > 1 else None,
                            marker="D" if c.emulated else "o", ms=6, color=c.colour, ecolor="black", elinewidth=0.8,
                            capsize=2, zorder=3)
            ends.append((w[-1], stats[-1].mean, f"{engine} @ {storage}"
                         + (f" ({workload})" if len({k[0] for k in series}) > 1 else "")))
            for c, x, st in zip(cs, w, stats):
                speed = st.mean / stats[0].mean
                rows.append([esc(STAGE_NAMES[s]), swatch(c), str(x)] + ([str(c.workers)] if by == "nodes" else [])
                            + [num(st.mean, ctx.unit(s)), times(speed), f"{100 * speed * w[0] / x:.0f}%", str(st.n)])
        ax.set_xticks(workers)
        ax.set_xlim(min(workers) - 0.3, max(workers) + (max(workers) - min(workers)) * 0.9 + 0.3)
        ax.set_ylim(0, max(ax.get_ylim()[1], max(y for _, y, _ in ends) * 1.1))
        plots.label_ends(ax, ends)
        ax.set_xlabel(by)
        ax.set_ylabel(ctx.unit(s))
        ax.set_title(f"{cap(STAGE_NAMES[s])} against {by}", loc="left")
        figs.append(figure(plots.svg(fig, f"{STAGE_NAMES[s]} scaling with {by}"),
                           f"{cap(esc(STAGE_NAMES[s]))}: mean of the runs (whiskers min–max); dotted: "
                           f"linear scaling from the fewest {by}; dashed line: emulated storage."))
    if not figs:
        return None
    return f'<div class="grid">{"".join(figs)}</div>' + table(
        [head("stage"), head("configuration"), head(by)] + ([head("workers", "all nodes")] if by == "nodes" else [])
        + [head("throughput", "mean"), head("speed-up", f"vs fewest {by}"), head("efficiency", f"speed-up / {by}"),
           head("runs")], rows, align="ll" + "r" * (len(rows[0]) - 2)) + (_per_host(ctx) if by == "nodes" else "")


def nodes(ctx: Context) -> str | None:
    """Throughput against the number of cluster nodes (hosts), where a configuration ran with several."""
    return scaling(ctx, "nodes")


def _per_host(ctx: Context) -> str:
    """The work each host did, per stage, in each configuration's last run that used several hosts."""
    rows = []
    for c in ctx.pipeline:
        run = next((r for r in reversed(c.runs) if any(len(st.get("hosts") or {}) > 1
                                                        for st in (r.get("stages") or {}).values())), None)
        for stage, st in ((run or {}).get("stages") or {}).items():
            for host, h in (st.get("hosts") or {}).items():
                rows.append([swatch(c), esc(STAGE_NAMES.get(stage, stage)), f"<code>{esc(host)}</code>",
                             str(h.get("workers")), str(h.get("items")), num(h.get("seconds")),
                             mib(h.get("bytes_read")), mib(h.get("bytes_written"))])
    if not rows:
        return ""
    return "<h3>Work per host</h3>" + table(
        [head("configuration"), head("stage"), head("host"), head("workers"), head("items"), head("item time", "s"),
         head("read", "MiB"), head("written", "MiB")], rows, align="lll" + "r" * 5,
        caption="Each host that executed items (its name as its workers report it), in the configuration's last "
                "run on several hosts: its worker processes, items, their summed time, and the bytes its workers "
                "read and wrote for them (/proc/PID/io)")


def breakdown(ctx: Context) -> str | None:
    """Mean wall time of each stage per configuration (pipeline runs that ran more than one stage)."""
    stages = [s for s in STAGE_NAMES if f"{s}_seconds" in ctx.df]
    data = []
    for c in ctx.pipeline:
        secs = {s: st.mean for s in stages if (st := ctx.stat(c, f"{s}_seconds"))}
        if len(secs) > 1:
            data.append((c, secs))
    if not data:
        return None
    shown = [s for s in stages if any(s in d for _, d in data)]
    plt = plots.pyplot()
    greys = plt.get_cmap("Blues")(np.linspace(0.85, 0.3, len(shown)))
    lines = max(len(plots.wrap(c.label, 28).splitlines()) for c, _ in data)
    fig, ax = plt.subplots(figsize=(plots.FULL_IN, plots.bar_height(len(data), lines) + 0.35))
    left = np.zeros(len(data))
    for s, colour in zip(shown, greys):
        v = np.array([d.get(s, 0.0) for _, d in data])
        ax.barh(range(len(data)), v, left=left, height=0.65, color=colour, edgecolor="white", lw=0.8,
                label=STAGE_NAMES[s])
        left += v
    for i, (c, _) in enumerate(data):
        ax.text(left[i] + left.max() * 0.01, i, f"{num(left[i])} s", va="center", fontsize=7)
        ax.plot([-left.max() * 0.025], [i], marker="s", ms=7, color=c.colour, clip_on=False)
    ax.set_yticks(range(len(data)), [plots.wrap(c.label, 28) for c, _ in data])
    ax.tick_params(axis="y", pad=10)
    ax.set_ylim(len(data) - 0.5, -0.5)
    ax.set_xlim(0, left.max() * 1.12)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("wall time per run (s)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncol=min(len(shown), 5), frameon=False)
    rows = [[swatch(c)] + [num(d.get(s)) for s in shown] + [num(sum(d.values()))] for c, d in data]
    return figure(plots.svg(fig, "time per stage"),
                  "Mean wall time of each stage per configuration, as each stage recorded it (its engine is started "
                  "before its clock; preparing the dataset is not a stage).") + \
        table([head("configuration")] + [head(STAGE_NAMES[s], "s") for s in shown] + [head("total", "s")], rows)
