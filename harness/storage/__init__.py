"""Storage: where a path lives (the mount table), so that a run records what it really ran on."""
from __future__ import annotations

import os
from pathlib import Path


def mount_info(path: str | Path) -> dict:
    """The mount holding ``path``: {mountpoint, fstype, source, options} from /proc/mounts."""
    path = os.path.realpath(path)
    best = {"mountpoint": "/", "fstype": None, "source": None, "options": {}}
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best["mountpoint"]):
            opts = dict((o.split("=", 1) + [True])[:2] for o in parts[3].split(","))
            best = {"mountpoint": mnt, "fstype": parts[2], "source": parts[0], "options": opts}
    return best
