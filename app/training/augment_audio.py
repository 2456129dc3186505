"""Training-time audio augmentation: a training clip as a real recording of it might sound.

Speaking rate (phase-vocoder time stretch) and pitch, room reverberation, leading and trailing silence (so the
model's window selection has to find the word, as it does on a long upload), background noise at a random SNR,
a telephone channel (8 kHz, 300-3400 Hz, mu-law), any level from quiet to full scale, and clipping. The result
goes through the model's own preprocessing (resampling, window selection), exactly as an upload would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

from app.errors import SettingError
from app.inputs.limits import Waveform


@dataclass(frozen=True)
class AudioAugment:
    """Probabilities and ranges of each audio augmentation (flags `--aug-audio-<name>`)."""

    prob: float = field(default=0.8, metadata={"help": "share of training clips augmented (the rest as they are)"})
    rate: float = field(default=0.5, metadata={"help": "probability of a speaking-rate change"})
    rate_min: float = field(default=0.7, metadata={"help": "slowest speaking rate (x the clip's)"})
    rate_max: float = field(default=1.4, metadata={"help": "fastest speaking rate"})
    pitch: float = field(default=0.4, metadata={"help": "probability of a pitch shift"})
    pitch_semitones: float = field(default=4.0, metadata={"help": "largest pitch shift, semitones"})
    reverb: float = field(default=0.3, metadata={"help": "probability of room reverberation"})
    silence: float = field(default=0.5, metadata={"help": "probability of leading and trailing silence"})
    silence_max: float = field(default=2.0, metadata={"help": "longest silence before and after, seconds"})
    noise: float = field(default=0.5, metadata={"help": "probability of added background noise"})
    snr_min: float = field(default=0.0, metadata={"help": "lowest SNR of that noise, dB"})
    snr_max: float = field(default=20.0, metadata={"help": "highest SNR of that noise, dB"})
    telephone: float = field(default=0.15, metadata={"help": "probability of a telephone channel (8 kHz)"})
    level_min: float = field(default=-40.0, metadata={"help": "quietest peak level, dBFS"})
    level_max: float = field(default=0.0, metadata={"help": "loudest peak level, dBFS"})
    clipping: float = field(default=0.1, metadata={"help": "probability of clipping"})

    def __post_init__(self) -> None:
        for name in ("prob", "rate", "pitch", "reverb", "silence", "noise", "telephone", "clipping"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SettingError(name, f"must be within [0, 1], got {getattr(self, name)}")
        if not 0.25 <= self.rate_min <= self.rate_max <= 4.0:
            raise SettingError("rate_min", f"need 0.25 <= rate_min <= rate_max <= 4, got {self.rate_min}..{self.rate_max}")
        if not 0.0 <= self.pitch_semitones <= 12.0:
            raise SettingError("pitch_semitones", f"must be within [0, 12], got {self.pitch_semitones}")
        if not 0.0 <= self.silence_max <= 30.0:
            raise SettingError("silence_max", f"must be within [0, 30] seconds, got {self.silence_max}")
        if self.snr_min > self.snr_max:
            raise SettingError("snr_min", f"must be <= snr_max, got {self.snr_min} > {self.snr_max}")
        if not -90.0 <= self.level_min <= self.level_max <= 0.0:
            raise SettingError("level_min", f"need -90 <= level_min <= level_max <= 0, got {self.level_min}..{self.level_max}")


def _resample(x: np.ndarray, up: int, down: int) -> np.ndarray:
    g = gcd(up, down)
    return signal.resample_poly(x, up // g, down // g).astype(np.float32)


def time_stretch(x: np.ndarray, factor: float, n_fft: int = 512) -> np.ndarray:
    """x lasting `factor` times as long at the same pitch (phase vocoder)."""
    hop = n_fft // 4
    if len(x) < n_fft or abs(factor - 1.0) < 1e-3:
        return x
    _, _, spec = signal.stft(x, nperseg=n_fft, noverlap=n_fft - hop, boundary="zeros", padded=True)
    steps = np.arange(0, spec.shape[1] - 1, 1.0 / factor)
    base = steps.astype(np.int64)
    frac = (steps - base)[None, :]
    left, right = spec[:, base], spec[:, base + 1]
    magnitude = (1 - frac) * np.abs(left) + frac * np.abs(right)
    advance = np.linspace(0, np.pi * hop, spec.shape[0])[:, None]
    delta = np.angle(right) - np.angle(left) - advance
    delta -= 2 * np.pi * np.round(delta / (2 * np.pi))
    phase = np.angle(spec[:, :1]) + np.concatenate(
        [np.zeros((spec.shape[0], 1)), np.cumsum(advance + delta, axis=1)[:, :-1]], axis=1
    )
    _, out = signal.istft(magnitude * np.exp(1j * phase), nperseg=n_fft, noverlap=n_fft - hop, boundary=True)
    return out.astype(np.float32)


def _reverb(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.15, 0.8)
    t = np.arange(int(rt60 * rate)) / rate
    response = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60) * rng.uniform(0.1, 0.5)
    response[0] = 1.0
    wet = signal.fftconvolve(x, response)[: len(x) + int(0.3 * rt60 * rate)]
    return (wet * (np.abs(x).max() / max(np.abs(wet).max(), 1e-8))).astype(np.float32)


def _noise(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise, or mains hum with harmonics; unit RMS."""
    if rng.random() < 0.15:
        t = np.arange(n) / rate
        mains = float(rng.choice([50.0, 60.0]))
        out = sum(rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) for k in (1, 2, 3, 5))
        out = out + 0.1 * rng.standard_normal(n)
    else:
        size = sp_fft.next_fast_len(n, real=True)
        spectrum = np.fft.rfft(rng.standard_normal(size))
        freqs = np.fft.rfftfreq(size)
        freqs[0] = freqs[1]
        out = np.fft.irfft(spectrum / freqs ** (float(rng.choice([0.0, 1.0, 2.0])) / 2), n=size)[:n]
    return (out / max(float(np.sqrt(np.mean(out**2))), 1e-8)).astype(np.float32)


def _telephone(x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    narrow = _resample(x, 8000, rate)
    narrow = signal.sosfilt(signal.butter(4, (300, 3400), btype="bandpass", fs=8000, output="sos"), narrow)
    peak = max(float(np.abs(narrow).max()), 1e-8)
    mu = 255.0
    y = np.clip(narrow / peak, -1, 1)
    companded = np.round(np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu) * 127) / 127
    return (np.sign(companded) * np.expm1(np.abs(companded) * np.log1p(mu)) / mu * peak).astype(np.float32), 8000


def augment_audio(wave: Waveform, cfg: AudioAugment, rng: np.random.Generator) -> Waveform:
    """`wave` as described in the module docstring (or as it is, with probability 1 - prob)."""
    if rng.random() >= cfg.prob:
        return wave
    rate = wave.sample_rate
    x = wave.samples.mean(axis=1).astype(np.float32)
    speech_power = float(np.mean(x**2)) + 1e-10
    tempo = rng.uniform(cfg.rate_min, cfg.rate_max) if rng.random() < cfg.rate else 1.0
    shift = 2 ** (rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones) / 12) if rng.random() < cfg.pitch else 1.0
    if shift != 1.0:  # resampling raises the pitch by `shift` and shortens the clip by it; the stretch undoes that
        x = _resample(x, 1000, round(1000 * shift))
    if tempo != 1.0 or shift != 1.0:
        x = time_stretch(x, shift / tempo)
    if rng.random() < cfg.reverb:
        x = _reverb(x, rate, rng)
    if rng.random() < cfg.silence:
        before, after = (int(rng.uniform(0, cfg.silence_max) * rate) for _ in range(2))
        x = np.concatenate([np.zeros(before, np.float32), x, np.zeros(after, np.float32)])
    if rng.random() < cfg.noise:
        snr = rng.uniform(cfg.snr_min, cfg.snr_max)
        x = x + _noise(len(x), rate, rng) * np.float32(np.sqrt(speech_power / 10 ** (snr / 10)))
    if rng.random() < cfg.telephone:
        x, rate = _telephone(x, rate)
    level = 10 ** (rng.uniform(cfg.level_min, cfg.level_max) / 20)
    x = x * np.float32(level / max(float(np.abs(x).max()), 1e-8))
    if rng.random() < cfg.clipping:
        x = np.clip(x * np.float32(rng.uniform(2.0, 8.0)), -1.0, 1.0)
    x = np.round(np.clip(x, -1, 1) * 32767) / 32767  # 16-bit, as a recording would be stored
    return Waveform(samples=x.astype(np.float32)[:, None], sample_rate=rate)
