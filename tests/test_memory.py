"""What memory the process may use, read from fake /proc and cgroup files laid out as on real systems (cgroup v2
in a container, v2 nested on a host, v1 under Docker, a hybrid host), and the default budget derived from it."""
from __future__ import annotations

from pathlib import Path

import pytest

from app import memory
from app.memory import (
    cgroup_memory_limit,
    default_budget,
    host_share,
    memory_limit,
    resident_bytes,
)

GiB = 2**30
MiB = 2**20
UNLIMITED_V1 = "9223372036854771712"


def fake_system(tmp_path: Path, cgroup: str, mounts: list[tuple[str, str, str, str]], files: dict[str, str],
                mem_total_kib: int = 16 * 2**20) -> Path:
    """A fake /proc (self/cgroup, self/mountinfo, meminfo, self/status) and cgroup files under `tmp_path`.
    `mounts`: (root within the hierarchy, mount point relative to tmp_path, fstype, super options)."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    lines = [f"{30 + i} 20 0:{40 + i} {root} {tmp_path / point} rw,relatime - {fstype} {fstype} {options}"
             for i, (root, point, fstype, options) in enumerate(mounts)]
    lines.insert(0, f"22 1 0:21 / {tmp_path / 'proc'} rw,nosuid - proc proc rw")
    (proc / "self" / "mountinfo").write_text("\n".join(lines) + "\n")
    (proc / "meminfo").write_text(f"MemTotal:       {mem_total_kib} kB\nMemFree:        1000 kB\n")
    (proc / "self" / "status").write_text("Name:\tpython\nVmHWM:\t  900000 kB\nVmRSS:\t  800000 kB\n")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return proc


def test_cgroup_v2_in_a_container(tmp_path: Path) -> None:
    """A container with its own cgroup namespace: the process sees itself at the root of the hierarchy."""
    proc = fake_system(tmp_path, "0::/\n", [("/", "sys/fs/cgroup", "cgroup2", "rw,nsdelegate")],
                       {"sys/fs/cgroup/memory.max": "4294967296\n"})
    limit = memory_limit(proc)
    assert limit.bytes == 4 * GiB
    assert limit.source == f"cgroup limit ({tmp_path / 'sys/fs/cgroup/memory.max'})"


def test_cgroup_v2_the_lowest_limit_along_the_path_wins(tmp_path: Path) -> None:
    """On a host (no namespace): the service's cgroup sets no limit, its parent slice does."""
    proc = fake_system(
        tmp_path, "0::/system.slice/fusion.service\n", [("/", "sys/fs/cgroup", "cgroup2", "rw")],
        {"sys/fs/cgroup/system.slice/fusion.service/memory.max": "max\n",
         "sys/fs/cgroup/system.slice/memory.max": "3221225472\n",
         "sys/fs/cgroup/memory.max": "8589934592\n"},
    )
    assert cgroup_memory_limit(proc) == (3 * GiB, tmp_path / "sys/fs/cgroup/system.slice/memory.max")


def test_cgroup_v2_without_a_limit_falls_back_to_physical_memory(tmp_path: Path) -> None:
    proc = fake_system(tmp_path, "0::/user.slice\n", [("/", "sys/fs/cgroup", "cgroup2", "rw")],
                       {"sys/fs/cgroup/user.slice/memory.max": "max\n"}, mem_total_kib=24 * 2**20)
    assert cgroup_memory_limit(proc) is None
    assert memory_limit(proc) == memory.MemoryLimit(24 * GiB, "physical memory")


def test_cgroup_v1_under_docker_without_a_namespace(tmp_path: Path) -> None:
    """cgroup v1, the container's cgroup bind-mounted at the hierarchy's mount point (its root is the path)."""
    path = "/docker/0123abcd"
    proc = fake_system(
        tmp_path, f"12:cpu,cpuacct:{path}\n4:memory:{path}\n1:name=systemd:{path}\n",
        [(path, "sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
         (path, "sys/fs/cgroup/memory", "cgroup", "rw,memory")],
        {"sys/fs/cgroup/memory/memory.limit_in_bytes": "2147483648\n",
         "sys/fs/cgroup/cpu,cpuacct/memory.limit_in_bytes": "1\n"},  # not the memory controller's: ignored
    )
    assert memory_limit(proc).bytes == 2 * GiB


def test_a_limit_above_physical_memory_is_no_limit(tmp_path: Path) -> None:
    proc = fake_system(tmp_path, "0::/\n", [("/", "sys/fs/cgroup", "cgroup2", "rw")],
                       {"sys/fs/cgroup/memory.max": str(64 * GiB)}, mem_total_kib=16 * 2**20)
    assert memory_limit(proc) == memory.MemoryLimit(16 * GiB, "physical memory")


def test_a_hybrid_host_with_unlimited_v1_memory_has_no_cgroup_limit(tmp_path: Path) -> None:
    """cgroup v2 mounted beside v1 without the memory controller, and v1's 'unlimited' sentinel."""
    proc = fake_system(
        tmp_path, "4:memory:/process_api/ab70\n0::/\n",
        [("/", "sys/fs/cgroup/memory", "cgroup", "rw,memory"), ("/", "sys/fs/cgroup/unified", "cgroup2", "rw")],
        {"sys/fs/cgroup/memory/process_api/ab70/memory.limit_in_bytes": UNLIMITED_V1,
         "sys/fs/cgroup/memory/memory.limit_in_bytes": UNLIMITED_V1,
         "sys/fs/cgroup/unified/cgroup.procs": "1\n"},
    )
    assert cgroup_memory_limit(proc) is None


def test_no_cgroup_files_at_all(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal: 1048576 kB\n")
    assert cgroup_memory_limit(proc) is None
    assert memory_limit(proc) == memory.MemoryLimit(GiB, "physical memory")
    assert resident_bytes(proc) == 0


def test_resident_size_now_and_at_its_peak(tmp_path: Path) -> None:
    proc = fake_system(tmp_path, "0::/\n", [], {})
    assert resident_bytes(proc) == 800000 * 1024
    assert resident_bytes(proc, peak=True) == 900000 * 1024


def test_the_default_budget_is_what_is_left_less_the_margin() -> None:
    # A 4 GiB container whose process peaked at 1 GiB once loaded: 4 - 1 - 0.8 (a fifth) GiB.
    assert default_budget(4 * GiB, GiB) == 4 * GiB - GiB - int(0.2 * 4 * GiB)
    # Small limits keep at least 256 MiB free, and the budget is never below 64 MiB.
    assert default_budget(1 * GiB, 512 * MiB) == 1 * GiB - 512 * MiB - 256 * MiB
    assert default_budget(1 * GiB, 900 * MiB) == memory.MIN_BUDGET


def test_several_processes_share_what_is_left_or_a_host_budget() -> None:
    # Four workers of 1 GiB each in a 16 GiB container: (16 - 4 - 3.2) / 4 GiB each.
    assert default_budget(16 * GiB, GiB, processes=4) == (16 * GiB - 4 * GiB - int(0.2 * 16 * GiB)) // 4
    assert host_share(8 * GiB, 4) == 2 * GiB
    with pytest.raises(ValueError):
        host_share(GiB, 0)
