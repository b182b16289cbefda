"""Accelerator starvation: training's AU and input wait per configuration, and how many emulated accelerators each
storage keeps busy (``wsibench feed``)."""
from __future__ import annotations

from . import plots
from .context import Context
from .html import esc, figure, head, num, pct, setting, swatch, table, times

AU_TARGET = 0.9  # MLPerf Storage's bar for a storage system that keeps its accelerators fed


def _trained(ctx: Context) -> list:
    return [c for c in ctx.pipeline if ctx.stat(c, "train_accelerator_utilization")]


HOW = ("AU = compute time / wall time of the measured steps (first step excluded; MLPerf Storage's definition); input "
       "wait = time blocked on the next batch / (wait + compute).")


def _au_bars(ctx: Context, cfgs: list) -> str:
    plt = plots.pyplot()
    lines = max(len(plots.wrap(c.label, 28).splitlines()) for c in cfgs)
    fig, ax = plt.subplots(figsize=(plots.FULL_IN, plots.bar_height(len(cfgs), lines) + 0.3))
    for i, c in enumerate(cfgs):
        au, wait = ctx.stat(c, "train_accelerator_utilization"), ctx.stat(c, "train_input_wait_fraction")
        ax.barh(i, 100 * au.mean, height=0.65, **plots.bar_style(c))
        if au.n > 1:
            ax.errorbar(100 * au.mean, i, xerr=[[100 * (au.mean - au.min)], [100 * (au.max - au.mean)]],
                        color="black", lw=0.8, capsize=2)
        text = f"AU {pct(au.mean)}" + (f", input wait {pct(wait.mean)}" if wait else "")
        ax.text(103, i, text, va="center", fontsize=7)  # a column right of 100%: clear of bars and the mark
    ax.axvline(100 * AU_TARGET, color="black", lw=0.8, ls="--")
    ax.text(100 * AU_TARGET + 1, -0.62, f"{AU_TARGET:.0%} target", ha="left", va="bottom", fontsize=7)
    ax.set_xlim(0, 150)
    ax.set_xticks(range(0, 101, 20))
    ax.spines["bottom"].set_bounds(0, 100)
    ax.set_yticks(range(len(cfgs)), [plots.wrap(c.label, 28) for c in cfgs])
    ax.set_ylim(len(cfgs) - 0.5, -0.9)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("accelerator utilisation, AU (% of wall time computing)")
    return figure(plots.svg(fig, "training accelerator utilisation per configuration"),
                  f"{HOW} Dashed: the {AU_TARGET:.0%} mark below which training is input-bound.")


def render(ctx: Context) -> str | None:
    """AU and input wait per configuration that trained: a plot where there are several, and a table."""
    cfgs = _trained(ctx)
    if not cfgs:
        return None
    rows = []
    for c in cfgs:
        st = {k: ctx.stat(c, f"train_{k}") for k in ("accelerator_utilization", "input_wait_fraction",
                                                        "images_per_s", "steps")}
        rows.append([swatch(c), pct(st["accelerator_utilization"].mean),
                     pct(st["input_wait_fraction"].mean if st["input_wait_fraction"] else None),
                     num(st["images_per_s"].mean if st["images_per_s"] else None),
                     num(st["steps"].mean if st["steps"] else None), str(st["accelerator_utilization"].n)])
    return (_au_bars(ctx, cfgs) if len(cfgs) > 1 else f'<p class="note">{HOW}</p>') + table(
        [head("configuration"), head("AU", "compute / wall"), head("input wait", "of step time"),
         head("training", "images/s"), head("steps"), head("runs")], rows)


def findings(ctx: Context) -> list[str]:
    out = []
    cfgs = _trained(ctx)
    if cfgs:
        fed, starved = [], []
        for c in cfgs:
            au, wait = ctx.stat(c, "train_accelerator_utilization"), ctx.stat(c, "train_input_wait_fraction")
            text = f"{esc(c.label)} AU {pct(au.mean)}" + (f", waiting {pct(wait.mean)}" if wait else "")
            (fed if au.mean >= AU_TARGET else starved).append(text)
        if fed:
            out.append(f"Training kept the accelerator busy (AU ≥ {AU_TARGET:.0%}) on: {'; '.join(fed)}.")
        if starved:
            out.append(f"Training was input-bound (AU &lt; {AU_TARGET:.0%}) on: {'; '.join(starved)}.")
    feeds = ctx.feeds
    if feeds:
        parts = []
        for c in feeds:
            f = c.runs[-1]["feed"]
            n = f.get("max_accelerators")
            capped = f.get("first_failing") is None
            r = ctx.ratio(c, "feed_max_accelerators")
            base = ctx.base_for(c)
            parts.append(f"{esc(c.storage)}{' (emulated)' if c.emulated else ''} "
                         f"{'at least ' if capped else ''}<b>{n}</b>"
                         + (f" ({times(r)} {esc(base.storage)})" if r and base is not c else ""))
        f0 = feeds[0].runs[-1]["feed"]
        out.append(f"Emulated accelerators kept at AU ≥ {f0.get('threshold', AU_TARGET):.0%} "
                   f"({setting(f0.get('step_s'))} s a step, batch {f0.get('batch')}): " + "; ".join(parts)
                   + ". ‘At least’: every count tried passed.")
    return out


def feed(ctx: Context) -> str | None:
    """The AU curve of each feed (a plot where some feed probed more than one count), and every probe."""
    feeds = ctx.feeds
    if not feeds:
        return None
    curve = any(len((s["feed"].get("probes") or [])) > 1 for c in feeds for s in c.runs)
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(plots.FULL_IN, 3.0))
    counts, rows = set(), []
    threshold, step = AU_TARGET, ""
    for c in feeds:
        for s in c.runs:
            f = s["feed"]
            probes = sorted(f.get("probes", []), key=lambda p: p["accelerators"])
            if not probes:
                continue
            x = [p["accelerators"] for p in probes]
            counts.update(x)
            ax.plot(x, [100 * p["au"] for p in probes], label=c.label + (" (emulated storage)" if c.emulated and
                                                                         "emulated" not in c.label else ""),
                    **plots.line_style(c))
            acc = f.get("accelerator") or {}
            for p in probes:
                rows.append([swatch(c), str(p["accelerators"]), pct(p["au"]), pct(p.get("au_min_rank")),
                             pct(p.get("input_wait_fraction")), num(p.get("samples_per_s")), num(p.get("mib_per_s")),
                             "yes" if p["au"] >= f.get("threshold", AU_TARGET) else "no"])
            threshold = f.get("threshold", AU_TARGET)
            step = (f"{setting(f.get('step_s') or acc.get('step_s'))} s a step, "
                    f"batch {f.get('batch') or acc.get('batch')}")
    ax.axhline(100 * threshold, color="black", lw=0.8, ls="--")
    ax.text(min(counts), 100 * threshold - 1.5, f"{threshold:.0%} target", ha="left", va="top", fontsize=7)
    ax.set_xscale("log", base=2)
    ticks = sorted(counts)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_ylim(0, 105)
    ax.set_xlabel("emulated accelerators (processes)")
    ax.set_ylabel("AU (% of wall time computing)")
    ax.legend(loc="lower left", frameon=False)
    how = (f"Each emulated accelerator is a process running the real tf.data input pipeline and sleeping the "
           f"accelerator's step time ({esc(step)}) instead of computing; counts double, then bisect, until AU falls "
           "below the target.")
    plot = figure(plots.svg(fig, "AU against emulated accelerators per storage"), how) if curve else \
        (plt.close(fig) or f"<p>{how}</p>")
    return plot + \
        table([head("storage"), head("accelerators"), head("AU", "mean"), head("AU", "worst rank"),
               head("input wait"), head("samples/s"), head("read", "MiB/s"), head("≥ target")], rows,
              align="lrrrrrrr")
