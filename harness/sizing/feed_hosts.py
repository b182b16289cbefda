"""The accelerators N client hosts feed, from an MLPerf-mode feed measured on fewer hosts of the same storage.

What stays a host's own as hosts are added: its link and its client (mfsmount, an NFS client), so a host whose
ranks are as many as a probe's sees that probe's pace, until the storage targets bind. What changes: the bytes read
for a consumed sample. Each accelerator reads its own shards (DLIO's TF reader, sorted and dealt round-robin) wholly
in an epoch, but consumes only the steps every rank can take (``feed.steps_per_epoch``), and each epoch's read-ahead
runs on into the next pass (``tfdata.mlperf_dataset``): bytes the storage serves and no step consumes, about the same
for every rank. With more accelerators, each has fewer shards, so these bytes weigh more. On the MooseFS lab (49
shards of 1 MB, 18,167 B records) they were 1.11x the consumed bytes at 3 accelerators, 1.24x at 6, 1.38x at 9.

So the AU of ``n`` accelerators on ``hosts`` hosts (barrier every step: all go at the busiest host's pace, the
host with r = ceil(n / hosts) ranks) is the AU the feed measured with r ranks a host, times the bytes read a
consumed sample there over those at n (``read_factor``), capped by the storage targets: the hosts' wire rates (the
probe's delivered bytes a second, per host) summed against the targets' bandwidth. This holds where the probe was
bound by what its host could read; a probe whose AU was set by something else (its ranks' compute) is scaled as if
bound, which understates.
"""
from __future__ import annotations

import math
import statistics

from ..tfrecord_format import steps_per_epoch


def read_factor(n: int, shard_records: list[int], batch: int, record_bytes: float, overread: float) -> float | None:
    """Bytes read a consumed sample over the record's bytes, for ``n`` accelerators: every shard read once
    (the dataset's bytes) and ``overread`` bytes a rank (its read-ahead into the next pass), over what the ranks
    consume (``n`` x the steps every one can take x ``batch`` records). None where ``n`` ranks cannot take a step."""
    steps = steps_per_epoch(shard_records, n, batch) if n <= len(shard_records) else 0
    if steps < 1:
        return None
    return (sum(shard_records) * record_bytes + n * overread) / (n * steps * batch * record_bytes)


def record_bytes(feed: dict) -> float:
    """A sample's bytes as the feed's ranks consumed them (framing included): the median over its probes."""
    return statistics.median(p["bytes_per_sample"] for p in feed["probes"] if p.get("bytes_per_sample"))


def measured_runs(probe: dict) -> list[dict]:
    return [r for r in probe.get("runs") or [] if not r.get("warmup")]


def overread(probes: list[dict], shard_records: list[int], record_bytes: float) -> float:
    """The bytes a rank read an epoch beyond the dataset's share (median over the feed's measured runs):
    (bytes read in an epoch - the dataset's bytes) / ranks."""
    data = sum(shard_records) * record_bytes
    seen = [(r["bytes_read"] / max(1, len(r.get("epochs") or [1])) - data) / p["accelerators"]
            for p in probes for r in measured_runs(p) if r.get("bytes_read")]
    return max(0.0, statistics.median(seen)) if seen else 0.0


def au_on_hosts(feed: dict, n: int, hosts: int, server_bandwidth: float | None = None) -> dict | None:
    """The AU of ``n`` accelerators on ``hosts`` client hosts from ``feed`` (an MLPerf-mode feed's record: its
    ``probes``, ``hosts``, ``batch`` and ``dataset.shard_records``), with how; None where the
    feed probed no count with as many ranks a host."""
    fed_hosts = feed.get("hosts") or 1
    per_host = math.ceil(n / hosts)
    probes = {p["accelerators"]: p for p in feed["probes"]}
    probe = probes.get(per_host * fed_hosts)
    records, batch, b = feed["dataset"]["shard_records"], feed["batch"], record_bytes(feed)
    # on at least the feed's hosts, n ranks can also run as the feed ran them: its AU at n is one placement's
    # (before: 8 hosts scaled to 1 GPU from a host that fed 2, each rank's read-on weighing more at 2 ranks on 2
    # hosts than the one-host probe at 2 had measured)
    ran = probes.get(n) if hosts >= fed_hosts and probes.get(n, {}).get("au_median") is not None else None
    measured = ran and {"au": ran["au_median"], "probe": n, "how": f"AU {ran['au_median']:.3f} measured with {n} "
                        f"accelerators on {fed_hosts} host{'s' * (fed_hosts != 1)}, which {hosts} can run as they ran"}
    if probe is None:
        return measured or None
    e = overread(feed["probes"], records, b)
    there = read_factor(probe["accelerators"], records, batch, b, e)
    here = read_factor(n, records, batch, b, e)
    if here is None or there is None:
        return None
    au = min(1.0, probe["au_median"] * there / here)
    how = (f"AU {probe['au_median']:.3f} measured with {per_host} ranks a host ({probe['accelerators']} on "
           f"{fed_hosts}), "
           f"x {there:.3f} / {here:.3f} bytes read a consumed sample there / here ({e / 1e6:.2f} MB a rank an epoch "
           "read on into the next pass)")
    wire = probe.get("delivered_mib_per_s")
    if server_bandwidth and wire:
        total = wire * 2**20 / fed_hosts * hosts  # every host's link as busy as the probe's hosts' were
        if total > server_bandwidth:
            au *= server_bandwidth / total
            how += f"; the storage targets bind: {total / 1e6:.1f} MB/s asked, {server_bandwidth / 1e6:.1f} MB/s"
    if measured and measured["au"] > au:
        return measured
    return {"au": au, "how": how, "probe": probe["accelerators"]}


def accelerators_on_hosts(feed: dict, hosts: int, threshold: float,
                          server_bandwidth: float | None = None) -> dict | None:
    """The most accelerators ``hosts`` hosts keep at AU >= ``threshold`` (``au_on_hosts`` for each count up to
    ``hosts`` x the ranks a host the feed probed), and whether that is only a floor (every count it could judge
    held); None where the feed's first count already misses on its hosts."""
    fed_hosts = feed.get("hosts") or 1
    probed = max((p["accelerators"] for p in feed["probes"]), default=0) // fed_hosts
    best, last, capped = 0, None, True
    for n in range(1, hosts * probed + 1):
        a = au_on_hosts(feed, n, hosts, server_bandwidth)
        if a is None:
            continue
        if a["au"] < threshold:
            capped = False
            break
        best, last = n, a
    if not best:
        return None
    return {"accelerators": best, "at_least": capped, "how": last["how"], "au": last["au"]}
