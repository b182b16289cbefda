"""Engines: local, multiprocessing, Dask and Spark behind one small interface (``base.Engine``).

A stage never knows which engine runs it: its driver asks for an engine by name and maps its per-item function
over the items. The names and where each implementation lives are in ``harness.registry.ENGINE_CLASSES``.
"""
from __future__ import annotations

from ..registry import ENGINE_CLASSES, load
from .base import Engine, Outcome, call, echo, error_text, measure, package_zip, run_all

__all__ = ["Engine", "Outcome", "call", "echo", "error_text", "make_engine", "measure", "package_zip",
           "run_all"]


def make_engine(name: str, workers: int = 1, retries: int = 0, **options) -> Engine:
    """An engine by name; options: ``address`` (dask), ``master`` and ``conf`` (spark)."""
    return load(ENGINE_CLASSES, "engine", name)(workers=workers, retries=retries, **options)
