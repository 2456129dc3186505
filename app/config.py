"""Service configuration: one settings class, read from `FUSION_*` environment variables."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service. Each field is set by the environment variable `FUSION_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="FUSION_", env_file=None, extra="ignore")

    # Models
    models_dir: Path = Field(Path("models"), description="Folder whose sub-folders are model artifacts.")
    default_model: str | None = Field(None, description="Model served by /v1/predict; the only one when unset.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    torch_threads: int = Field(0, ge=0, description="Intra-op threads for the CPU forward pass; 0 = torch default.")
    warmup: bool = Field(True, description="Run every batch size once before reporting ready.")

    # HTTP
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Dynamic batching
    max_batch_size: int = Field(32, ge=1, le=1024)
    max_wait_ms: float = Field(2.0, ge=0, description="Longest a request waits for company when the model is idle.")
    max_queue_size: int = Field(256, ge=1, description="Admitted requests waiting for the model; beyond it: 503.")
    request_timeout_s: float = Field(10.0, gt=0, description="Deadline from admission to start of compute; then 504.")
    preprocess_workers: int = Field(2, ge=1, description="Threads that decode and preprocess uploads.")

    # Input limits (checked before anything is queued)
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_part_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_image_frames: int = Field(1000, ge=1)
    max_audio_seconds: float = Field(60.0, gt=0)
    max_audio_samples: int = Field(24_000_000, ge=1, description="Decoded frames x channels per audio file.")
    max_text_chars: int = Field(10_000, ge=1)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
