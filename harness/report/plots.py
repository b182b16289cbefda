"""Figures as inline SVG: one style for the whole report, the colour (and hatching, for emulated storage) of each
configuration, text drawn as outlines so that the browser cannot reflow it into overlaps."""
from __future__ import annotations

import io
import itertools
import re
import textwrap

from .html import esc

FULL_IN = 6.4    # one figure across an A4 page (and the screen column)
HALF_IN = 4.6    # small multiples: two a row on screen, one a row on A4
_figures = itertools.count(1)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({
        "svg.fonttype": "path", "svg.hashsalt": "wsibench", "font.size": 8, "axes.titlesize": 9,
        "axes.labelsize": 8, "xtick.labelsize": 7.5, "ytick.labelsize": 7.5, "legend.fontsize": 7.5,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e4e4e4",
        "grid.linewidth": 0.6, "axes.axisbelow": True, "hatch.linewidth": 1.2, "figure.dpi": 96,
        "figure.constrained_layout.use": True})
    return plt


def svg(fig, alt: str) -> str:
    """The figure as an SVG element: no XML prologue, no metadata, an accessible name."""
    plt = pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text[text.find("<svg"):], flags=re.S)
    # ids unique in the document, which holds several figures (glyphs, clip paths and groups are referenced by id)
    n = next(_figures)
    text = re.sub(r'(\bid="|xlink:href="#|href="#|url\(#)', lambda m: f"{m.group(1)}f{n}-", text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{esc(alt)}" ', 1)


def bar_style(cfg) -> dict:
    """Bars of a configuration: its colour; emulated storage hatched in white."""
    return {"color": cfg.colour, "edgecolor": "white" if cfg.emulated else cfg.colour,
            "hatch": "///" if cfg.emulated else None, "linewidth": 0}


def line_style(cfg) -> dict:
    return {"color": cfg.colour, "linestyle": "--" if cfg.emulated else "-", "marker": "o", "markersize": 4}


def label_ends(ax, ends: list[tuple[float, float, str]], gap: float = 0.12) -> None:
    """Name each line at its last point, right of it; labels too close in height are pushed apart (axes
    fraction ``gap``) and joined to their point by a thin line."""
    top = ax.get_ylim()[1]
    placed: list[float] = []
    for x, y, text in sorted(ends, key=lambda e: e[1]):
        want = y / top if top else 0.0
        at = max(want, placed[-1] + gap) if placed else want
        placed.append(at)
        shift = (at - want) * ax.bbox.height * 72 / ax.figure.dpi  # points
        ax.annotate(wrap(text, 26), (x, y), xytext=(12, shift), textcoords="offset points",
                    va="center", fontsize=7, arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.5}
                    if at != want else None)


def wrap(label: str, width: int = 22) -> str:
    return "\n".join(textwrap.wrap(label, width, break_on_hyphens=False)) or label


def bar_height(n_bars: int, lines: int = 1) -> float:
    """Figure height for n horizontal bars (inches), room for title and axis label."""
    return 0.9 + n_bars * max(0.28, 0.16 * lines + 0.12)
