"""A fake engine: the `app.engine.api.Engine` interface without torch or a model, for tests of the HTTP layer.

It answers from the bytes it is given (the label whose index is the sample's total input length modulo the
label count gets 0.9; explained, each subset of the inputs is answered so too), records every call, and can be
told to fail, so a test sees exactly what an adapter
handed the engine and how an engine error reaches the caller. Importing it imports no torch.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.config import Settings
from app.engine import explain as explaining
from app.engine.api import Announcement, ModelDescription, Prediction
from app.errors import MissingInput, ModalityNotSupported, ModelNotFound, ServiceError
from app.inputs.budget import ByteBudget
from app.inputs.parts import RawInputs
from app.metrics import ServiceMetrics
from app.model.spec import ArtifactSpec, AudioSpec, ImageSpec, TextSpec

LABELS = ("red", "green", "blue")


def fake_spec(name: str = "fake") -> ArtifactSpec:
    return ArtifactSpec(
        name=name, labels=LABELS, modalities=("image", "text", "audio"),
        image=ImageSpec(), text=TextSpec(), audio=AudioSpec(),
    )


def expected_probabilities(raw: RawInputs) -> np.ndarray:
    """What the fake engine answers for `raw`."""
    size = sum(len(getattr(raw, m)) for m in raw.modalities)
    probs = np.full(len(LABELS), 0.1 / (len(LABELS) - 1), dtype=np.float32)
    probs[size % len(LABELS)] = 0.9
    return probs


def expected_explanation(raw: RawInputs) -> explaining.Explanation:
    """What the fake engine explains for `raw`: each subset of its inputs answered as `expected_probabilities`."""
    sent = explaining.mask_code(raw.modalities)
    subsets = {
        code: expected_probabilities(RawInputs(**{m: getattr(raw, m) for m in explaining.members(code)}))
        for code in explaining.proper_subsets(sent)
    }
    internals = {"attention": np.full((1, 3), 1 / 4, dtype=np.float32)}  # the fake spec's fusion: attention
    return explaining.build(expected_probabilities(raw), subsets, sent, fake_spec().ordered_modalities, internals)


class _Withdrawn:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def withdraw(self) -> None:
        self.engine.withdrawn += 1


@dataclass
class FakeEngine:
    settings: Settings
    names: tuple[str, ...] = ("fake",)
    calls: list[tuple[str | None, list[RawInputs]]] = field(default_factory=list)
    explained: list[bool] = field(default_factory=list)
    fail_with: ServiceError | None = None
    withdrawn: int = 0
    budgets: list[ByteBudget | None] = field(default_factory=list)
    started: bool = False

    @property
    def default_name(self) -> str | None:
        return self.names[0]

    @property
    def healthy(self) -> bool:
        return True

    @property
    def models(self) -> Mapping[str, ModelDescription]:
        return {n: ModelDescription(n, Path(n), fake_spec(n), "fake", 0, {"accuracy": 1.0}) for n in self.names}

    def describe(self, name: str | None) -> ModelDescription:
        key = name or self.default_name
        if key not in self.names:
            raise ModelNotFound(f"no model named {name!r}")
        return self.models[key]

    def max_samples(self, name: str | None) -> int:
        return self.settings.max_queue_size

    @property
    def decode_reserve(self) -> int:
        return 0  # it decodes nothing

    def load(self) -> None:
        pass

    def warmup(self) -> None:
        pass

    def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def announce(self, name: str | None) -> Announcement:
        return _Withdrawn(self)

    async def predict(
        self,
        name: str | None,
        raws: Sequence[RawInputs],
        announcement: Announcement | None = None,
        budget: ByteBudget | None = None,
        *,
        explain: bool = False,
    ) -> list[Prediction]:
        self.describe(name)
        self.calls.append((name, list(raws)))
        self.budgets.append(budget)
        self.explained.append(explain)
        if announcement is not None:
            announcement.withdraw()
        if self.fail_with is not None:
            raise self.fail_with
        for raw in raws:
            if not raw.modalities:
                raise MissingInput("no input given")
            if set(raw.modalities) - set(fake_spec().modalities):
                raise ModalityNotSupported("not accepted")
        await asyncio.sleep(0)
        return [
            Prediction(expected_probabilities(r), r.modalities, 0.0, 0.0, 0.0, len(raws),
                       expected_explanation(r) if explain else None)
            for r in raws
        ]


def fake_engine_factory(holder: list[FakeEngine]):  # noqa: ANN201 - an EngineFactory
    """An engine factory for `create_app` that keeps the engine it made in `holder`."""

    def make(settings: Settings, metrics: ServiceMetrics) -> FakeEngine:
        engine = FakeEngine(settings)
        holder.append(engine)
        return engine

    return make
