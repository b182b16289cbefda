"""Options shared by several commands, defined once (argparse parents), and argparse types."""
from __future__ import annotations

import argparse


def unit_interval(text: str) -> float:
    """A number from 0 to 1 (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"{v:g} is not between 0 and 1")
    return v


def _parent(*args, **kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(*args, **kw)
    return p


SHARED = {
    "results": lambda: _parent("--results", default="results", help="results folder (default ./results)"),
    "storage": lambda: _parent("--storage", help="storage profile name (storage_profiles/NAME.toml) or path "
                                                 "(default: the workload's)"),
    "strict": lambda: _parent("--strict", action="store_true",
                              help="refuse a storage root whose file-system type differs from the profile's claim"),
    "drop_caches": lambda: _parent("--drop-caches", action="store_true",
                                   help="drop the page cache before each stage (root only), so reads come from storage"),
    "workload": lambda: _parent("workload", help="workload TOML file"),
    "observe": lambda: _parent("--observe", action="store_true",
                               help="count every I/O request (per stage: operations, sizes, latencies, a timeline) "
                                    "through an unthrottled FUSE passthrough of the storage root (root and /dev/fuse "
                                    "needed); emulated profiles always count"),
}


def parents(*names: str) -> list[argparse.ArgumentParser]:
    return [SHARED[n]() for n in names]
