"""The fast log-mel front end gives the numbers every model was trained on (the `torch.stft` reference), on speech,
noise, silence and odd clip lengths; and it can run before the model without changing the model's answer."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.inputs.audio import decode_audio
from app.inputs.preprocess import Preprocessor
from app.model import audio_features
from app.model.artifact import load_artifact
from app.model.audio_features import LogMel
from app.model.batch import Sample, collate
from app.model.classifier import FusionClassifier
from app.model.spec import AudioSpec
from bench.reference_logmel import stft_log_mel
from tests.helpers import limits, tiny_spec

ROOT = Path(__file__).resolve().parents[2]
# What "the same numbers" means: models were trained on the reference; 1e-4 on standardised log-mel values (their
# spread is 1) is far below anything a trained model tells apart.
TOLERANCE = 1e-4


def reference(module: LogMel, wave: torch.Tensor) -> torch.Tensor:
    return stft_log_mel(wave, module.window, module.filterbank, module.hop_length)


def speech() -> torch.Tensor:
    """The spoken digit of the README's example, as the shipped model's preprocessing gives it (16 kHz, 1.5 s)."""
    spec = load_artifact(ROOT / "models" / "digits").spec
    wave = decode_audio((ROOT / "bench" / "assets" / "digit.wav").read_bytes(), limits())
    return Preprocessor(spec).__call__(audio=wave).audio  # type: ignore[return-value]


def test_same_numbers_as_the_stft_reference_on_speech_noise_and_silence() -> None:
    module = LogMel.from_spec(load_artifact(ROOT / "models" / "digits").spec.audio)  # type: ignore[arg-type]
    clip = speech()
    g = torch.Generator().manual_seed(0)
    waves = torch.stack([
        clip,
        clip * 1e-3,  # very quiet: the log of tiny energies, where rounding shows most
        clip.roll(7000) * 3.0,
        torch.zeros_like(clip),  # silence: flat log-mel, std clamped
        torch.randn(clip.shape, generator=g) * 0.3,
        torch.sin(torch.arange(clip.numel()) * 0.3) * 0.5,  # a pure tone: one hot bin
    ])
    got = module(waves)
    want = reference(module, waves)
    assert got.shape == want.shape == (6, 1, 40, 101)
    assert float((got - want).abs().max()) < TOLERANCE
    assert float(want[0].std()) > 0.9  # the reference itself is a real spectrogram, not a degenerate one


@pytest.mark.parametrize(
    ("n_fft", "hop", "samples"),
    [(400, 240, 24000), (400, 240, 23999), (128, 64, 2000), (512, 160, 16000), (256, 256, 300), (400, 100, 401)],
)
def test_same_numbers_for_other_configs_and_clip_lengths(n_fft: int, hop: int, samples: int) -> None:
    """Frames at both ends reach past the clip (reflect padding): every combination of where they start."""
    module = LogMel(16000, n_fft, hop, 24, 20.0, 8000.0)
    wave = torch.randn(5, samples, generator=torch.Generator().manual_seed(samples)) * 0.2
    got, want = module(wave), reference(module, wave)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < TOLERANCE


def test_chunks_and_batch_size_do_not_change_a_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    module = LogMel(8000, 128, 64, 16, 0.0, 4000.0)
    waves = torch.randn(9, 2000, generator=torch.Generator().manual_seed(1))
    whole = module(waves)
    for chunk in (1, 2, 4, 100):
        monkeypatch.setattr(audio_features, "CPU_CHUNK", chunk)
        assert torch.allclose(module(waves), whole, atol=1e-6)
    alone = torch.cat([module(waves[i:i + 1]) for i in range(9)])
    assert torch.allclose(alone, whole, atol=1e-6)


def test_the_front_end_can_run_before_the_model() -> None:
    """What a front-end process would do: compute the log-mel of each clip itself, then hand the model the
    log-mel instead of the waveform; the logits are those of the model computing it."""
    spec = tiny_spec()
    torch.manual_seed(0)
    model = FusionClassifier(spec).eval()
    front_end = LogMel.from_spec(spec.audio)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(2)
    waves = [torch.randn(spec.audio.clip_samples, generator=g) * 0.2 for _ in range(3)]  # type: ignore[union-attr]
    text = torch.tensor([5, 6, 7])
    raw = collate([Sample(text=text, audio=w) for w in waves])
    precomputed = collate([Sample(text=text, audio=front_end(w[None])[0]) for w in waves])
    assert precomputed.audio is not None and precomputed.audio.shape[1:] == (1, 16, 32)
    with torch.inference_mode():
        assert torch.allclose(model(raw), model(precomputed), atol=1e-5)


def test_front_end_config_comes_from_the_spec() -> None:
    spec = AudioSpec(sample_rate=8000, clip_seconds=0.5, n_fft=256, hop_length=128, n_mels=20, f_min=50.0)
    module = LogMel.from_spec(spec)
    out = module(torch.randn(2, spec.clip_samples) * 0.1)
    assert out.shape == (2, 1, 20, audio_features.frame_count(spec.clip_samples, 128))
    assert module.filterbank.shape == (129, 20)
