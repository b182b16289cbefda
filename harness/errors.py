"""The project's error base class.

A ``WsibenchError`` is a problem the user can fix from its message alone: the message names the file, the key or
the stage, and what was expected. The CLI prints such an error as one line; any other exception is a bug and
keeps its traceback.
"""
from __future__ import annotations

import re


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


def tf_cause(message: str) -> str:
    """What a TensorFlow error says about the cause, without its internals: the wrapped function's name
    (``{{function_node __wrapped__IteratorGetNext_...device:CPU:0}}``), the op (``[Op:IteratorGetNext]``) and a
    trailing ``name:``, the lines after the first (``[[{{node DecodeJpeg}}]]``) and tf.data's "Error in user-defined
    function passed to ... Iterator::Root::...:". "corrupted record at 142765" stays, offset and all."""
    text = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"^Error in user-defined function passed to \S+ transformation with iterator: Iterator(::\w+)+: ", "",
                  text)  # tf.data's wrapping of an error in a dataset's function (a decode_jpeg's, for one)
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    text = re.sub(r"\s*name:\s*\S*\s*$", "", text)
    return text.strip() or "(no message)"


def describe(e: BaseException) -> str:
    """An exception in one line, as records and item errors carry it: ``Type: message``. TensorFlow's errors keep
    their cause (and any file or offset it names) without TensorFlow's internals (``tf_cause``)."""
    if type(e).__module__.startswith("tensorflow"):
        return f"{type(e).__name__}: {tf_cause(getattr(e, 'message', None) or str(e))}"
    return f"{type(e).__name__}: {e}"
