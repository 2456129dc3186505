"""What memory this process may use (its cgroup's limit, else the machine's physical memory), its own resident
size, and the default byte budget for requests in flight derived from them.

One budget is per process. Where several serving processes share one host or container, either let each derive
its own with `processes` set (the memory left once all of them are loaded, shared evenly), or split a budget chosen
for the host with `host_share`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# cgroup v1 reports "no limit" as the largest page-aligned signed 64-bit count; anything this big is no limit.
_V1_UNLIMITED = 1 << 62
# Kept free beyond the budget: allocator slack, per-connection buffers, Python objects, and memory that nothing counts.
MARGIN_FRACTION = 0.2
MIN_MARGIN = 256 * 2**20
MIN_BUDGET = 64 * 2**20


@dataclass(frozen=True, slots=True)
class MemoryLimit:
    """The memory this process may use, in bytes, and where that figure comes from."""

    bytes: int
    source: str


def memory_limit(proc: Path = PROC) -> MemoryLimit:
    """The cgroup's memory limit (v2 `memory.max` or v1 `memory.limit_in_bytes`, the lowest along the process's
    cgroup path) when there is one below the physical memory, else the physical memory."""
    physical = physical_memory(proc)
    cgroup = cgroup_memory_limit(proc)
    if cgroup is not None and cgroup[0] < physical:
        return MemoryLimit(cgroup[0], f"cgroup limit ({cgroup[1]})")
    return MemoryLimit(physical, "physical memory")


def physical_memory(proc: Path = PROC) -> int:
    """MemTotal of `proc`/meminfo, else what sysconf says."""
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cgroup_memory_limit(proc: Path = PROC) -> tuple[int, Path] | None:
    """The lowest memory limit set on this process's cgroup or any of its ancestors, and the file that sets it;
    None when there is none (or no cgroup file system). Reads `proc`/self/cgroup and `proc`/self/mountinfo to find
    the cgroup's directory, so that it works inside containers (namespaced or not) and on hosts alike."""
    try:
        memberships = (proc / "self" / "cgroup").read_text().splitlines()
        mounts = (proc / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    found: list[tuple[int, Path]] = []
    for line in memberships:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":
            mount = _mount(mounts, "cgroup2", None)
            name = "memory.max"
        elif "memory" in controllers.split(","):
            mount = _mount(mounts, "cgroup", "memory")
            name = "memory.limit_in_bytes"
        else:
            continue
        if mount is None:
            continue
        found += _limits_along(mount, path, name)
    return min(found, default=None)


def _mount(mounts: list[str], fstype: str, controller: str | None) -> tuple[str, Path] | None:
    """(root within the hierarchy, mount point) of the first mount of `fstype` (carrying `controller`)."""
    for line in mounts:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if not after or after[0] != fstype:
            continue
        if controller is not None and controller not in (after[2] if len(after) > 2 else "").split(","):
            continue
        return fields[3], Path(fields[4])
    return None


def _limits_along(mount: tuple[str, Path], path: str, name: str) -> list[tuple[int, Path]]:
    """The limits in `name` files from the cgroup's directory up to the mount point."""
    root, point = mount
    relative = path.strip()
    if root != "/" and (relative == root or relative.startswith(root.rstrip("/") + "/")):
        relative = relative[len(root) :]
    directory = point / relative.lstrip("/")
    found = []
    while True:
        value = _read_limit(directory / name)
        if value is not None:
            found.append((value, directory / name))
        if directory == point or point not in directory.parents:
            return found
        directory = directory.parent


def _read_limit(file: Path) -> int | None:
    try:
        text = file.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None  # "max" (v2: no limit), or not a number
    value = int(text)
    return None if value >= _V1_UNLIMITED else value


def resident_bytes(proc: Path = PROC, peak: bool = False) -> int:
    """This process's resident set size now (VmRSS), or its peak so far (VmHWM); 0 where /proc does not say."""
    key = "VmHWM:" if peak else "VmRSS:"
    try:
        for line in (proc / "self" / "status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def margin(limit: int) -> int:
    """The memory kept free beyond the budget: a fifth of the limit, at least 256 MiB."""
    return max(MIN_MARGIN, int(limit * MARGIN_FRACTION))


def default_budget(limit: int, baseline: int, processes: int = 1) -> int:
    """The budget of one of `processes` serving processes that share `limit` bytes, each using `baseline` bytes
    before any request (its peak RSS once its models are loaded and warmed up): what is left of the limit once all
    are loaded, less the margin, shared evenly; at least MIN_BUDGET."""
    if processes < 1:
        raise ValueError("processes must be at least 1")
    spare = limit - processes * baseline - margin(limit)
    return max(MIN_BUDGET, spare // processes)


def host_share(host_budget: int, processes: int) -> int:
    """One process's share of a budget chosen for a whole host (or container) that `processes` processes serve."""
    if processes < 1:
        raise ValueError("processes must be at least 1")
    return host_budget // processes
