"""Podman for the container tests: the shipped Dockerfile built and run for real, without a Docker engine.

No registry is reached for images: the base is made here from Debian's packages (mmdebstrap) and imported. pip
inside the build uses what the host's pip uses: local (file://) indexes are served to it on loopback.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

from tests.deploy.support import ROOT

CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
IMAGE = "localhost/fusion-serve:podman-test"
# What python:3.11-slim-bookworm has and Debian's minbase lacks: python3.11 with venv, `python` and `pip` on PATH.
BASE_PACKAGES = ("python3.11", "python3.11-venv", "python-is-python3", "python3-pip", "ca-certificates")
BASE_SUITE = "bookworm"
# Certificate authorities this host trusts beyond Debian's (a TLS-inspecting proxy's, a company's): the base image
# trusts them too, so that pip in the build reaches PyPI the way the host does.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
MIRROR_PORT = 38471  # a fixed port keeps the build arguments, and so the build cache, the same from run to run


def report(**values: float) -> None:
    """Print measurements (shown with `pytest -s`, and with a failure)."""
    print("\npodman: " + ", ".join(f"{k} {v:.1f}" for k, v in values.items()))


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env())
    if check and result.returncode != 0:
        raise AssertionError(f"podman {shlex.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def base_image(workdir: Path) -> str:
    """A Python 3.11 image made from Debian's packages, tagged by its recipe (made once, then reused)."""
    cas = sorted(LOCAL_CAS.glob("*.crt")) if LOCAL_CAS.is_dir() else []
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, [c.read_text() for c in cas]])
    name = f"localhost/fusion-test-python:3.11-{BASE_SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if image_exists(name):
        return name
    rootfs = workdir / "rootfs.tar"
    hooks = [f"--customize-hook=copy-in {shlex.quote(str(c))} {LOCAL_CAS}" for c in cas]
    if cas:
        hooks.append('--customize-hook=chroot "$1" update-ca-certificates')
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", *hooks, BASE_SUITE,
         str(rootfs)],
        check=True, timeout=900, capture_output=True,
    )
    podman("import", "--change", "ENV=LANG=C.UTF-8", "--change", 'CMD=["python3"]', str(rootfs), name, timeout=300)
    rootfs.unlink()
    return name


def host_pip_indexes() -> tuple[str | None, list[str]]:
    """The host pip's index-url and extra-index-urls (its config files and PIP_* variables), as `pip config list`
    reports them."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    index, extra = None, []
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        if key.endswith(".index-url"):
            index = value.split()[0]
        elif key.endswith(".extra-index-url"):
            extra += [v for v in value.split() if v not in extra]
    return index, extra


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def pip_build_args(workdir: Path) -> Iterator[list[str]]:
    """`--build-arg PIP_INDEX_URL=... PIP_EXTRA_INDEX_URL=...` for the host's pip indexes (none: PyPI); the local
    (file://) ones served read-only on 127.0.0.1 for the length of the build."""
    index, extra = host_pip_indexes()
    local = [u for u in [index, *extra] if u and u.startswith("file://")]
    served = workdir / "pip-mirror"
    served.mkdir(exist_ok=True)
    server = None
    if local:
        try:
            server = ThreadingHTTPServer(("127.0.0.1", MIRROR_PORT), partial(_Quiet, directory=str(served)))
        except OSError:
            server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def mapped(url: str) -> str:
        if not url.startswith("file://"):
            return url
        root = Path(unquote(urlparse(url).path))
        # An index's pages link to its files relatively (../../files/x.whl): serve the folder above it.
        link = served / str(local.index(url))
        if not link.exists():
            link.symlink_to(root.parent)
        return f"http://127.0.0.1:{server.server_address[1]}/{link.name}/{root.name}/"  # type: ignore[union-attr]

    args = []
    if index:
        args += ["--build-arg", f"PIP_INDEX_URL={mapped(index)}"]
    if extra:
        args += ["--build-arg", f"PIP_EXTRA_INDEX_URL={' '.join(mapped(u) for u in extra)}"]
    try:
        yield args
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


@dataclass(frozen=True)
class Build:
    image: str
    base: str
    base_s: float
    build_s: float


def build_image(workdir: Path) -> Build:
    """The shipped Dockerfile, unchanged but for its base image argument and where pip finds packages."""
    t0 = time.monotonic()
    base = base_image(workdir)
    base_s = time.monotonic() - t0
    t0 = time.monotonic()
    with pip_build_args(workdir) as pip_args:
        # docker format: the OCI image format has no HEALTHCHECK; host network: pip reaches what the host reaches.
        result = podman("build", "--pull=never", "--format", "docker", "--network", "host",
                        "--build-arg", f"PYTHON_IMAGE={base}", *pip_args, "--tag", IMAGE, "--file",
                        str(ROOT / "Dockerfile"), str(ROOT), timeout=3600, check=False)
    if result.returncode != 0:
        store = podman("info", "--format", "{{.Store.GraphRoot}}", check=False).stdout.strip() or "/var/lib/containers"
        free_gib = shutil.disk_usage(store).free / 2**30
        raise AssertionError(f"podman build failed ({free_gib:.1f} GiB left free in {store}):\n"
                             f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
    return Build(image=IMAGE, base=base, base_s=base_s, build_s=time.monotonic() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Container:
    name: str
    port: int
    started: float  # time.monotonic() at `podman run`

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict:
        return json.loads(podman("inspect", "--format", "{{json .State}}", self.name).stdout)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *args, check=check, timeout=60)

    def stop(self, timeout_s: float) -> subprocess.Popen[str]:
        """`podman stop`: SIGTERM (the image's stop signal), then SIGKILL after `timeout_s`; not waited for."""
        return subprocess.Popen(["podman", "stop", "--time", str(int(timeout_s)), self.name], env=podman_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def health_check(self) -> int:
        """Run the image's own HEALTHCHECK once (Podman schedules it with systemd timers; there are none here)."""
        return podman("healthcheck", "run", self.name, check=False, timeout=60).returncode


@contextmanager
def running(image: str, *run_args: str, env: dict[str, str] | None = None) -> Iterator[Container]:
    """The image's own command in a container on the host's network, listening on 127.0.0.1 only; removed after."""
    port = free_port()
    name = f"fusion-serve-test-{port}"
    settings = {"FUSION_HOST": "127.0.0.1", "FUSION_PORT": str(port), **(env or {})}
    env_args = [a for k, v in settings.items() for a in ("--env", f"{k}={v}")]
    started = time.monotonic()
    podman("run", "--detach", "--pull=never", "--name", name, "--network", "host", *env_args, *run_args, image)
    try:
        yield Container(name=name, port=port, started=started)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def wait_healthy(container: Container, timeout_s: float = 180) -> float:
    """Seconds from `podman run` until the image's HEALTHCHECK passed and Podman reports the container healthy."""
    end = container.started + timeout_s
    while container.health_check() != 0:
        state = container.state()
        assert state["Running"], f"the container exited ({state['ExitCode']}):\n{container.logs()[-4000:]}"
        assert time.monotonic() < end, f"not healthy after {timeout_s} s:\n{container.logs()[-4000:]}"
        time.sleep(0.5)
    elapsed = time.monotonic() - container.started
    assert container.state()["Health"]["Status"] == "healthy"
    return elapsed


def wait_ready(container: Container, timeout_s: float = 180) -> float:
    """Seconds from `podman run` until /readyz answered 200 on the host."""
    import httpx

    end = container.started + timeout_s
    while True:
        try:
            if httpx.get(f"{container.url}/readyz", timeout=5).status_code == 200:
                return time.monotonic() - container.started
        except httpx.TransportError:
            pass
        state = container.state()
        assert state["Running"], f"the container exited ({state['ExitCode']}):\n{container.logs()[-4000:]}"
        assert time.monotonic() < end, f"/readyz not 200 after {timeout_s} s:\n{container.logs()[-4000:]}"
        time.sleep(0.25)


@contextmanager
def api_service(folder: Path) -> Iterator[str]:
    """Podman's Docker-compatible API on a unix socket in `folder` (for the Compose CLI); its DOCKER_HOST."""
    socket_path = folder / "podman.sock"
    log = (folder / "podman-service.log").open("wb")
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket_path}"], env=podman_env(),
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 30
        while not socket_path.exists():
            assert service.poll() is None and time.monotonic() < end, (folder / "podman-service.log").read_text()
            time.sleep(0.1)
        yield f"unix://{socket_path}"
    finally:
        service.terminate()
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(30)
        log.close()
