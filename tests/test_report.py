"""Run records, matrix runs, the runs listing and the comparison report (HTML and PDF), from real small runs;
the report is looked at as a person would: rendered by headless Chromium, on screen and printed to A4."""
import contextlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.config import parse_workload
from harness import cli, matrix, pipeline
from harness.feed import feed
from harness.report.chromium import Browser
from harness.results import find_runs, load, table

from conftest import local_root

FUSE = os.path.exists("/dev/fuse") and os.geteuid() == 0
AT = " @ local" if FUSE else ""  # configurations name their storage where the runs used more than one


def workload(dataset, **kw):
    d = {"name": "r", "stages": ["masks", "patches", "tfrecords", "train", "infer"],
         "dataset": {"kind": "camelyon16", "path": str(dataset)}, "patches": {"max_per_class": 80},
         "tfrecords": {"shard_mb": 1, "val_fraction": 0.5},
         "train": {"model": "small_cnn", "image_size": 32, "epochs": 1, "steps_per_epoch": 12, "batch_size": 16},
         "infer": {"stride": 448}, **kw}
    return parse_workload(d)


@pytest.fixture(scope="module")
def results(dataset, tmp_path_factory):
    """Real runs in several configurations: the whole pipeline under multiprocessing x2 and local x1, the
    patch stage again under multiprocessing x1 (a scaling point) and resumed under local x1 (no throughput),
    on an emulated storage profile (where FUSE is available), and a feed of emulated accelerators; with a fio
    characterisation of `local`."""
    res = tmp_path_factory.mktemp("results")
    env = dict(os.environ, WSIBENCH_LOCAL_ROOT=str(res / "data"))
    r = subprocess.run([sys.executable, "-m", "harness.cli", "fio", "local", "--results", str(res), "--size", "16",
                        "--runtime", "0.5", "--small-files", "50", "--no-direct"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cut = ["masks", "patches"]
    with local_root(res / "data"):
        a = pipeline.run(workload(dataset, engine={"name": "multiprocessing", "workers": 2}), results_dir=res)
        b = pipeline.run(workload(dataset, engine={"name": "local", "workers": 1}), results_dir=res, fresh=True)
        c = pipeline.run(workload(dataset, engine={"name": "multiprocessing", "workers": 1}), stages=cut,
                         results_dir=res, fresh=True)
        resumed = pipeline.run(workload(dataset, engine={"name": "local", "workers": 1}), stages=cut, results_dir=res)
        emu = None
        if FUSE:
            prof = res / "emu.toml"
            prof.write_text(f'name = "emu"\nroot = "{res}/emu/mnt"\nfstype = "fuse"\nkind = "emulated"\ncreate = true\n'
                            f'[throttle]\nbacking = "{res}/emu/backing"\nread_mb_s = 200\nwrite_mb_s = 100\nlatency_ms = 0.2\n')
            emu = pipeline.run(workload(dataset, engine={"name": "multiprocessing", "workers": 2}), stages=cut,
                               storage=str(prof), results_dir=res)
        fed = feed(workload(dataset, stages=["masks", "patches", "tfrecords"],
                            train={"model": "small_cnn", "image_size": 32, "batch_size": 16, "step_time_s": 0.05}),
                   results_dir=res, max_accelerators=1, steps=4)
    assert {x["status"] for x in (a, b, c, resumed, fed) + ((emu,) if emu else ())} == {"ok"}
    # a sizing answer from those runs, for local and the emulated profile: the report's Sizing section
    r = subprocess.run([sys.executable, "-m", "harness.cli", "size", str(res), "--results", str(res), "--storage", "local"]
                       + (["--storage", str(prof)] if FUSE else []) + ["--slides-per-day", "500"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return res, {"a": a, "b": b, "c": c, "resumed": resumed, "emu": emu, "feed": fed, "size": r.stdout}


def report(res, out, *args):
    """``wsibench report RES -o OUT ARGS``, in this process: (exit status, stdout, stderr)."""
    out_buf, err_buf = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out_buf), contextlib.redirect_stderr(err_buf):
        rc = cli.main(["report", str(res), "-o", str(out), *args])
    return rc, out_buf.getvalue(), err_buf.getvalue()


def sections(doc: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="(\w+)"><h2>[^<]*</h2>(.*?)</section>', doc, flags=re.S))


def text(fragment: str) -> str:
    """What a reader sees: styles dropped, cells and blocks apart, inline tags gone, entities as characters."""
    fragment = re.sub(r"<style\b.*?</style>", "", fragment, flags=re.S)
    fragment = re.sub(r"</?(td|th|tr|li|p|br|div|caption|figcaption|h\d|section|table)\b[^>]*>", " ", fragment)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def sig(v: float) -> str:
    """A throughput as a reader expects it: about three significant digits, thousands separated."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def percent(v: float) -> str:
    return f"{100 * v:.0f}%" if v >= 0.1 else f"{100 * v:.1f}%"


def ratio(r: float) -> str:
    return f"{r:.0f}×" if r >= 10 else f"{r:.1f}×" if r >= 1 else f"{r:.2f}×"


@pytest.mark.slow
def test_resumed_work_is_not_counted_as_throughput(results):
    res, runs = results
    df = table([load(p) for p in find_runs([res])]).set_index("run_id")
    resumed = df.loc[runs["resumed"]["run_id"]]
    assert resumed["patches_resumed"] == runs["resumed"]["stages"]["patches"]["items"] > 0
    assert pd.isna(resumed.get("patches_patches_per_s")) and pd.isna(resumed.get("patches_seconds"))
    assert resumed["masks_items_per_s"] > 0  # masks were made again: measured
    fresh = df.loc[runs["b"]["run_id"]]
    assert fresh["patches_patches_per_s"] == runs["b"]["stages"]["patches"]["patches_per_s"]


@pytest.mark.slow
def test_report_answers_first_with_every_section_and_its_numbers(results, tmp_path):
    res, runs = results
    a, b, c, emu, fed = (runs[k] for k in ("a", "b", "c", "emu", "feed"))
    out, csv = tmp_path / "report.html", tmp_path / "table.csv"
    rc, stdout, stderr = report(res, out, "--csv", str(csv))
    assert rc == 0, stderr
    assert f"baseline multiprocessing ×2{AT}" in stdout
    doc = out.read_text()
    sec = sections(doc)
    assert list(sec) == (["summary", "throughput", "scaling", "breakdown", "training", "feed", "storage"]
                         + (["io"] if emu else []) + ["sizing", "quality", "heatmaps", "environment", "runs"])
    summary = text(sec["summary"])
    # the answer, in words: the baseline's figures, then each configuration as ratios against it
    pa, pb, pc = (x["stages"]["patches"]["patches_per_s"] for x in (a, b, c))
    assert f"multiprocessing ×2{AT} (baseline): mask stage {sig(a['stages']['masks']['items_per_s'])} slides/s, " \
           f"patch stage {sig(pa)} patches/s" in summary
    assert f"local ×1{AT}: mask stage " in summary and f"patch stage {ratio(pb / pa)}" in summary
    assert f"multiprocessing ×1{AT}: mask stage " in summary and f"patch stage {ratio(pc / pa)}" in summary
    assert f"training {ratio(b['train']['images_per_s'] / a['train']['images_per_s'])}" in summary
    # ... and in figures: each stage's headline throughput, AU and input wait per configuration, accelerators fed
    for v in (pa, pb, pc, a["stages"]["tfrecords"]["patches_per_s"], a["train"]["images_per_s"],
              a["infer"]["patches_per_s"]):
        assert sig(v) in summary
    for x in (a, b):
        assert percent(x["train"]["accelerator_utilization"]) in summary
    assert "feed @ local" in summary and str(fed["feed"]["max_accelerators"]) in summary
    assert "slides/s" in summary and "images/s" in summary and "patches/s" in summary  # units
    # the resumed run is named, and its stage carries no figure
    assert "resumed" in text(sec["summary"]) and f"{runs['resumed']['stages']['patches']['items']} items resumed" \
        in text(sec["runs"])
    # detail sections carry their numbers
    assert sig(pa) in text(sec["throughput"]) and sig(pc) in text(sec["scaling"])
    assert percent(a["train"]["input_wait_fraction"]) in text(sec["training"])
    assert all(f"{p['accelerators']} {percent(p['au'])}" in text(sec["feed"]) for p in fed["feed"]["probes"])
    assert f"{a['train']['val_auc']:.3f}" in text(sec["quality"])
    for job in ("slide_seq_read", "jpeg_small_writes", "tfrecord_stream", "checkpoint_write"):
        assert job in sec["storage"]
    # the Sizing section shows what wsibench size printed: the same figures, under the same source numbers
    figures = r"(\d[\d,.]* [^\[;<>\n]*?)"
    printed, listed = runs["size"].split("\nSources:\n")
    shown = {(html.unescape(f), n) for f, n in re.findall(figures + r"<sup>(\d+)</sup>", sec["sizing"])}
    assert set(re.findall(figures + r" \[(\d+)\]", printed)) == shown and len(shown) > 5
    assert "e-0" not in text(sec["sizing"]) and "Where each figure comes from" in text(sec["sizing"])
    assert sec["heatmaps"].count('<img alt="heatmap') == 2
    env = text(sec["environment"])
    assert a["environment"]["cpu_model"] in env and f"{a['environment']['cpu_count']} logical cores" in env
    assert "{" not in env and "multiprocessing ×2" in env  # topology as readable rows, not a dict
    assert all(x["run_id"] in sec["runs"].replace("<wbr>", "") for x in (a, b, c, fed))
    # self-contained: nothing to fetch, no script
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", doc) and "<script" not in doc
    df = pd.read_csv(csv)
    assert a["run_id"] in set(df.run_id) and df.set_index("run_id").loc[a["run_id"], "patches_patches_per_s"] > 0


@pytest.mark.skipif(not FUSE, reason="emulated storage needs /dev/fuse and root: the report's emulated-storage "
                                     "checks (EMULATED label, I/O section) are not run")
@pytest.mark.slow
def test_emulated_storage_is_labelled_and_its_requests_counted(results, tmp_path):
    res, runs = results
    emu = runs["emu"]
    out = tmp_path / "report.html"
    rc, _, stderr = report(res, out)
    assert rc == 0, stderr
    doc = out.read_text()
    sec = sections(doc)
    summary = text(sec["summary"])
    assert "EMULATED" in summary and "Emulated storage." in text(doc)
    assert "multiprocessing ×2 @ emu: mask stage" in summary
    # the emulated storage counted every request: each stage's creates are in the I/O section
    creates = emu["stages"]["patches"]["io_profile"]["ops"]["create"]["count"]
    assert "create" in text(sec["io"]) and f"{creates:,}" in text(sec["io"])


@pytest.mark.slow
def test_baseline_by_name_and_plots_only_where_they_inform(results, tmp_path):
    res, runs = results
    a, b = runs["a"], runs["b"]
    out = tmp_path / "r.html"
    rc, _, stderr = report(res, out, "--baseline", "local x1")
    assert rc == 0, stderr
    summary = text(sections(out.read_text())["summary"])
    assert f"local ×1{AT} (baseline)" in summary
    pa, pb = (x["stages"]["patches"]["patches_per_s"] for x in (a, b))
    assert f"multiprocessing ×2{AT}: mask stage" in summary and f"patch stage {ratio(pa / pb)}" in summary
    rc, _, stderr = report(res, out, "--baseline", "no-such-storage")
    assert rc == 1 and "names no configuration" in stderr and f"local ×1{AT}" in stderr
    # two configurations with one worker count each: no scaling plot, said so
    two = tmp_path / "two"
    for x in (a, b):
        shutil.copytree(res / x["run_id"], two / x["run_id"])
    rc, _, stderr = report(two, out)
    assert rc == 0, stderr
    doc = out.read_text()
    assert "scaling" not in sections(doc) and "feed" not in sections(doc)
    assert re.search(r"Left out, as these runs hold nothing for them: [^<]*Scaling with workers", doc)

LAYOUT = """(() => {
  const W = document.documentElement.clientWidth, out = {width: W, scrollWidth: document.documentElement.scrollWidth,
    wide: [], texts: [], html: [], tall: [], external: []};
  const overlap = (a, b, tol) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > tol &&
    Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > tol;
  const words = s => JSON.stringify(s.trim().replace(/\\s+/g, ' ').slice(0, 40));
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    const name = `${e.tagName}.${e.className.baseVal ?? e.className}`;
    if (r.width && r.right > W + 0.5) out.wide.push(`${name} right ${r.right}`);
  }
  for (const e of document.querySelectorAll('[src],[href]')) {
    const v = e.getAttribute('src') || e.getAttribute('href');
    if (!/^(data:|#)/.test(v)) out.external.push(v.slice(0, 80));
  }
  // text in figures: every element that bears text (<text>, and matplotlib's glyph groups, whatever drew them),
  // inside its figure, clear of every other text of that figure and of every legend it is not part of
  document.querySelectorAll('svg').forEach((svg, n) => {
    const box = svg.getBoundingClientRect();
    const all = [...svg.querySelectorAll('text, g[id*="text_"]')];
    const t = all.filter(e => !all.some(o => o !== e && e.contains(o)))
      .map(e => ({e, r: e.getBoundingClientRect()})).filter(x => x.r.width && x.r.height);
    t.forEach((a, i) => {
      const what = `figure ${n}: text ${words(a.e.textContent) !== '""' ? words(a.e.textContent) : a.e.id}`;
      if (a.r.left < box.left - 1 || a.r.right > box.right + 1 || a.r.top < box.top - 1 || a.r.bottom > box.bottom + 1)
        out.texts.push(`${what} outside the figure`);
      for (const b of t.slice(i + 1))
        if (overlap(a.r, b.r, 1)) out.texts.push(`${what} and ${b.e.id || words(b.e.textContent)} overlap`);
      for (const legend of svg.querySelectorAll('g[id*="legend_"]'))
        if (!legend.contains(a.e) && overlap(a.r, legend.getBoundingClientRect(), 1)) out.texts.push(`${what} over a legend`);
    });
  });
  // text in the page: each line of it inside the box that holds it (a table cell's text does not run into the
  // next cell), clear of every other line and of every figure and image
  const lines = [], figures = [...document.querySelectorAll('svg, img')].map(e => e.getBoundingClientRect());
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walk.nextNode());) {
    if (!node.textContent.trim() || node.parentElement.closest('svg, style')) continue;
    let holder = node.parentElement;
    while (holder.parentElement && getComputedStyle(holder).display.startsWith('inline')) holder = holder.parentElement;
    const hb = holder.getBoundingClientRect(), range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects()) {
      if (r.width < 1 || r.height < 1) continue;
      const what = `${holder.tagName.toLowerCase()} text ${words(node.textContent)}`;
      if (r.left < hb.left - 1 || r.right > hb.right + 1) out.html.push(`${what} outside its box`);
      if (figures.some(f => overlap(r, f, 2))) out.html.push(`${what} over a figure`);
      lines.push({node, r, what});
    }
  }
  lines.sort((a, b) => a.r.top - b.r.top);
  lines.forEach((a, i) => {
    for (let j = i + 1; j < lines.length && lines[j].r.top < a.r.bottom; j++)
      if (lines[j].node !== a.node && overlap(a.r, lines[j].r, 2)) out.html.push(`${a.what} and ${lines[j].what} overlap`);
  });
  // what may not be cut by a page break must fit on one
  for (const e of document.querySelectorAll('figure, .keep, tr')) {
    const h = e.getBoundingClientRect().height;
    if (h > PAGE) out.tall.push(`${e.tagName}.${e.className}: ${Math.round(h)} px`);
  }
  return out;
})()"""
# The layout check sees each fault it looks for: a table too wide, texts over each other (matplotlib's glyph groups,
# plain SVG text, text over a legend), a cell's text running into the next, a heading over a figure, a fetched image.
BAD_PAGE = ('<table><tr><td style="white-space:nowrap">' + "wide " * 400 + '</td></tr></table>'
            '<svg width="200" height="50"><g id="text_1"><text x="10" y="20">1400</text></g>'
            '<g id="text_2"><text x="14" y="24">patch stage</text></g></svg>'
            '<svg width="200" height="50"><text x="10" y="20">masks</text><text x="16" y="22">tfrecords</text></svg>'
            '<svg width="200" height="50"><g id="legend_1"><rect x="100" y="5" width="60" height="20"/></g>'
            '<text x="110" y="20">train</text></svg>'
            '<table style="table-layout:fixed;width:160px"><tr><td style="width:80px;white-space:nowrap">'
            'a long figure 1,749,335</td><td style="width:80px">next</td></tr></table>'
            '<h3 style="margin:0 0 -40px">A heading</h3><svg width="300" height="60"></svg><img src="missing.png">')


def layout_check(b: "Browser", width: int, media: str = "screen") -> dict:
    """The page laid out by Chromium at ``width`` for ``media``: what LAYOUT finds wrong in it."""
    b.media(media)
    b.viewport(width, 1000)
    return b.eval(LAYOUT.replace("PAGE", str(A4_CONTENT[1])))


A4_CONTENT = (round((210 - 24) / 25.4 * 96), round((297 - 28) / 25.4 * 96))  # A4 less the @page margins, CSS px


@pytest.mark.slow
def test_report_as_a_reader_sees_it_in_chromium_and_on_a4(results, tmp_path):
    """Rendered by headless Chromium, on screens of 1280 and 800 px and laid out for print at A4 width: nothing
    wider than the page, no text of a figure (any text, however drawn) over another, over a legend or outside the
    figure, no line of the page's text over another, over a figure or out of its box (a table cell's into the
    next), nothing that must stay whole taller than a page, nothing fetched; then printed to an A4 PDF whose pages
    carry the report."""
    res, _ = results
    pdf = tmp_path / "report.pdf"
    rc, _, stderr = report(res, pdf)
    assert rc == 0, stderr
    html_path = tmp_path / "report.html"
    assert html_path.is_file() and pdf.is_file()
    bad = tmp_path / "bad.html"
    bad.write_text(BAD_PAGE)
    with Browser(width=1280, height=1000) as b:
        b.open(bad)
        got = layout_check(b, 1280)
        assert got["scrollWidth"] > got["width"] and got["wide"] and got["external"]
        assert [m for m in got["texts"] if '"1400" and' in m and "overlap" in m], got["texts"]
        assert [m for m in got["texts"] if '"masks" and' in m], got["texts"]
        assert [m for m in got["texts"] if '"train" over a legend' in m], got["texts"]
        assert [m for m in got["html"] if "td text" in m and "1,749,335" in m and "outside its box" in m], got["html"]
        assert [m for m in got["html"] if "1,749,335" in m and '"next"' in m and "overlap" in m], got["html"]
        assert [m for m in got["html"] if '"A heading" over a figure' in m], got["html"]
        b.open(html_path)
        for width, media in ((1280, "screen"), (800, "screen"), (A4_CONTENT[0], "print")):
            got = layout_check(b, width, media)
            where = f"{media} at {width} px"
            assert got["scrollWidth"] == got["width"] == width and not got["wide"], (where, got["wide"][:5])
            assert not got["texts"], (where, got["texts"][:5])
            assert not got["html"], (where, got["html"][:5])
            assert not got["external"], got["external"]
            if media == "print":
                assert not got["tall"], got["tall"][:5]
        b.media("screen")
        b.viewport(1280, 1000)
        b.screenshot(tmp_path / "screen.png")
    px = np.asarray(Image.open(tmp_path / "screen.png").convert("L"), float)
    assert px.shape[1] == 1280 and px.shape[0] > 3000 and px.std() > 20  # a long page of text and plots, not blank
    raw = pdf.read_bytes()
    assert raw.startswith(b"%PDF")
    sizes = re.findall(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", raw)
    assert len(sizes) >= 4 and all(abs(float(w) - 595.3) < 2 and abs(float(h) - 841.9) < 2 for w, h in sizes)  # A4
    if shutil.which("pdftoppm"):  # poppler-utils, installed by scripts/setup
        subprocess.run(["pdftoppm", "-r", "30", "-png", "-f", "1", "-l", "2", str(pdf), str(tmp_path / "page")],
                       check=True)
        for page in sorted(tmp_path.glob("page-*.png")):
            g = np.asarray(Image.open(page).convert("L"), float)
            assert (g < 128).mean() > 0.01, page  # printed text and figures on the first pages


def timeline_page(tmp_path, timeline) -> Path:
    """A page of I/O timelines (``timeline``: the report's ``_timeline``) of made-up runs whose stages start close
    together, one in the run's last second, over a short run and a long one."""
    cases = {"crowded end": ([("masks", 0), ("patches", 30), ("tfrecords", 57), ("train", 58), ("infer", 59)], 60),
             "short run": ([("masks", 0), ("patches", 1), ("tfrecords", 2)], 3),
             "long run": ([("dataset", 0), ("masks", 1), ("patches", 2), ("tfrecords", 500), ("train", 501),
                           ("infer", 599)], 600)}
    figures = []
    for name, (stages, seconds) in cases.items():
        rows = []
        for i, (stage, s0) in enumerate(stages):
            end = stages[i + 1][1] if i + 1 < len(stages) else seconds
            rows += [{"stage": stage, "second": s - s0, "unix_second": 1_800_000_000 + s, "bytes_read": 5_000_000 * (1 + s % 3),
                      "bytes_written": 2_000_000, "ops": 380 + s % 50, "data_ops": 300, "metadata_ops": 80 + s % 50}
                     for s in range(s0, max(end, s0 + 1))]
        run = tmp_path / name.replace(" ", "-")
        run.mkdir()
        pd.DataFrame(rows).to_parquet(run / "io_timeline.parquet")
        figures.append(timeline({"_dir": str(run)}, name))
    page = tmp_path / "timelines.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><style>body{max-width:1040px}"
                    "figure svg{display:block;max-width:100%;height:auto}</style></head><body>" + "".join(figures)
                    + "</body></html>")
    return page


def test_the_io_timeline_names_its_stages_clear_of_each_other_and_of_its_legends(tmp_path):
    """In the I/O timeline every stage's name stays inside the figure, clear of the other names and of the legends,
    wherever the stages start. (Before: the names sat in the upper plot at three heights in turn, its legend in the
    upper right corner; at the end of a run they ran over the legend and over each other, as in a two-storage
    report's PDF.)"""
    from harness.report.io_profile import _timeline

    page = timeline_page(tmp_path, _timeline)
    with Browser() as b:
        b.open(page)
        for width in (1280, 700):
            got = layout_check(b, width)
            assert not got["texts"] and not got["html"], (width, got["texts"][:5], got["html"][:5])


@pytest.mark.slow
def test_records_round_trip_and_a_failed_run_is_listed(results, dataset, tmp_path):
    res, runs = results
    a = runs["a"]
    runs = [load(p) for p in find_runs([res])]
    df = table(runs)
    df.to_parquet(tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(df, back)
    steps = pd.read_parquet(Path(a["_dir"] if "_dir" in a else res / a["run_id"]) / "train_steps.parquet")
    assert len(steps) == a["train"]["steps"]
    # a run that fails: inference with no model on a fresh storage root
    with local_root(str(tmp_path / "empty")):
        with pytest.raises(RuntimeError, match="no model"):
            pipeline.run(workload(dataset), stages=["infer"], results_dir=res)
    failed = [s for s in (load(p) for p in find_runs([res])) if s["status"] == "failed"]
    assert len(failed) == 1 and "StageInputError: infer: no model at" in failed[0]["error"]
    r = subprocess.run([sys.executable, "-m", "harness.cli", "runs", "--results", str(res)], capture_output=True, text=True)
    assert r.returncode == 0
    line = next(l for l in r.stdout.splitlines() if failed[0]["run_id"] in l)
    assert "failed: StageInputError: infer: no model" in line
    assert sum(a["run_id"] in l and " ok" in l for l in r.stdout.splitlines()) == 1


def test_matrix_repetitions_and_reuse(dataset, tmp_path):
    w = parse_workload({"name": "m", "stages": ["masks", "patches"],
                        "dataset": {"kind": "camelyon16", "path": str(dataset)}, "patches": {"max_per_class": 60},
                        "matrix": {"engines": ["local", "multiprocessing"], "workers": [1, 2], "repetitions": 2,
                                   "measure": ["patches"]}})
    with local_root(str(tmp_path / "data")):
        doc = matrix.run(w, tmp_path / "results")
    assert json.loads((tmp_path / "results" / doc["matrix_id"] / "matrix.json").read_text()) == doc
    # local runs one worker whatever is asked: one configuration, not two named after a count that never ran
    assert len(doc["configurations"]) == 3 and len(doc["runs"]) == 6
    rows = {r["config"]: r for r in doc["results"]}
    assert set(rows) == {"local x1 @ local", "multiprocessing x1 @ local", "multiprocessing x2 @ local"}
    for r in rows.values():
        assert r["n"] == 2 and r["min"] <= r["mean"] <= r["max"] and r["std"] >= 0
        assert r["flagged"] == (r["spread"] > 0.05)
    runs = [load(p) for p in find_runs([tmp_path / "results"])]
    prep = [s for s in runs if s["tags"].get("role") == "prepare"]
    assert len(prep) == 1 and list(prep[0]["stages"]) == ["masks"]  # prerequisites made once per storage root
    measured = [s for s in runs if s["tags"].get("role") == "measure"]
    assert all(list(s["stages"]) == ["patches"] and s["stages"]["patches"]["skipped"] == 0 for s in measured)
    assert all(s["stages"]["patches"]["files_written"] > 0 for s in measured)  # cut afresh, not resumed


def test_failed_configurations_are_listed_and_the_matrix_exits_non_zero(dataset, tmp_path):
    missing = tmp_path / "missing.toml"
    missing.write_text(f'root = "{tmp_path}/not/mounted"\n')
    wl = tmp_path / "m.toml"
    wl.write_text(f'name = "m"\nstages = ["masks", "patches"]\n[dataset]\nkind = "camelyon16"\npath = "{dataset}"\n'
                  f'[patches]\nmax_per_class = 20\n[matrix]\nengines = ["local"]\nstorage = ["local", "{missing}"]\n'
                  f'repetitions = 2\nmeasure = ["patches"]\n')
    env = dict(os.environ, WSIBENCH_LOCAL_ROOT=str(tmp_path / "data"))
    r = subprocess.run([sys.executable, "-m", "harness.cli", "matrix", str(wl), "--results", str(tmp_path / "res")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr[-2000:]
    doc = json.loads(next((tmp_path / "res").glob("matrix-*/matrix.json")).read_text())
    rows = {r["config"]: r for r in doc["results"]}
    bad = rows[f"local x1 @ {missing}"]
    assert bad["status"] == "failed" and bad["n"] == 0 and bad["failed"] == 2
    assert all("does not exist (is it mounted?)" in e["error"] for e in bad["errors"])
    assert rows["local x1 @ local"]["status"] == "ok" and rows["local x1 @ local"]["n"] == 2
    assert "FAILED repetition 0" in r.stdout and "does not exist" in r.stdout


def test_a_measured_set_with_a_gap_is_refused(dataset, tmp_path):
    from harness.config import ConfigError
    w = parse_workload({"name": "m", "dataset": {"kind": "camelyon16", "path": str(dataset)},
                        "matrix": {"measure": ["masks", "tfrecords"]}})
    with pytest.raises(ConfigError, match="matrix.measure: masks, tfrecords leaves a gap"):
        matrix.run(w, tmp_path / "results")


def test_model_quality_shows_froc_and_its_sensitivities_beside_the_aucs():
    """Before, the FROC was recorded but not shown: the quality section listed the AUCs alone."""
    from harness.report import quality
    from harness.report.context import build_context

    sens = {"0.25": 0.31, "0.5": 0.42, "1": 0.53, "2": 0.64, "4": 0.75, "8": 0.86}
    runs = [{"run_id": f"r{i}", "workload": "c16", "status": "ok", "engine": {"name": "local", "workers": 1},
             "storage": {"profile": "local"}, "infer": {"patch_auc": 0.9, "slide_auc": 0.8, "froc": froc,
                                                      "froc_sensitivities": sens, "pn_kappa": 0.7}}
            for i, froc in enumerate((0.55, 0.65))]
    out = text(quality.render(build_context(runs, None, "t")))
    assert "slide AUC" in out and "0.800" in out
    assert "FROC" in out and "0.600" in out  # the mean of the two runs, beside the AUCs
    assert "pN kappa" in out and "0.700" in out  # CAMELYON17's metric, where a run has it
    for rate, v in sens.items():
        assert f"{rate} FP per slide" in out and f"{v:.3f}" in out
