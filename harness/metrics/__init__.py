"""Figures: AUC, step-time arithmetic (input wait, accelerator utilisation), resource samplers."""
from __future__ import annotations

import os
import threading
import time

import numpy as np


def auc(scores, labels) -> float | None:
    """ROC AUC by the rank statistic (ties averaged); None when one class is absent."""
    s = np.asarray(scores, float)
    y = np.asarray(labels).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), float)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_curve(scores, labels, points: int = 101) -> dict:
    s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    thr = np.unique(np.quantile(s, np.linspace(0, 1, points)))[::-1]
    tpr = [float((s[y] >= t).mean()) if y.any() else 0.0 for t in thr]
    fpr = [float((s[~y] >= t).mean()) if (~y).any() else 0.0 for t in thr]
    return {"fpr": [0.0] + fpr + [1.0], "tpr": [0.0] + tpr + [1.0]}


def step_figures(wait, compute, images, wall_start: float | None = None, wall_end: float | None = None) -> dict:
    """Input-wait fraction and AU over steps, the first excluded (design.md).

    wait, compute: seconds per step; images: images per step. wall_start/wall_end: the wall clock of the
    measured block (after step 0, to the end of the last step); by default the sum of wait + compute.
    """
    w, c, n = (np.asarray(a, float)[1:] for a in (wait, compute, images))
    busy = w.sum() + c.sum()
    wall = (wall_end - wall_start) if wall_start is not None and wall_end is not None else busy
    return {"measured_steps": int(len(w)), "wait_seconds": float(w.sum()), "compute_seconds": float(c.sum()),
            "wall_seconds": float(wall),
            "input_wait_fraction": float(w.sum() / busy) if busy > 0 else None,
            "accelerator_utilization": float(c.sum() / wall) if wall > 0 else None,
            "images_per_s": float(n.sum() / wall) if wall > 0 else None}


class Sampler:
    """Samples this process's CPU use, and every GPU's utilisation and memory through NVML where NVML answers,
    every ``interval`` seconds; ``summary()`` gives the means (``mean_gpu0_util_fraction``, ...)."""

    def __init__(self, interval: float = 0.5):
        import pynvml  # nvidia-ml-py

        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._nvml, self._handles = None, []
        try:
            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError:  # no driver: CPU figures only
            self._nvml = None

    def _run(self):
        t_prev, cpu_prev = time.perf_counter(), sum(os.times()[:2])
        while not self._stop.wait(self.interval):
            t, cpu = time.perf_counter(), sum(os.times()[:2])
            row = {"t": t, "cpu_fraction": (cpu - cpu_prev) / (t - t_prev) / (os.cpu_count() or 1)}
            if self._nvml:
                for i, h in enumerate(self._handles):
                    row[f"gpu{i}_util_fraction"] = self._nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100
                    row[f"gpu{i}_memory_bytes"] = self._nvml.nvmlDeviceGetMemoryInfo(h).used
            self.samples.append(row)
            t_prev, cpu_prev = t, cpu

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if self._nvml:
            self._nvml.nvmlShutdown()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        keys = [k for k in self.samples[0] if k != "t"]
        return {f"mean_{k}": float(np.mean([s[k] for s in self.samples])) for k in keys}


def cpu_busy(before, after) -> float:
    """The host's CPU busy fraction between two psutil.cpu_times() readings (all cores)."""
    idle = lambda t: t.idle + getattr(t, "iowait", 0.0)  # noqa: E731
    total = sum(after) - sum(before)
    return 1.0 - (idle(after) - idle(before)) / total if total > 0 else 0.0
