"""wsibench report: a comparison report of runs (self-contained HTML, and PDF)."""
from __future__ import annotations

import sys
from pathlib import Path


def add(sub):
    s = sub.add_parser("report", help="write a comparison report of runs (self-contained HTML, and PDF)",
                       description="Build one HTML file (plots inline, no script, no network) from run folders, or "
                                   "folders of runs; with -o NAME.pdf or --pdf also an A4 PDF printed by headless "
                                   "Chromium. First the answer: per configuration each stage's throughput, training "
                                   "AU and input wait, accelerators fed, as ratios against a baseline; then "
                                   "throughput per stage, scaling with workers and with nodes (where several counts "
                                   "ran), time per stage, AU, feed curves, storage and fio, model quality, heatmaps, "
                                   "workloads, machines, engine topology and every run. Sections without data are "
                                   "left out. A record that cannot be read (a truncated summary.json, one that is no "
                                   "run record) is left out too, named with why under \"Read with care\" and as a "
                                   "warning; the other runs are reported.")
    s.add_argument("runs", nargs="+", help="run folders (results/<run_id>) or folders holding them (results/)")
    s.add_argument("-o", "--output", default="report.html",
                   help="file to write: NAME.html, or NAME.pdf for the PDF with NAME.html beside it "
                        "(default report.html)")
    s.add_argument("--pdf", action="store_true", help="also print the HTML to a PDF beside it (A4)")
    s.add_argument("--baseline", metavar="CONFIG",
                   help="configuration the others are compared with: its label as the report prints it (e.g. "
                        "'nfs-emulated' or 'multiprocessing ×2 @ local'), or a unique part of it "
                        "(default: the first configuration run)")
    s.add_argument("--csv", help="also write the comparison table as CSV, for pandas")
    s.add_argument("--title", default="wsibench comparison report", help="the report's title")
    return s


def run(a) -> int:
    from ..report import build

    out = Path(a.output)
    html, pdf = (out.with_suffix(".html"), out) if out.suffix.lower() == ".pdf" else \
        (out, out.with_suffix(".pdf") if a.pdf else None)
    info = build(a.runs, html, a.csv, a.title, baseline=a.baseline, pdf=pdf)
    for line in info["unreadable"]:  # left out of the report, and listed in it under "Read with care"
        print(f"warning: {line}", file=sys.stderr)
    print(f"[report] {info['runs']} runs, {info['configurations']} configurations"
          + (f", baseline {info['baseline']}" if info["configurations"] > 1 else "")
          + f": {info['out']}" + (f", {info['pdf']}" if pdf else "")
          + (f" (table: {a.csv})" if a.csv else ""))
    return 0
