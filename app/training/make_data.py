"""`fusion-serve make-data`: generate the synthetic digits data set (image + text + audio per row).

Each modality is degraded independently per sample, so any one of them alone is often useless
while together they nearly always identify the digit.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import SettingError, UsageError
from app.training import synth_audio, synth_heldout, synth_image, synth_text
from app.training.render_rows import (
    HELDOUT_STREAM,
    LABEL_STREAM,
    VOICE_STREAM,
    Context,
    render_all,
    row_id,
)
from app.training.synth_audio import AudioNoise
from app.training.synth_image import ImageNoise
from app.training.synth_text import TextNoise

LABELS: tuple[str, ...] = tuple(str(digit) for digit in range(10))
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
# Ten consecutive rows of one label get 8 train, 1 val, 1 test, so every label is split 80/10/10.
_SPLIT_PATTERN = ("train",) * 4 + ("val",) + ("train",) * 4 + ("test",)
DEFAULT_OUT = Path("data/digits")
DEFAULT_SIZE = 12000
DEFAULT_HELDOUT_SIZE = 2000
HELDOUT_VOICES = 36
FORMAT_VERSION = 1
_PREFIXES: dict[str, type] = {"image": ImageNoise, "audio": AudioNoise, "text": TextNoise}


@dataclass(frozen=True)
class NoiseSettings:
    """All per-modality noise settings; flat names are `<modality>_<field>`, e.g. `audio_snr_min`."""

    image: ImageNoise = ImageNoise()
    audio: AudioNoise = AudioNoise()
    text: TextNoise = TextNoise()

    @classmethod
    def from_flat(cls, **settings: Any) -> NoiseSettings:
        """Build from flat keyword names; unknown names raise TypeError."""
        grouped: dict[str, dict[str, Any]] = {prefix: {} for prefix in _PREFIXES}
        for name, value in settings.items():
            prefix, _, rest = name.partition("_")
            known = {f.name for f in dataclasses.fields(_PREFIXES[prefix])} if prefix in _PREFIXES else set()
            if rest not in known:
                raise TypeError(f"unknown noise setting {name!r}; known: {', '.join(sorted(flat_defaults()))}")
            grouped[prefix][rest] = value
        return cls(**{prefix: kind(**grouped[prefix]) for prefix, kind in _PREFIXES.items()})

    def flat(self) -> dict[str, Any]:
        """The settings under their flat names."""
        return {
            f"{prefix}_{name}": value
            for prefix in _PREFIXES
            for name, value in dataclasses.asdict(getattr(self, prefix)).items()
        }


def flat_defaults() -> dict[str, Any]:
    """Every noise setting's flat name and default."""
    return NoiseSettings().flat()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the make-data options (output, size, seed, workers and one flag per noise setting)."""
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="number of rows (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    parser.add_argument(
        "--heldout-size", type=int, default=DEFAULT_HELDOUT_SIZE,
        help="rows of the held-out split, made differently from train/val/test (held-out fonts, voices, caption "
        "templates; photos and recordings; see app/training/synth_heldout.py); 0 for none (default: %(default)s)",
    )
    parser.add_argument("--no-audio", action="store_true",
                        help="make the data set without the audio modality (needs no espeak-ng)")
    group = parser.add_argument_group("noise settings")
    for prefix, kind in _PREFIXES.items():
        for f in dataclasses.fields(kind):
            group.add_argument(
                f"--{prefix}-{f.name.replace('_', '-')}",
                dest=f"{prefix}_{f.name}",
                type=type(f.default),
                default=f.default,
                help=f"{f.metadata.get('help', '')} (default: %(default)s)",
            )


def run(args: argparse.Namespace) -> Path:
    """CLI entry: generate the data set described by `args` and print a summary."""
    noise = {name: getattr(args, name) for name in flat_defaults()}
    started = time.perf_counter()
    try:
        manifest = generate(args.out, args.size, seed=args.seed, workers=args.workers,
                            heldout_size=args.heldout_size, audio=not args.no_audio, **noise)
    except SettingError as exc:
        flag = "--" + exc.setting.replace("_", "-")
        raise UsageError(f"{flag} {getattr(args, exc.setting, '')}: {exc.message}") from None
    info = json.loads((manifest.parent / "dataset.json").read_text())
    splits = ", ".join(f"{count} {split}" for split, count in info["split_counts"].items())
    voices = f", {len(info['audio']['voices'])} espeak-ng voices" if info.get("audio") else ", no audio"
    print(
        f"wrote {sum(info['split_counts'].values())} rows ({splits}) to {manifest} in "
        f"{time.perf_counter() - started:.1f} s; {len(info['image']['fonts'])} fonts{voices}"
    )
    return manifest


def assign_labels_and_splits(size: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Balanced labels in random order and a split per row, stratified 80/10/10 by label."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(LABEL_STREAM,)))
    labels = rng.permutation(np.arange(size) % len(LABELS))
    splits = [""] * size
    position = 0
    for label in range(len(LABELS)):
        for index in rng.permutation(np.flatnonzero(labels == label)):
            splits[index] = _SPLIT_PATTERN[position % len(_SPLIT_PATTERN)]
            position += 1
    return labels, splits


def _heldout_sources(espeak: str | None, seed: int, workers: int, languages: list[str]) -> synth_heldout.HeldoutSources:
    fonts = tuple(path for path in synth_image.font_files(part="heldout") if synth_image.usable_font(path))
    strokes, stroke_labels = synth_image.uci_strokes("heldout")
    utterances = None
    if espeak is not None:
        have_languages, have_variants = synth_audio.installed_voices(espeak, synth_heldout.HELDOUT_DIALECTS,
                                                                     synth_heldout.HELDOUT_VARIANTS)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(HELDOUT_STREAM, 1, 0)))
        voices = synth_heldout.choose_voices(rng, languages, have_languages, have_variants or [""], HELDOUT_VOICES)
        utterances = synth_audio.build_utterance_bank(espeak, voices, workers=workers)
    return synth_heldout.HeldoutSources(fonts=fonts, handwriting=strokes, handwriting_labels=stroke_labels,
                                        utterances=utterances)  # type: ignore[arg-type]


def generate(
    out_dir: Path, size: int, seed: int = 0, workers: int = 2, heldout_size: int = 0, audio: bool = True,
    **noise_settings: Any,
) -> Path:
    """Generate `size` train/val/test rows and `heldout_size` held-out rows into `out_dir`; returns the path of its
    `manifest.jsonl`.

    `noise_settings` takes the flat names of NoiseSettings (e.g. `image_corrupt_prob=0.3`);
    `workers` <= 1 renders in this process. Raises EspeakNotFoundError when espeak-ng is not
    installed and `audio` is true.
    """
    if size < 1:
        raise SettingError("size", f"must be at least 1, got {size}")
    if heldout_size < 0:
        raise SettingError("heldout_size", f"must be at least 0, got {heldout_size}")
    noise = NoiseSettings.from_flat(**noise_settings)
    espeak = synth_audio.require_espeak() if audio else None
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.jsonl"
    folders = ["images"] + (["audio"] if audio else [])
    if heldout_size:
        folders += [f"heldout/{folder}" for folder in folders]
    for folder in folders:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    # A manifest from an earlier run would describe files this run is about to overwrite.
    manifest.unlink(missing_ok=True)

    languages: list[str] = []
    voices: list[synth_audio.Voice] = []
    utterances = None
    if espeak is not None:
        languages, variants = synth_audio.installed_voices(espeak)
        voice_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(VOICE_STREAM,)))
        voices = synth_audio.choose_voices(voice_rng, languages, variants, noise.audio.voices_per_language)
        utterances = synth_audio.build_utterance_bank(espeak, voices, workers=workers)
    glyphs = synth_image.build_glyph_bank()
    heldout = _heldout_sources(espeak, seed, workers, languages) if heldout_size else None

    labels, splits = assign_labels_and_splits(size, seed)
    heldout_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(HELDOUT_STREAM, 1, 1)))
    heldout_labels = heldout_rng.permutation(np.arange(heldout_size) % len(LABELS))
    id_width = max(6, len(str(max(size, heldout_size) - 1)))
    context = Context(out_dir, seed, id_width, noise, glyphs, utterances, heldout)
    tasks = [(index, int(label), False) for index, label in enumerate(labels)]
    tasks += [(index, int(label), True) for index, label in enumerate(heldout_labels)]
    rendered = render_all(context, tasks, workers)

    rows = []
    for heldout_row, part_labels, part_splits in ((False, labels, splits),
                                                  (True, heldout_labels, ["heldout"] * heldout_size)):
        for index, (label, split) in enumerate(zip(part_labels, part_splits)):
            image_path, caption, audio_path = rendered[heldout_row, index]
            sample_id = ("h" if heldout_row else "") + row_id(index, id_width)
            rows.append({"id": sample_id, "image": image_path, "text": caption, "audio": audio_path,
                         "label": LABELS[label], "split": split})
    info = {
        "format_version": FORMAT_VERSION,
        "task": "digits",
        "labels": list(LABELS),
        "seed": seed,
        "size": size,
        "heldout_size": heldout_size,
        "split_fractions": SPLIT_FRACTIONS,
        "split_counts": {split: sum(row["split"] == split for row in rows)
                         for split in (*SPLIT_FRACTIONS, *(("heldout",) if heldout_size else ()))},
        "label_counts": {label: count for label, count in sorted(Counter(LABELS[i] for i in labels).items())},
        "noise_settings": noise.flat(),
        "image": {
            "size": synth_image.IMAGE_SIZE,
            "handwriting": "sklearn.datasets.load_digits (UCI optical digits, 8x8 upscaled; every "
            f"{synth_image.HELDOUT_UCI_EVERY}th held out)",
            "fonts": list(glyphs.fonts),
        },
        "audio": {
            "sample_rate": synth_audio.SAMPLE_RATE,
            "clip_seconds": synth_audio.CLIP_SECONDS,
            "espeak_ng": synth_audio.espeak_version(espeak),
            "languages": languages,
            "voices": [voice.as_dict() for voice in voices],
        } if espeak is not None else None,
        "text": {"digit_word_languages": list(synth_text.DIGIT_WORDS)},
    }
    if heldout is not None:
        info["heldout"] = {
            "made_by": "app/training/synth_heldout.py",
            "fonts": [str(path) for path in heldout.fonts],
            "handwriting": len(heldout.handwriting),
            "voices": [voice.as_dict() for voice in heldout.utterances.voices[::10]] if heldout.utterances else [],
        }
    (out_dir / "dataset.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    # Written last and renamed into place, so an interrupted run leaves no manifest that looks complete.
    partial = manifest.with_suffix(".jsonl.partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, manifest)
    return manifest
