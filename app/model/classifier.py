"""The fusion classifier: encoders (run only on the samples that have their modality) -> fusion -> head -> logits."""
from __future__ import annotations

import torch
from torch import nn

from app.model.batch import Batch
from app.model.encoders import AudioEncoder, ImageEncoder, TextEncoder, parameter_dtype
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
        # A modality with a row for every sample answers the check below without looking at the mask (the common
        # case; a tensor reduction and its read-back cost more than a small encoder's batch of one).
        inputs = {m: getattr(batch, m) for m in self.modalities}
        if all(t is None or t.shape[0] < batch.size for t in inputs.values()) and not bool(mask.any(dim=1).all()):
            raise ValueError(f"every sample needs at least one of this model's modalities {list(self.modalities)}")
        dtype = self._dtype()
        rows: list[torch.Tensor] = []
        for i, m in enumerate(self.modalities):
            x = inputs[m]
            if x is None:
                rows.append(torch.zeros(batch.size, self.spec.fusion.dim, device=mask.device, dtype=dtype))
                continue
            f = self.encoders[m](x, batch.text_padding) if m == "text" else self.encoders[m](x)
            if f.shape[0] == batch.size:  # every sample has it
                rows.append(f.to(dtype))
            else:
                slot = torch.zeros(batch.size, self.spec.fusion.dim, device=mask.device, dtype=dtype)
                rows.append(slot.index_put((mask[:, i].nonzero(as_tuple=True)[0],), f.to(dtype)))
        return torch.stack(rows, dim=1), mask

    def forward(self, batch: Batch) -> torch.Tensor:
        feats, mask = self.encode(batch)
        return self.head(self.fusion(feats, mask))

    def _dtype(self) -> torch.dtype:
        return parameter_dtype(self.fusion)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
