"""The comparison report: one self-contained HTML file (inline SVG plots, inline images, no network).

Sections: summary per configuration, per-stage throughput, scaling with workers, time per stage, accelerator
starvation and AU, storage characterisation (fio), model quality (AUC, ROC), sample heatmaps, environment.
Emulated storage is marked wherever a run on it appears.
"""
from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..results import HEADLINE, config_key, find_runs, load, table

SECTIONS = [("summary", "Summary per configuration"), ("throughput", "Per-stage throughput"),
            ("scaling", "Scaling with workers"), ("breakdown", "Time per stage"),
            ("starvation", "Accelerator starvation and AU"), ("storage", "Storage characterisation (fio)"),
            ("quality", "Model quality"), ("heatmaps", "Sample heatmaps"), ("environment", "Environment")]

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:2px solid #c33;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f0f0}td.l,th.l{text-align:left}.emu{background:#fff3cd}.bad{background:#f8d7da}
.note{color:#666;font-size:.9em}figure{display:inline-block;margin:.5em}.tw{overflow-x:auto}svg{max-width:100%;height:auto}"""


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text[text.find("<svg"):], flags=re.S)
    return text


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams["svg.fonttype"] = "none"
    return plt


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, left=(), cls=None) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    rows = []
    for i, r in df.iterrows():
        c = cls(r) if cls else ""
        rows.append(f'<tr class="{c}">' + "".join(f'<td class="{"l" if k in left else ""}">{_fmt(v)}</td>'
                                                  for k, v in r.items()) + "</tr>")
    return f"<div class=\"tw\"><table><tr>{head}</tr>{''.join(rows)}</table></div>"


def _label(s: dict) -> str:
    return config_key(s) + (" [EMULATED]" if s.get("storage", {}).get("emulated") else "")


def build(paths, out: str | Path, csv: str | Path | None = None, title: str = "wsibench comparison report") -> dict:
    runs = [load(p) for p in find_runs(paths)]
    if not runs:
        raise DataError(f"no runs (folders with summary.json) under {', '.join(map(str, paths))}")
    df = table(runs)
    if csv:
        df.to_csv(csv, index=False)
    plt = _plt()
    parts = {}
    emulated = df["emulated"].any()
    ids = {c: f"C{i + 1}" for i, c in enumerate(dict.fromkeys(df["config"]))}  # short labels for the plots
    df.insert(0, "id", df["config"].map(ids))
    by_cfg = df.groupby("config", sort=False)

    # summary: per configuration, the mean of each headline figure over its runs
    cols = [c for c in df.columns if c.endswith(("_patches_per_s", "_images_per_s", "_seconds", "_auc",
                                                  "input_wait_fraction", "accelerator_utilization"))]
    summ = by_cfg[cols].mean(numeric_only=True).reset_index() if cols else df[["config"]].drop_duplicates()
    summ.insert(0, "id", summ["config"].map(ids))
    summ.insert(2, "runs", by_cfg.size().values)
    summ.insert(2, "failed", by_cfg["status"].apply(lambda s: int((s == "failed").sum())).values)
    emu_cfg = set(df.loc[df.emulated, "config"])
    parts["summary"] = (_table(summ, left=("config",), cls=lambda r: "emu" if r["config"] in emu_cfg else "")
                        + _table(df[["run_id", "workload", "config", "status", "error", "created_at"]],
                                 left=("run_id", "workload", "config", "status", "error", "created_at"),
                                 cls=lambda r: "bad" if r["status"] != "ok" else ("emu" if r["config"] in emu_cfg else "")))

    # throughput per stage by configuration
    stages = [s for s in HEADLINE if f"{s}_{HEADLINE[s]}" in df]
    if stages:
        cols_n = min(3, len(stages))
        rows_n = -(-len(stages) // cols_n)
        fig, axes = plt.subplots(rows_n, cols_n, figsize=(3.4 * cols_n, 0.3 * len(ids) * rows_n + 1.6 * rows_n),
                                 squeeze=False)
        for ax in axes.flat[len(stages):]:
            ax.axis("off")
        for ax, s in zip(axes.flat, stages):
            m = by_cfg[f"{s}_{HEADLINE[s]}"].agg(["mean", "min", "max"]).dropna()
            ax.barh(range(len(m)), m["mean"], xerr=[m["mean"] - m["min"], m["max"] - m["mean"]],
                    color=["#e0a800" if c in emu_cfg else "#c33" for c in m.index])
            ax.set_yticks(range(len(m)), [ids[c] for c in m.index], fontsize=8)
            ax.invert_yaxis()
            ax.set_title(f"{s}: {HEADLINE[s].replace('_', ' ')}", fontsize=9)
        legend = "; ".join(f"{i} = {html.escape(c)}" for c, i in ids.items())
        parts["throughput"] = (_svg(fig) + f'<p class="note">Mean of the runs, bars from min to max. {legend}.'
                               + (" Yellow: emulated storage.</p>" if emulated else "</p>"))
    else:
        parts["throughput"] = "<p>No stage figures in these runs.</p>"

    # scaling: throughput against workers, one line per (stage, engine, storage)
    lines = []
    for s in stages:
        col = f"{s}_{HEADLINE[s]}"
        for (eng, sto), g in df.dropna(subset=[col]).groupby(["engine", "storage"]):
            pts = g.groupby("workers")[col].mean()
            lines.append((f"{s} {eng} @ {sto}", pts))
    if lines:
        shown = [s for s in stages if any(n.startswith(s + " ") for n, _ in lines)]
        fig, axes = plt.subplots(1, len(shown), figsize=(3.4 * len(shown), 3), squeeze=False)
        for ax, st in zip(axes[0], shown):
            for name, pts in lines:
                if name.startswith(st + " "):
                    ax.plot(pts.index, pts.values, marker="o", label=name.removeprefix(st + " "))
            ax.set_title(f"{st}: {HEADLINE[st].replace('_', ' ')}", fontsize=9)
            ax.set_xlabel("workers")
            ax.legend(fontsize=6)
        parts["scaling"] = _svg(fig) + _table(pd.DataFrame(
            [{"series": n, **{f"{int(k)} workers": v for k, v in p.items()}} for n, p in lines]), left=("series",))
    else:
        parts["scaling"] = "<p>No throughput figures.</p>"

    # time breakdown per stage, per run
    secs = [c for c in df.columns if c.endswith("_seconds") and c.split("_")[0] in HEADLINE]
    if secs:
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(df) + 1.4))
        left = np.zeros(len(df))
        for c in secs:
            v = df[c].fillna(0).to_numpy(float)
            ax.barh(range(len(df)), v, left=left, label=c.removesuffix("_seconds"))
            left += v
        ax.set_yticks(range(len(df)), [f"{r.run_id[-6:]} ({r.id})" for r in df.itertuples()], fontsize=7)
        ax.set_xlabel("seconds")
        ax.legend(fontsize=7)
        parts["breakdown"] = _svg(fig)
    else:
        parts["breakdown"] = "<p>No stage timings.</p>"

    # starvation
    tcols = [c for c in ("train_input_wait_fraction", "train_accelerator_utilization", "train_images_per_s",
                         "train_steps") if c in df]
    if tcols:
        t = df.dropna(subset=[tcols[0]])[["run_id", "config", *tcols]].reset_index(drop=True)
        fig, ax = plt.subplots(figsize=(6, 3))
        x = np.arange(len(t))
        ax.bar(x - 0.2, t["train_input_wait_fraction"], 0.4, label="input wait fraction")
        ax.bar(x + 0.2, t["train_accelerator_utilization"], 0.4, label="AU")
        ax.axhline(0.9, color="k", lw=0.8, ls="--")
        ax.set_xticks(x, [f"{r[-6:]} ({ids[c]})" for r, c in zip(t["run_id"], t["config"])], fontsize=7)
        ax.legend(fontsize=7)
        parts["starvation"] = _svg(fig) + _table(t, left=("run_id", "config"))
    else:
        parts["starvation"] = "<p>No training in these runs.</p>"
    feeds = [s for s in runs if (s.get("feed") or {}).get("probes")]
    if feeds:  # how many emulated accelerators each storage keeps busy
        fig, ax = plt.subplots(figsize=(5, 3))
        for s in feeds:
            p = pd.DataFrame(s["feed"]["probes"])
            ax.plot(p["accelerators"], p["au"], marker="o",
                    label=f"{s['storage']['profile']}{' (emulated)' if s['storage'].get('emulated') else ''}: "
                          f"max {s['feed']['max_accelerators']}")
        ax.axhline(s["feed"]["threshold"], color="k", lw=0.8, ls="--")
        ax.set_xlabel("emulated accelerators")
        ax.set_ylabel("AU")
        ax.legend(fontsize=7)
        rows = pd.DataFrame([{"run_id": s["run_id"], "storage": s["storage"]["profile"],
                              "accelerator": f"{s['feed']['accelerator']['step_s']} s / batch {s['feed']['accelerator']['batch']}",
                              "max accelerators": s["feed"]["max_accelerators"], **{f"AU@{p['accelerators']}": p["au"]
                              for p in s["feed"]["probes"]}} for s in feeds])
        if parts["starvation"].startswith("<p>No training"):
            parts["starvation"] = ""
        parts["starvation"] += "<h3>Emulated accelerators per storage</h3>" + _svg(fig) + _table(rows, left=("run_id", "storage", "accelerator"))

    # storage: fio characterisation of each profile seen
    fio_rows = []
    for s in runs:
        f = s.get("storage", {}).get("fio")
        if not f:
            continue
        for job, j in f["jobs"].items():
            fio_rows.append({"storage": s["storage"]["profile"] + (" [EMULATED]" if s["storage"].get("emulated") else ""),
                             "measured": f.get("created_at"), "job": job,
                             "MiB/s": (j.get("read_bw_bytes_per_s") or j.get("write_bw_bytes_per_s") or 0) / 2**20,
                             "IOPS": j.get("read_iops") or j.get("write_iops"),
                             "p99 ms": ((j.get("read_p99_latency_s") or j.get("write_p99_latency_s") or 0) * 1e3),
                             "files/s": j.get("files_per_s")})
    mounts = pd.DataFrame([{"storage": s["storage"]["profile"], "root": s["storage"]["root"],
                            "fstype": s["storage"].get("fstype"), "emulated": s["storage"].get("emulated"),
                            "emulation": str(s["storage"].get("emulation") or "")} for s in runs]).drop_duplicates()
    parts["storage"] = (_table(mounts, left=tuple(mounts.columns), cls=lambda r: "emu" if r["emulated"] else "")
                        + (_table(pd.DataFrame(fio_rows).drop_duplicates(), left=("storage", "measured", "job"))
                           if fio_rows else '<p class="note">No fio characterisation recorded for these profiles '
                                            '(run <code>wsibench fio PROFILE</code> before the runs).</p>'))

    # quality
    qcols = [c for c in ("train_val_auc", "infer_patch_auc", "infer_slide_auc") if c in df]
    rocs = [(s["run_id"], s["infer"]["roc"]) for s in runs if (s.get("infer") or {}).get("roc")]
    q = _table(df.dropna(subset=qcols, how="all")[["run_id", "config", *qcols]], left=("run_id", "config")) if qcols else ""
    if rocs:
        fig, ax = plt.subplots(figsize=(3.6, 3.6))
        for rid, roc in rocs:
            ax.plot(roc["fpr"], roc["tpr"], label=rid[-6:])
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("patch-level ROC", fontsize=9)
        ax.legend(fontsize=7)
        q += _svg(fig)
    parts["quality"] = q or "<p>No trained model in these runs.</p>"

    # heatmaps: a few from the latest run that has them
    figs = []
    for s in reversed(runs):
        for p in (s.get("infer") or {}).get("heatmaps", [])[:4]:
            if Path(p).is_file():
                from PIL import Image
                im = Image.open(p)
                im.thumbnail((360, 360))
                buf = io.BytesIO()
                im.save(buf, "PNG")
                figs.append(f'<figure><img alt="heatmap {html.escape(Path(p).stem)}" src="data:image/png;base64,'
                            f'{base64.b64encode(buf.getvalue()).decode()}"><figcaption>{html.escape(Path(p).stem)}'
                            f"</figcaption></figure>")
        if figs:
            break
    parts["heatmaps"] = "".join(figs) or "<p>No heatmaps in these runs.</p>"

    # environment
    env = []
    for s in runs:
        e = s.get("environment", {})
        env.append({"run_id": s["run_id"], "cpu": e.get("cpu_model"), "cpus": e.get("cpu_count"),
                    "memory GiB": (e.get("memory_bytes") or 0) / 2**30, "gpus": len(e.get("gpus") or []),
                    "python": e.get("python"), "tensorflow": e.get("packages", {}).get("tensorflow-cpu")
                    or e.get("packages", {}).get("tensorflow"),
                    "engine topology": str((s.get("engine") or {}).get("stages", ""))[:120],
                    "potential caching": (s.get("page_cache") or {}).get("potential_caching")})
    parts["environment"] = _table(pd.DataFrame(env), left=("run_id", "cpu", "python", "tensorflow", "engine topology"))

    banner = ('<p class="emu"><b>Some results ran on EMULATED storage</b> (throttled FUSE mounts on one machine); '
              "they show sensitivity to storage, not the performance of the real system.</p>" if emulated else "")
    body = "".join(f'<section id="{k}"><h2>{t}</h2>{parts[k]}</section>' for k, t in SECTIONS)
    doc = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
           f'<p class="note">{len(runs)} runs, {df["config"].nunique()} configurations.</p>{banner}{body}</body></html>')
    Path(out).write_text(doc)
    return {"runs": len(runs), "configurations": int(df["config"].nunique()), "out": str(out)}
