"""Log-mel spectrogram in plain torch (`torch.stft` + a triangular mel filterbank), so it runs batched on the model's device."""
from __future__ import annotations

import torch
from torch import nn


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


class LogMel(nn.Module):
    """Waveforms [N, S] -> per-example standardised log-mel spectrograms [N, 1, n_mels, frames].

    Always computed in float32: the FFT and the log are where reduced precision hurts most.
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        # Derived from the config, so not part of the weights file.
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer(
            "filterbank", mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max), persistent=False
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = torch.stft(
                wave.float(),
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                window=self.window,
                center=True,
                return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # [N, F, T]
            mel = torch.matmul(power.transpose(1, 2), self.filterbank).transpose(1, 2)  # [N, M, T]
            logmel = torch.log(mel + 1e-6)
            mean = logmel.mean(dim=(1, 2), keepdim=True)
            std = logmel.std(dim=(1, 2), keepdim=True).clamp_min(1e-3)
            return ((logmel - mean) / std).unsqueeze(1)

