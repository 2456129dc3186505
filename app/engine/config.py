"""What the engine needs from the service's settings, derived once when the service starts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.engine.batching import BatchConfig
from app.inputs.limits import DecodeLimits


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The models to load, where and how they run, how batches form, and what one sample may contain."""

    models_dir: Path
    default_model: str | None
    device: str
    torch_threads: int
    cpu_rewrites: bool
    runtime: str
    runtime_cache_dir: Path | None
    warmup: bool
    preprocess_workers: int
    batch: BatchConfig
    limits: DecodeLimits

    @classmethod
    def from_settings(cls, s: Settings) -> EngineConfig:
        return cls(
            models_dir=s.models_dir,
            default_model=s.default_model,
            device=s.device,
            torch_threads=s.torch_threads,
            cpu_rewrites=s.cpu_rewrites,
            runtime=s.runtime,
            runtime_cache_dir=s.runtime_cache_dir,
            warmup=s.warmup,
            preprocess_workers=s.preprocess_workers,
            batch=BatchConfig(
                max_batch_size=s.max_batch_size,
                max_wait_s=s.max_wait_ms / 1e3,
                max_queue_size=s.max_queue_size,
                timeout_s=s.request_timeout_s,
            ),
            limits=DecodeLimits.from_settings(s),
        )
