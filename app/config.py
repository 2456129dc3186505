"""Service configuration: one settings class, read from `FUSION_*` environment variables."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ByteSize,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# RFC 6750's b64token, so a key always fits a `Authorization: Bearer <key>` header.
_API_KEY = re.compile(r"^[A-Za-z0-9._~+/-]{16,}=*$")


def _comma_separated(value: object) -> object:
    """`a, b` (as the environment gives it) -> ("a", "b"); empty items are dropped."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _check_api_keys(keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
    for n, key in enumerate(keys, 1):
        if not _API_KEY.match(key.get_secret_value()):
            raise ValueError(
                f"API key #{n} must be at least 16 characters of A-Z a-z 0-9 - . _ ~ + / (a bearer token)"
            )
    return keys


CommaSeparated = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated)]
ApiKeys = Annotated[
    tuple[SecretStr, ...], NoDecode, BeforeValidator(_comma_separated), AfterValidator(_check_api_keys)
]


class Settings(BaseSettings):
    """Every knob of the service. Each field is set by the environment variable `FUSION_<NAME>`."""

    # hide_input_in_errors: a refused API key must not be echoed into the startup error.
    model_config = SettingsConfigDict(env_prefix="FUSION_", env_file=None, extra="ignore", hide_input_in_errors=True)

    # Models
    models_dir: Path = Field(Path("models"), description="Folder whose sub-folders are model artifacts.")
    default_model: str | None = Field(None, description="Model served by /v1/predict; the only one when unset.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    torch_threads: int = Field(
        0, ge=0, description="Intra-op threads for the CPU forward pass; 0: each process's share of the CPUs."
    )
    warmup: bool = Field(
        True, description="Run each modality and a ladder of batch sizes up to max_batch_size before reporting ready."
    )
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto",
        description="What runs the forward pass on CPU: torch (eager), onnxruntime (encoders and fusion head exported "
        "to ONNX; served only where their logits agree with the model's), or auto: the faster of the two, timed at "
        "load. On a GPU, torch.",
    )
    runtime_cache_dir: Path | None = Field(
        None,
        description="Where ONNX exports are cached when the model's folder is read-only; unset: a per-user folder "
        "under the system's temporary folder. Exports are checked against the model at every load.",
    )
    cpu_rewrites: bool = Field(
        True,
        description="On CPU, serve convolutions with batch norms folded in and channels-last layout (checked against "
        "the model as trained at load; kept only where the logits agree); false: the model exactly as trained.",
    )

    # Processes
    workers: int = Field(
        0,
        ge=0,
        le=256,
        description="Front-end processes (HTTP, multipart, decoding, preprocessing) behind one port; 0: one per CPU "
        "the process may use.",
    )
    model_placement: Literal["auto", "per_worker", "owner"] = Field(
        "auto",
        description="per_worker: each worker process loads its own copy of the models; owner: one model-owner process "
        "per device holds them and every worker feeds it, so batches form across workers; auto: owner on CUDA, "
        "per_worker on CPU.",
    )
    devices: CommaSeparated = Field(
        (),
        description="Devices for model owners, comma-separated (cuda:0,cuda:1; cpu), one owner each; unset: every "
        "CUDA device, else the CPU.",
    )

    # HTTP
    host: str = Field("0.0.0.0", description="Listen address.")
    port: int = Field(8000, ge=1, le=65535, description="Listen port.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="JSON log lines on stdout from this level; access lines are info."
    )
    keep_alive_s: int = Field(5, ge=1, description="An idle keep-alive connection is closed after this.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection must deliver a request's line and headers within this; else 408."
    )
    max_header_bytes: int = Field(32 * 1024, ge=4096, description="Request line + headers; beyond it: 431.")
    body_timeout_s: float = Field(30.0, gt=0, description="Longest pause while a request body arrives; then 408.")
    max_inflight_requests: int = Field(
        512, ge=1, description="Requests with a body in progress at once (uploading, decoding, queued); then 503."
    )
    max_inflight_bytes: Annotated[ByteSize, Field(ge=2**20)] | None = Field(
        None,
        description="Memory budget for requests in flight (bodies as they arrive, inputs while they are decoded), "
        "in bytes or with a unit (512MiB, 2GiB); beyond it: 503 with Retry-After, before the body is read. Unset: "
        "the memory the process may use (cgroup limit, else physical memory) less its own size once loaded and "
        "warmed up, less a margin of a fifth.",
    )
    drain_delay_s: float = Field(
        5.0, ge=0, description="On SIGTERM: how long /readyz and new requests answer 503 before the listener closes."
    )

    # Access
    api_keys: ApiKeys = Field((), description="Bearer tokens, comma-separated; when set, required (but on probes).")
    cors_origins: CommaSeparated = Field((), description="Origins allowed by CORS, comma-separated; '*' for any.")

    # Dynamic batching
    max_batch_size: int = Field(64, ge=1, le=1024, description="Largest batch formed.")
    max_wait_ms: float = Field(
        2.0,
        ge=0,
        description="Longest an idle model waits to fill a batch with requests whose uploads are arriving; 0: never.",
    )
    max_queue_size: int = Field(256, ge=1, description="Admitted requests waiting for the model; beyond it: 503.")
    request_timeout_s: float = Field(10.0, gt=0, description="Deadline from admission to start of compute; then 504.")
    preprocess_workers: int = Field(
        -1,
        ge=-1,
        description="Threads that decode uploads: -1 auto (none on <= 2 CPUs); 0: the inference thread decodes each "
        "batch just before its forward pass.",
    )

    # Input limits (checked before anything is queued)
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Request body; beyond it: 413.")
    max_part_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="One multipart part or OIP element.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Pixels of one image, from its header.")
    max_image_frames: int = Field(1000, ge=1, description="Frames of one (animated) image.")
    max_audio_seconds: float = Field(60.0, gt=0, description="Duration of one audio file.")
    max_audio_samples: int = Field(24_000_000, ge=1, description="Decoded frames x channels per audio file.")
    max_text_chars: int = Field(10_000, ge=1, description="Characters of one text.")
    max_decode_seconds: float = Field(
        5.0, gt=0, description="CPU seconds one audio file may take to decode; then 422 (a file crafted to keep a "
        "decoder busy).",
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def env_name(field: str) -> str:
    """The environment variable of a Settings field."""
    return f"FUSION_{field.upper()}"


def settings_help() -> str:
    """Every setting's variable, default and meaning, one per line (for `fusion-serve serve --help`)."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, bool):
            default = str(default).lower()
        elif isinstance(default, tuple):
            default = ",".join(map(str, default)) or "(unset)"
        elif default is None:
            default = "(unset)"
        line = f"  {env_name(name)}={default}"
        if field.description:
            line += f"\n      {field.description}"
        lines.append(line)
    return "\n".join(lines)


def setting_errors(exc: ValidationError) -> str:
    """A settings validation error as one line naming the variables at fault (values are never echoed)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error.get("loc", ())
        where = env_name(str(loc[0])) if loc else "settings"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
