"""The comparison report: one self-contained HTML file (inline SVG plots and images, no script, no network), and
optionally the same document printed to an A4 PDF by headless Chromium.

The report is the list ``SECTIONS``, in order. A section is a function of the shared ``Context`` (context.py)
returning its HTML, or None when the runs hold nothing for it (it is then left out); it may also add sentences to
the summary at the top (``findings``). To add a section, write those functions and add one entry: for example a
per-stage "Storage I/O" section reading ``stages[stage]["io_profile"]`` from the runs, or "Sizing" reading the
results of ``wsibench size``, each returning None where the runs lack them.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DataError
from ..fsutil import atomic_path
from ..results import load_all
from ..sizing import load_sizings
from . import environment, io_profile, performance, quality, sizing, storage, summary, training
from .context import Context, build_context
from .html import esc, swatch


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    render: Callable[[Context], str | None]
    findings: Callable[[Context], list[str]] | None = None


SECTIONS = [
    Section("summary", "Summary", summary.render),
    Section("throughput", "Throughput per stage", performance.throughput),
    Section("scaling", "Scaling with workers", performance.scaling),
    Section("nodes", "Scaling with nodes", performance.nodes),
    Section("breakdown", "Time per stage", performance.breakdown),
    Section("training", "Training: accelerator utilisation and input wait", training.render, training.findings),
    Section("feed", "Accelerators fed per storage", training.feed),
    Section("storage", "Storage", storage.render),
    Section("io", "Storage I/O", io_profile.render),
    Section("sizing", "Sizing", sizing.render),
    Section("quality", "Model quality", quality.render),
    Section("heatmaps", "Sample heatmaps", quality.heatmaps),
    Section("environment", "Workloads, machines and engines", environment.render),
    Section("runs", "Runs", environment.runs),
]

CSS = """
:root{--ink:#1d1d1f;--muted:#5f6368;--rule:#d9d9de;--accent:#0b5394}
*{box-sizing:border-box}
body{font:14px/1.45 "DejaVu Sans","Liberation Sans",Arial,sans-serif;color:var(--ink);margin:0 auto;padding:24px 28px;
 max-width:1040px;overflow-wrap:break-word}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;color:var(--accent);border-bottom:2px solid var(--accent);
 padding-bottom:3px;margin:28px 0 10px;break-after:avoid}h3{font-size:15px;margin:18px 0 6px;break-after:avoid}
.sub{color:var(--muted);margin:0 0 12px}
.banner{background:#fff4d6;border-left:4px solid #e0a800;padding:8px 12px;margin:12px 0}
ul.findings{padding-left:20px;font-size:14.5px}ul.findings li{margin:3px 0}ul.caveats{padding-left:20px;color:#444}
table{border-collapse:collapse;margin:8px 0 14px;font-size:12.5px;max-width:100%}
caption{caption-side:bottom;text-align:left;color:var(--muted);font-size:11.5px;padding-top:4px}
th,td{border-bottom:1px solid var(--rule);padding:4px 7px;vertical-align:top}
thead th{border-bottom:1.5px solid #888;font-weight:600;vertical-align:bottom;background:#f6f7f9}
th.l,td.l{text-align:left}th.r,td.r{text-align:right;font-variant-numeric:tabular-nums}
td.r{white-space:nowrap}td.l{overflow-wrap:anywhere}tbody th{font-weight:600;background:#fafafa}
.u{font-weight:400;color:var(--muted);font-size:11px}.x{color:var(--accent);font-size:11.5px}.na{color:#aaa}
tr.bad td{background:#fdecee}table:not(.props) tbody td.l:first-child{min-width:10em}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;vertical-align:-1px;
 border:1px solid rgba(0,0,0,.25)}
.badge{display:inline-block;font-size:9.5px;font-weight:700;letter-spacing:.03em;border-radius:3px;padding:0 4px;
 margin-left:5px;vertical-align:1px;white-space:nowrap}
.badge.emu{background:#ffe08a;color:#5c4400}.badge.lab{background:#d5efd9;color:#1d5226}.badge.base{background:#dbe7f5;color:#0b3d75}
figure{margin:8px 0 14px}figure svg{display:block;max-width:100%;height:auto}
figcaption{color:var(--muted);font-size:11.5px;margin-top:2px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:4px 20px}
.heats{display:flex;flex-wrap:wrap;gap:12px}.heats img{max-width:100%;height:auto;display:block}
.note{color:var(--muted);font-size:12px}p.src{margin:8px 0 0;font-weight:600}ol.note{margin:2px 0 6px}code{font-size:11.5px}
.missing{color:var(--muted);font-size:12px}.lead{break-after:avoid}
@media (max-width:900px){table{font-size:11.5px}th,td{padding:3px 4px}
 table:not(.props) tbody td.l:first-child{min-width:8em}}
@page{size:A4;margin:13mm 12mm 15mm}
@media print{
 body{padding:0;max-width:none;font-size:12.5px}
 table{font-size:11px}th,td{padding:3px 4px}table:not(.props) tbody td.l:first-child{min-width:8em}
 h2{break-before:auto;margin-top:18px}
 .grid{grid-template-columns:1fr}
 figure,.keep,tr,img{break-inside:avoid}
 thead{display:table-header-group}
 .banner,tr.bad td,thead th,tbody th,.sw,.badge{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""


def build(paths, out: str | Path, csv: str | Path | None = None, title: str = "wsibench comparison report",
          baseline: str | None = None, pdf: str | Path | None = None) -> dict:
    """Write the report of the runs under ``paths`` to ``out`` (HTML), and to ``pdf`` when given."""
    runs, unreadable = load_all(paths)  # a record that cannot be read is left out and listed, not fatal
    if not runs:
        raise DataError(f"no {'readable ' if unreadable else ''}runs (folders with summary.json) under "
                        f"{', '.join(map(str, paths))}" + "".join(f"; {line}" for line in unreadable))
    ctx = build_context(runs, baseline, title)
    ctx.unreadable = unreadable
    ctx.sizing = load_sizings(paths)
    if csv:
        with atomic_path(csv) as tmp:
            ctx.df.drop(columns=["cfg"]).to_csv(tmp, index=False)
    ctx.findings = [line for s in SECTIONS if s.findings for line in s.findings(ctx)]
    parts, left_out = [], []
    for s in SECTIONS:
        body = s.render(ctx)
        if body:
            parts.append(f'<section id="{s.id}"><h2>{esc(s.title)}</h2>{body}</section>')
        else:
            left_out.append(s.title)
    doc = _document(ctx, "".join(parts), left_out)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(doc, encoding="utf-8")
    info = {"runs": len(runs), "unreadable": unreadable, "configurations": len(ctx.configs), "baseline": ctx.baseline.label, "out": str(out),
            "sections": [s.id for s in SECTIONS if s.title not in left_out]}
    if pdf:
        from .chromium import BrowserError, print_pdf

        info["pdf"] = str(pdf)
        try:
            info["pdf_bytes"] = print_pdf(out, pdf, footer=title)
        except BrowserError as e:
            raise BrowserError(f"{e}; the HTML report is written: {out}") from None
    return info


def _document(ctx: Context, body: str, left_out: list[str]) -> str:
    n_cfg = len(ctx.configs)
    plural = lambda n, word: f"{n} {word}{'' if n == 1 else 's'}"  # noqa: E731
    workloads = sorted({c.workload for c in ctx.configs.values()})
    emulated = [c for c in ctx.configs.values() if c.emulated]
    banner = (f'<p class="banner"><b>Emulated storage.</b> {len(emulated)} of {n_cfg} configurations ran on '
              "emulated storage (a throttled FUSE mount on one machine): they show how the pipeline responds to "
              "slower storage, not what the real system would deliver.</p>" if emulated else "")
    labs = [c for c in ctx.configs.values() if c.lab]
    banner += (f'<p class="banner"><b>Lab storage.</b> {len(labs)} of {n_cfg} configurations ran on the MooseFS lab: '
               "a real parallel file system whose servers and client hosts are network namespaces of one machine, "
               "sharing its cores and memory, its links shaped without added delay: multi-client effects and the "
               "sizing model are tried on it, not the hardware's figures.</p>" if labs else "")
    legend = " ".join(f'<span style="white-space:nowrap">{swatch(c)}</span>&ensp;' for c in ctx.configs.values())
    missing = (f'<p class="missing">Left out, as these runs hold nothing for them: {esc(", ".join(left_out))}.</p>'
               if left_out else "")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(ctx.title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(ctx.title)}</h1>"
            f'<p class="sub">{plural(len(ctx.runs), "run")} of {esc(", ".join(workloads))} in '
            f'{plural(n_cfg, "configuration")}' + (f"; baseline {swatch(ctx.baseline)}" if ctx.comparing else "")
            + f". Written {now} by wsibench.</p>"
            + (f'<p class="sub">{legend}</p>' if n_cfg > 1 else "") + f"{banner}{body}{missing}</body></html>")
