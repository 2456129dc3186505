"""Predictor: calibrated probabilities, with the temperature of the modality subset each request gave."""
from __future__ import annotations

import torch

from app.engine.predictor import Predictor
from app.model.artifact import load_artifact
from app.model.batch import Sample, collate
from tests.helpers import tiny_spec, write_tiny_artifact


def test_each_sample_gets_its_subset_temperature(tmp_path) -> None:  # noqa: ANN001
    spec = tiny_spec(name="t", temperature=2.0, subset_temperatures={"text": 5.0, "image+text+audio": 0.5})
    predictor = Predictor(load_artifact(write_tiny_artifact(tmp_path / "t", spec)), torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    text_only = Sample(text=torch.randint(2, 200, (7,), generator=g))
    full = Sample(image=torch.randn(1, 16, 16, generator=g), text=torch.randint(2, 200, (5,), generator=g),
                  audio=torch.randn(2000, generator=g))
    image_only = Sample(image=full.image)
    samples = [text_only, full, image_only]
    probs = [s.probabilities for s in predictor.predict(samples)]
    with torch.inference_mode():
        logits = predictor.model(collate(samples))
    for row, t in zip(range(3), (5.0, 0.5, 2.0)):  # image alone has no own temperature: the pooled one
        expected = torch.softmax(logits[row] / t, dim=-1).numpy()
        assert abs(probs[row] - expected).max() < 1e-5
        assert abs(probs[row].sum() - 1) < 1e-5
