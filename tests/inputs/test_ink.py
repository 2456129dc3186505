"""The ink normalisation is fast and changes nothing: app.inputs.ink and the ink path of ImagePreprocessor give the
same tensors, to the last bit, as the implementation models/digits v2 was trained with (bench/reference_ink.py), on
photo-like redraws of a digit, odd sizes and modes, blank and noisy pictures. Any difference would move a trained
model's inputs away from what it learned."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from app.inputs import ink
from app.inputs.preprocess import ImagePreprocessor
from app.model.spec import ImageSpec
from app.training.augment_image import ImageAugment, augment_image
from bench import reference_ink

ROOT = Path(__file__).resolve().parents[2]
SPECS = [
    ImageSpec(fit="ink", polarity="light_on_dark", size=28, ink_fraction=0.7),
    ImageSpec(fit="ink", polarity="light_on_dark", size=32, channels=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4)),
]


def _pictures() -> list[Image.Image]:
    """The README digit redrawn as photos, scans and screens (the training augmentation, frames up to 600 px so the
    analysis's work copy is used), and pictures no augmentation makes: tiny, thin, blank, pure noise, two levels."""
    digit = Image.open(ROOT / "bench" / "assets" / "digit.png")
    digit.load()
    rng = np.random.default_rng(20)
    redraw = ImageAugment(prob=1.0, frame_max=600)
    pictures = [digit] + [augment_image(digit, redraw, rng) for _ in range(150)]
    for h, w in [(1, 1), (1, 9), (2, 5), (3, 3), (5, 200), (300, 4), (17, 29), (129, 128), (640, 480)]:
        pictures.append(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L"))
        pictures.append(Image.fromarray((rng.integers(0, 3, (h, w, 3)) * 100).astype(np.uint8), "RGB"))
    pictures += [Image.new("L", (40, 40), level) for level in (0, 128, 255)]
    sparse = np.zeros((64, 64), np.uint8)
    sparse[rng.integers(0, 64, 12), rng.integers(0, 64, 12)] = 255
    pictures.append(Image.fromarray(sparse, "L"))
    return pictures


@pytest.mark.parametrize("spec", SPECS, ids=["grey-28", "rgb-32"])
def test_ink_preprocessing_matches_the_trained_implementation_bit_for_bit(spec: ImageSpec) -> None:
    new = ImagePreprocessor(spec)
    pictures = _pictures()
    boxes = 0
    for i, picture in enumerate(pictures):
        mode = "L" if spec.channels == 1 else "RGB"
        found, expected = ink.analyse(picture.convert(mode)), reference_ink.analyse(picture.convert(mode))
        assert (found.dark, found.contrast, found.box) == (expected.dark, expected.contrast, expected.box), i
        # The surface is solved another way (one cached pseudo-inverse, then normal equations): the coefficients
        # agree to float32 rounding, and where a plain background leaves them at 1e-16 noise the bits of that noise
        # may differ, which no pixel can see.
        np.testing.assert_allclose(found.background, expected.background, rtol=1e-6, atol=1e-9)
        boxes += found.box is not None
        got, want = new(picture), reference_ink.preprocess(picture, spec)
        assert got.dtype == want.dtype and got.shape == want.shape, i
        assert torch.equal(got, want), (i, float((got - want).abs().max()))
    assert boxes > 150  # the redraws have ink to find: the comparison is not of empty maps


def test_percentile_is_numpys_to_the_last_bit() -> None:
    rng = np.random.default_rng(3)
    for n in [1, 2, 3, 7, 100, 101, 784, 4999]:
        for values in (rng.normal(size=n).astype(np.float32), np.round(rng.normal(size=n), 1).astype(np.float32),
                       np.zeros(n, np.float32), -np.zeros(n, np.float32)):
            ranked = np.sort(values)
            for percent in ink._PERCENTS:
                assert ink._percentile(ranked, percent, weak=True) == float(np.percentile(values, percent))
            low, high = np.percentile(values, (1.0, 99.0))
            assert (ink._percentile(ranked, 1.0, weak=False), ink._percentile(ranked, 99.0, weak=False)) == (low, high)
            partitioned = ink._ranked(values)
            assert ink._percentile(partitioned, 99.5, weak=True) == float(np.percentile(values, 99.5))
            assert ink._percentile(-partitioned[::-1], 99.5, weak=True) == float(np.percentile(-values, 99.5))


def test_median3x3_is_scipys_nearest_median_filter() -> None:
    rng = np.random.default_rng(4)
    for h, w in [(3, 3), (3, 40), (28, 28), (57, 3), (128, 97)]:
        for grey in (rng.integers(0, 256, (h, w), dtype=np.uint8), (rng.integers(0, 3, (h, w)) * 120).astype(np.uint8)):
            assert np.array_equal(ink._median3x3(grey), ndimage.median_filter(grey, size=3, mode="nearest"))
