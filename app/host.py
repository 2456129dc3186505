"""What the host gives this process: the CPUs it may use (its affinity, and in a container its cgroup CPU quota), and
how many decode threads that affords."""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use, rounded up. A container limited to 4 CPUs on a 64-core node has 64 in its
    affinity; what runs in it must be sized for 4 (cgroup v2 `cpu.max`)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def decode_threads(cpus: int) -> int:
    """Decode/preprocess threads for a process with `cpus` CPUs: none on 2 or fewer, where the inference thread
    decoding each batch itself beats handing uploads to other threads (app.engine.pipeline)."""
    return 0 if cpus <= 2 else min(4, cpus - 2)
