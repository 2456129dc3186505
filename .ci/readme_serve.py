"""CI: README's first command, as written, on this clean clone: it must install, start and serve README's example.

Runs the serve command (in its own new venv, without extras), waits for /readyz, sends README's curl example and
checks the answer's top label and its probability (to 2 decimals) against the JSON README shows, then stops the
service with SIGTERM and checks that it drains and exits 0. Standard library only: it runs before any venv exists.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT_S = 1200  # pip installing torch and the rest into a new venv
READY_TIMEOUT_S = 120  # from the service's process start to /readyz 200
STOP_TIMEOUT_S = 60  # drain delay + graceful shutdown
BASE = "http://127.0.0.1:8000"


def section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    return [b.strip() for b in re.findall(rf"```{language}\n(.+?)\n```", text, flags=re.S)]


def fail(message: str) -> None:
    print(f"readme-serve: FAILED: {message}", flush=True)
    sys.exit(1)


def status_of(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def serve_process(session: int) -> int | None:
    """The pid of the `fusion-serve serve` process started in our session, once it exists."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if os.getsid(int(entry.name)) != session:
                continue
        except (OSError, ProcessLookupError):
            continue
        if any(a.endswith(b"fusion-serve") for a in argv) and b"serve" in argv:
            return int(entry.name)
    return None


def main() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    serve_command = blocks(section(readme, "## The two commands"), "bash")[0]
    calling = section(readme, "## Calling the API")
    curl_command = blocks(calling, "bash")[0]
    expected = json.loads(blocks(calling, "json")[0])
    if status_of(f"{BASE}/healthz") is not None:  # it would answer in place of README's service
        fail(f"something already answers on {BASE}; stop it first")
    print(f"readme-serve: running README's first command:\n  {serve_command}", flush=True)
    shell = subprocess.Popen(["bash", "-c", serve_command], cwd=ROOT, start_new_session=True)
    try:
        started = time.monotonic()
        pid = None
        while pid is None:
            if shell.poll() is not None:
                fail(f"the command exited with status {shell.returncode} before the service started")
            if time.monotonic() - started > INSTALL_TIMEOUT_S:
                fail(f"the service did not start within {INSTALL_TIMEOUT_S} s (installing)")
            time.sleep(1)
            pid = serve_process(shell.pid)
        print(f"readme-serve: installed in {time.monotonic() - started:.0f} s; service pid {pid}", flush=True)
        started = time.monotonic()
        while status_of(f"{BASE}/readyz") != 200:
            if shell.poll() is not None:
                fail(f"the service exited with status {shell.returncode} before it was ready")
            if time.monotonic() - started > READY_TIMEOUT_S:
                fail(f"/readyz did not answer 200 within {READY_TIMEOUT_S} s")
            time.sleep(0.5)
        print(f"readme-serve: ready {time.monotonic() - started:.1f} s after the process started", flush=True)

        print(f"readme-serve: sending README's example:\n  {curl_command}", flush=True)
        answer = subprocess.run(["bash", "-c", curl_command], cwd=ROOT, capture_output=True, text=True, timeout=60)
        try:
            body = json.loads(answer.stdout)
        except json.JSONDecodeError:
            fail(f"the example's answer is not JSON: {answer.stdout[:500]!r} {answer.stderr[:500]!r}")
        top, want = body["top"][0], expected["top"][0]
        print(f"readme-serve: top {top['label']} {top['probability']:.5f} (README: {want['label']} "
              f"{want['probability']:.5f})", flush=True)
        if top["label"] != want["label"] or round(top["probability"], 2) != round(want["probability"], 2):
            fail(f"README shows {want}, the service answered {top}")

        os.kill(pid, signal.SIGTERM)
        try:
            code = shell.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            fail(f"the service did not exit within {STOP_TIMEOUT_S} s of SIGTERM")
        if code != 0:
            fail(f"the service exited with status {code} after SIGTERM (expected 0)")
        print("readme-serve: OK (answered README's example; drained and exited 0 on SIGTERM)", flush=True)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
