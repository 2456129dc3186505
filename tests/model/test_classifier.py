"""Model code: every fusion type, absent modalities really absent, batching does not change answers."""
from __future__ import annotations

import pytest
import torch

from app.model.batch import Sample, collate
from app.model.classifier import FusionClassifier
from app.model.spec import FUSION_TYPES, ArtifactSpec, ImageSpec, TextSpec
from tests.helpers import tiny_spec


def samples() -> list[Sample]:
    g = torch.Generator().manual_seed(0)
    img = torch.randn(1, 16, 16, generator=g)
    txt = torch.randint(2, 200, (9,), generator=g)
    aud = torch.randn(2000, generator=g)
    return [
        Sample(image=img, text=txt, audio=aud),
        Sample(text=txt[:3]),
        Sample(audio=aud),
        Sample(image=img, audio=aud),
    ]


@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_batched_equals_one_by_one(fusion: str) -> None:
    torch.manual_seed(0)
    model = FusionClassifier(tiny_spec(fusion=fusion)).eval()
    with torch.inference_mode():
        together = model(collate(samples()))
        alone = torch.cat([model(collate([s])) for s in samples()])
    assert together.shape == (4, 3)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_absent_modality_is_not_read(fusion: str) -> None:
    """The answer for a text-only sample does not depend on what the absent slots would have held."""
    torch.manual_seed(0)
    model = FusionClassifier(tiny_spec(fusion=fusion)).eval()
    s = samples()[1]
    with torch.inference_mode():
        feats, mask = model.encode(collate([s]))
        out = model.fusion(feats, mask)
        poisoned = feats.clone()
        poisoned[~mask] = 1e3
        torch.testing.assert_close(model.fusion(poisoned, mask), out)


@pytest.mark.parametrize("encoder", ["resnet18", "mobilenet_v3_small", "resnet50"])
def test_torchvision_backbones(encoder: str) -> None:
    spec = ArtifactSpec(name="v", labels=("a", "b"), modalities=("image",), image=ImageSpec(encoder=encoder, size=32))
    model = FusionClassifier(spec).eval()
    with torch.inference_mode():
        assert model(collate([Sample(image=torch.randn(1, 32, 32))])).shape == (1, 2)


@pytest.mark.parametrize("encoder", ["lstm", "gru", "transformer"])
def test_text_encoders_ignore_padding(encoder: str) -> None:
    spec = ArtifactSpec(
        name="t", labels=("a", "b"), modalities=("text",), text=TextSpec(encoder=encoder, embed_dim=16, heads=2)
    )
    model = FusionClassifier(spec).eval()
    short, long = torch.tensor([5, 6, 7]), torch.arange(2, 30)
    with torch.inference_mode():
        alone = model(collate([Sample(text=short)]))
        padded = model(collate([Sample(text=short), Sample(text=long)]))[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)


def test_spec_rejects_inconsistent_configs() -> None:
    with pytest.raises(ValueError, match="modality 'audio'"):
        ArtifactSpec(name="x", labels=("a", "b"), modalities=("image", "audio"), image=ImageSpec())
    with pytest.raises(ValueError, match="unique"):
        ArtifactSpec(name="x", labels=("a", "a"), modalities=("image",), image=ImageSpec())


@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_subset_rows_answer_as_the_sample_with_only_those_inputs(fusion: str) -> None:
    torch.manual_seed(0)
    model = FusionClassifier(tiny_spec(fusion=fusion)).eval()
    full, text_only, audio_only, image_audio = samples()
    batch = collate([full, image_audio])
    masks = torch.tensor([[True, False, False], [False, True, True], [False, False, True]])
    with torch.inference_mode():
        logits, subset_logits, _ = model.forward_subsets(batch, torch.tensor([0, 1]), torch.tensor([0, 0, 1]), masks)
        torch.testing.assert_close(logits, model(batch), atol=1e-5, rtol=1e-4)
        alone = model(collate([Sample(image=full.image), Sample(text=full.text, audio=full.audio), audio_only]))
        torch.testing.assert_close(subset_logits, alone, atol=1e-5, rtol=1e-4)
        with pytest.raises(ValueError, match="subset"):  # text is not among the second sample's inputs
            model.forward_subsets(batch, torch.tensor([1]), torch.tensor([1]), torch.tensor([[False, True, False]]))


def test_attention_weights_come_from_the_layers_forward_runs() -> None:
    """The step-by-step pass that yields the [CLS] attention computes what the fused fast path computes."""
    torch.manual_seed(0)
    spec = tiny_spec(fusion="attention")
    spec = spec.model_copy(update={"fusion": spec.fusion.model_copy(update={"layers": 2})})
    model = FusionClassifier(spec).eval()
    with torch.inference_mode():
        feats, mask = model.encode(collate(samples()))
        out, attention = model.fusion.with_attention(feats, mask)
        torch.testing.assert_close(out, model.fusion(feats, mask), atol=1e-5, rtol=1e-4)
    assert attention.shape == (4, 2, 3)
    assert bool((attention[~mask.unsqueeze(1).expand_as(attention)] == 0).all())  # absent tokens get none
    assert bool((attention.sum(-1) < 1).all())  # the rest is the [CLS] token's attention to itself
