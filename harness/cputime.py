"""Busy CPU seconds, for a stage's record: the whole machine's (/proc/stat), or the control group's the harness
runs in where that is not the root group (a container, a systemd unit, the cluster proof's own group), which counts
the run's processes and not the machine's other tenants."""
from __future__ import annotations

import os
from pathlib import Path


def machine_cpu_seconds(stat: str | None = None, steal: bool = False) -> float | None:
    """This machine's busy CPU seconds since boot (/proc/stat's first line, or ``stat``: user, nice, system, irq,
    softirq; not idle, iowait, nor steal: the time a hypervisor gave other guests is not this machine's work, though
    it is CPU this machine did not get, which ``steal=True`` adds); None where it cannot say."""
    try:
        f = [int(x) for x in (stat or Path("/proc/stat").read_text()).split("\n")[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    f += [0] * (8 - len(f))  # older kernels list fewer fields
    return (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if steal else 0)) / os.sysconf("SC_CLK_TCK")


def cpu_group() -> tuple[str, Path] | None:
    """The control group this process's CPU is counted in, where it is not the root group (whose CPU is the whole
    machine's: /proc/stat): a container's, a systemd unit's, the cluster proof's own; with its usage file (cgroup v1
    cpuacct.usage, v2 cpu.stat). Everything the run starts (workers, engines, a lab's servers and mounts) is in it
    unless moved out; other tenants of the machine are not."""
    try:
        groups = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()
                  if line.count(":") >= 2]
        mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        return None
    for hid, controllers, path in groups:
        v2 = hid == "0" and controllers == ""
        if path == "/" or not (v2 or "cpuacct" in controllers.split(",")):
            continue
        for m in mounts:
            if "-" not in m or len(m) < m.index("-") + 4:
                continue
            fstype, opts = m[m.index("-") + 1], m[m.index("-") + 3].split(",")
            if not ((v2 and fstype == "cgroup2") or (not v2 and fstype == "cgroup" and "cpuacct" in opts)):
                continue
            root = m[3].rstrip("/")
            if not (path == root or path.startswith(root + "/")):
                continue
            usage = Path(m[4]) / path[len(root):].lstrip("/") / ("cpu.stat" if v2 else "cpuacct.usage")
            if usage.is_file():
                return path, usage
    return None


def busy_cpu_seconds() -> float | None:
    """The busy CPU seconds so far of this process's control group (``cpu_group``), else of the whole machine
    (``machine_cpu_seconds``)."""
    group = cpu_group()
    if group is None:
        return machine_cpu_seconds()
    try:
        text = group[1].read_text()
    except OSError:
        return machine_cpu_seconds()
    if group[1].name == "cpuacct.usage":
        return int(text) / 1e9
    usec = [int(line.split()[1]) for line in text.splitlines() if line.startswith("usage_usec ")]
    return usec[0] / 1e6 if usec else machine_cpu_seconds()
