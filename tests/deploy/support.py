"""Helpers for the deployment tests: the repo's files, the linters the test extras install, a Dockerfile reader,
the metric names a running service exports."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.server import Server

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker-compose.cpu.yml"


def tool(name: str) -> str:
    """A command-line tool installed by the test extras (in this environment's scripts folder, else on PATH)."""
    here = Path(sysconfig.get_path("scripts")) / name
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"{name} is missing: install the test extras (pip install -e '.[test]')"
    return found


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile(path: Path = ROOT / "Dockerfile") -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append(Instruction(keyword.upper(), re.sub(r"\s+", " ", args.strip())))
    return out


def stages(instructions: list[Instruction]) -> dict[str, list[Instruction]]:
    """Each build stage's instructions (from its FROM on), by stage name (`FROM image AS name`)."""
    out: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            current = []
            out[ins.args.split()[-1] if " AS " in ins.args.upper() else str(len(out))] = current
        current.append(ins)
    return out


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return list(stages(instructions).values())[-1]


def image_env() -> dict[str, str]:
    """The runtime image's ENV (FUSION_MODELS_DIR, FUSION_PORT, ...)."""
    return dict(
        pair.split("=", 1) for i in final_stage(dockerfile()) if i.keyword == "ENV" for pair in i.args.split()
    )


def exported_names(server: Server) -> set[str]:
    """The metric names a running service exports, after one prediction (so that request series exist)."""
    with server.client() as c:
        c.post("/v1/predict", files={"text": (None, "hi")})
        text = c.get("/metrics").text
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD/HEALTHCHECK CMD."""
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return [str(v) for v in value]


def compose(*args: str, files: tuple[Path, ...] = (COMPOSE_FILE,), env: dict[str, str] | None = None,
            project_dir: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f FILE... ARGS` (the Compose CLI validates and resolves files without a Docker engine)."""
    cmd = [tool("docker-compose"), "--project-directory", str(project_dir)]
    for f in files:
        cmd += ["-f", str(f)]
    # Only what is given: variables of the caller's shell must not change what is checked.
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=60)


def compose_config(*files: Path, profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The resolved compose model (interpolated, env files read, overrides merged), as JSON."""
    args = [a for p in profiles for a in ("--profile", p)]
    result = compose(*args, "config", "--format", "json", files=files or (COMPOSE_FILE,))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
