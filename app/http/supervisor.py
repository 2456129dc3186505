"""The multi-process service: one listening socket, N worker processes serving HTTP on it, and (with
`model_placement=owner`) one model-owner process per device that every worker feeds.

The supervisor binds the socket, starts the owners and the workers (spawned: each imports what it needs afresh),
restarts any that dies after it was ready (a process that dies before it was ever ready stops the service: a
broken artifact must not crash-loop), and drains on SIGTERM: it raises the shared draining flag (every worker's
/readyz and new requests answer 503 at once), sends SIGTERM to the workers (each drains as a single process
does: the listener stays open for the drain delay, admitted requests finish), then to the owners once the workers
are gone. Metrics of all the processes are added up (prometheus-client's multiprocess mode, in a private folder).
"""
from __future__ import annotations

import logging
import logging.config
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from app.config import Settings
from app.http import processes
from app.http.peers import Peers
from app.http.plan import Plan
from app.logs import logging_config, set_process_name

log = logging.getLogger(__name__)
STARTUP_FAILED = 3


@dataclass
class Child:
    """One supervised process: a worker (index < workers) or a model owner. `index`: its readiness flag."""

    name: str
    index: int
    process: BaseProcess | None = None
    restarts: int = 0


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, settings: Settings, plan: Plan) -> None:
        self.settings = settings
        self.plan = plan
        self.ctx = multiprocessing.get_context("spawn")
        self.rundir = Path(tempfile.mkdtemp(prefix="fusion-serve-"))  # mode 0700: only this user reaches the sockets
        self.peers = Peers(self.ctx, plan.workers + len(plan.devices))
        self.children: list[Child] = []
        self.sock: socket.socket | None = None
        self._stopping = False

    def run(self) -> int:
        metrics_dir = self.rundir / "metrics"
        metrics_dir.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # the children inherit it before any import
        sock = self.sock = bind(self.settings.host, self.settings.port)
        owners = len(self.plan.devices)
        self.children = [Child(f"owner-{i}", self.plan.workers + i) for i in range(owners)]
        self.children += [Child(f"worker-{i}", i) for i in range(self.plan.workers)]
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("starting %d workers%s on %s:%d", self.plan.workers,
                 f" and model owners on {', '.join(self.plan.devices)}" if self.plan.devices else "",
                 self.settings.host, self.settings.port)
        try:
            for child in self.children:
                self._start(child)
            return self._supervise()
        finally:
            for child in self.children:
                if child.process is not None and child.process.is_alive():
                    child.process.kill()
            sock.close()
            shutil.rmtree(self.rundir, ignore_errors=True)

    def _start(self, child: Child) -> None:
        assert self.sock is not None
        sockets = self.plan.owner_sockets(self.rundir)
        if child.index < self.plan.workers:
            target, args = processes.worker_main, (self.plan.worker_settings(), self.sock, self.peers, child.index,
                                                   sockets, self.plan.workers, os.getpid())
        else:
            owner = child.index - self.plan.workers
            device = self.plan.devices[owner]
            target, args = processes.owner_main, (self.plan.owner_settings(device), device, sockets[owner],
                                                  self.peers, child.index, child.name, os.getpid())
        child.process = self.ctx.Process(target=target, args=args, name=child.name)
        child.process.start()

    def _supervise(self) -> int:
        ever_ready: set[int] = set()
        started, announced = time.monotonic(), False
        while not self._stopping:
            ever_ready |= {c.index for c in self.children if self.peers.is_ready(c.index)}
            if not announced and len(ever_ready) == len(self.children):
                announced = True  # the line a user looks for: where to send requests, once every process answers
                log.info("serving on %s with %d workers (all ready in %.1f s)", self.url, self.plan.workers,
                         time.monotonic() - started)
            dead = [c for c in self.children if c.process is not None and not c.process.is_alive()]
            for child in dead:
                code = child.process.exitcode  # type: ignore[union-attr]
                self._forget(child)
                if child.index not in ever_ready:
                    log.error("%s exited with status %s before it was ready; stopping the service", child.name, code)
                    self._stop_all(signal.SIGTERM, timeout_s=10)
                    return STARTUP_FAILED
                child.restarts += 1
                log.error("%s exited with status %s; restarting it (restart %d)", child.name, code, child.restarts)
                ever_ready.discard(child.index)
                self._start(child)
            wait([c.process.sentinel for c in self.children if c.process is not None], timeout=0.5)
        return self._drain()

    @property
    def url(self) -> str:
        host = self.settings.host
        port = self.sock.getsockname()[1] if self.sock is not None else self.settings.port  # port 0: the one bound
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def _forget(self, child: Child) -> None:
        """A dead process: not ready, and its live gauges no longer count."""
        self.peers.set_ready(child.index, False)
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(child.process.pid)  # type: ignore[union-attr]

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if not self._stopping:
            self._stopping = True
            self.peers.drain()  # every worker's /readyz and new requests: 503, from now on

    def _drain(self) -> int:
        log.info("SIGTERM: draining %d workers", self.plan.workers)
        # No worker is restarted from now on: the listener closes once the last worker closes its copy.
        if self.sock is not None:
            self.sock.close()
        s = self.settings
        codes = self._stop_all(signal.SIGTERM, timeout_s=s.drain_delay_s + s.request_timeout_s + 15, owners=False)
        self._stop_all(signal.SIGTERM, timeout_s=30, workers=False)
        return 0 if all(code == 0 for code in codes) else 1

    def _stop_all(self, sig: int, timeout_s: float, workers: bool = True, owners: bool = True) -> list[int | None]:
        chosen = [c for c in self.children if c.process is not None
                  and ((workers and c.index < self.plan.workers) or (owners and c.index >= self.plan.workers))]
        for child in chosen:
            if child.process.is_alive():  # type: ignore[union-attr]
                os.kill(child.process.pid, sig)  # type: ignore[union-attr]
        end = time.monotonic() + timeout_s
        for child in chosen:
            child.process.join(max(0.0, end - time.monotonic()))  # type: ignore[union-attr]
            if child.process.is_alive():  # type: ignore[union-attr]
                log.error("%s did not stop within %.0f s; killing it", child.name, timeout_s)
                child.process.kill()  # type: ignore[union-attr]
                child.process.join(5)  # type: ignore[union-attr]
        return [c.process.exitcode for c in chosen]  # type: ignore[union-attr]


def run(settings: Settings, plan: Plan) -> int:
    logging.config.dictConfig(logging_config(settings.log_level))
    set_process_name("supervisor")
    return Supervisor(settings, plan).run()
