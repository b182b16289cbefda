"""wsibench command line: ``main`` parses the command line and runs one command of ``harness.commands`` (one module
per command, with its parser and its printing); errors of the user's making end in one line, bugs keep their
traceback."""
from __future__ import annotations

import argparse
import signal
import sys

from .commands import COMMANDS
from .errors import Interrupted, WsibenchError

EPILOG = "Run 'wsibench COMMAND --help' for the options of each command."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wsibench", epilog=EPILOG,
                                description="Benchmark the whole digital-pathology pipeline (annotations -> masks -> "
                                            "patches -> TFRecords -> training -> inference) on real engines and storage.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub).set_defaults(fn=command.run)
    return p


def main(argv=None) -> int:
    def terminate(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)  # like Ctrl-C: the run records that it was interrupted
    try:
        return args.fn(args)
    except WsibenchError as e:  # the user's to fix: one line; anything else is a bug and keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
