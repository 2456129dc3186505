from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from app.training import make_data
from app.training.synth_audio import EspeakNotFoundError
from tests.helpers import limits

SIZE = 40
# One voice per language keeps the espeak-ng utterance bank (and so each generation) small.
FAST = {"audio_voices_per_language": 1}
FIELDS = {"id", "image", "text", "audio", "label", "split"}

needs_espeak = pytest.mark.needs_tool("espeak-ng")


def _rows(manifest: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    return make_data.generate(out, SIZE, seed=7, workers=2, **FAST)


@needs_espeak
def test_manifest_rows_fields_labels_and_splits(dataset: Path) -> None:
    rows = _rows(dataset)
    assert dataset.name == "manifest.jsonl"
    assert len(rows) == SIZE
    assert all(set(row) == FIELDS for row in rows)
    assert len({row["id"] for row in rows}) == SIZE
    assert Counter(row["label"] for row in rows) == {str(digit): SIZE // 10 for digit in range(10)}
    assert Counter(row["split"] for row in rows) == {"train": 32, "val": 4, "test": 4}
    for row in rows:
        assert row["image"] == f"images/{row['id']}.png"
        assert row["audio"] == f"audio/{row['id']}.wav"
        assert isinstance(row["text"], str) and row["text"].strip()


@needs_espeak
def test_every_file_exists_and_decodes(dataset: Path) -> None:
    for row in _rows(dataset):
        with Image.open(dataset.parent / row["image"]) as image:
            assert image.mode == "L" and image.size == (28, 28)
        info = sf.info(str(dataset.parent / row["audio"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == 24000


@needs_espeak
def test_dataset_json_documents_the_run(dataset: Path) -> None:
    info = json.loads((dataset.parent / "dataset.json").read_text(encoding="utf-8"))
    assert info["seed"] == 7 and info["size"] == SIZE
    assert info["split_fractions"] == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert set(info["noise_settings"]) == set(make_data.flat_defaults())
    assert info["noise_settings"]["audio_voices_per_language"] == 1
    assert info["image"]["fonts"] and all(Path(font).is_file() for font in info["image"]["fonts"])
    assert info["audio"]["languages"] and info["audio"]["voices"]
    assert {voice["language"] for voice in info["audio"]["voices"]} == set(info["audio"]["languages"])


@needs_espeak
def test_same_seed_gives_same_data_whatever_the_worker_count(dataset: Path, tmp_path: Path) -> None:
    again = make_data.generate(tmp_path, SIZE, seed=7, workers=1, **FAST)
    assert again.read_bytes() == dataset.read_bytes()
    assert (tmp_path / "dataset.json").read_bytes() == (dataset.parent / "dataset.json").read_bytes()
    for row in _rows(dataset):
        first = np.asarray(Image.open(dataset.parent / row["image"]))
        second = np.asarray(Image.open(tmp_path / row["image"]))
        np.testing.assert_array_equal(first, second)
        np.testing.assert_array_equal(
            sf.read(dataset.parent / row["audio"], dtype="int16")[0], sf.read(tmp_path / row["audio"], dtype="int16")[0]
        )


@needs_espeak
def test_cli_arguments_and_another_seed(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    make_data.add_arguments(parser)
    args = parser.parse_args(
        ["--out", str(tmp_path), "--size", str(SIZE), "--seed", "8", "--audio-voices-per-language", "1",
         "--heldout-size", "0"]
    )
    manifest = make_data.run(args)
    assert manifest == tmp_path / "manifest.jsonl"
    assert f"wrote {SIZE} rows" in capsys.readouterr().out
    other = _rows(manifest)
    assert [row["label"] for row in other] != [row["label"] for row in _rows(dataset)]
    assert not np.array_equal(
        np.asarray(Image.open(tmp_path / other[0]["image"])), np.asarray(Image.open(dataset.parent / other[0]["image"]))
    )


def test_cli_defaults() -> None:
    parser = argparse.ArgumentParser()
    make_data.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.out, args.size, args.seed, args.workers) == (Path("data/digits"), 12000, 0, 2)
    assert (args.heldout_size, args.no_audio) == (2000, False)
    assert {name: getattr(args, name) for name in make_data.flat_defaults()} == make_data.flat_defaults()


def test_splits_are_stratified_80_10_10() -> None:
    labels, splits = make_data.assign_labels_and_splits(1000, seed=3)
    for label in range(10):
        counts = Counter(split for split, lab in zip(splits, labels) if lab == label)
        assert counts == {"train": 80, "val": 10, "test": 10}


def test_missing_espeak_tells_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng"):
        make_data.generate(tmp_path / "out", SIZE)
    assert not (tmp_path / "out").exists()


def test_unknown_noise_setting_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="image_corupt_prob"):
        make_data.generate(tmp_path, SIZE, image_corupt_prob=0.5)


def test_missing_espeak_ends_in_one_line_with_the_remedies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["make-data", "--out", str(tmp_path / "out"), "--size", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "apt-get install espeak-ng" in err and "--no-audio" in err


def test_no_audio_makes_a_data_set_without_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    manifest = make_data.generate(tmp_path / "out", 20, seed=1, workers=1, heldout_size=10, audio=False)
    rows = _rows(manifest)
    assert len(rows) == 30 and all(row["audio"] is None for row in rows)
    assert all((manifest.parent / row["image"]).is_file() and row["text"] for row in rows)
    info = json.loads((manifest.parent / "dataset.json").read_text(encoding="utf-8"))
    assert info["audio"] is None and info["split_counts"]["heldout"] == 10


@needs_espeak
def test_heldout_split_is_made_from_sources_training_never_sees(tmp_path: Path) -> None:
    from app.inputs.audio import decode_audio
    from app.inputs.image import decode_image
    from app.training import synth_audio, synth_heldout

    manifest = make_data.generate(tmp_path, 20, seed=3, workers=1, heldout_size=20, **FAST)
    rows = _rows(manifest)
    heldout = [row for row in rows if row["split"] == "heldout"]
    assert len(heldout) == 20 and Counter(row["split"] for row in rows)["train"] == 16
    decode_limits = limits()
    sizes, rates = set(), set()
    for row in heldout:
        assert row["image"].startswith("heldout/") and row["audio"].startswith("heldout/")
        sizes.add(decode_image((tmp_path / row["image"]).read_bytes(), decode_limits).size)
        rates.add(decode_audio((tmp_path / row["audio"]).read_bytes(), decode_limits).sample_rate)
        assert row["text"].strip()
    assert len(sizes) > 3 and len(rates) > 1  # photos of many sizes, recordings at several rates
    info = json.loads((tmp_path / "dataset.json").read_text(encoding="utf-8"))
    assert info["heldout"]["fonts"] and not set(info["heldout"]["fonts"]) & set(info["image"]["fonts"])
    assert {voice["variant"] for voice in info["heldout"]["voices"]} <= set(synth_heldout.HELDOUT_VARIANTS)
    assert not set(synth_heldout.HELDOUT_VARIANTS) & set(synth_audio.VARIANTS)
