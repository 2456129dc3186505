"""Test helpers: tiny artifacts, media files made in memory, and ways to hold and watch a live model."""
from __future__ import annotations

import dataclasses
import io
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch
from PIL import Image

from app.config import Settings
from app.engine.served import ServedModel
from app.inputs.limits import DecodeLimits
from app.model.artifact import save_artifact
from app.model.classifier import FusionClassifier
from app.model.spec import ArtifactSpec, AudioSpec, FusionSpec, ImageSpec, TextSpec

LABELS = ("cat", "dog", "bird")


def limits(**overrides: object) -> DecodeLimits:
    """The service's default decode limits, with `overrides`."""
    return dataclasses.replace(DecodeLimits.from_settings(Settings()), **overrides)  # type: ignore[arg-type]


def tiny_spec(name: str = "tiny", fusion: str = "attention", modalities: tuple[str, ...] = ("image", "text", "audio"),
              **overrides: object) -> ArtifactSpec:
    """A model small enough to build and run in milliseconds."""
    return ArtifactSpec(
        name=name,
        version="0.0.1",
        description="tiny test model with random weights",
        labels=LABELS,
        modalities=modalities,
        image=ImageSpec(size=16, channels=1, width=4) if "image" in modalities else None,
        text=TextSpec(embed_dim=16, layers=1, heads=2, max_tokens=32) if "text" in modalities else None,
        audio=AudioSpec(sample_rate=8000, clip_seconds=0.25, n_fft=128, hop_length=64, n_mels=16, width=4)
        if "audio" in modalities
        else None,
        fusion=FusionSpec(type=fusion, dim=16, hidden=32, heads=2),
        **overrides,
    )


def write_tiny_artifact(folder: Path, spec: ArtifactSpec | None = None, seed: int = 0) -> Path:
    """Save a randomly initialised (seeded) model as a complete artifact folder."""
    spec = spec or tiny_spec(name=folder.name)
    torch.manual_seed(seed)
    model = FusionClassifier(spec)
    card = f"# {spec.name}\n\nRandomly initialised test model.\n"
    return save_artifact(folder, spec, model, card, metrics={"accuracy": 0.5, "note": "test"})


def png_bytes(size: tuple[int, int] = (20, 20), mode: str = "RGB", fmt: str = "PNG", noise: bool = True,
              **save: object) -> bytes:
    """An image file in memory: random pixels (or a flat grey that compresses to almost nothing)."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if noise else np.full((size[1], size[0], 3), 128, np.uint8)
    im = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def wav_bytes(seconds: float = 0.5, rate: int = 8000, channels: int = 1, subtype: str = "PCM_16",
              fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    data = np.stack([tone] * channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, data, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


TEXT = {"text": (None, "hello there")}


class Gate:
    """Holds every forward pass of a live model until released; records the batch sizes it saw."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.original = model.predictor.predict
        self.release = threading.Event()
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def _predict(self, samples: list, explain: tuple = ()) -> list:
        self.batch_sizes.append(len(samples))
        self.entered.set()
        assert self.release.wait(20)
        return self.original(samples, explain)

    def __enter__(self) -> Gate:
        self.model.predictor.predict = self._predict  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        del self.model.predictor.predict


def send(
    pool: ThreadPoolExecutor, url: str, timeout: float = 30, files: object = TEXT, **kw: object
) -> Future[httpx.Response]:
    def go() -> httpx.Response:
        with httpx.Client(base_url=url, timeout=timeout) as c:
            return c.post("/v1/predict", files=files, **kw)  # type: ignore[arg-type]

    return pool.submit(go)


def wait_queue(model: ServedModel, depth: int) -> None:
    end = time.monotonic() + 10
    while model.batcher.queue_depth < depth:
        assert time.monotonic() < end, "requests did not queue"
        time.sleep(0.01)
