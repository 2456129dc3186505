"""Rendering the rows of `fusion-serve make-data` (app.training.make_data): each row's image, caption and audio
written by worker processes (or this one), every row from its own random stream so that the output depends on
neither the worker count nor the order."""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
from PIL import Image
from tqdm import tqdm

from app.training import synth_audio, synth_heldout, synth_image, synth_text
from app.training.synth_audio import UtteranceBank
from app.training.synth_image import GlyphBank

if TYPE_CHECKING:
    from app.training.make_data import NoiseSettings

# Independent random streams: SeedSequence(seed, spawn_key=(stream, ...)).
LABEL_STREAM, SAMPLE_STREAM, VOICE_STREAM, HELDOUT_STREAM = 0, 1, 2, 3


@dataclass(frozen=True)
class Context:
    """What a worker needs to render samples; sent once per worker process."""

    out_dir: Path
    seed: int
    id_width: int
    noise: NoiseSettings
    glyphs: GlyphBank
    utterances: UtteranceBank | None
    heldout: synth_heldout.HeldoutSources | None


_context: Context | None = None


def init_worker(context: Context) -> None:
    global _context
    _context = context


def row_id(index: int, width: int) -> str:
    return f"{index:0{width}d}"


def render_sample(task: tuple[int, int, bool]) -> tuple[int, bool, str, str, str | None]:
    """Write one row's image and audio files; returns (index, held out, image path, caption, audio path)."""
    index, label, heldout = task
    context = _context
    assert context is not None, "worker not initialised"
    # One SeedSequence per sample (not per worker), split per modality, so the output does not
    # depend on the worker count and one modality's settings do not shift another's randomness.
    stream = HELDOUT_STREAM if heldout else SAMPLE_STREAM
    image_seed, audio_seed, text_seed = np.random.SeedSequence(context.seed, spawn_key=(stream, index) if not heldout else (stream, 0, index)).spawn(3)
    image_rng, audio_rng, text_rng = (np.random.default_rng(seed) for seed in (image_seed, audio_seed, text_seed))
    if heldout:
        assert context.heldout is not None
        sample_id = "h" + row_id(index, context.id_width)
        picture, suffix = synth_heldout.render_image(context.heldout, label, image_rng)
        image_path = f"heldout/images/{sample_id}{suffix}"
        synth_heldout.save_image(picture, context.out_dir / image_path, image_rng)
        audio_path = None
        if context.utterances is not None:
            samples, rate, suffix = synth_heldout.render_audio(context.heldout, label, audio_rng)
            audio_path = f"heldout/audio/{sample_id}{suffix}"
            synth_heldout.save_audio(samples, rate, context.out_dir / audio_path)
        return index, True, image_path, synth_heldout.render_text(label, text_rng), audio_path
    sample_id = row_id(index, context.id_width)
    image = synth_image.render_image(context.glyphs, label, image_rng, context.noise.image)
    image_path = f"images/{sample_id}.png"
    Image.fromarray(image, mode="L").save(context.out_dir / image_path)
    audio_path = None
    if context.utterances is not None:
        clip = synth_audio.render_audio(context.utterances, label, audio_rng, context.noise.audio)
        audio_path = f"audio/{sample_id}.wav"
        sf.write(context.out_dir / audio_path, synth_audio.to_pcm16(clip), synth_audio.SAMPLE_RATE, subtype="PCM_16")
    return index, False, image_path, synth_text.render_text(label, text_rng, context.noise.text), audio_path


Rendered = tuple[str, str, str | None]  # image path, caption, audio path


def render_all(context: Context, tasks: list[tuple[int, int, bool]], workers: int) -> dict[tuple[bool, int], Rendered]:
    """Render every row (in this process when workers <= 1), keyed by (held out, index)."""
    global _context
    rendered: dict[tuple[bool, int], Rendered] = {}
    with tqdm(total=len(tasks), desc="make-data", unit="row", disable=None) as progress:
        if workers <= 1:
            _context = context
            try:
                for index, heldout, *row in map(render_sample, tasks):
                    rendered[heldout, index] = tuple(row)  # type: ignore[assignment]
                    progress.update()
            finally:
                _context = None
        else:
            # spawn, not fork: the caller may hold threads (torch, tqdm) that fork would copy mid-state.
            with multiprocessing.get_context("spawn").Pool(workers, init_worker, (context,)) as pool:
                for index, heldout, *row in pool.imap_unordered(render_sample, tasks, chunksize=32):
                    rendered[heldout, index] = tuple(row)  # type: ignore[assignment]
                    progress.update()
    return rendered
