"""`fusion-serve serve` as a real process (the CLI, its uvicorn server and signal handling), optionally with a
forward pass slowed down to a known duration so that its capacity is known."""
from __future__ import annotations

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

# Runs the real CLI after wrapping Predictor.predict in a sleep of argv[1] seconds per batch.
SLOW_SERVE = """
import sys, time
from app.engine import predictor as inference
from app.cli import main
predict = inference.Predictor.predict
def slow(self, samples, *args, **kwargs):
    time.sleep(float(sys.argv[1]))
    return predict(self, samples, *args, **kwargs)
inference.Predictor.predict = slow
sys.exit(main(["serve"]))
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

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def log(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]


def serve_env(models_dir: Path, port: int, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSION_")}
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
    command = [sys.executable, "-c", SLOW_SERVE, str(forward_s)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=serve_env(models_dir, port, **settings), stdout=log,
                                stderr=subprocess.STDOUT)
    server = ServeProcess(proc=proc, url=f"http://127.0.0.1:{port}", log_path=log_path)
    try:
        end = time.monotonic() + 120
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
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
