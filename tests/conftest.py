import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from harness.slides import synth
from harness.slides.synth import Layout

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
os.environ.setdefault("WSIBENCH_QUIET", "1")

# The quick tier (scripts/test --quick: pytest -m "not slow") leaves out the tests marked slow: those that start
# Spark or Dask clusters, train TensorFlow, run fio, mount emulated (FUSE) storage, use Horovod or the MooseFS lab,
# or take minutes. CI runs everything.
ENGINES = ["local", "multiprocessing", pytest.param("dask", marks=pytest.mark.slow),
           pytest.param("spark", marks=pytest.mark.slow)]


@contextlib.contextmanager
def local_root(path) -> Iterator[None]:
    """The `local` storage profile's root (WSIBENCH_LOCAL_ROOT) at path for the block."""
    os.environ["WSIBENCH_LOCAL_ROOT"] = str(path)
    try:
        yield
    finally:
        del os.environ["WSIBENCH_LOCAL_ROOT"]


def shared(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"reference data {p} is absent")
    return p


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """4 training slides (2 normal, 2 tumor) and 2 test slides, 8192 px, seed 5; difficulty 0 (an easy task: the
    tests that use it check the machinery, not how hard the classifier has to learn; the quickstart does that)."""
    out = tmp_path_factory.mktemp("synth") / "camelyon"
    synth.generate(out, slides=6, size=8192, seed=5, tumor_fraction=0.5, test_fraction=0.34, difficulty=0.0)
    return out


def truth(dataset: Path, slide: str) -> Layout:
    return Layout.from_json(json.loads((dataset / "ground_truth" / f"{slide}.json").read_text()))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# Tests that write records of other schema versions on purpose put them under a folder of this name.
FOREIGN_RECORDS = "foreign-records"


def record_problems(base: Path) -> tuple[int, list[str]]:
    """(records found, the first problem of each that departs from docs/run-record.schema.json) for every
    summary.json under base, except those under a FOREIGN_RECORDS folder."""
    from harness.results import schema

    paths = [p for p in sorted(base.rglob("summary.json")) if FOREIGN_RECORDS not in p.relative_to(base).parts]
    bad = []
    for path in paths:
        try:
            found = schema.problems(json.loads(path.read_text()), str(path))
        except ValueError as e:
            found = [f"{path}: not JSON: {e}"]
        if found:
            bad.append(found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""))
    return len(paths), bad


@pytest.fixture(scope="session", autouse=True)
def run_records_match_their_schema(tmp_path_factory):
    """At the end of the session, every run record the tests wrote (summary.json under pytest's base temp
    folder) must validate against the schema; the session fails naming the file and the JSON path."""
    yield
    n, bad = record_problems(tmp_path_factory.getbasetemp())
    if bad:
        pytest.fail(f"{len(bad)} of {n} run records written by the tests do not match docs/run-record.schema.json:\n"
                    + "\n".join(bad), pytrace=False)
