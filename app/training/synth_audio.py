"""Synthetic spoken digits: an espeak-ng utterance bank, augmented and mixed with noise per sample."""
from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from math import gcd

import numpy as np
import soundfile as sf
from scipy import signal

from app.errors import SettingError, UsageError

SAMPLE_RATE = 16000
CLIP_SECONDS = 1.5
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)

# espeak-ng reads the numeral in the voice's language, so no per-language word lists are needed.
# Twelve languages: each adds ten new words to learn, and more would make clean audio alone too
# hard for a small model trained on ~10k clips.
LANGUAGES: tuple[str, ...] = ("en-us", "en-gb", "de", "fr-fr", "es", "it", "nl", "pt", "pl", "ru", "cmn", "ja")
VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "croak", "grandma", "grandpa", "Andy", "Annie",
    "benjamin", "linda", "max", "michel", "paul", "rob", "steph", "victor",
)  # fmt: skip
SPEED_RANGE = (120, 230)  # words per minute
PITCH_RANGE = (15, 85)  # espeak's 0..99 scale


class EspeakNotFoundError(UsageError, RuntimeError):
    """espeak-ng, which voices the spoken digits, is not installed."""


def require_espeak() -> str:
    """The espeak-ng executable's path; raises EspeakNotFoundError when it is not on PATH."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakNotFoundError(
            "espeak-ng was not found on PATH; make-data needs it to synthesise the spoken digits: install it "
            "(Debian/Ubuntu: sudo apt-get install espeak-ng), or pass --no-audio for a data set without audio"
        )
    return path


@dataclass(frozen=True)
class AudioNoise:
    """Per-sample audio degradation settings (SNRs in dB, relative to the speech)."""

    corrupt_prob: float = field(
        default=0.25, metadata={"help": "probability that a clip is drowned in noise or cut (mostly unintelligible)"}
    )
    snr_min: float = field(default=3.0, metadata={"help": "lowest SNR of the other clips"})
    snr_max: float = field(default=25.0, metadata={"help": "highest SNR of the other clips"})
    corrupt_snr_min: float = field(default=-20.0, metadata={"help": "lowest SNR of corrupted clips"})
    corrupt_snr_max: float = field(default=-8.0, metadata={"help": "highest SNR of corrupted clips"})
    voices_per_language: int = field(
        default=6, metadata={"help": "espeak-ng voices (variant, speed, pitch) per language in the utterance bank"}
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.corrupt_prob <= 1.0:
            raise SettingError("audio_corrupt_prob", f"must be within [0, 1], got {self.corrupt_prob}")
        if self.snr_min > self.snr_max:
            raise SettingError("audio_snr_min", f"must be <= --audio-snr-max {self.snr_max}")
        if self.corrupt_snr_min > self.corrupt_snr_max:
            raise SettingError("audio_corrupt_snr_min", f"must be <= --audio-corrupt-snr-max {self.corrupt_snr_max}")
        if self.voices_per_language < 1:
            raise SettingError("audio_voices_per_language", "must be >= 1")


@dataclass(frozen=True)
class Voice:
    """One espeak-ng voice setting."""

    language: str
    variant: str
    speed: int
    pitch: int

    def as_dict(self) -> dict[str, str | int]:
        """JSON-friendly form for dataset.json."""
        return asdict(self)


@dataclass(frozen=True)
class UtteranceBank:
    """Every voice saying every digit: 16 kHz float32 waveforms stored back to back."""

    samples: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    voices: tuple[Voice, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def utterance(self, index: int) -> np.ndarray:
        """The waveform of one utterance (a view into the bank)."""
        return self.samples[self.offsets[index] : self.offsets[index + 1]]


def _espeak_list(executable: str, *args: str) -> list[list[str]]:
    out = subprocess.run([executable, *args], capture_output=True, text=True, check=True).stdout
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def espeak_version(executable: str) -> str:
    """espeak-ng's version line, e.g. "eSpeak NG text-to-speech: 1.51" (without its data path)."""
    out = subprocess.run([executable, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().split("  Data at:")[0]


def installed_voices(
    executable: str, wanted_languages: Sequence[str] = LANGUAGES, wanted_variants: Sequence[str] = VARIANTS
) -> tuple[list[str], list[str]]:
    """The wanted languages and variants that this espeak-ng installation has, in the order given."""
    languages = {row[1] for row in _espeak_list(executable, "--voices")}
    # Variant rows: Pty, "variant", Age/Gender, VoiceName, File ("!v/<name>").
    variants = {row[-1].rsplit("/", 1)[-1] for row in _espeak_list(executable, "--voices=variant")}
    have_languages = [lang for lang in wanted_languages if lang in languages]
    if not have_languages:
        raise EspeakNotFoundError(
            f"espeak-ng has none of the languages {', '.join(wanted_languages)}; reinstall espeak-ng"
        )
    return have_languages, [variant for variant in wanted_variants if variant in variants]


def choose_voices(
    rng: np.random.Generator, languages: Sequence[str], variants: Sequence[str], per_language: int
) -> list[Voice]:
    """`per_language` random voices per language with random speed and pitch and, while there are
    enough, distinct variants (an empty variant means espeak-ng's default)."""
    voices = []
    for language in languages:
        order = [variants[i] for i in rng.permutation(len(variants))] or [""]
        for slot in range(per_language):
            variant = order[slot % len(order)]
            voices.append(
                Voice(
                    language=language,
                    variant=variant,
                    speed=int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
                    pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
                )
            )
    return voices


def _resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    divisor = gcd(rate_in, rate_out)
    return signal.resample_poly(wave, rate_out // divisor, rate_in // divisor).astype(np.float32)


def _trim(wave: np.ndarray, threshold: float = 0.02, margin: int = 160) -> np.ndarray:
    """Cut leading/trailing silence (espeak pads its output), keeping a 10 ms margin."""
    loud = np.flatnonzero(np.abs(wave) > threshold * np.abs(wave).max())
    if loud.size == 0:
        return wave
    return wave[max(0, loud[0] - margin) : loud[-1] + margin]


def synthesize(executable: str, voice: Voice, digit: int) -> np.ndarray:
    """espeak-ng saying `digit` with `voice`, as 16 kHz mono float32 without surrounding silence."""
    name = f"{voice.language}+{voice.variant}" if voice.variant else voice.language
    command = [executable, "-v", name, "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout", str(digit)]
    wav = subprocess.run(command, capture_output=True, check=True).stdout
    wave, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return _trim(_resample(wave.mean(axis=1), rate, SAMPLE_RATE))


def build_utterance_bank(executable: str, voices: Sequence[Voice], workers: int = 2) -> UtteranceBank:
    """Synthesise every digit with every voice once (espeak-ng runs in `workers` parallel processes)."""
    jobs = [(voice, digit) for voice in voices for digit in range(10)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        waves = list(pool.map(lambda job: synthesize(executable, *job), jobs))
    lengths = np.array([len(wave) for wave in waves], dtype=np.int64)
    return UtteranceBank(
        samples=np.concatenate(waves),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        labels=np.array([digit for _, digit in jobs], dtype=np.int64),
        voices=tuple(voice for voice, _ in jobs),
    )


def _coloured_noise(rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0: white, 1: pink, 2: brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(CLIP_SAMPLES))
    freqs = np.fft.rfftfreq(CLIP_SAMPLES)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=CLIP_SAMPLES)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def _babble(bank: UtteranceBank, rng: np.random.Generator) -> np.ndarray:
    """Several random bank utterances (any digit, any voice) talking over each other, unit RMS."""
    mix = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    for index in rng.integers(0, len(bank), size=int(rng.integers(3, 7))):
        _place(mix, bank.utterance(int(index)) * rng.uniform(0.3, 1.0), rng)
    return mix / max(float(np.sqrt(np.mean(mix**2))), 1e-8)


def _place(clip: np.ndarray, wave: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Add `wave` into `clip` at a random offset (centre-cropped if too long); returns the span used."""
    if len(wave) > len(clip):
        start = (len(wave) - len(clip)) // 2
        wave = wave[start : start + len(clip)]
    offset = int(rng.integers(0, len(clip) - len(wave) + 1))
    clip[offset : offset + len(wave)] += wave
    return offset, offset + len(wave)


def _reverb(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room response: exponentially decaying noise."""
    rt60 = rng.uniform(0.15, 0.6)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    response = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)
    response[0] = 1.0 / rng.uniform(0.2, 0.8)  # direct path louder than the tail
    wet = signal.fftconvolve(wave, response)
    return (wet / max(np.abs(wet).max(), 1e-8) * np.abs(wave).max()).astype(np.float32)


def _speed(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Speed/pitch perturbation by ±10 % resampling."""
    down = int(rng.integers(90, 111))
    return signal.resample_poly(wave, 100, down).astype(np.float32) if down != 100 else wave


# Bandwidth-limited channels (telephone, muffled) applied to some clips.
_CHANNELS = (
    signal.butter(4, (300, 3400), btype="bandpass", fs=SAMPLE_RATE, output="sos"),
    signal.butter(4, 1500, btype="lowpass", fs=SAMPLE_RATE, output="sos"),
    signal.butter(2, 500, btype="highpass", fs=SAMPLE_RATE, output="sos"),
)


def _noise(bank: UtteranceBank, rng: np.random.Generator, babble_prob: float) -> np.ndarray:
    if rng.random() < babble_prob:
        return _babble(bank, rng)
    return _coloured_noise(rng, exponent=float(rng.choice([0.0, 1.0, 2.0])))


def render_audio(bank: UtteranceBank, label: int, rng: np.random.Generator, noise: AudioNoise) -> np.ndarray:
    """One CLIP_SECONDS float32 clip in [-1, 1] of `label` spoken at a random offset, with noise."""
    candidates = np.flatnonzero(bank.labels == label)
    wave = bank.utterance(int(candidates[rng.integers(len(candidates))])).copy()
    corrupt = rng.random() < noise.corrupt_prob
    wave = _speed(wave, rng)
    if rng.random() < 0.3:
        wave = _reverb(wave, rng)
    if corrupt and rng.random() < 0.4:
        # Keep only the start or the end of the word, as if the recording were cut off.
        keep = max(1, int(len(wave) * rng.uniform(0.2, 0.45)))
        wave = wave[:keep] if rng.random() < 0.5 else wave[-keep:]
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    start, end = _place(clip, wave, rng)
    speech_power = float(np.mean(clip[start:end] ** 2)) + 1e-12
    if corrupt:
        snr = rng.uniform(noise.corrupt_snr_min, noise.corrupt_snr_max)
        background = _noise(bank, rng, babble_prob=0.5)
    else:
        snr = rng.uniform(noise.snr_min, noise.snr_max)
        background = _noise(bank, rng, babble_prob=0.25)
    clip += background * np.sqrt(speech_power / 10 ** (snr / 10))
    if rng.random() < 0.25:
        clip = signal.sosfilt(_CHANNELS[rng.integers(len(_CHANNELS))], clip).astype(np.float32)
    return (clip / max(float(np.abs(clip).max()), 1e-8) * rng.uniform(0.3, 0.95)).astype(np.float32)


def to_pcm16(clip: np.ndarray) -> np.ndarray:
    """Float [-1, 1] to 16-bit PCM samples."""
    return np.round(np.clip(clip, -1.0, 1.0) * 32767).astype(np.int16)
