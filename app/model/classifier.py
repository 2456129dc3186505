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
        return self.fuse(*self.encode(batch))

    def fuse(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fusion and head: encoded features [B, M, dim] and a presence mask [B, M] -> logits [B, n_classes]."""
        return self.head(self.fusion(feats, mask))

    def forward_subsets(
        self, batch: Batch, explained: torch.Tensor, rows: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """For explaining predictions: the logits [B, n_classes] of `batch`; the logits [R, n_classes] of sample
        `rows[r]` as if it held only the modalities of `masks[r]` (columns in MODALITIES order, as `Batch.mask`;
        each a non-empty subset of what that sample holds); and the fusion's internals (`Fusion.internals`) of the
        samples `explained`. The encoders run once, on `batch`; the fusion and head once, on the B + R rows. A
        masked-out modality is never read (every fusion's contract), so a subset row answers exactly as the
        sample would with only those inputs sent."""
        feats, mask = self.encode(batch)
        subset_mask = masks[:, self.mask_columns]
        outside = (subset_mask & ~mask[rows]).any(dim=1)
        if bool(outside.any()) or not bool(subset_mask.any(dim=1).all()):
            raise ValueError("each subset must be a non-empty subset of its sample's modalities")
        logits = self.fuse(torch.cat([feats, feats[rows]]), torch.cat([mask, subset_mask]))
        internals = self.fusion.internals(feats[explained], mask[explained]) if explained.numel() else {}
        return logits[: batch.size], logits[batch.size :], internals

    def _dtype(self) -> torch.dtype:
        return parameter_dtype(self.fusion)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
