"""What the host gives this process: the CPUs it may use (its affinity, and in a container its cgroup CPU quota), how
many decode threads that affords, and a lower CPU priority for a thread whose work may wait (large uploads)."""
from __future__ import annotations

import math
import os
import sys
import threading
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


# How much lower than the rest of the process the large-sample decode thread runs (Linux nice steps): under load a
# phone photo's decoding takes about a tenth of a core from the inference threads and event loops instead of half,
# for longer, so the small requests around it are barely slowed; on an idle core it runs as fast as ever.
LARGE_DECODE_NICENESS = 10


def lower_this_thread_priority(steps: int = LARGE_DECODE_NICENESS) -> bool:
    """Make the calling thread `steps` nice levels less favoured by the scheduler; whether it could. Linux only:
    there a thread id names one thread, elsewhere `setpriority` would lower the whole process."""
    if sys.platform != "linux":
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except OSError:  # a sandbox that forbids it: the thread keeps its priority
        return False
    return True
