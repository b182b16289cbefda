"""Progress of long work, for a person: a bar with rate and ETA where standard error is a terminal (tqdm), one line
per item where it is not (CI, logs), so a log keeps every item's time. Failures are always printed.
``WSIBENCH_QUIET=1`` keeps only the failures."""
from __future__ import annotations

import os
import sys
import time


class Progress:
    """``with Progress(total, label, unit) as p: p.done(name, seconds, error)`` per item."""

    def __init__(self, total: int, label: str, unit: str = "item", stream=None, quiet: bool | None = None,
                 lines: bool = True):
        """``lines=False``: no line per item where there is no terminal (many small items: training steps)."""
        self.total, self.label, self.unit, self.lines = total, label, unit, lines
        self.stream = stream or sys.stderr
        self.quiet = bool(os.environ.get("WSIBENCH_QUIET")) if quiet is None else quiet
        self.n, self.t0, self.bar = 0, time.perf_counter(), None
        if not self.quiet and self.stream.isatty() and total > 1:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"[{label}]", unit=unit, file=self.stream, dynamic_ncols=True,
                            leave=False, smoothing=0.1)

    def __enter__(self):
        return self

    def done(self, name: str = "", seconds: float | None = None, error: str | None = None) -> None:
        self.n += 1
        line = (f"[{self.label}] {self.n}/{self.total} ({time.perf_counter() - self.t0:.0f}s) {name}: "
                + (f"FAILED {error}" if error else f"{seconds:.1f}s" if seconds is not None else "done"))
        if self.bar is not None:
            if error:
                self.bar.write(line, file=self.stream)
            self.bar.update(1)
        elif error or (self.lines and not self.quiet):
            print(line, file=self.stream, flush=True)

    def note(self, text: str, fallback=None) -> None:
        """A line for the person watching, above the bar where there is one (else through ``fallback``, or printed)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            (fallback or (lambda t: print(t, file=self.stream, flush=True)))(text)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False
