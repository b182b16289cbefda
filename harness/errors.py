"""The project's error base class.

A ``WsibenchError`` is a problem the user can fix from its message alone: the message names the file, the key or
the stage, and what was expected. The CLI prints such an error as one line; any other exception is a bug and
keeps its traceback.
"""
from __future__ import annotations


class WsibenchError(Exception):
    """A problem with the user's input, data, storage or set-up, explained in one line."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run records ``interrupted`` with what it completed, then stops."""


class StageInputError(WsibenchError, RuntimeError):
    """A stage's input is missing: an earlier stage has to run first."""


class DataError(WsibenchError, RuntimeError):
    """A dataset, slide or shard that cannot be used as it is; the message names the file."""


class RunError(WsibenchError, RuntimeError):
    """A part of a run that failed outside the stages' items (a training rank, an engine's job, a launcher)."""


class UnknownName(WsibenchError, ValueError):
    """A name that no registry knows (engine, stage, model, accelerator); the message lists the known ones."""


class MissingExtra(WsibenchError, ImportError):
    """An implementation whose optional dependencies are not installed; the message names the extra."""
