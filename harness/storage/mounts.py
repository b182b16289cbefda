"""Mounts: where a path lives (the mount table), whether a root can be used, the page cache."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import WsibenchError


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


class StorageError(WsibenchError, RuntimeError):
    """A storage root that cannot be used; raised before any work starts."""


def check_claim(profile, mount: dict) -> str | None:
    """A message when the mount's real type is not what the profile claims, else None."""
    want = profile.fstype
    got = mount.get("fstype") or ""
    if not want or got == want or got.startswith(want + ".") or (want == "nfs" and got in ("nfs", "nfs4")):
        return None
    return (f"storage profile {profile.name!r} claims {want!r} but {mount['mountpoint']} is {got!r}"
            f" (source {mount.get('source')})")


def nfs_options(mount: dict) -> dict:
    o = mount.get("options", {})
    return {k: o[k] for k in ("vers", "rsize", "wsize", "nconnect", "proto", "hard", "soft") if k in o}


def check_writable(profile, root: Path) -> None:
    if not root.exists():
        if not profile.create:
            raise StorageError(f"storage profile {profile.name!r}: root {root} does not exist (is it mounted?)")
        root.mkdir(parents=True, exist_ok=True)
    if not root.is_dir():
        raise StorageError(f"storage profile {profile.name!r}: root {root} is not a folder")
    probe = root / f".wsibench-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise StorageError(f"storage profile {profile.name!r}: root {root} is not writable: {e.strerror}") from None


def drop_caches() -> bool:
    """Drop the page cache (root only); False, with a warning, where that is not possible."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        print(f"[storage] warning: cannot drop the page cache ({e.strerror}); figures may come from memory",
              file=sys.stderr)
        return False


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).exists() else 0
