"""A model owner: the process that holds the models on one device and batches the samples every front-end process
sends it (app.engine.remote), so batches form across all front ends.

It loads and warms up its models first, then listens on its Unix socket; each front end that connects gets a
`hello` (the models and their descriptions), then sends `predict` and `cancel` messages and gets one `ok` or
`error` per `predict`. A front end that goes away has its queued samples withdrawn. SIGTERM: stop listening,
finish what was admitted, exit.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from app.engine import ipc
from app.engine.config import EngineConfig
from app.engine.engine import TorchEngine
from app.engine.pipeline import Job
from app.errors import ModelFailure, ServiceError
from app.metrics import ServiceMetrics

log = logging.getLogger(__name__)


def describe(engine: TorchEngine) -> list[dict[str, object]]:
    """The models as plain data for the `hello` message."""
    return [
        {"name": d.name, "path": str(d.path), "spec": d.spec.model_dump_json(), "device": d.device,
         "parameter_count": d.parameter_count, "metrics": d.metrics, "runtime": dataclasses.asdict(d.runtime)}
        for d in engine.models.values()
    ]


class Owner:
    """Serves one engine to every connected front end."""

    def __init__(self, engine: TorchEngine) -> None:
        self.engine = engine
        self.connections = 0
        self.running: set[asyncio.Task[None]] = set()  # every connection's predictions in progress

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        tasks: dict[int, asyncio.Task[None]] = {}
        try:
            await ipc.send(writer, ("hello", describe(self.engine), self.engine.default_name))
            while True:
                message = await ipc.receive(reader)
                if message[0] == "predict":
                    _, rid, name, packed, explain = message
                    task = asyncio.create_task(self._predict(writer, rid, name, packed, explain))
                    tasks[rid] = task
                    self.running.add(task)
                    task.add_done_callback(lambda t, rid=rid: (tasks.pop(rid, None), self.running.discard(t)))
                elif message[0] == "cancel" and (task := tasks.get(message[1])) is not None:
                    task.cancel()  # its samples, if still queued, are skipped
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the front end went away
        finally:
            self.connections -= 1
            for task in list(tasks.values()):
                task.cancel()
            writer.close()

    async def _predict(self, writer: asyncio.StreamWriter, rid: int, name: str, packed: list, explain: bool) -> None:
        try:
            served = self.engine.get(name)
            jobs = [Job(sample=s, explain=explain) for s in ipc.unpack_samples(packed)]
            outcomes = await served.submit_all(jobs)
            reply: tuple = ("ok", rid, [(o.probabilities, o.preprocess_ms, o.queue_ms, o.compute_ms, o.batch_size,
                                         o.explanation) for o in outcomes])
        except ServiceError as exc:
            reply = ("error", rid, *ipc.error_fields(exc))
        except Exception:  # a bug: the front end gets a 500, the log gets the trace
            log.exception("predict failed in the model owner")
            reply = ("error", rid, *ipc.error_fields(ModelFailure("the model failed on this request; retry it")))
        with contextlib.suppress(ConnectionError):
            await ipc.send(writer, reply)


async def run(
    config: EngineConfig, socket_path: Path, metrics: ServiceMetrics, on_ready: Callable[[], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Load, warm up, listen on `socket_path` until `stop` is set (by default: SIGTERM or SIGINT), then drain."""
    engine = TorchEngine(config, observer=metrics.batch_observer)
    await asyncio.to_thread(engine.load)
    for d in engine.models.values():
        metrics.model_loaded(d.name, d.spec.version, d.device)
    await asyncio.to_thread(engine.warmup)
    engine.start()
    owner = Owner(engine)
    socket_path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(owner.serve_connection, path=str(socket_path))
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    on_ready()
    log.info("model owner ready on %s: %s", socket_path, ", ".join(engine.models))
    await stop.wait()
    log.info("model owner stopping: finishing admitted requests")
    server.close()
    await engine.stop()
    # Every admitted request has its answer now; let the replies go out before the loop ends.
    await asyncio.wait_for(asyncio.gather(*owner.running, return_exceptions=True), timeout=10)
