"""The registries of the pipeline's stages (in pipeline order) and its engines.

Each entry names where its implementation lives (``module:attribute``) and the pip extra that installs what it
needs. Nothing is imported until a name is used, so configuration can list the allowed names without loading
TensorFlow, Dask or Spark. An unknown name lists the known ones; an implementation whose extra is missing says
which extra to install. (The other axes keep their registries beside the files they read and write: models in
``harness.models``, accelerators with their calibrations in ``harness.accelerators``, storage profiles as TOML
files in ``storage_profiles/``.)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import MissingExtra, UnknownName


@dataclass(frozen=True)
class Entry:
    target: str                 # "module:attribute"
    extra: str | None = None    # the pip extra that installs its dependencies
    summary: str = ""
    fixed_workers: int | None = None  # an engine that always runs this many workers, whatever is asked


STAGE_DRIVERS = {  # pipeline order: the driver of each stage
    "masks": Entry("harness.stages.masks:drive", None, "tumor masks from annotations, tissue masks from pixels"),
    "patches": Entry("harness.stages.patches:drive", None, "labelled patch grid cut into JPEG files or records"),
    "tfrecords": Entry("harness.stages.tfrecords:drive", None, "shuffled TFRecord shards, split by slide"),
    "train": Entry("harness.stages.train:drive", "tf", "the classifier, timed step by step"),
    "infer": Entry("harness.stages.infer:drive", "tf", "heatmaps, patch and slide AUC on the test slides"),
}

ENGINE_CLASSES = {
    "local": Entry("harness.engines.local:LocalEngine", None, "in-process, one item after the other", 1),
    "multiprocessing": Entry("harness.engines.local:ProcessEngine", None, "a pool of processes on this host"),
    "dask": Entry("harness.engines.dask_engine:DaskEngine", "dask", "an embedded LocalCluster or a cluster"),
    "spark": Entry("harness.engines.spark_engine:SparkEngine", "spark", "local[N] or a cluster master"),
}


def known(table: dict, kind: str, name: str) -> Entry:
    """The entry of ``name``, or an error listing the known names."""
    if name not in table:
        raise UnknownName(f"unknown {kind} {name!r}; known: {', '.join(table)}")
    return table[name]


def load(table: dict, kind: str, name: str):
    """Import and return the implementation of ``name``."""
    entry = known(table, kind, name)
    module, attr = entry.target.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as e:
        if entry.extra and not (e.name or "").startswith("harness"):
            raise MissingExtra(f"{kind} {name!r} needs {e.name}, which is not installed: "
                               f"pip install 'wsibench[{entry.extra}]'") from e
        raise
