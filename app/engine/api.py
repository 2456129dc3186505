"""What callers of the engine see: the engine's interface and the values it takes and returns.

Nothing here imports torch, so a caller (the HTTP layer, a test with a fake engine, another process) can use the
interface without loading a model runtime. `app.engine.engine.TorchEngine` is the implementation.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app.engine.explain import Explanation
from app.inputs.budget import ByteBudget
from app.inputs.parts import RawInputs
from app.model.spec import ArtifactSpec, Modality


@dataclass(frozen=True, slots=True)
class RuntimeReport:
    """What runs a model's forward pass, and why (FUSION_RUNTIME; decided at load, app.engine.runtime).

    `name`: "torch" (eager PyTorch) or "onnxruntime" (its encoders and fusion head, `onnx_parts`, on ONNX Runtime;
    the log-mel front end and the batch bookkeeping in torch). `parity`: the largest difference of any logit from
    the model as trained over the load-time check inputs (None where nothing was rewritten). `speedup`: the
    measured time of eager torch over the served runtime's, per batch size, where both were timed (auto)."""

    name: str = "torch"
    requested: str = "torch"
    onnx_parts: tuple[str, ...] = ()
    parity: float | None = None
    speedup: Mapping[int, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """A served model as callers may know it: its config, where it runs, and its evaluation."""

    name: str
    path: Path
    spec: ArtifactSpec
    device: str
    parameter_count: int
    metrics: dict[str, Any] = field(default_factory=dict)
    runtime: RuntimeReport = field(default_factory=RuntimeReport)


@dataclass(frozen=True, slots=True)
class Prediction:
    """One sample's calibrated probabilities (in label order), how it was served, and why (when asked to explain)."""

    probabilities: np.ndarray
    modalities: tuple[Modality, ...]
    preprocess_ms: float
    queue_ms: float
    compute_ms: float
    batch_size: int
    explanation: Explanation | None = None


class Announcement(Protocol):
    """A request on its way to `Engine.predict`; withdraw it if the request fails before it gets there."""

    def withdraw(self) -> None: ...


class Engine(Protocol):
    """Loads models, batches the samples submitted to each, and answers each sample exactly once."""

    @property
    def default_name(self) -> str | None:
        """The model behind /v1/predict (set once loaded)."""

    @property
    def healthy(self) -> bool:
        """Able to serve now (a front end whose model owner is gone is not)."""

    @property
    def models(self) -> Mapping[str, ModelDescription]:
        """Every loaded model, by name."""

    def max_samples(self, name: str | None) -> int:
        """The most samples one call may submit to a model (its queue's capacity)."""

    @property
    def decode_reserve(self) -> int:
        """Bytes to keep in a memory budget for decoding: the footprint of the largest common input the decode
        limits allow (app.inputs.footprint), times the samples this engine decodes at once."""

    def describe(self, name: str | None) -> ModelDescription:
        """The named model (the default one for None); ModelNotFound otherwise."""

    def load(self) -> None:
        """Load every artifact (blocking); ArtifactError names the file at fault."""

    def warmup(self) -> None:
        """Run every model once per modality and batch size (blocking), when the settings ask for it."""

    def start(self) -> None:
        """Start accepting work (from the running event loop)."""

    async def stop(self) -> None:
        """Stop accepting work, finish what was admitted."""

    def announce(self, name: str | None) -> Announcement:
        """Declare a request whose samples are still arriving, so an idle model's next batch may wait for them."""

    async def predict(
        self,
        name: str | None,
        raws: Sequence[RawInputs],
        announcement: Announcement | None = None,
        budget: ByteBudget | None = None,
        *,
        explain: bool = False,
    ) -> list[Prediction]:
        """Predictions for 1..N samples, in order. Every sample is checked; a failing sample fails the call with
        its error (naming it when there are several). With a `budget`, each sample's decoded footprint is held on
        it while the sample is decoded (Overloaded when it does not fit). `explain`: each prediction also carries
        its `Explanation` (app.engine.explain), computed in the same batch: a sample of m modalities weighs
        2^m - 1 rows."""
