"""Fusion of modality features. Every module takes features [B, M, D] and a presence mask [B, M].

Absent slots hold zeros that are never read as data; each fusion uses the mask so that an absent modality
contributes nothing, or a learned "absent" token where the architecture needs a fixed-size input.

`internals(feats, mask)` returns what a fusion type computes about the modalities themselves, per sample, for
explaining a prediction: `weights` [B, M] (weighted_sum: the renormalised per-modality weights), `gates` [B, M]
(gated: the GMU's gate values), `attention` [B, L, M] (attention: the [CLS] token's attention to each modality token
in each of the L layers, mean over heads; the rest of each row, 1 - sum, is its attention to itself). Absent
modalities get 0. concat, product and late have none: no quantity of theirs says how much a modality counts.
"""
from __future__ import annotations

import torch
from torch import nn

from app.model.spec import FusionSpec


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


class Fusion(nn.Module):
    """Base: `out_dim` is the size of what forward returns."""

    out_dim: int

    def internals(self, feats: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample quantities over the modalities (see the module docstring); none for this type."""
        return {}


class ConcatFusion(Fusion):
    """Concatenate modality features (absent ones replaced by a learned absence token), plus the mask, then an MLP."""

    def __init__(self, n_modalities: int, spec: FusionSpec) -> None:
        super().__init__()
        self.absent = nn.Parameter(torch.zeros(n_modalities, spec.dim))
        self.mlp = nn.Sequential(
            nn.Linear(n_modalities * (spec.dim + 1), spec.hidden),
            nn.GELU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden, spec.hidden),
            nn.GELU(),
        )
        self.out_dim = spec.hidden

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        filled = torch.where(mask.unsqueeze(-1), feats, self.absent.to(feats.dtype).expand_as(feats))
        flags = mask.to(feats.dtype)
        return self.mlp(torch.cat([filled.flatten(1), flags], dim=1))


class WeightedSumFusion(Fusion):
    """Sum of the present modalities' features, weighted by learned per-modality weights renormalised over them."""

    def __init__(self, n_modalities: int, spec: FusionSpec) -> None:
        super().__init__()
        self.weight_logits = nn.Parameter(torch.zeros(n_modalities))
        self.norm = nn.LayerNorm(spec.dim)
        self.out_dim = spec.dim

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.einsum("bm,bmd->bd", self._weights(feats, mask), feats))

    def _weights(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _masked_softmax(self.weight_logits.expand(mask.shape).to(feats.dtype), mask)

    def internals(self, feats: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"weights": self._weights(feats, mask)}


class ProductFusion(Fusion):
    """Element-wise product of per-modality gates in (0, 2); an absent modality is the neutral element 1."""

    def __init__(self, n_modalities: int, spec: FusionSpec) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(spec.dim, spec.dim) for _ in range(n_modalities))
        self.norm = nn.LayerNorm(spec.dim)
        self.out_dim = spec.dim

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        factors = torch.stack([1.0 + torch.tanh(p(feats[:, i])) for i, p in enumerate(self.proj)], dim=1)
        factors = torch.where(mask.unsqueeze(-1), factors, torch.ones_like(factors))
        return self.norm(factors.prod(dim=1))


class GatedFusion(Fusion):
    """Gated multimodal unit: h_m = tanh(W_m x_m); gates from all inputs, softmax over the present modalities."""

    def __init__(self, n_modalities: int, spec: FusionSpec) -> None:
        super().__init__()
        self.absent = nn.Parameter(torch.zeros(n_modalities, spec.dim))
        self.proj = nn.ModuleList(nn.Linear(spec.dim, spec.dim) for _ in range(n_modalities))
        self.gate = nn.Linear(n_modalities * (spec.dim + 1), n_modalities)
        self.out_dim = spec.dim

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        filled = self._filled(feats, mask)
        h = torch.stack([torch.tanh(p(filled[:, i])) for i, p in enumerate(self.proj)], dim=1)
        return torch.einsum("bm,bmd->bd", self._gates(filled, mask), h)

    def _filled(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.unsqueeze(-1), feats, self.absent.to(feats.dtype).expand_as(feats))

    def _gates(self, filled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gate_in = torch.cat([filled.flatten(1), mask.to(filled.dtype)], dim=1)
        return _masked_softmax(self.gate(gate_in), mask)

    def internals(self, feats: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"gates": self._gates(self._filled(feats, mask), mask)}


class AttentionFusion(Fusion):
    """A [CLS] token and one token per present modality (feature + modality embedding) through a transformer."""

    def __init__(self, n_modalities: int, spec: FusionSpec) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, spec.dim))
        self.modality_embedding = nn.Parameter(torch.randn(1, n_modalities, spec.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            spec.dim, spec.heads, dim_feedforward=spec.hidden, dropout=spec.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, spec.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(spec.dim)
        self.out_dim = spec.dim

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens, padding = self._tokens(feats, mask)
        return self.norm(self.encoder(tokens, src_key_padding_mask=padding)[:, 0])

    def _tokens(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = feats.shape[0]
        tokens = torch.cat([self.cls.expand(b, -1, -1), feats + self.modality_embedding], dim=1)
        padding = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=mask.device), ~mask], dim=1)
        return tokens, padding

    def internals(self, feats: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"attention": self.with_attention(feats, mask)[1]}

    def with_attention(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What `forward` returns, and the [CLS] token's attention to each modality token per layer [B, L, M]
        (mean over heads). The layers are run step by step as `nn.TransformerEncoderLayer` runs them (pre-norm),
        asking self-attention for its weights, which the fused fast path of `forward` does not give."""
        tokens, padding = self._tokens(feats, mask)
        x, weights = tokens, []
        for layer in self.encoder.layers:
            h = layer.norm1(x)
            attended, w = layer.self_attn(h, h, h, key_padding_mask=padding, need_weights=True,
                                          average_attn_weights=True)
            x = x + layer.dropout1(attended)
            x = x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(x))))))
            weights.append(w[:, 0, 1:])
        return self.norm(x[:, 0]), torch.stack(weights, dim=1)


class LateFusion(Fusion):
    """One classifier per modality; the logits of the present modalities are averaged."""

    def __init__(self, n_modalities: int, spec: FusionSpec, n_classes: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(spec.dim, n_classes)) for _ in range(n_modalities)
        )
        self.out_dim = n_classes

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([head(feats[:, i]) for i, head in enumerate(self.heads)], dim=1)
        w = mask.to(logits.dtype).unsqueeze(-1)
        return (logits * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def build_fusion(spec: FusionSpec, n_modalities: int, n_classes: int) -> Fusion:
    """The fusion module named by `spec.type`."""
    simple: dict[str, type[Fusion]] = {
        "concat": ConcatFusion,
        "weighted_sum": WeightedSumFusion,
        "product": ProductFusion,
        "gated": GatedFusion,
        "attention": AttentionFusion,
    }
    if spec.type == "late":
        return LateFusion(n_modalities, spec, n_classes)
    return simple[spec.type](n_modalities, spec)
