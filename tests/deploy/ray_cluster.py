"""A real multi-node Ray cluster on this machine (`ray start --head`, then `ray start --address` per extra node), for
the Ray Serve test and bench/ray_serve.py.

Ray's core servers (GCS, raylets, agents) listen on every interface whatever `--node-ip-address` says, so the
cluster runs in a private network namespace that holds nothing but loopback (`unshare --net`, in a user namespace):
the programs that use it re-run themselves there (`run_in_private_network`). Each node is a `ray start --block`
in a session of its own: killing a node (a crash: SIGKILL to every process of its session) or the whole cluster
touches exactly the processes this cluster started, never another user's Ray.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNSHARE = ("unshare", "--map-root-user", "--net", "--")
STARTED = "Ray runtime started."  # what `ray start` prints once its node runs


def in_private_network() -> bool:
    """This process sees no network interface but loopback (asked of the kernel: /sys may show another
    namespace's)."""
    return {name for _, name in socket.if_nameindex()} == {"lo"}


def private_network_error() -> str | None:
    """Why programs cannot run in a loopback-only network namespace here, or None when they can."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is missing"
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a user + network namespace: {probe.stderr.strip()}"
    return None


def run_in_private_network(argv: Sequence[str], timeout_s: float, log_path: Path | None = None) -> int:
    """Run `argv` in a new network namespace holding only loopback (it brings `lo` up: `loopback_up`), output to
    `log_path` (else to this process's); its exit status. Whatever way it ends (a timeout included), every process
    left in that namespace (all of them started by `argv`) is killed."""
    if log_path is None:
        proc = subprocess.Popen([*UNSHARE, *argv], cwd=ROOT, start_new_session=True)
    else:
        with log_path.open("wb") as log:
            proc = subprocess.Popen([*UNSHARE, *argv], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                    start_new_session=True)
    mine = os.readlink("/proc/self/ns/net")
    namespace = None
    try:
        end = time.monotonic() + 30
        while namespace is None and proc.poll() is None and time.monotonic() < end:
            try:
                ns = os.readlink(f"/proc/{proc.pid}/ns/net")
                namespace = ns if ns != mine else None
            except OSError:
                pass
            time.sleep(0.01)
        return proc.wait(timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
        if namespace is not None:
            for pid in _pids_in_namespace(namespace):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.wait(30)


def _pids_in_namespace(namespace: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == namespace:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def loopback_up() -> None:
    """Bring `lo` up (a new network namespace starts with it down): SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        name = b"lo".ljust(16, b"\0")
        flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, struct.pack("16sH", name, 0))[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH", name, flags | iff_up))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def pids(self) -> list[int]:
        """Every live process of this node: its session (ray start made none of them leave it)."""
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == self.proc.pid:
                        out.append(int(entry))
                except ProcessLookupError:
                    pass
        return out

    def kill(self) -> None:
        """Every process of the node at once, as a crashed host would go."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)


@dataclass
class LocalCluster:
    """`start_head()`, then `add_node()` for each worker node; `stop()` kills what is left. `launcher`: a command
    prefix for every node (`taskset -c 0`, say)."""

    temp_dir: Path
    env: dict[str, str]
    launcher: tuple[str, ...] = ()
    nodes: list[Node] = field(default_factory=list)
    address: str = ""
    _next_worker_port: int = 20000

    def start_head(self, num_cpus: int, resources: dict[str, float] | None = None) -> Node:
        gcs_port = free_port()
        self.address = f"127.0.0.1:{gcs_port}"
        return self._start("head", ["--head", f"--port={gcs_port}", f"--ray-client-server-port={free_port()}",
                                    "--include-dashboard=false"], num_cpus, resources)

    def add_node(self, name: str, num_cpus: int, resources: dict[str, float] | None = None) -> Node:
        return self._start(name, [f"--address={self.address}"], num_cpus, resources)

    def _start(self, name: str, args: list[str], num_cpus: int, resources: dict[str, float] | None,
               attempts: int = 3) -> Node:
        """Start a node and wait until it runs. `ray start` gives a node 30 s to register with the GCS, which a
        machine under heavy load can miss: then what it started is killed and it is tried again."""
        for attempt in range(1, attempts + 1):
            node = self._launch(f"{name}-{attempt}" if attempt > 1 else name, args, num_cpus, resources)
            while node.proc.poll() is None and STARTED not in node.log_path.read_text(errors="replace"):
                time.sleep(0.2)
            if node.proc.poll() is None:
                node.name = name
                return node
            node.kill()
            self.nodes.remove(node)
        raise RuntimeError(f"node {name} did not start {attempts} times; see {node.log_path}")

    def _launch(self, name: str, args: list[str], num_cpus: int, resources: dict[str, float] | None) -> Node:
        low = self._next_worker_port
        self._next_worker_port += 200
        command = [
            *self.launcher, str(Path(sys.executable).parent / "ray"), "start", *args, "--block",
            "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", "--num-gpus=0",
            f"--resources={json.dumps(resources or {})}",
            "--object-store-memory=80000000",  # Ray's floor is 75 MB; nothing large goes through it
            "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--min-worker-port={low}", f"--max-worker-port={low + 199}",
        ]
        log_path = self.temp_dir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=ROOT)
        node = Node(name, proc, log_path)
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()


def ray_env(**extra: str) -> dict[str, str]:
    """The environment of the cluster's processes: no usage reporting, this checkout's `app` first on the path
    (replicas import it), no FUSION_* settings leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUSION_", "RAY_"))}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT), **extra)
    return env


@contextmanager
def local_cluster(launcher: Sequence[str] = (), **extra_env: str) -> Iterator[LocalCluster]:
    """A cluster in a fresh temporary folder (short: Ray's Unix socket paths must fit 107 bytes), killed and
    removed afterwards, however the block ends."""
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    cluster = LocalCluster(temp_dir=temp_dir, env=ray_env(**extra_env), launcher=tuple(launcher))
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for(check: Callable[[], object], what: str, timeout_s: float, every_s: float = 0.2) -> object:
    """Poll `check` until it returns something truthy (returned); an exception counts as not yet."""
    end = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < end:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        time.sleep(every_s)
    raise TimeoutError(f"{what}: not within {timeout_s:g} s" + (f" (last error: {last!r})" if last else ""))
