"""Storage attached for a run, in one place: ``attached(profile, ...)`` mounts what the profile's kind needs (an
emulated profile's throttled passthrough), checks the root, takes the workload's folder lock, mounts the counting
passthrough over the root when asked to observe, and names the newest ``wsibench fio`` characterisation of the
profile; it yields an ``Attached``: the root to work under and the run record's storage section. ``wsibench run``,
``wsibench feed`` and ``wsibench fio`` all attach storage this way.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..cputime import busy_cpu_seconds
from ..fsutil import check_name, workload_lock
from .mounts import StorageError, check_claim, check_writable, mount_info, nfs_options
from .characterisations import latest as latest_characterisation


@dataclass
class Attached:
    profile: object          # config.StorageProfile
    root: Path               # where the stages read and write: the profile's root, or the observing passthrough
    real_root: Path          # the profile's root itself
    record: dict             # the run record's ``storage`` section
    results_dir: Path
    link_bytes_at_start: dict | None = None  # a lab's hosts' link counters when the run attached it
    attached_at: float = 0.0                 # Unix seconds: when the run attached the storage

    @property
    def observing(self) -> bool:
        """Whether every request under ``root`` is counted (the observe passthrough, or an emulated mount)."""
        return self.root != self.real_root or self.profile.emulated

    @property
    def lab_dask(self) -> str | None:
        """The address of the Dask scheduler of a lab's client hosts (engine.address = "lab"), where it has them."""
        return (self.record.get("lab") or {}).get("dask")

    def servers_lost(self, since: float, until: float | None = None) -> list[dict]:
        """A lab's servers that ended between ``since`` and ``until`` (Unix seconds) and are not running again: their
        name, role, host, address, how they ended and when (``at``); [] for other storage."""
        if self.profile.kind != "lab":
            return []
        from . import lab

        return [e for e in lab.lost(lab.status(self.real_root), since) if until is None or e["at"] <= until]

    def counters(self) -> dict:
        """What a stage's figures are the difference of (``during``): the busy CPU seconds so far of the machine (or of
        the control group the harness runs in: ``cputime``) and, on a lab, its hosts' link counters and its
        processes' CPU."""
        out = {"machine_cpu": busy_cpu_seconds()}
        if self.profile.kind == "lab":
            from . import lab

            doc = lab.status(self.real_root)
            out["links"], out["lab_cpu"] = lab.link_bytes(doc), lab.cpu_by_process(doc)
        return out

    def during(self, before: dict) -> dict:
        """For a stage's record, what the machine and a lab did since ``before`` (``counters``): the machine's busy
        CPU seconds (every process on it and the kernel's own work, such as the network's: on a shared machine other
        tenants' too; where the harness runs in a control group of its own, that group's: the run's processes and the
        kernel's work in them, not other tenants'), and on a lab the bytes its hosts' links carried, by role (what
        the clients received is what the servers sent them: reads with the client's read-ahead, not the bytes the
        stage asked for), and its processes' CPU seconds by role."""
        now = self.counters()
        out = {"machine_cpu_seconds": None if now["machine_cpu"] is None or before["machine_cpu"] is None
               else now["machine_cpu"] - before["machine_cpu"]}
        if "links" in before:
            from . import lab

            links: dict[str, dict] = {}
            for v in lab.link_bytes_between(before["links"], now["links"]).values():
                role = links.setdefault(v.pop("role"), {"received_bytes": 0, "sent_bytes": 0})
                for k in role:
                    role[k] += v[k]
            out["lab"] = {"link_bytes": links, "cpu_seconds": lab.cpu_used(before["lab_cpu"], now["lab_cpu"])}
        return out

    def finish(self, summary: dict) -> dict:
        """The run record as it ends: paths under the observe passthrough (gone after the run) named under the
        profile's root; what a lab's servers did during the run (a server lost, restarted)."""
        out = summary
        if self.root != self.real_root:
            out = rebase(summary, str(self.root), str(self.real_root))
            if isinstance(out.get("storage"), dict) and "observe" in self.record:
                out["storage"]["observe"] = self.record["observe"]  # where the passthrough was, as it was
        if self.profile.kind == "lab" and isinstance(out.get("storage"), dict):
            from . import lab

            doc = lab.status(self.real_root)
            if doc:
                links = lab.link_bytes_between(self.link_bytes_at_start, lab.link_bytes(doc))
                during = [e for e in doc.get("events", []) if e["at"] >= self.attached_at]
                out["storage"]["lab"] = dict(out["storage"].get("lab") or {}, events=during,
                                             lost=lab.lost(doc, self.attached_at), link_bytes=links)
        return out


@contextlib.contextmanager
def attached(profile, results_dir: Path, strict: bool = False, observe: bool = False, workload: str | None = None,
             wait_if_busy: bool = True, announce=lambda m: print(m, file=sys.stderr, flush=True)):
    """The profile's storage, ready for a run, for the duration of the block (see the module's docstring).
    ``workload``: hold the lock of that workload's folder under the root. ``observe``: count every request through
    the unthrottled passthrough (emulated profiles count on their own)."""
    from . import lab  # here: ``python -m harness.storage.lab`` runs the lab's keeper without importing it twice
    from .emulate import mounted, observed

    results_dir = Path(results_dir).resolve()
    root = profile.resolve_root(results_dir)
    with contextlib.ExitStack() as stack:
        lab_doc = None
        if profile.kind == "emulated":
            t = profile.throttle
            backing = Path(t.backing.replace("{results}", str(results_dir))).resolve()
            stack.enter_context(mounted(backing, root, t.model_dump() | {"name": profile.name}))
        elif profile.kind == "lab":
            lab_doc = stack.enter_context(lab.started(profile, root, results_dir))
        check_writable(profile, root)
        mount = mount_info(root)
        record = {"profile": profile.name, "root": str(root), "fstype": mount["fstype"],
                  "fstype_expected": profile.fstype, "emulated": profile.emulated, "mount": mount,
                  "reference": dict(profile.reference)}
        if profile.throttle is not None:
            record["emulation"] = profile.throttle.model_dump()
        if lab_doc is not None:
            record["lab"] = lab_record(lab_doc)
        if mount["fstype"] and mount["fstype"].startswith("nfs"):
            record["nfs"] = nfs_options(mount)
        problem = check_claim(profile, mount)
        if problem:
            if strict:
                raise StorageError(problem + "; refusing (--strict)")
            announce(f"[storage] warning: {problem}")
            record["claim_mismatch"] = problem
        if workload is not None:  # on the real folder, before any passthrough
            stack.enter_context(workload_lock(root / check_name(workload, "workload"), wait_if_busy, announce))
        work = root
        if observe and profile.kind != "emulated":
            work = stack.enter_context(observed(root, results_dir, profile.name))
            record["observe"] = {
                "mountpoint": str(work), "root": str(root),
                "how": "every request through an unthrottled FUSE passthrough of the root (direct I/O: no page "
                       "cache above it), counted; paths in the record name the root, not the passthrough"}
        elif observe:
            announce(f"[storage] {profile.name} is an emulated (counting) passthrough already: --observe adds nothing")
        record["fio"] = latest_characterisation(results_dir, profile.name, observed="observe" in record)
        yield Attached(profile, work, root, record, results_dir, lab.link_bytes(lab_doc) if lab_doc else None,
                       time.time())


def rebase(obj, old: str, new: str):
    """``obj`` with every path under ``old`` named under ``new`` instead."""
    if isinstance(obj, str):
        return new + obj[len(old):] if obj == old or obj.startswith(old.rstrip("/") + "/") else obj
    if isinstance(obj, dict):
        return {k: rebase(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rebase(v, old, new) for v in obj]
    return obj


def lab_record(doc: dict) -> dict:
    """The run record's ``storage.lab``: what ran (servers, client hosts, links, goal) and where."""
    lay, p = doc["layout"], doc["params"]
    return {"file_system": "MooseFS " + _mfs_version(), "goal": p["goal"], "cache_mode": p["cache_mode"],
            "io_retries": p["io_retries"], "timeout_s": p.get("timeout_s"), "network": lay["network"], "master": lay["master"],
            "chunkservers": [h["address"] for h in lay["hosts"] if h["role"] == "chunkserver"],
            "client_hosts": [{"name": h["name"], "address": h["address"]} for h in lay["hosts"] if h["role"] == "client"],
            "links_mbit": {"master": p["master_link_mbit"], "chunkserver": p["server_link_mbit"],
                           "client": p["client_link_mbit"]},
            "dask": lay.get("dask"), "events": []}


def _mfs_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["mfsmaster", "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    words = out.replace(";", " ").split()
    return words[words.index("version:") + 1] if "version:" in words[:-1] else "?"
