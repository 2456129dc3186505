"""The fusion classifier: encoders (run only on the samples that have their modality) -> fusion -> head -> logits."""
from __future__ import annotations

import torch
from torch import nn

from app.model.batch import Batch
from app.model.encoders import AudioEncoder, ImageEncoder, TextEncoder
from app.model.fusion import build_fusion
from app.model.spec import MODALITIES, ArtifactSpec
from app.model.tokenizer import Tokenizer


class FusionClassifier(nn.Module):
    """Built entirely from an ArtifactSpec; `forward(batch)` returns uncalibrated logits [B, n_classes]."""

    def __init__(self, spec: ArtifactSpec) -> None:
        super().__init__()
        self.spec = spec
        dim = spec.fusion.dim
        self.modalities = spec.ordered_modalities
        # Columns of Batch.mask (always in MODALITIES order) that this model reads.
        self.mask_columns = [MODALITIES.index(m) for m in self.modalities]
        self.encoders = nn.ModuleDict()
        if spec.image is not None:
            self.encoders["image"] = ImageEncoder(spec.image, dim)
        if spec.text is not None:
            vocab = Tokenizer(spec.text.tokenizer).vocab_size
            self.encoders["text"] = TextEncoder(spec.text, vocab, dim)
        if spec.audio is not None:
            self.encoders["audio"] = AudioEncoder(spec.audio, dim)
        n_classes = len(spec.labels)
        self.fusion = build_fusion(spec.fusion, len(self.modalities), n_classes)
        self.head: nn.Module = (
            nn.Identity()
            if spec.fusion.type == "late"
            else nn.Sequential(nn.Dropout(spec.fusion.dropout), nn.Linear(self.fusion.out_dim, n_classes))
        )

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [B, M, dim] (zeros where absent) and the presence mask [B, M] of this model's modalities."""
        mask = batch.mask[:, self.mask_columns]
        if not bool(mask.any(dim=1).all()):
            raise ValueError(f"every sample needs at least one of this model's modalities {list(self.modalities)}")
        rows: list[torch.Tensor] = []
        for i, m in enumerate(self.modalities):
            present = mask[:, i]
            if m == "image" and batch.image is not None:
                f = self.encoders["image"](batch.image)
            elif m == "text" and batch.text is not None:
                f = self.encoders["text"](batch.text, batch.text_padding)
            elif m == "audio" and batch.audio is not None:
                f = self.encoders["audio"](batch.audio)
            else:
                f = None
            slot = torch.zeros(batch.size, self.spec.fusion.dim, device=mask.device, dtype=self._dtype())
            if f is not None:
                slot = slot.index_put((present.nonzero(as_tuple=True)[0],), f.to(slot.dtype))
            rows.append(slot)
        return torch.stack(rows, dim=1), mask

    def forward(self, batch: Batch) -> torch.Tensor:
        feats, mask = self.encode(batch)
        return self.head(self.fusion(feats, mask))

    def _dtype(self) -> torch.dtype:
        return next(self.fusion.parameters()).dtype

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
