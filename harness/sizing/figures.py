"""What every part of the sizing shares: a figure (a value, its unit, the measurement it came from), the error
raised where the inputs cannot answer, and the constants."""
from __future__ import annotations

from ..errors import WsibenchError

MiB = 2 ** 20
SMALL_FILE_BYTES = 32 * 1024   # the size of the small files of ``wsibench fio``'s jpeg jobs
SECONDS_PER_DAY = 86400
# the resources of the cluster answer (sizing.budget), as a reader is told what binds
NAMES = {"chain": "the items' own chains", "link_read": "client link (reads)", "link_write": "client link (writes)",
         "cores": "host CPU", "folder_locks": "folder locks (each host's kernel)",
         "server_read": "storage targets (reads)", "server_write": "storage targets (writes)",
         "server_files": "storage targets (small files)", "metadata": "metadata server", "gpus": "the GPUs"}


class SizingError(WsibenchError, ValueError):
    """Sizing inputs that cannot answer the question asked (no measured run, no characterisation)."""


def figure(value, unit: str, source: str) -> dict:
    """A figure with its unit and the measurement it came from."""
    return {"value": value, "unit": unit, "source": source}
