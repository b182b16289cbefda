"""The answer first: what the runs found, in words and figures, before any detail."""
from __future__ import annotations

from . import plots
from .context import STAGE_NAMES, Context
from .html import esc, figure, head, num, pct, swatch, table, times


def _cell(ctx: Context, cfg, column: str, as_pct: bool = False) -> str:
    st = ctx.stat(cfg, column)
    if not st:
        return num(None)
    value = pct(st.mean) if as_pct else num(st.mean)
    r = ctx.ratio(cfg, column)
    mark = "" if cfg is ctx.base_for(cfg) or r is None or as_pct else f'<br><span class="x">{times(r)}</span>'
    return value + mark


def headline_table(ctx: Context) -> str:
    stages = ctx.stages()
    cols = [("train_accelerator_utilization", "training AU", "compute / wall", True),
            ("train_input_wait_fraction", "input wait", "of step time", True),
            ("feed_max_accelerators", "accelerators fed", "at AU ≥ threshold", False)]
    cols = [c for c in cols if c[0] in ctx.df and ctx.df[c[0]].notna().any()]
    heads = [head("configuration"), head("runs")] + [head(STAGE_NAMES[s], ctx.unit(s)) for s in stages] + \
            [head(t, u) for _, t, u, _ in cols]
    rows = []
    for c in ctx.configs.values():
        rows.append([swatch(c), str(len(c.runs))] + [_cell(ctx, c, ctx.headline(s)) for s in stages]
                    + [_cell(ctx, c, col, p) for col, _, _, p in cols])
    return table(heads, rows, caption="Headline figures per configuration (mean over its runs)"
                                      + ("; × = ratio against the baseline" if ctx.comparing else ""))


def ratio_plot(ctx: Context) -> str | None:
    """Each configuration's stage throughput relative to its baseline: one row per stage, one dot per
    configuration, on a log scale."""
    stages = ctx.stages()
    others = [c for c in ctx.pipeline if c is not ctx.base_for(c)]
    pts = [(s, c, ctx.ratio(c, ctx.headline(s))) for s in stages for c in others]
    pts = [p for p in pts if p[2]]
    if not pts:
        return None
    shown = [s for s in stages if any(p[0] == s for p in pts)]
    cfgs = [c for c in others if any(p[1] is c for p in pts)]
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(plots.FULL_IN, 1.3 + 0.42 * len(shown) + 0.18 * ((len(cfgs) + 1) // 2)))
    k = len(cfgs)
    for j, c in enumerate(cfgs):
        ys, xs = [], []
        for i, s in enumerate(shown):
            r = next((p[2] for p in pts if p[0] == s and p[1] is c), None)
            if r:
                ys.append(i + (j - (k - 1) / 2) * min(0.7 / k, 0.15))
                xs.append(r)
        ax.scatter(xs, ys, s=30, color=c.colour, edgecolor="black" if c.emulated else c.colour,
                   marker="D" if c.emulated else "o", linewidth=0.6, label=c.label + (" (emulated storage)"
                   if c.emulated and "emulated" not in c.label else ""), zorder=3)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    lo, hi = min(p[2] for p in pts), max(p[2] for p in pts)
    lo, hi = min(lo, 1.0) / 1.6, max(hi, 1.0) * 1.6
    ax.set_xlim(lo, hi)
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if lo <= t <= hi]
    ax.set_xticks(ticks, [times(t) for t in ticks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_yticks(range(len(shown)), [STAGE_NAMES[s] for s in shown])
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlabel("throughput relative to the baseline (log scale)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32 if len(shown) < 3 else -0.2), ncol=2, frameon=False)
    return figure(plots.svg(fig, "throughput relative to the baseline per stage"),
                  f"Stage throughput of each configuration divided by its baseline's ({_bases(ctx, cfgs)}); right "
                  "of the line is faster. Diamonds: emulated storage.")


def _bases(ctx: Context, cfgs) -> str:
    bases = {ctx.base_for(c).key: ctx.base_for(c) for c in cfgs}
    if len(bases) == 1:
        return esc(next(iter(bases.values())).label)
    return "; ".join(f"{esc(b.workload)}: {esc(b.label)}" for b in bases.values())


def comparison_lines(ctx: Context) -> list[str]:
    """Per configuration, in words: its stages' throughput as ratios against the configuration it is compared with."""
    out = []
    stages = ctx.stages()
    for c in ctx.pipeline:
        base = ctx.base_for(c)
        if c is base:
            figs = [f"{STAGE_NAMES[s]} {num(st.mean, ctx.unit(s))}" for s in stages
                    if (st := ctx.stat(c, ctx.headline(s)))]
            if figs:
                role = ("" if not ctx.comparing else " (baseline)" if c is ctx.baseline
                        else f" (baseline for {esc(c.workload)})")
                out.append(f"<b>{esc(c.label)}</b>{role}: {', '.join(figs)}.")
            continue
        parts = []
        for s in stages:
            col = ctx.headline(s)
            r, a, b = ctx.ratio(c, col), ctx.stat(c, col), ctx.stat(base, col)
            if r is None:
                continue
            overlap = a.n > 1 and b.n > 1 and a.min <= b.max and b.min <= a.max
            parts.append(f"{STAGE_NAMES[s]} {'≈' if overlap else ''}{times(r)}")
        if parts:
            out.append(f"<b>{esc(c.label)}</b>: {', '.join(parts)} {esc(base.label)}.")
    return out


def caveats(ctx: Context) -> list[str]:
    out = []
    if ctx.unreadable:
        out.append(f"{len(ctx.unreadable)} record(s) could not be read and are left out of this report: "
                   + "; ".join(map(esc, ctx.unreadable)))
    df = ctx.df
    compared = df[df["cfg"].notna()]
    failed = df[df["status"] == "failed"]
    if len(failed):
        out.append(f"{len(failed)} run(s) failed and are left out of the figures (see Runs): "
                   + "; ".join(f"{esc(r.run_id)}: {esc(str(r.error))}" for r in failed.itertuples()))
    partial = compared[compared["status"] == "partial"]
    if len(partial):
        out.append(f"{len(partial)} run(s) are partial (some items failed): {', '.join(map(esc, partial.run_id))}; "
                   "their throughput counts the items that completed.")
    resumed = [c for c in df.columns if c.endswith("_resumed")]
    cut = sorted({(c.removesuffix("_resumed")) for c in resumed if compared[c].fillna(0).gt(0).any()})
    if cut:
        out.append("Stages that resumed an earlier run's complete outputs carry no throughput for that run: "
                   + ", ".join(STAGE_NAMES.get(s, s) for s in cut) + " (see Runs).")
    kept = [(run["run_id"], stage, len(rec["warnings"])) for c in ctx.configs.values() for run in c.runs
            for stage, rec in (run.get("stages") or {}).items() if (rec or {}).get("warnings")]
    if kept:
        out.append("Corrupt JPEG tiles were kept, as the workload asked (dataset.decode_warnings = \"record\"): "
                   + "; ".join(f"{esc(r)} {STAGE_NAMES.get(s, s)}: {n} warning(s)" for r, s, n in kept)
                   + ". Those tiles' pixels are partly wrong; the run records' warnings name them.")
    cache = ctx.cached()
    if cache:
        ratio = max((s["page_cache"].get("dataset_to_memory") or 0) for s in cache)
        out.append(f"{len(cache)} of {len(compared)} runs read a dataset smaller than 5× memory (at most "
                   f"{pct(ratio)} of RAM) without dropping caches: their reads may come from the page cache "
                   "(MLPerf Storage's rule). Run with --drop-caches, or a dataset over 5× RAM, to measure the "
                   "storage.")
    spread = []
    for c in ctx.pipeline:
        for s in ctx.stages():
            st = ctx.stat(c, ctx.headline(s))
            if st and st.n > 1 and st.spread > 0.05:
                spread.append(f"{esc(c.label)} {STAGE_NAMES[s]} {pct(st.spread)}")
    if spread:
        out.append("Repetitions spread by more than 5% of their mean (max − min): " + "; ".join(spread) + ".")
    return out


def render(ctx: Context) -> str:
    lines = comparison_lines(ctx) + ctx.findings
    body = "<ul class=\"findings\">" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>" if lines else ""
    body += headline_table(ctx)
    body += ratio_plot(ctx) or ""
    notes = caveats(ctx)
    if notes:
        body += '<div class="keep"><h3>Read with care</h3><ul class="caveats">' + \
                "".join(f"<li>{x}</li>" for x in notes) + "</ul></div>"
    return body

