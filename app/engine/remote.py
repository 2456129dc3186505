"""RemoteEngine: the engine of a front-end process whose models live in model-owner processes (app.engine.owner).

Each call's samples are checked, decoded and preprocessed here, off the model's core, then sent to an owner, which
batches them with every other front end's. With several owners (one per device) a call goes to the one with the
fewest requests in flight. An owner that goes away fails the requests it held (503, retry) instead of leaving them
waiting; the link reconnects when the owner is back, and the engine is not `healthy` meanwhile.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from app.engine import ipc
from app.engine.api import Announcement, ModelDescription, Prediction, RuntimeReport
from app.engine.catalog import find_models, lookup
from app.engine.config import EngineConfig
from app.engine.frontend import FrontEnd, Outcome, predictions
from app.engine.pipeline import DecodePools
from app.errors import NotReady
from app.inputs.budget import ByteBudget
from app.inputs.footprint import largest_footprint
from app.inputs.parts import RawInputs
from app.inputs.preprocess import Preprocessor
from app.model.artifact import load_spec
from app.model.spec import ArtifactSpec

log = logging.getLogger(__name__)
RECONNECT_S = 0.2


class _NoAnnouncement:
    """Batches form in the owner, across front ends; a front end has nothing to announce."""

    def withdraw(self) -> None:
        pass


class OwnerLink:
    """The connection to one model owner: requests in flight by id, each answered exactly once."""

    def __init__(self, path: Path, on_hello: Callable[[list[dict], str | None], None]) -> None:
        self.path = path
        self.up = False
        self._on_hello = on_hello
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[list[Outcome]]] = {}
        self._writer: asyncio.StreamWriter | None = None

    @property
    def load(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Connect, and reconnect whenever the owner goes away, until cancelled."""
        while True:
            try:
                reader, self._writer = await asyncio.open_unix_connection(str(self.path))
                hello = await ipc.receive(reader)
                self._on_hello(hello[1], hello[2])
                self.up = True
                log.info("connected to the model owner at %s", self.path)
                while True:
                    self._answer(await ipc.receive(reader))
            except (OSError, asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                if self.up:
                    log.warning("lost the model owner at %s; failing its %d requests", self.path, len(self._pending))
                self.up = False
                self._fail_pending()
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
            await asyncio.sleep(RECONNECT_S)

    async def request(self, name: str, packed: list, explain: bool = False) -> list[Outcome]:
        if not self.up or self._writer is None:
            raise NotReady("the model process is restarting; retry in a moment", retry_after_s=1)
        rid = next(self._ids)
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await ipc.send(self._writer, ("predict", rid, name, packed, explain))
            return await future
        except asyncio.CancelledError:
            if self.up and self._writer is not None and not future.done():
                self._writer.writelines(ipc.encode(("cancel", rid)))  # the owner skips it if still queued
            raise
        except ConnectionError:
            raise NotReady("the model process went away; retry in a moment", retry_after_s=1) from None
        finally:
            self._pending.pop(rid, None)

    def _answer(self, message: tuple) -> None:
        future = self._pending.get(message[1])
        if future is None or future.done():
            return
        if message[0] == "ok":
            future.set_result([Outcome(*fields) for fields in message[2]])
        else:
            future.set_exception(ipc.error_from_fields(*message[2:]))

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    NotReady("the model process stopped while this request ran; retry it", retry_after_s=1)
                )


class RemoteEngine:
    """See the module docstring. `owners`: the owners' socket paths."""

    def __init__(self, config: EngineConfig, owners: Sequence[Path]) -> None:
        self.config = config
        self._fronts: dict[str, FrontEnd] = {}
        self._default: str | None = None
        self._pools = DecodePools.make(config.preprocess_workers)
        self._links = [OwnerLink(path, self._hello) for path in owners]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def default_name(self) -> str | None:
        return self._default

    @property
    def healthy(self) -> bool:
        return all(link.up for link in self._links)

    @property
    def models(self) -> Mapping[str, ModelDescription]:
        return {name: f.description for name, f in self._fronts.items()}

    def describe(self, name: str | None) -> ModelDescription:
        return self._front(name).description

    def max_samples(self, name: str | None) -> int:
        return self._front(name).max_samples

    @property
    def decode_reserve(self) -> int:
        return self._pools.slots(0) * largest_footprint(self.config.limits)  # decoding happens here

    def load(self) -> None:
        """The models' configs (no weights: those live in the owners), for checking and preprocessing here."""
        folders, self._default = find_models(self.config.models_dir, self.config.default_model)
        for folder in folders:
            spec = load_spec(folder)
            self._fronts[folder.name] = self._front_for(ModelDescription(folder.name, folder, spec, "owner", 0))

    def warmup(self) -> None:
        pass  # the owners warm their models up before they accept front ends

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(link.run()) for link in self._links]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pools.shutdown()

    def announce(self, name: str | None) -> Announcement:
        self._front(name)
        return _NoAnnouncement()

    async def predict(
        self,
        name: str | None,
        raws: Sequence[RawInputs],
        announcement: Announcement | None = None,
        budget: ByteBudget | None = None,
        *,
        explain: bool = False,
    ) -> list[Prediction]:
        front = self._front(name)
        jobs, preprocess_ms = await front.jobs(raws, admit=lambda: None, budget=budget)
        links = [link for link in self._links if link.up]
        if not links:
            raise NotReady("the model process is starting or restarting; retry in a moment", retry_after_s=1)
        link = min(links, key=lambda link: link.load)
        packed = ipc.pack_samples([job.sample for job in jobs])  # type: ignore[misc]
        outcomes = await link.request(front.name, packed, explain)
        return predictions(raws, outcomes, preprocess_ms)

    def _front(self, name: str | None) -> FrontEnd:
        return lookup(self._fronts, self._default, name)

    def _front_for(self, description: ModelDescription) -> FrontEnd:
        return FrontEnd(
            description=description,
            preprocessor=Preprocessor(description.spec),
            limits=self.config.limits,
            pools=self._pools,
            max_samples=self.config.batch.max_queue_size,
            decode_in_batch=False,  # the inference thread is in another process: decode here
        )

    def _hello(self, models: list[dict], default: str | None) -> None:
        """An owner's models as it serves them (device, parameters, evaluation)."""
        for m in models:
            if m["name"] in self._fronts:
                spec = ArtifactSpec.model_validate_json(m["spec"])
                runtime = m["runtime"]
                report = RuntimeReport(**{**runtime, "onnx_parts": tuple(runtime["onnx_parts"]),
                                          "speedup": {int(b): x for b, x in runtime["speedup"].items()}})
                self._fronts[m["name"]] = self._front_for(ModelDescription(
                    m["name"], Path(m["path"]), spec, m["device"], m["parameter_count"], m["metrics"], report))
