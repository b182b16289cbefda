"""A worker warm-up with a known extra start-up: the stage's default warm-up (importing the mapped function's
module) after a sleep. Its own module, so that spawned workers import it by name (test_train_infer)."""
import time

from harness.engines.base import import_module


def import_after(seconds: float, module: str) -> None:
    time.sleep(seconds)
    import_module(module)
