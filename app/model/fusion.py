"""Fusion of modality features. Every module takes features [B, M, D] and a presence mask [B, M].

Absent slots hold zeros that are never read as data; each fusion uses the mask so that an absent modality
contributes nothing, or a learned "absent" token where the architecture needs a fixed-size input.
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
        w = _masked_softmax(self.weight_logits.expand(mask.shape).to(feats.dtype), mask)
        return self.norm(torch.einsum("bm,bmd->bd", w, feats))


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
        filled = torch.where(mask.unsqueeze(-1), feats, self.absent.to(feats.dtype).expand_as(feats))
        h = torch.stack([torch.tanh(p(filled[:, i])) for i, p in enumerate(self.proj)], dim=1)
        gate_in = torch.cat([filled.flatten(1), mask.to(feats.dtype)], dim=1)
        z = _masked_softmax(self.gate(gate_in), mask)
        return torch.einsum("bm,bmd->bd", z, h)


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
        b = feats.shape[0]
        tokens = torch.cat([self.cls.expand(b, -1, -1), feats + self.modality_embedding], dim=1)
        padding = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=mask.device), ~mask], dim=1)
        return self.norm(self.encoder(tokens, src_key_padding_mask=padding)[:, 0])


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
