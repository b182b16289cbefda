"""Storage: profiles' roots readied for a run (``attached``: attach.py), the mount table and root checks
(mounts.py), emulated and observing FUSE passthroughs (emulate.py) and their counters (iostats.py), fio
characterisations (fio.py, characterisations.py)."""
from .attach import Attached, attached
from .mounts import StorageError, check_claim, check_writable, drop_caches, folder_bytes, mount_info, nfs_options

__all__ = ["Attached", "StorageError", "attached", "check_claim", "check_writable", "drop_caches", "folder_bytes",
           "mount_info", "nfs_options"]
