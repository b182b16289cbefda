"""wsibench calibrate: the workload's model's real training step and inference throughput on this machine."""
from __future__ import annotations

import json
import sys

from ..config import load_workload
from .options import parents


def add(sub):
    from ..models import MODELS

    s = sub.add_parser("calibrate", parents=parents("workload", "results"),
                       help="measure the real training step and inference throughput of the workload's model here",
                       description="Time training steps (model.compile + train_on_batch, the loss read back each "
                                   "step) and forward passes at the infer stage's batch (predict_on_batch) of the "
                                   "workload's model, random data, on this machine's device, with Keras 3 on the "
                                   "backend installed: TensorFlow, JAX or PyTorch (KERAS_BACKEND chooses; "
                                   "TensorFlow is not needed). Stored under RESULTS/calibration/ for "
                                   "train.accelerator = 'calibrated' and wsibench size.")
    s.add_argument("--model", choices=list(MODELS), help="override the workload's model")
    s.add_argument("--batch", type=int, help="override the workload's training batch size")
    s.add_argument("--infer-batch", type=int, help="inference batch (default: the workload's infer.batch_size)")
    s.add_argument("--steps", type=int, default=10, help="measured steps and forward passes (default 10)")
    s.add_argument("--warmup", type=int, default=3, help="unmeasured first calls: tracing, compilation (default 3)")
    return s


def run(a) -> int:
    from .. import calibrate

    w = load_workload(a.workload)
    result, out = calibrate.calibrate_workload(w, a.results, model=a.model, batch=a.batch, infer_batch=a.infer_batch,
                                               steps=a.steps, warmup=a.warmup,
                                               progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=1))
    print(f"[calibrate] {out}; use it with train.accelerator = \"calibrated\", or in wsibench size --accelerator "
          f"{out.stem}", file=sys.stderr)
    return 0
