"""Log-mel spectrogram in plain torch, batched on the model's device.

The numbers are those of `torch.stft(center=True, reflect padding, periodic Hann window)` -> power -> triangular
mel filterbank -> log -> per-example standardisation, which every model so far was trained on; the computation is
arranged for speed on CPU (bench/README.md, "The audio front end"):
- windowed frames are written once, straight from the waveform (no padded copy of the whole clip, no strided
  frames multiplied into a second copy);
- the power spectrum is squared in place where the FFT left it, and re² + im² summed in one pass (a reduction over
  the last, size-2 dimension is ten times slower than adding the two strided halves);
- the mean and standard deviation are two contiguous reductions instead of a strided Welford pass;
- on CPU, the clips go through in chunks whose intermediates stay in the core's cache.

`LogMel` is usable on its own, before the model (e.g. in a front-end process): `AudioEncoder` takes either
waveforms [N, S] or the log-mel [N, 1, n_mels, frames] this module returns.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from app.model.spec import AudioSpec

# Clips per chunk on CPU: frames and spectrum of 4 clips of 1.5 s at 16 kHz (~1.3 MB) stay in a core's L2 cache;
# whole batches at once spill them to memory (bench/README.md).
CPU_CHUNK = 4


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """HTK-style triangular filters, shape [n_fft // 2 + 1, n_mels], each normalised to unit area (Slaney)."""
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(
        _hz_to_mel(torch.tensor(f_min, dtype=torch.float64)).item(),
        _hz_to_mel(torch.tensor(f_max, dtype=torch.float64)).item(),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz_edges = _mel_to_hz(mel_edges)
    lower, center, upper = hz_edges[:-2], hz_edges[1:-1], hz_edges[2:]
    rising = (freqs[:, None] - lower[None, :]) / (center - lower)[None, :]
    falling = (upper[None, :] - freqs[:, None]) / (upper - center)[None, :]
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    fb = fb * (2.0 / (upper - lower))[None, :]
    return fb.to(torch.float32)


def frame_count(samples: int, hop_length: int) -> int:
    """Frames of a centred STFT of `samples` samples."""
    return 1 + samples // hop_length


def windowed_frames(wave: torch.Tensor, window: torch.Tensor, hop_length: int) -> torch.Tensor:
    """[N, S] -> [N, frames, n_fft]: the frames of `torch.stft(center=True, pad_mode="reflect")`, times `window`,
    written in one pass. Only the frames that reach past either end are cut from reflect-padded end pieces."""
    n, s = wave.shape
    n_fft = window.shape[0]
    half = n_fft // 2
    t = frame_count(s, hop_length)
    first = -(-half // hop_length)  # the first frame wholly inside the wave (frame i starts at i*hop - half)
    last = (s + half - n_fft) // hop_length  # the last one
    if last < first or s <= half + 1:  # a clip shorter than about one frame: pad it whole
        padded = F.pad(wave[:, None], (half, half), mode="reflect")[:, 0]
        return padded.unfold(-1, n_fft, hop_length) * window
    out = torch.empty(n, t, n_fft, dtype=wave.dtype, device=wave.device)
    inner = wave[:, first * hop_length - half:].unfold(-1, n_fft, hop_length)[:, : last - first + 1]
    torch.mul(inner, window, out=out[:, first:last + 1])
    if first > 0:
        piece = min(s, max(half + 1, (first - 1) * hop_length + n_fft - half))
        head = F.pad(wave[:, None, :piece], (half, 0), mode="reflect")[:, 0]
        torch.mul(head.unfold(-1, n_fft, hop_length)[:, :first], window, out=out[:, :first])
    if last < t - 1:
        start = (last + 1) * hop_length - half
        p0 = max(0, min(start, s - half - 1))  # the reflection needs `half` samples before the end
        tail = F.pad(wave[:, None, p0:], (0, half), mode="reflect")[:, 0]
        torch.mul(tail[:, start - p0:].unfold(-1, n_fft, hop_length)[:, : t - 1 - last], window, out=out[:, last + 1:])
    return out


def log_mel(
    wave: torch.Tensor, window: torch.Tensor, filterbank: torch.Tensor, hop_length: int, chunk: int = 0
) -> torch.Tensor:
    """Waveforms [N, S] (float32) -> standardised log-mel [N, 1, n_mels, frames] (a transposed view).

    `filterbank`: [n_fft // 2 + 1, n_mels]. `chunk`: clips per FFT call (0: all at once)."""
    n, s = wave.shape
    t = frame_count(s, hop_length)
    m = filterbank.shape[1]
    mel = torch.empty(n, t, m, dtype=wave.dtype, device=wave.device)
    step = chunk if chunk > 0 else max(n, 1)
    for i in range(0, n, step):
        frames = windowed_frames(wave[i:i + step], window, hop_length)
        c = frames.shape[0]
        spec = torch.view_as_real(torch.fft.rfft(frames, dim=-1))  # [c, T, F, 2], a fresh tensor
        spec.mul_(spec)
        power = torch.add(spec[..., 0], spec[..., 1])  # [c, T, F]
        torch.mm(power.view(c * t, -1), filterbank, out=mel[i:i + c].view(c * t, m))
    flat = mel.view(n, t * m).add_(1e-6).log_()
    flat.sub_(flat.mean(dim=1, keepdim=True))
    # The unbiased standard deviation of the centred values, as torch.std computes it.
    std = torch.linalg.vector_norm(flat, dim=1, keepdim=True).div_(math.sqrt(max(t * m - 1, 1)))
    flat.div_(std.clamp_min_(1e-3))
    return mel.transpose(1, 2).unsqueeze(1)


class LogMel(nn.Module):
    """Waveforms [N, S] -> per-example standardised log-mel spectrograms [N, 1, n_mels, frames].

    Always computed in float32: the FFT and the log are where reduced precision hurts most.
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        # Derived from the config, so not part of the weights file.
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer(
            "filterbank", mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max), persistent=False
        )

    @classmethod
    def from_spec(cls, spec: AudioSpec) -> LogMel:
        f_max = spec.f_max if spec.f_max is not None else spec.sample_rate / 2
        return cls(spec.sample_rate, spec.n_fft, spec.hop_length, spec.n_mels, spec.f_min, f_max)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):
            chunk = CPU_CHUNK if wave.device.type == "cpu" else 0
            return log_mel(wave.float(), self.window, self.filterbank, self.hop_length, chunk)
