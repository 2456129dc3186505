"""Predictor: a loaded artifact on its device; batches of samples in, calibrated probabilities out."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from app.engine.api import RuntimeReport
from app.engine.explain import proper_subsets
from app.engine.runtime import RuntimeOptions, choose_runtime
from app.model.artifact import Artifact
from app.model.batch import Sample, collate
from app.model.spec import MODALITIES, ArtifactSpec

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available; asking for `cuda` without one is a startup error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("FUSION_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def warmup_sizes(max_batch_size: int) -> list[int]:
    """Powers of two and the sizes halfway between them (1, 2, 3, 4, 6, 8, 12, 16, ...) below `max_batch_size`,
    and `max_batch_size` itself; largest first."""
    sizes = {max_batch_size}
    power = 1
    while power < max_batch_size:
        sizes.update(size for size in (power, power * 3 // 2) if 0 < size < max_batch_size)
        power *= 2
    return sorted(sizes, reverse=True)


@dataclass(frozen=True, slots=True)
class Scores:
    """One sample's output: its calibrated probabilities; for a sample to explain, also those from each non-empty
    proper subset of its modalities alone (by mask bits: image 1, text 2, audio 4; each with that subset's own
    temperature) and the fusion's internals (`Fusion.internals`, last axis over the model's modalities)."""

    probabilities: np.ndarray
    subsets: dict[int, np.ndarray] | None = None
    fusion: dict[str, np.ndarray] | None = None


class Predictor:
    """Runs the model. `predict` is called from one inference thread at a time. `runtime` says what runs the
    forward pass (app.engine.runtime: eager torch, with the CPU rewrites of app.model.cpu_inference unless
    `runtime.cpu_rewrites` is false, or ONNX Runtime); `self.runtime` reports what was chosen."""

    def __init__(self, artifact: Artifact, device: torch.device, *, cpu_rewrites: bool = True,
                 runtime: RuntimeOptions | None = None) -> None:
        self.spec: ArtifactSpec = artifact.spec
        self.device = device
        artifact.model = artifact.model.to(device).eval()
        options = runtime or RuntimeOptions(cpu_rewrites=cpu_rewrites)
        served = choose_runtime(artifact, device, options)
        self.model = served.model
        self.runtime: RuntimeReport = served.report
        # Explanations need the fusion's internals and its subset passes: torch serves those (the model as served
        # when torch serves it, else the model as trained), whatever runtime serves plain predictions.
        self._explainer = self.model if self.runtime.name == "torch" else artifact.model
        # Temperature per modality subset, looked up by the mask bits (image 1, text 2, audio 4) of each sample.
        self._temperatures = torch.tensor(
            [self.spec.temperature_for(m for i, m in enumerate(MODALITIES) if code >> i & 1) for code in range(8)]
        )
        self._bit_values = torch.tensor([1 << i for i in range(len(MODALITIES))])
        self._autocast_dtype = _DTYPES[self.spec.dtype] if device.type == "cuda" else None
        self.forward_passes = 0
        self.oom_splits = 0

    def predict(self, samples: list[Sample], explain: Sequence[bool] = ()) -> list[Scores]:
        """Class probabilities (float32, summing to 1) for each sample, in order; for the samples whose `explain`
        flag is set, the probabilities from every subset of their modalities too (see `Scores`). A batch that runs
        out of GPU memory is split in halves and retried, down to single samples; only a single sample's OOM is
        raised."""
        try:
            return self._forward(samples, explain)
        except torch.OutOfMemoryError:
            if len(samples) == 1:
                raise
        # Retried outside the except block, so the failed attempt's traceback (and the tensors its frames hold)
        # is released before the cache is emptied.
        self._release_memory()
        half = len(samples) // 2
        log.warning("out of memory on a batch of %d; retrying as %d + %d", len(samples), half, len(samples) - half)
        self.oom_splits += 1
        return self.predict(samples[:half], explain[:half]) + self.predict(samples[half:], explain[half:])

    def _release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _forward(self, samples: list[Sample], explain: Sequence[bool]) -> list[Scores]:
        batch = collate(samples)
        codes = (batch.mask.long() * self._bit_values).sum(dim=1)
        explained = [i for i, flag in enumerate(explain) if flag]
        # Subset rows: each explained sample again with each non-empty proper subset of its modalities.
        rows = [i for i in explained for _ in proper_subsets(int(codes[i]))]
        subset_codes = [sub for i in explained for sub in proper_subsets(int(codes[i]))]
        all_codes = torch.cat([codes, torch.tensor(subset_codes, dtype=torch.long)])
        temperature = self._temperatures[all_codes].unsqueeze(1)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            with torch.autocast(
                device_type=self.device.type,
                dtype=self._autocast_dtype or torch.float32,
                enabled=self._autocast_dtype is not None and self._autocast_dtype != torch.float32,
            ):
                internals: dict[str, torch.Tensor] = {}
                if explained:
                    masks = (torch.tensor(subset_codes, dtype=torch.long).unsqueeze(1) & self._bit_values) != 0
                    indices = (torch.tensor(explained, dtype=torch.long), torch.tensor(rows, dtype=torch.long), masks)
                    logits, subset_logits, internals = self._explainer.forward_subsets(
                        batch, *(t.to(self.device) for t in indices)
                    )
                    logits = torch.cat([logits, subset_logits])
                else:
                    logits = self.model(batch)
            probs = torch.softmax(logits.float().cpu() / temperature, dim=-1).numpy()
            fusion = {name: t.float().cpu().numpy() for name, t in internals.items()}
            self.forward_passes += 1
        out = [Scores(p) for p in probs[: len(samples)]]
        row = len(samples)
        for j, i in enumerate(explained):
            subsets = {}
            for sub in proper_subsets(int(codes[i])):
                subsets[sub] = probs[row]
                row += 1
            out[i] = Scores(out[i].probabilities, subsets, {name: v[j] for name, v in fusion.items()})
        return out

    def example_sample(self, modalities: tuple[str, ...] | None = None) -> Sample:
        """A synthetic sample of the right shapes (for warm-up), holding `modalities` (default: all of the model's)."""
        spec = self.spec
        wanted = modalities or spec.ordered_modalities
        image = text = audio = None
        if "image" in wanted and spec.image:
            image = torch.zeros(spec.image.channels, spec.image.size, spec.image.size)
        if "text" in wanted and spec.text:
            text = torch.full((min(16, spec.text.max_tokens),), 2, dtype=torch.long)
        if "audio" in wanted and spec.audio:
            audio = torch.zeros(spec.audio.clip_samples)
        return Sample(image=image, text=text, audio=audio)

    def warmup(self, max_batch_size: int) -> None:
        """Run each single modality once, then the ladder of batch sizes `warmup_sizes(max_batch_size)`, largest
        first, then one explained sample, so no request pays for first-call allocation or kernel selection. The largest batch takes the
        memory every smaller one needs. A size between the rungs was measured ~12% slower on its first use than a
        warmed size, once; warming every size up to 64 delayed readiness by ~2 s (bench/README.md)."""
        for m in MODALITIES:
            if m in self.spec.modalities:
                self.predict([self.example_sample((m,))])
        full = self.example_sample()
        for size in warmup_sizes(max_batch_size):
            self.predict([full] * size)
        self.predict([full], explain=[True])  # the subset rows and the fusion's internals (explained requests)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
