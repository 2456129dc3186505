"""TorchEngine: every model artifact under the models folder, loaded on one device, each with its own batcher.

Nothing here knows about HTTP; `app.engine.api.Engine` is the interface callers use.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from app.engine.api import Announcement, ModelDescription, Prediction
from app.engine.batcher import DynamicBatcher
from app.engine.batching import BatchObserver
from app.engine.catalog import find_models, lookup
from app.engine.config import EngineConfig
from app.engine.frontend import FrontEnd
from app.engine.pipeline import DecodePools, run_jobs
from app.engine.predictor import Predictor, resolve_device
from app.engine.runtime import RuntimeOptions
from app.engine.served import ServedModel
from app.inputs.budget import ByteBudget
from app.inputs.footprint import largest_footprint
from app.inputs.parts import RawInputs
from app.inputs.preprocess import Preprocessor
from app.model.artifact import load_artifact

log = logging.getLogger(__name__)


class TorchEngine:
    """The engine of one process: `load`, `warmup`, `start`, then `predict`; `stop` drains. One of the models is
    the default (the only one, or `default_model`)."""

    def __init__(self, config: EngineConfig, observer: Callable[[str], BatchObserver] | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.served: dict[str, ServedModel] = {}
        self._default: str | None = None
        self._observer = observer
        self._pools = DecodePools.make(config.preprocess_workers)
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)

    @property
    def default_name(self) -> str | None:
        return self._default

    @property
    def healthy(self) -> bool:
        return True  # the models live in this process: loaded means able to serve

    @property
    def models(self) -> Mapping[str, ModelDescription]:
        return {name: m.description for name, m in self.served.items()}

    def describe(self, name: str | None) -> ModelDescription:
        return self.get(name).description

    def max_samples(self, name: str | None) -> int:
        return self.get(name).batcher.config.max_queue_size

    @property
    def decode_reserve(self) -> int:
        slots = self._pools.slots(len(self.served))
        return slots * largest_footprint(self.config.limits)

    def get(self, name: str | None = None) -> ServedModel:
        """The named model, or the default one; ModelNotFound otherwise."""
        return lookup(self.served, self._default, name)

    def load(self) -> None:
        """Load every artifact (raises ArtifactError naming the file at fault) and pick the default."""
        folders, self._default = find_models(self.config.models_dir, self.config.default_model)
        for folder in folders:
            self.served[folder.name] = self._load_one(folder)

    def _load_one(self, folder: Path) -> ServedModel:
        artifact = load_artifact(folder)
        predictor = Predictor(artifact, self.device, runtime=RuntimeOptions(
            requested=self.config.runtime,
            cpu_rewrites=self.config.cpu_rewrites,
            cache_dir=self.config.runtime_cache_dir,
            timing_batch=self.config.batch.max_batch_size,
        ))
        preprocessor = Preprocessor(artifact.spec)
        observer = self._observer(folder.name) if self._observer else None
        handler = functools.partial(run_jobs, predictor, preprocessor, self.config.limits)
        log.info("loaded model %s v%s from %s on %s, runtime %s", folder.name, artifact.spec.version, folder,
                 self.device, predictor.runtime.name)
        front = FrontEnd(
            description=ModelDescription(
                name=folder.name,
                path=folder,
                spec=artifact.spec,
                device=str(self.device),
                parameter_count=artifact.model.parameter_count(),
                metrics=artifact.metrics,
                runtime=predictor.runtime,
            ),
            preprocessor=preprocessor,
            limits=self.config.limits,
            pools=self._pools,
            max_samples=self.config.batch.max_queue_size,
            decode_in_batch=True,
        )
        batcher = DynamicBatcher(handler, self.config.batch, name=folder.name, observer=observer)
        return ServedModel(front=front, predictor=predictor, batcher=batcher)

    def warmup(self) -> None:
        if not self.config.warmup:
            return
        for model in self.served.values():
            t0 = time.perf_counter()
            model.predictor.warmup(self.config.batch.max_batch_size)
            log.info("warmed up %s in %.2f s", model.name, time.perf_counter() - t0)

    def start(self) -> None:
        for model in self.served.values():
            model.batcher.start()

    async def stop(self) -> None:
        await asyncio.gather(*(m.batcher.stop() for m in self.served.values()))
        self._pools.shutdown()

    def announce(self, name: str | None) -> Announcement:
        return self.get(name).batcher.announce()

    async def predict(
        self,
        name: str | None,
        raws: Sequence[RawInputs],
        announcement: Announcement | None = None,
        budget: ByteBudget | None = None,
        *,
        explain: bool = False,
    ) -> list[Prediction]:
        return await self.get(name).predict(raws, announcement, budget, explain=explain)
