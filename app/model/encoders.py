"""Per-modality encoders. Each maps its modality's rows of a batch to features [N, dim]."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from app.model.audio_features import LogMel
from app.model.spec import AudioSpec, ImageSpec, TextSpec


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv stages with pooling, global average pool, linear projection to `dim`."""

    def __init__(self, in_channels: int, width: int, dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(in_channels, width),
            nn.MaxPool2d(2),
            _conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.proj = nn.Linear(4 * width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x))


class ImageEncoder(nn.Module):
    """Images [N, C, H, W] -> [N, dim]: the small CNN, or a torchvision backbone (architecture only, no weights)."""

    def __init__(self, spec: ImageSpec, dim: int) -> None:
        super().__init__()
        # Decided here, not from the type of `net` at each call: serving may swap `net` for an equivalent module.
        self.expand_to_rgb = spec.channels == 1 and spec.encoder != "cnn"
        if spec.encoder == "cnn":
            self.net: nn.Module = SmallCNN(spec.channels, spec.width, dim)
        else:
            builder = getattr(torchvision.models, spec.encoder)
            self.net = builder(weights=None, num_classes=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expand_to_rgb:
            x = x.expand(-1, 3, -1, -1)  # torchvision backbones take RGB
        return self.net(x)


class TextEncoder(nn.Module):
    """Token ids [N, L] (+ padding mask) -> [N, dim] via embedding + transformer / LSTM / GRU, masked mean pooling."""

    def __init__(self, spec: TextSpec, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.kind = spec.encoder
        e = spec.embed_dim
        self.embed = nn.Embedding(vocab_size, e, padding_idx=0)
        if spec.encoder == "transformer":
            self.position = nn.Embedding(spec.max_tokens, e)
            layer = nn.TransformerEncoderLayer(
                e, spec.heads, dim_feedforward=4 * e, dropout=0.1, batch_first=True, norm_first=True
            )
            self.body: nn.Module = nn.TransformerEncoder(layer, spec.layers, enable_nested_tensor=False)
            out = e
        else:
            rnn = nn.LSTM if spec.encoder == "lstm" else nn.GRU
            self.body = rnn(e, e, num_layers=spec.layers, batch_first=True, bidirectional=True)
            out = 2 * e
        self.norm = nn.LayerNorm(out)
        self.proj = nn.Linear(out, dim)

    def forward(self, ids: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        if self.kind == "transformer":
            x = x + self.position(torch.arange(ids.shape[1], device=ids.device))[None]
            h = self.body(x, src_key_padding_mask=padding)
        else:
            lengths = (~padding).sum(dim=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            h, _ = self.body(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=ids.shape[1])
        keep = (~padding).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)
        return self.proj(self.norm(pooled))


class TemporalCNN(nn.Module):
    """1-D residual convolutions over time, mel bins as channels, then global average pooling over time."""

    def __init__(self, n_mels: int, width: int, dim: int) -> None:
        super().__init__()
        c = 4 * width
        self.stem = nn.Sequential(nn.Conv1d(n_mels, c, 3, padding=1, bias=False), nn.BatchNorm1d(c), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(c, c, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm1d(c),
                nn.ReLU(inplace=True),
                nn.Conv1d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm1d(c),
            )
            for _ in range(3)
        )
        self.pool = nn.MaxPool1d(2, ceil_mode=True)
        self.proj = nn.Linear(c, dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.stem(mel.squeeze(1))
        for block in self.blocks:
            x = torch.relu(block(x) + self.pool(x))
        return self.proj(x.mean(dim=2))


class AudioEncoder(nn.Module):
    """Waveforms [N, S] at the spec's sample rate -> log-mel -> temporal or 2-D small CNN -> [N, dim].

    Also takes the log-mel [N, 1, n_mels, frames] itself, computed beforehand by `LogMel.from_spec(spec)` (the same
    module as `self.features`), so the front end can run elsewhere than the model (another process, or a step
    before the batch is formed)."""

    def __init__(self, spec: AudioSpec, dim: int) -> None:
        super().__init__()
        self.features = LogMel.from_spec(spec)
        self.cnn: nn.Module = (
            TemporalCNN(spec.n_mels, spec.width, dim) if spec.encoder == "tcnn" else SmallCNN(1, spec.width, dim)
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        mel = self.features(audio) if audio.dim() == 2 else audio
        return self.cnn(mel.to(parameter_dtype(self.cnn)))


def parameter_dtype(module: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype of `module`'s first parameter; `default` for a module without any (e.g. one served by another
    runtime)."""
    return next((p.dtype for p in module.parameters()), default)
