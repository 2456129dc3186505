"""A real uvicorn server running the app in a thread, and raw-socket helpers. Imports no torch."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from app.config import Settings
from app.http.app import EngineFactory, create_app
from app.http.server import uvicorn_config


@dataclass
class Server:
    app: object
    url: str
    settings: Settings

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def served(self, name: str | None = None):  # noqa: ANN201 - app.engine.served.ServedModel (torch)
        """The live model (the real engine's), to watch or hold its batcher and predictor."""
        return self.app.state.service.engine.get(name)  # type: ignore[attr-defined]

    @property
    def engine(self):  # noqa: ANN201 - the engine the app runs (a fake one in some tests)
        return self.app.state.service.engine  # type: ignore[attr-defined]


@contextmanager
def running_server(
    models_dir: Path, wait_ready: bool = True, engine: EngineFactory | None = None, **settings: object
) -> Iterator[Server]:
    """Start the real app under uvicorn (as `fusion-serve serve` configures it, logging aside) on a free loopback
    port, lifespan on; stop it afterwards. `engine`: a factory for another engine than the real one."""
    cfg = Settings(models_dir=models_dir, **{"max_batch_size": 8, "log_level": "warning", **settings})
    app = create_app(cfg) if engine is None else create_app(cfg, engine)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, cfg, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.started or not thread.is_alive(), "server start")
        if not thread.is_alive():
            raise RuntimeError("the server failed to start")
        if wait_ready:
            wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "readiness")
        yield Server(app=app, url=url, settings=cfg)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def raw_exchange(url: str, request: bytes, timeout: float = 10.0) -> bytes:
    """Send `request` exactly as given (no client normalises it) on a new connection; return all the server sends
    until it closes the connection (send `Connection: close`)."""
    with socket.create_connection(address(url), timeout=timeout) as conn:
        conn.sendall(request)
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    return response


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")
