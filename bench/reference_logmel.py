"""The log-mel front end as it was computed up to issue 20 (`torch.stft`), kept as the reference.

`app.model.audio_features` computes the same numbers faster; tests/model/test_audio_features.py checks it against
this, and `bench/inprocess.py --runtime main` serves the model with this front end (eager torch as on main before
issue 20), so both are timed side by side in one process.
"""
from __future__ import annotations

import torch
from torch import nn

from app.model.audio_features import LogMel


def stft_log_mel(wave: torch.Tensor, window: torch.Tensor, filterbank: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Waveforms [N, S] -> standardised log-mel [N, 1, n_mels, frames], verbatim the former `LogMel.forward`."""
    with torch.autocast(device_type=wave.device.type, enabled=False):
        spec = torch.stft(
            wave.float(),
            n_fft=window.shape[0],
            hop_length=hop_length,
            window=window,
            center=True,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [N, F, T]
        mel = torch.matmul(power.transpose(1, 2), filterbank).transpose(1, 2)  # [N, M, T]
        logmel = torch.log(mel + 1e-6)
        mean = logmel.mean(dim=(1, 2), keepdim=True)
        std = logmel.std(dim=(1, 2), keepdim=True).clamp_min(1e-3)
        return ((logmel - mean) / std).unsqueeze(1)


class StftLogMel(nn.Module):
    """A `LogMel`'s configuration, computed with `torch.stft` as before issue 20."""

    def __init__(self, fast: LogMel) -> None:
        super().__init__()
        self.fast = fast

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return stft_log_mel(wave, self.fast.window, self.fast.filterbank, self.fast.hop_length)


def use_reference_front_end(model: nn.Module) -> None:
    """Swap every `LogMel` in `model` (in place) for the `torch.stft` one."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LogMel):
                setattr(module, name, StftLogMel(child))
