"""Matrix expansion (engines x workers x storage profiles) and the statistics of repeated runs.
Running a matrix is ``harness.matrix``'s."""
from __future__ import annotations

import itertools

import numpy as np

from ..config import Workload
from . import HEADLINE, config_key

SPREAD_LIMIT = 0.05


def expand(w: Workload) -> list[dict]:
    m = w.matrix
    return [{"engine": e, "workers": n, "storage": s} for s, e, n in itertools.product(
        m.storage or [w.storage], m.engines or [w.engine.name], m.workers or [w.engine.workers])]


def aggregate(summaries: list[dict], measure: list[str]) -> list[dict]:
    """Per configuration and measured stage: mean, std, min, max of the stage's headline throughput."""
    groups: dict[str, list[dict]] = {}
    for s in summaries:
        groups.setdefault(config_key(s), []).append(s)
    out = []
    for key, runs in groups.items():
        for stage in measure:
            metric = HEADLINE[stage]
            vals = [v for v in ((r.get("stages", {}).get(stage) or {}).get(metric) for r in runs) if v is not None]
            if not vals:
                out.append({"config": key, "stage": stage, "metric": metric, "n": 0, "failed": len(runs)})
                continue
            a = np.asarray(vals, float)
            spread = float((a.max() - a.min()) / a.mean()) if a.mean() else 0.0
            out.append({"config": key, "stage": stage, "metric": metric, "n": len(a), "mean": float(a.mean()),
                        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "min": float(a.min()),
                        "max": float(a.max()), "spread": spread, "flagged": spread > SPREAD_LIMIT,
                        "runs": [r["run_id"] for r in runs], "failed": len(runs) - len(a)})
    return out
