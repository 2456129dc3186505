"""Entry points of the processes the supervisor starts: a worker (the HTTP service on the shared socket) and a model
owner (app.engine.owner). Each runs in a fresh interpreter (spawned) and logs as its own process."""
from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import logging.config
import os
import signal
import socket
import sys
from pathlib import Path

from app.config import Settings
from app.http.peers import Peers
from app.logs import logging_config, set_process_name
from app.metrics import ServiceMetrics

log = logging.getLogger(__name__)


def _begin(settings: Settings, name: str, supervisor: int) -> None:
    _stop_with(supervisor)
    logging.config.dictConfig(logging_config(settings.log_level))
    set_process_name(name)
    log.info("process started, pid %d", os.getpid())


def _stop_with(supervisor: int) -> None:
    """Get SIGTERM when the supervisor dies, however it dies (killed, out of memory): a worker or model owner is
    never left running unsupervised (Linux's parent-death signal)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: only the supervisor's own drain stops its processes
        return
    if os.getppid() != supervisor:  # it died before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _end(code: int) -> None:
    """Exit now that everything is answered and logged: tearing down an interpreter that loaded torch takes
    seconds, which would only hold up the supervisor's drain."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def worker_main(
    settings: Settings, sock: socket.socket, peers: Peers, index: int, owners: list[Path], workers: int,
    supervisor: int,
) -> None:
    from app.engine.api import Engine
    from app.http.app import begin_draining, create_app, torch_engine
    from app.http.server import STARTUP_FAILED, GracefulServer, uvicorn_config

    _begin(settings, f"worker-{index}", supervisor)

    def remote_engine(s: Settings, metrics: ServiceMetrics) -> Engine:
        from app.engine.config import EngineConfig
        from app.engine.remote import RemoteEngine

        return RemoteEngine(EngineConfig.from_settings(s), owners)

    app = create_app(settings, engine=remote_engine if owners else torch_engine, peers=peers, index=index,
                     workers=workers, processes=workers + len(owners))
    server = GracefulServer(
        uvicorn_config(app, settings), drain_delay_s=settings.drain_delay_s, on_drain=lambda: begin_draining(app)
    )
    server.run(sockets=[sock])
    _end(0 if server.started else STARTUP_FAILED)


def owner_main(
    settings: Settings, device: str, path: Path, peers: Peers, index: int, name: str, supervisor: int
) -> None:
    from app.engine.config import EngineConfig
    from app.engine.owner import run

    _begin(settings, name, supervisor)
    config = dataclasses.replace(EngineConfig.from_settings(settings), device=device)
    metrics = ServiceMetrics(settings.max_batch_size)
    asyncio.run(run(config, path, metrics, on_ready=lambda: peers.set_ready(index, True)))
    _end(0)
