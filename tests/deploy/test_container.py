"""The Dockerfile, checked without a Docker engine: hadolint, and agreement with README and the settings."""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from app.config import Settings
from tests.deploy.support import ROOT, dockerfile, exec_form, final_stage, stages, tool
from tests.server import Server
from tests.test_readme import readme_commands


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD fusion-serve serve\n")
    result = subprocess.run(
        [tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def test_the_image_runs_the_readme_serve_command() -> None:
    (cmd,) = [exec_form(i.args) for i in final_stage(dockerfile()) if i.keyword == "CMD"]
    readme_serve = shlex.split(readme_commands()[0].split("&&")[-1])
    assert [Path(cmd[0]).name, *cmd[1:]] == [Path(readme_serve[0]).name, *readme_serve[1:]] == ["fusion-serve", "serve"]
    assert not [i for i in dockerfile() if i.keyword == "ENTRYPOINT"]


def test_the_image_is_multi_stage_with_dependencies_before_code_and_a_non_root_user() -> None:
    by_stage = stages(dockerfile())
    assert len(by_stage) >= 3
    (name, deps) = next((n, s) for n, s in by_stage.items()
                        if any("--requirement" in i.args for i in s if i.keyword == "RUN"))
    assert [i.args for i in deps if i.keyword == "COPY"] == ["pyproject.toml /tmp/deps/"], "no code in that layer"
    runtime = final_stage(dockerfile())
    # the runtime stage builds on the dependencies (one copy of the gigabytes), then installs the service
    assert runtime[0].args.split()[0] == name, "the runtime stage starts from the dependency stage"
    keywords = [(i.keyword, i.args) for i in runtime]
    assert any(k == "RUN" and "--no-deps" in a for k, a in keywords), "the service installed without dependencies"
    assert not any(k == "COPY" and "/opt/venv" in a for k, a in keywords), "the venv is not copied a second time"
    (user,) = [a for k, a in keywords if k == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert any(k == "COPY" and a.startswith("models/") for k, a in keywords), "the default model is baked in"


def test_the_image_agrees_with_the_settings() -> None:
    runtime = final_stage(dockerfile())
    env = dict(
        pair.split("=", 1) for i in runtime if i.keyword == "ENV" for pair in shlex.split(i.args)
    )
    (volume,) = [exec_form(i.args) for i in runtime if i.keyword == "VOLUME"]
    (expose,) = [i.args for i in runtime if i.keyword == "EXPOSE"]
    assert volume == [env["FUSION_MODELS_DIR"]]
    assert int(expose) == int(env["FUSION_PORT"]) == Settings.model_fields["port"].default
    (health,) = [i.args for i in runtime if i.keyword == "HEALTHCHECK"]
    assert exec_form(health.split(" CMD ", 1)[1]) == ["python", "-m", "app.probe", "/healthz"]


def probe(server: Server, path: str, port: int | None = None) -> int:
    env = {**os.environ, "FUSION_HOST": "0.0.0.0", "FUSION_PORT": str(port or server.url.rsplit(":", 1)[1])}
    result = subprocess.run([sys.executable, "-m", "app.probe", path], env=env, capture_output=True, timeout=30)
    return result.returncode


def test_the_health_check_command_probes_the_service(server: Server) -> None:
    assert probe(server, "/healthz") == 0
    assert probe(server, "/readyz") == 0
    assert probe(server, "/no-such-path") == 1


def test_the_health_check_fails_when_nothing_listens(server: Server) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening: connections are refused
        assert probe(server, "/healthz", port=closed) == 1
