"""The workers of one stage against each other: items scheduled as the engines do (``makespan``), and their waits
on the locks of the folders they create, rename and unlink in (``folder_contention``)."""
from __future__ import annotations

from .costs import cost


def serialised_seconds(p: dict, costs: dict) -> float:
    """Seconds the stage's namespace operations (``patterns`` ``p``) take one after the other on a storage of
    these ``costs``: creates (and mkdirs), renames and unlinks, each at its measured cost."""
    return sum(p[k] * (cost(costs, c) or 0.0) for k, c in (("files_written", "create"), ("renames", "rename"),
                                                           ("unlinks", "unlink")))


def folder_shares(prof: dict) -> list[float] | None:
    """Each folder's share of a stage's namespace operations, from its io_profile (the folders it does not name
    share the rest equally); None for a profile that did not count them (recorded before they were)."""
    by, total = prof.get("namespace_operations_by_folder"), prof.get("namespace_operations")
    if by is None or not total:
        return None
    shares = [c / total for c in by.values()]
    rest, others = 1.0 - sum(shares), (prof.get("namespace_folders") or len(by)) - len(by)
    if rest > 1e-9 and others > 0:
        shares += [rest / others] * others
    return shares or None


def folder_contention(work: float, serial: float, shares: list[float], workers: int) -> float:
    """How much longer ``workers`` take over ``work`` seconds of their items (all workers' together) when
    ``serial`` of those seconds are namespace operations, each holding its folder's lock (the kernel holds a
    folder's lock through a create, rename or unlink in it, on every Linux file system, across the round trip to
    the file server), split over the folders by ``shares``; against the same work with no lock to wait for.
    Exact mean value analysis of a closed system: each worker alternates its own work (a delay) with an operation
    queued at one folder's lock. 1.0 for one worker. It models the workers of one host (one client's kernel):
    workers on several hosts meet only at the server's own lock, held for the server's part of each operation,
    so across hosts it over-states the wait."""
    if workers <= 1 or serial <= 0 or work <= 0:
        return 1.0
    z = max(work - serial, 0.0)
    d = [serial * f for f in shares]
    q = [0.0] * len(d)
    for n in range(1, workers + 1):
        r = [dk * (1 + qk) for dk, qk in zip(d, q)]
        x = n / (z + sum(r))
        q = [x * rk for rk in r]
    return (z + sum(r)) / (z + serial)


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of items taken in order by the first free of ``workers`` workers (the engines' scheduling)."""
    free = [0.0] * max(1, workers)
    for d in durations:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += d
    return max(free)
