"""docker-compose.yml brought up for real: the shipped Compose CLI against Podman's Docker-compatible API, with the
CPU override, on the image the container tests built. The compose health check (readiness) must turn the service
healthy, and `docker compose stop` must stop it gracefully.

One test-only override: host networking on 127.0.0.1 instead of the default bridge network and the published port
(servers here listen on loopback only)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy.podman import Build, api_service, free_port, podman, report
from tests.deploy.support import COMPOSE_FILE, CPU_OVERRIDE, compose
from tests.test_shipped_model import readme_example, readme_files

pytestmark = [
    pytest.mark.slow,
    pytest.mark.needs_tool("podman"),
    pytest.mark.needs_tool("runc"),
    pytest.mark.needs_tool("mmdebstrap"),
]
PROJECT = "fusion-serve-podman-test"
LOOPBACK = """services:
  fusion-serve:
    network_mode: host
    ports: !reset []
    environment:
      FUSION_HOST: 127.0.0.1
      FUSION_PORT: "{port}"
"""


def compose_ps(files: tuple[Path, ...], env: dict[str, str]) -> list[dict]:
    result = compose("--project-name", PROJECT, "ps", "--all", "--format", "json", files=files, env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_compose_up_with_the_cpu_override_turns_healthy_and_stops_gracefully(built: Build, tmp_path: Path) -> None:
    port = free_port()
    loopback = tmp_path / "loopback.yml"
    loopback.write_text(LOOPBACK.format(port=port))
    files = (COMPOSE_FILE, CPU_OVERRIDE, loopback)
    declared = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["fusion-serve"]
    with api_service(tmp_path) as docker_host:
        env = {"DOCKER_HOST": docker_host, "SERVE_IMAGE": built.image}
        try:
            started = time.monotonic()
            up = compose("--project-name", PROJECT, "up", "--detach", "--no-build", "--pull", "never", files=files,
                         env=env)
            assert up.returncode == 0, up.stderr
            (container,) = compose_ps(files, env)
            name = container["Name"]
            (inspected,) = json.loads(podman("container", "inspect", name).stdout)
            assert inspected["Config"]["Healthcheck"]["Test"] == declared["healthcheck"]["test"]  # compose's check
            (mount,) = inspected["Mounts"]
            assert mount["Destination"] == "/srv/fusion/models" and mount["RW"] is False
            # Podman runs health checks from systemd timers; where there is no systemd, run the configured check
            # until it passes, as the timer would.
            while podman("healthcheck", "run", name, check=False, timeout=60).returncode != 0:
                assert compose_ps(files, env)[0]["State"] == "running", podman("logs", name, check=False).stderr
                assert time.monotonic() - started < 180, "the compose health check did not pass in 180 s"
                time.sleep(0.5)
            report(compose_healthy_s=time.monotonic() - started)
            assert compose_ps(files, env)[0]["Health"] == "healthy"
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                body = c.post("/v1/predict", files=readme_files()).json()
            assert body["top"][0]["label"] == readme_example()["top"][0]["label"]

            stop = compose("--project-name", PROJECT, "stop", files=files, env=env)
            assert stop.returncode == 0, stop.stderr
            (stopped,) = compose_ps(files, env)
            assert stopped["State"] == "exited" and stopped["ExitCode"] == 0, stopped
        finally:
            compose("--project-name", PROJECT, "down", "--timeout", "0", files=files, env=env)
