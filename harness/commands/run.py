"""wsibench run: a workload's stages, a run record and its report."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import ENGINES, STAGES, load_workload
from .options import parents


def add(sub):
    s = sub.add_parser("run", parents=parents("workload", "storage", "results", "strict", "drop_caches", "observe"),
                       help="run a workload's stages and write a run record",
                       description=f"Run the pipeline stages ({', '.join(STAGES)}) of a workload and record "
                                   "throughput, I/O and errors per stage under the results folder: "
                                   "RESULTS/<run_id>/summary.json, whose every key is documented in "
                                   "docs/run-record.md (JSON Schema: docs/run-record.schema.json).")
    s.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)} (default: the workload's)")
    s.add_argument("--engine", choices=ENGINES,
                   help="engine for every stage, overriding the workload's (and its per-stage choices)")
    s.add_argument("--workers", type=int, help="worker processes of embedded engines (default: the workload's)")
    s.add_argument("--nodes", type=int, help="hosts of the cluster engines (engine.address / engine.master) that "
                                             "run the stages (default: the workload's engine.nodes, else all)")
    s.add_argument("--if-busy", choices=["wait", "fail"], default="wait",
                   help="when another run uses the workload's folder on this storage: wait for it (default) or fail")
    s.add_argument("--json", action="store_true",
                   help="print the run's outcome as JSON (run id, status, record, report, per stage seconds, items, "
                        "patches, status) instead of the table, for scripts")
    return s


def run(a) -> int:
    from .. import pipeline
    from ..report import build

    w = load_workload(a.workload)
    stages = tuple(s.strip() for s in a.stages.split(",") if s.strip()) if a.stages else None
    opts = pipeline.RunOptions(stages=stages, storage=a.storage, results_dir=Path(a.results), engine=a.engine,
                               workers=a.workers, nodes=a.nodes, strict=a.strict, drop_caches=a.drop_caches,
                               observe=a.observe, wait_if_busy=a.if_busy == "wait")
    summary = pipeline.run(w, opts)
    run_dir = Path(a.results) / summary["run_id"]
    build([run_dir], run_dir / "report.html", title=f"wsibench run {summary['run_id']}")
    if a.json:
        print(json.dumps({"run_id": summary["run_id"], "status": summary["status"],
                          "record": str(run_dir), "report": str(run_dir / "report.html"),
                          "stages": {k: {f: v.get(f) for f in ("seconds", "items", "patches", "status")}
                                     for k, v in summary["stages"].items()}}, indent=1))
    else:
        print(answer(summary, run_dir))
    return 0 if summary["status"] == "ok" else 3


def _size(n) -> str:
    if not n:
        return "-"
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _num(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def answer(summary: dict, run_dir: Path) -> str:
    """The run's outcome for a person: per stage its items, throughput (over the timed work), start-up apart, bytes
    read and written, status; training's AU and input wait; the model's quality; where the record and report are."""
    from ..results import HEADLINE, UNITS

    st = summary.get("storage") or {}
    eng = summary.get("engine") or {}
    lines = [f"run {summary['run_id']}: {summary['status']} (storage {st.get('profile')}"
             f"{', EMULATED' if st.get('emulated') else ''}"
             f"{', LAB: a real file system on one machine' if st.get('lab') else ''}; engine {eng.get('name')} x{eng.get('workers')})", ""]
    rows = [("stage", "items", "throughput", "start-up", "work", "read", "written", "status")]
    for stage, r in summary["stages"].items():
        rate = r.get(HEADLINE.get(stage, "items_per_s"))
        resumed = r.get("skipped")
        rows.append((stage, f"{r.get('items', 0)}" + (f" ({resumed} resumed)" if resumed else ""),
                     f"{rate:,.1f} {UNITS.get(stage, 'items/s')}" if rate else "-",
                     f"{r.get('startup_seconds') or 0:.1f} s", f"{r.get('work_seconds') or r.get('seconds') or 0:.1f} s",
                     _size(r.get("bytes_read")), _size(r.get("bytes_written")),
                     r.get("status", "") + (f", {len(r['errors'])} failed" if r.get("errors") else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    t, i = summary.get("train") or {}, summary.get("infer") or {}
    if t.get("accelerator_utilization") is not None:
        lines += ["", f"training: AU {_num(t['accelerator_utilization'])}, input wait "
                      f"{_num(t.get('input_wait_fraction'))} (of the measured steps; "
                      f"{'emulated accelerators' if t.get('emulated') else t.get('model', 'model')})"]
    quality = [f"validation AUC {_num(t.get('val_auc'))}" if t.get("val_auc") is not None else None,
               f"patch AUC {_num(i.get('patch_auc'))}" if i.get("patch_auc") is not None else None,
               f"slide AUC {_num(i.get('slide_auc'))}" if i.get("slide_auc") is not None else None,
               f"FROC {_num(i.get('froc'))}" if i.get("froc") is not None else None,
               f"pN kappa {_num(i.get('pn_kappa'))}" if i.get("pn_kappa") is not None else None]
    if any(quality):
        lines.append("model: " + ", ".join(q for q in quality if q))
    lines += ["", f"record: {run_dir / 'summary.json'}", f"report: {run_dir / 'report.html'}"]
    return "\n".join(lines)
