"""How much of a core this process may use: its cgroup's CPU limit (a container's, a pod's).

Admission control judges the process's CPU share against what it can get. An event loop uses
one core at most; under a limit of 500m (Kubernetes) or ``--cpus 0.5`` (Docker) it gets half of
one, and past that the kernel throttles it: frames wait for the next period. So the share is
taken of the smaller of the two. Both cgroup versions are read (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); anything unreadable counts as no limit.
"""

from __future__ import annotations

from pathlib import Path


def cores_available(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> float:
    """The cores this process's event loop can use: 1, or less under a CPU limit."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return 1.0
    limits = [1.0]
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        relative = path.strip().lstrip("/")
        if controllers == "":  # cgroup v2: one hierarchy, limits in cpu.max
            candidates = [Path(root, relative, "cpu.max"), Path(root, "cpu.max")]
            limits += [limit for limit in map(_v2_limit, candidates) if limit is not None]
        elif "cpu" in controllers.split(","):
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                # In a container the path may be the host's while the mount shows its own group.
                for directory in (Path(root, mount, relative), Path(root, mount)):
                    limit = _v1_limit(directory)
                    if limit is not None:
                        limits.append(limit)
    return max(0.01, min(limits))


def _v2_limit(path: Path) -> float | None:
    try:
        quota, _, period = path.read_text().strip().partition(" ")
    except OSError:
        return None
    if quota == "max" or not quota.isdigit() or not period.strip().isdigit():
        return None
    return int(quota) / max(1, int(period))


def _v1_limit(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / max(1, period) if quota > 0 else None
