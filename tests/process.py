"""`fusion-serve serve` as a real process (the CLI, its uvicorn server and signal handling, its worker and model-owner
processes when it has them), optionally with a forward pass slowed down to a known duration so that its capacity is
known."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

# Imported at the start of every Python process of the service (the supervisor and the processes it spawns, which
# inherit PYTHONPATH): wraps Predictor.predict in a sleep of SLOW_FORWARD_S seconds per batch.
SLOW_FORWARD = """
import os, time
if float(os.environ.get("SLOW_FORWARD_S", "0")) > 0:
    from app.engine import predictor
    _predict = predictor.Predictor.predict
    def _slow(self, samples, *args, **kwargs):
        time.sleep(float(os.environ["SLOW_FORWARD_S"]))
        return _predict(self, samples, *args, **kwargs)
    predictor.Predictor.predict = _slow
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def rss_bytes(self, key: str = "VmRSS") -> int:
        """Its resident set size now, or (key VmHWM) its peak since start or since `reset_peak_rss`."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {key}")

    def reset_peak_rss(self) -> None:
        """Make its peak RSS (VmHWM) its current RSS (Linux's clear_refs)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def log(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]


def serve_env(models_dir: Path, port: int, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSION_") or k == "FUSION_RUNTIME"}
    env.update({"FUSION_MODELS_DIR": str(models_dir), "FUSION_HOST": "127.0.0.1", "FUSION_PORT": str(port)})
    env.update({f"FUSION_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextmanager
def serve_process(
    models_dir: Path, tmp_path: Path, forward_s: float = 0.0, **settings: object
) -> Iterator[ServeProcess]:
    """Start the service, wait until /readyz says ready, and make sure it is gone afterwards."""
    port = free_port()
    log_path = tmp_path / f"serve-{port}.log"
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SLOW_FORWARD)
    env = serve_env(models_dir, port, **settings)
    env.update(SLOW_FORWARD_S=str(forward_s), PYTHONPATH=os.pathsep.join([str(hooks), str(ROOT)]))
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = ServeProcess(proc=proc, url=f"http://127.0.0.1:{port}", log_path=log_path)
    try:
        end = time.monotonic() + 240  # generous: several processes start, each importing torch
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < end, "the server did not become ready"
            time.sleep(0.1)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the service and every process it started
        proc.wait(30)
