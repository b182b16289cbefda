"""What every section of the report shares: the runs, their comparison table, the configurations they form (each
with one colour and one short label for the whole report) and the baseline the ratios are taken against.

A configuration is a workload run with one engine set-up on one storage profile; runs of it are repetitions.
Runs that prepared another run's inputs (tag ``role = prepare``) and failed runs are listed, not compared.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..errors import WsibenchError
from ..results import HEADLINE, UNITS, table

# Okabe-Ito (colour-blind safe, without its yellow), then further distinct hues
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#7F7F7F", "#8C564B", "#6A3D9A",
           "#BCBD22", "#1F3A93", "#A6761D"]
STAGE_NAMES = {"masks": "mask stage", "patches": "patch stage", "tfrecords": "TFRecord stage", "train": "training",
               "infer": "inference"}


class BaselineError(WsibenchError, ValueError):
    """--baseline names no configuration, or several."""


@dataclass
class Config:
    key: str
    workload: str
    engine: str
    workers: int | None
    storage: str
    emulated: bool
    kind: str                   # "pipeline" or "feed"
    nodes: int | None = None    # hosts of a cluster engine, where the run was given a node count
    runs: list[dict] = field(default_factory=list)
    label: str = ""
    colour: str = ""
    baseline: bool = False
    lab: bool = False           # ran on the MooseFS lab: a real file system, its servers and clients on one machine


@dataclass
class Stat:
    mean: float
    min: float
    max: float
    n: int

    @property
    def spread(self) -> float:
        return (self.max - self.min) / self.mean if self.mean else 0.0


@dataclass
class Context:
    runs: list[dict]            # every run given, in order
    df: pd.DataFrame            # one row per run (results.table), with the run's configuration key in "cfg"
    configs: dict[str, Config]  # compared configurations, in the order they first ran
    baseline: Config
    title: str
    findings: list[str] = field(default_factory=list)
    sizing: list[dict] = field(default_factory=list)  # wsibench size answers found beside the runs
    unreadable: list[str] = field(default_factory=list)  # records left out: one line each, naming the file

    @property
    def comparing(self) -> bool:
        """More than one pipeline configuration: ratios against a baseline mean something."""
        return len(self.pipeline) > 1

    @property
    def pipeline(self) -> list[Config]:
        return [c for c in self.configs.values() if c.kind == "pipeline"]

    @property
    def feeds(self) -> list[Config]:
        return [c for c in self.configs.values() if c.kind == "feed"]

    def rows(self, cfg: Config) -> pd.DataFrame:
        return self.df[self.df["cfg"] == cfg.key]

    def stat(self, cfg: Config, column: str) -> Stat | None:
        """Mean, min, max and count of a column over the configuration's runs (None where none measured it)."""
        if column not in self.df:
            return None
        v = pd.to_numeric(self.rows(cfg)[column], errors="coerce").dropna().to_numpy(float)
        return Stat(float(v.mean()), float(v.min()), float(v.max()), len(v)) if len(v) else None

    def base_for(self, cfg: Config) -> Config | None:
        """The configuration cfg is compared with: the baseline where it ran the same workload; otherwise, in cfg's
        workload, the configuration with the baseline's engine, workers and storage, else that workload's first.
        Feed results compare with the feed on the baseline's storage, else the first feed."""
        b = self.baseline
        if cfg.kind == "feed":
            same = [c for c in self.feeds if c.storage == b.storage] or self.feeds
            return same[0] if same else None
        if cfg.workload == b.workload:
            return b
        peers = [c for c in self.pipeline if c.workload == cfg.workload]
        like = [c for c in peers if (c.engine, c.workers, c.storage) == (b.engine, b.workers, b.storage)]
        return (like or peers)[0]

    def ratio(self, cfg: Config, column: str) -> float | None:
        """cfg's mean over its comparison configuration's mean (None where either is missing)."""
        base = self.base_for(cfg)
        a, b = self.stat(cfg, column), self.stat(base, column) if base else None
        return a.mean / b.mean if a and b and b.mean else None

    def cached(self) -> list[dict]:
        """Compared runs whose reads may have come from the page cache (flagged by the run record)."""
        return [s for c in self.configs.values() for s in c.runs
                if (s.get("page_cache") or {}).get("potential_caching")]

    def stages(self) -> list[str]:
        """Stages with a measured headline figure in some compared run, in pipeline order."""
        return [s for s in HEADLINE if self.headline(s) in self.df and self.df[self.headline(s)].notna().any()]

    @staticmethod
    def headline(stage: str) -> str:
        return f"{stage}_{HEADLINE[stage]}"

    @staticmethod
    def unit(stage: str) -> str:
        return UNITS[stage]


def _key(s: dict) -> tuple:
    e, st = s.get("engine") or {}, s.get("storage") or {}
    kind = "feed" if s.get("feed") is not None else "pipeline"
    per = e.get("per_stage") or {}
    engine = e.get("name", "?") + ("+" + ",".join(f"{k}={v}" for k, v in sorted(per.items())) if per else "")
    nodes = e.get("nodes") if e.get("nodes_requested") else None
    return (kind, s.get("workload") or "?", engine, e.get("workers"), st.get("profile") or "?",
            bool(st.get("emulated")), nodes)


def _labels(configs: list[Config]) -> None:
    """Short labels: only what tells the configurations apart ('nfs-emulated' where only storage varies)."""
    pipe = [c for c in configs if c.kind == "pipeline"]
    vary = {a: len({getattr(c, a) for c in pipe}) > 1 for a in ("workload", "engine", "workers", "storage", "nodes")}
    for c in configs:
        if c.kind == "feed":
            c.label = f"feed @ {c.storage}"
            continue
        engine = f"{c.engine} ×{c.workers}" if c.workers else c.engine
        if c.nodes and (vary["nodes"] or c.nodes > 1):
            engine += f" · {c.nodes} node{'s' if c.nodes != 1 else ''}"
        if vary["engine"] or vary["workers"] or vary["nodes"]:
            core = engine + (f" @ {c.storage}" if vary["storage"] else "")
        else:
            core = c.storage if vary["storage"] else f"{engine} @ {c.storage}"
        c.label = f"{c.workload} · {core}" if vary["workload"] else core


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("×", "x").replace("·", " ").replace("x ", "x").split())


def _pick(configs: list[Config], name: str | None) -> Config:
    """The baseline: the first pipeline configuration, or the one whose label (or key) is ``name`` or uniquely
    contains it (× may be typed x); pipeline configurations are preferred to feed ones."""
    pipeline = [c for c in configs if c.kind == "pipeline"]
    if not name:
        return (pipeline or configs)[0]
    want = _norm(name)
    for pool in (pipeline, configs):
        for exact in (True, False):
            hits = [c for c in pool if any(want == _norm(t) if exact else want in _norm(t) for t in (c.label, c.key))]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise BaselineError(f"--baseline {name!r} matches {len(hits)} configurations: "
                                    + "; ".join(c.label for c in hits) + " (name one of them)")
    raise BaselineError(f"--baseline {name!r} names no configuration; these are: "
                        + "; ".join(c.label for c in configs))


def build_context(runs: list[dict], baseline: str | None, title: str) -> Context:
    df = table(runs)
    configs: dict[str, Config] = {}
    keys = []
    for s, role in zip(runs, df["role"]):
        kind, workload, engine, workers, storage, emulated, nodes = _key(s)
        key = f"{kind}:{workload}:{engine} x{workers}{f' on {nodes} nodes' if nodes else ''} @ {storage}"
        compared = s.get("status") != "failed" and role != "prepare"
        keys.append(key if compared else None)
        if compared:
            c = configs.setdefault(key, Config(key, workload, engine, workers, storage, emulated, kind, nodes))
            c.lab = c.lab or bool((s.get("storage") or {}).get("lab"))
            c.runs.append(s)
    df["cfg"] = keys
    if not configs:
        raise WsibenchError("no run to compare: every run given failed or only prepared another's inputs")
    ordered = list(configs.values())
    _labels(ordered)
    for i, c in enumerate(ordered):
        c.colour = PALETTE[i % len(PALETTE)]
    base = _pick(ordered, baseline)
    base.baseline = len(ordered) > 1  # marked only where there is something to compare
    return Context(runs, df, configs, base, title)
