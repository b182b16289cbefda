"""What ran, where: the workloads, the machines, each stage's engine topology, and every run given."""
from __future__ import annotations

from .context import STAGE_NAMES, Context
from .html import breakable, esc, head, num, setting, swatch, table

PACKAGES = ("wsibench", "tensorflow-cpu", "tensorflow", "openslide-python", "numpy", "pandas", "dask", "pyspark")


def _workload_rows(w: dict) -> list[tuple[str, str]]:
    stages = w.get("stages") or []
    d, p, t, tf = (w.get(k) or {} if k in stages or k == "dataset" else {} for k in
                   ("dataset", "patches", "train", "tfrecords"))
    syn = d.get("synthetic") or {}
    data = (f"synthetic, {syn.get('slides')} slides of {syn.get('size'):,} px" if d.get("kind") == "synthetic"
            and syn.get("size") else f"{d.get('kind')} at {d.get('path')}")
    rows = [("description", w.get("description") or ""), ("dataset", data),
            ("stages", ", ".join(w.get("stages") or [])),
            ("patches", f"{p.get('size')} px at level {p.get('level')}, up to {p.get('max_per_class')} a class, "
                        f"{p.get('output')}" if p else ""),
            ("TFRecords", f"{tf.get('shards')} shards" if tf.get("shards") else
             f"{setting(tf.get('shard_mb'))} MB shards" if tf else ""),
            ("training", ", ".join(x for x in (
                str(t.get("model") or "") + (f" at {t['image_size']} px" if t.get("image_size") else ""),
                f"batch {t['batch_size']}" if t.get("batch_size") else "",
                f"{t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}" if t.get("epochs") else "",
                f"{t.get('distribution')} × {t.get('processes')}" if t.get("distribution") not in (None, "none")
                else "",
                (f"emulated accelerator {t.get('accelerator') or setting(t.get('step_time_s')) + ' s a step'}"
                 if t.get("accelerator") or t.get("step_time_s") else "")) if x))]
    return rows


def _machine_rows(e: dict) -> list[tuple[str, str]]:
    pk = e.get("packages") or {}
    gpus = e.get("gpus") or []
    return [("CPU", f"{e.get('cpu_model')}, {e.get('cpu_count')} logical cores"),
            ("memory", f"{num((e.get('memory_bytes') or 0) / 2**30)} GiB"),
            ("GPUs", ", ".join(f"{g.get('name')} ({num((g.get('memory_bytes') or 0) / 2**30)} GiB)" for g in gpus)
             or "none"),
            ("Python", str(e.get("python"))), ("platform", str(e.get("platform"))),
            ("packages", ", ".join(f"{k} {pk[k]}" for k in PACKAGES if k in pk))]


def render(ctx: Context) -> str | None:
    out = ""
    workloads = {}
    for c in ctx.configs.values():
        workloads.setdefault(c.workload, c.runs[-1].get("settings") or {})
    names = list(workloads)
    rows = {}
    for n in names:
        for k, v in _workload_rows(workloads[n]):
            rows.setdefault(k, {})[n] = v
    body = [[esc(k)] + [esc(vals.get(n, "")) for n in names] for k, vals in rows.items() if any(vals.values())]
    out += "<h3>Workloads</h3>" + table([head("workload")] + [head(n) for n in names], body,
                                         align="l" * (len(names) + 1), fit=False)

    machines: dict[tuple, list] = {}
    for c in ctx.configs.values():
        for s in c.runs:
            m = tuple(_machine_rows(s.get("environment") or {}))
            machines.setdefault(m, [])
            if c not in machines[m]:
                machines[m].append(c)
    heads = [head("machine")] + [head(f"machine {i + 1}" if len(machines) > 1 else "this machine")
                                 for i in range(len(machines))]
    keys = [k for k, _ in next(iter(machines))]
    body = [[esc(k)] + [esc(dict(m)[k]) for m in machines] for k in keys]
    if len(machines) > 1:
        body.append(["configurations"] + ["<br>".join(swatch(c) for c in cs) for cs in machines.values()])
    out += "<h3>Machines</h3>" + table(heads, body, align="l" * len(heads), fit=False)

    stages = [s for s in STAGE_NAMES if any(s in ((r.get("engine") or {}).get("stages") or {})
                                            for c in ctx.pipeline for r in c.runs)]
    body = []
    for c in ctx.pipeline:
        topo = {}
        for r in c.runs:
            topo.update((r.get("engine") or {}).get("stages") or {})
        cells = []
        for s in stages:
            t = topo.get(s)
            nodes = (t or {}).get("nodes")
            cells.append(esc(f"{t.get('name')} ×{t.get('workers')}" if t and t.get("workers") else
                             (t or {}).get("name", "")) + (f"<br><code>{esc(t['address'])}</code>"
                                                           if t and t.get("address") else "")
                         + (esc(f"<br>on {nodes} nodes: " + ", ".join(t.get("node_addresses") or []))
                            .replace("&lt;br&gt;", "<br>") if nodes and nodes > 1 else ""))
        body.append([swatch(c)] + cells)
    if stages:
        out += "<h3>Engine topology</h3>" + table(
            [head("configuration")] + [head(STAGE_NAMES[s]) for s in stages], body, align="l" * (len(stages) + 1),
            caption="The engine that ran each stage, with its workers, cluster address (none: embedded) and the "
                    "nodes it used, as the runs recorded it; training runs in the driver process unless distributed.")
    return out


def runs(ctx: Context) -> str:
    labels = {s["run_id"]: c for c in ctx.configs.values() for s in c.runs}
    body, classes = [], []
    for s, r in zip(ctx.runs, ctx.df.itertuples()):
        c = labels.get(s["run_id"])
        notes = []
        if s.get("status") == "failed":
            notes.append(f"failed: {s.get('error')}")
        if (s.get("tags") or {}).get("role") == "prepare":
            notes.append("prepared inputs for another run: not compared")
        for k, v in r._asdict().items():
            if k.endswith("_resumed") and v == v and v:
                stage = k.removesuffix("_resumed")
                notes.append(f"{STAGE_NAMES.get(stage, stage)}: {int(v)} items resumed, no throughput")
        body.append([f"<code>{breakable(s['run_id'])}</code>", swatch(c) if c else esc(s.get("workload") or ""),
                     esc(s.get("status") or ""),
                     esc(", ".join(s.get("stages") or {}) or ("feed (emulated accelerators)" if s.get("feed") else "")),
                     esc((s.get("created_at") or "").replace("T", " ").split("+")[0]), esc("; ".join(notes))])
        classes.append("bad" if s.get("status") == "failed" else "")
    return table([head("run"), head("configuration"), head("status"), head("stages"), head("started", "UTC"),
                  head("notes")], body, align="llllll", row_classes=classes,
                 caption="Every run given to the report, in order; each one's record is in RESULTS/&lt;run&gt;/.")
