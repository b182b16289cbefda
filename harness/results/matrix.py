"""Matrix expansion (engines x workers x storage profiles) and the statistics of repeated runs.
Running a matrix is ``harness.matrix``'s."""
from __future__ import annotations

import itertools

import numpy as np

from ..config import ConfigError, STAGES, Workload
from ..registry import ENGINE_CLASSES
from . import HEADLINE, config_key

SPREAD_LIMIT = 0.05


def expand(w: Workload) -> list[dict]:
    """The configurations of a matrix; an engine with a fixed worker count (local) gets that count once, an
    embedded engine (no cluster address) one node once."""
    m = w.matrix
    out = []
    for s, e, n, k in itertools.product(m.storage or [w.storage], m.engines or [w.engine.name],
                                        m.workers or [w.engine.workers], m.nodes or [w.engine.nodes]):
        c = {"engine": e, "workers": ENGINE_CLASSES[e].fixed_workers or n, "storage": s}
        if k is not None:
            c["nodes"] = k if w.engine.is_cluster(e) else 1
        if c not in out:
            out.append(c)
    return out


def measured_stages(measure: list[str]) -> list[str]:
    """The measured stages in pipeline order; they must follow each other (a gap could not be prepared once)."""
    idx = sorted(STAGES.index(s) for s in measure)
    if idx != list(range(idx[0], idx[-1] + 1)):
        raise ConfigError(f"matrix.measure: {', '.join(measure)} leaves a gap; measure stages that follow each "
                          f"other in {', '.join(STAGES)}")
    return [STAGES[i] for i in idx]


def label(c: dict) -> str:
    nodes = f" on {c['nodes']} node{'s' if c['nodes'] != 1 else ''}" if c.get("nodes") else ""
    return f"{c['engine']} x{c['workers']}{nodes} @ {c['storage']}"


def aggregate(groups: list[dict], measure: list[str]) -> list[dict]:
    """Per configuration and measured stage: mean, std, min, max of the stage's headline throughput over the
    repetitions whose stage completed; the others are listed as failed with their errors.

    groups: [{"config": {...}, "runs": [summaries], "failures": [{"repetition", "error"}]}] (failures: runs
    that raised before their record could be used)."""
    out = []
    for g in groups:
        runs = g["runs"]
        key = config_key(runs[0]) if runs else label(g["config"])  # the topology that ran, where one did
        for stage in measure:
            metric = HEADLINE[stage]
            good, failed = [], list(g["failures"])
            for r in runs:
                rec = (r.get("stages") or {}).get(stage) or {}
                if rec.get("status") == "ok" and rec.get(metric) is not None:
                    good.append((r, rec[metric]))
                else:
                    errs = "; ".join(e["error"] for e in rec.get("errors", [])[:3]) or r.get("error") or "no figure"
                    failed.append({"repetition": (r.get("tags") or {}).get("repetition"), "run_id": r["run_id"],
                                   "error": f"{stage} {rec.get('status', 'missing')}: {errs}"})
            row = {"config": key, "stage": stage, "metric": metric, "n": len(good), "failed": len(failed),
                   "errors": failed, "runs": [r["run_id"] for r, _ in good]}
            if good:
                a = np.asarray([v for _, v in good], float)
                spread = float((a.max() - a.min()) / a.mean()) if a.mean() else 0.0
                row.update({"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                            "min": float(a.min()), "max": float(a.max()), "spread": spread,
                            "flagged": spread > SPREAD_LIMIT})
            row["status"] = "ok" if not failed else ("failed" if not good else "partial")
            out.append(row)
    return out
