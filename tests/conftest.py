import json
import os
from pathlib import Path

import numpy as np
import pytest

from harness.slides import synth
from harness.slides.synth import Layout

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
os.environ.setdefault("WSIBENCH_QUIET", "1")


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
