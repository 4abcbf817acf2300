"""The CPU limit a container or pod puts on the relay, read from either cgroup version."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.io.cpu_quota import cores_available


def _tree(tmp_path: Path, cgroup: str, files: dict[str, str]) -> tuple[str, str]:
    (tmp_path / "proc_cgroup").write_text(cgroup)
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path / "proc_cgroup"), str(tmp_path / "fs")


@pytest.mark.parametrize(
    ("cgroup", "files", "cores"),
    [
        # cgroup v2, a pod limited to 500m
        ("0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/cpu.max": "50000 100000\n"}, 0.5),
        # v2 in a container's own namespace: the path is "/", the limit at the root
        ("0::/\n", {"cpu.max": "25000 100000\n"}, 0.25),
        # v2 without a limit
        ("0::/\n", {"cpu.max": "max 100000\n"}, 1.0),
        # more than a core is still one for one event loop
        ("0::/\n", {"cpu.max": "400000 100000\n"}, 1.0),
        # cgroup v1, cpu and cpuacct mounted together
        (
            "4:cpu,cpuacct:/docker/abc\n",
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "40000\n",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            },
            0.4,
        ),
        # v1 without a limit (-1)
        ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),
        # nothing readable: no limit known
        ("garbage", {}, 1.0),
    ],
)
def test_the_cpu_limit_is_read_from_either_cgroup_version(
    tmp_path: Path, cgroup: str, files: dict[str, str], cores: float
) -> None:
    proc, root = _tree(tmp_path, cgroup, files)
    assert cores_available(proc, root) == pytest.approx(cores)


def test_no_cgroup_file_means_no_limit(tmp_path: Path) -> None:
    assert cores_available(str(tmp_path / "missing"), str(tmp_path)) == 1.0
