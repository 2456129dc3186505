"""The ink normalisation as it was when models/digits v2 was trained (numpy.linalg.lstsq twice, np.median,
np.percentile, scipy's median filter, a design matrix built per call, torchvision's normalize): the oracle that the
faster app.inputs.ink and ImagePreprocessor are checked against, to the last bit (tests/inputs/test_ink.py), and
measured against (bench/preprocess.py)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torchvision.transforms.v2 import functional as F

from app.inputs.ink import _INK_LEVEL, _MIN_CONTRAST, _RING, Ink, _mass_span, _work_copy, luminance, square_around_ink
from app.inputs.preprocess import to_mode
from app.model.spec import ImageSpec


def _design(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xs + 0.5) / w - 0.5, (ys + 0.5) / h - 0.5
    return np.stack([np.ones_like(u), u, v, u * u + v * v], axis=-1)


def _fit_background(lum: np.ndarray, design: np.ndarray) -> np.ndarray:
    h, w = lum.shape
    ring = max(1, round(_RING * min(h, w)))
    edge = np.zeros((h, w), dtype=bool)
    edge[:ring], edge[-ring:], edge[:, :ring], edge[:, -ring:] = True, True, True, True
    a, b = design[edge], lum[edge]
    coef = np.zeros(4)
    for _ in range(2):
        coef = np.linalg.lstsq(a, b, rcond=None)[0]
        residual = b - a @ coef
        spread = 1.4826 * np.median(np.abs(residual - np.median(residual))) + 0.02
        keep = np.abs(residual) <= 2.5 * spread
        if keep.sum() < 8 or keep.all():
            break
        a, b = a[keep], b[keep]
    return coef


def analyse(im: Image.Image) -> Ink:
    """app.inputs.ink.analyse as it was."""
    work = _work_copy(im)
    lum = luminance(work)
    h, w = lum.shape
    design = _design(h, w)
    coef = _fit_background(lum, design)
    smooth = ndimage.median_filter(lum, size=3, mode="nearest") if min(h, w) >= 3 else lum
    residual = smooth - design @ coef
    low, high = np.percentile(residual, (1.0, 99.0))
    dark = bool(-low > high)
    signed = -residual if dark else residual
    contrast = float(np.percentile(signed, 99.5))
    box = None
    if contrast >= _MIN_CONTRAST:
        strength = np.clip(signed / contrast, 0.0, 1.0)
        strength[strength < _INK_LEVEL] = 0.0
        if strength.any():
            sx, sy = im.width / w, im.height / h
            x0, x1 = _mass_span(strength.sum(axis=0))
            y0, y1 = _mass_span(strength.sum(axis=1))
            box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
    return Ink(width=im.width, height=im.height, background=coef, dark=dark, contrast=max(contrast, 0.0), box=box)


def render_ink(im: Image.Image, ink: Ink, square: tuple[float, float, float, float], size: int) -> np.ndarray:
    """app.inputs.ink.render_ink as it was."""
    x0, y0, x1, y1 = square
    fine = 2 * size
    side = x1 - x0
    factor = max(1, int(side / (2 * fine)))
    source = im.reduce(factor) if factor > 1 else im
    scale = 1.0 / factor
    patch = source.transform(
        (fine, fine), Image.Transform.EXTENT, (x0 * scale, y0 * scale, x1 * scale, y1 * scale),
        resample=Image.Resampling.BILINEAR,
    )
    lum = luminance(patch)
    step = side / fine
    centres = x0 + (np.arange(fine, dtype=np.float32) + 0.5) * step
    xs, ys = centres[None, :], (y0 + (np.arange(fine, dtype=np.float32) + 0.5) * step)[:, None]
    strength = ink.ink_map(lum, xs, ys)
    outside = (xs < 0) | (xs >= ink.width) | (ys < 0) | (ys >= ink.height)
    strength = np.where(outside, 0.0, strength)
    return strength.reshape(size, 2, size, 2).mean(axis=(1, 3)).astype(np.float32)


def preprocess(im: Image.Image, spec: ImageSpec) -> torch.Tensor:
    """ImagePreprocessor(spec)(im) as it was, for `fit="ink"`."""
    im = to_mode(im, "L" if spec.channels == 1 else "RGB")
    found = analyse(im)
    strength = render_ink(im, found, square_around_ink(found, spec.ink_fraction), spec.size)
    x = torch.from_numpy(strength)[None].expand(spec.channels, -1, -1).contiguous()
    return F.normalize(x, list(spec.mean), list(spec.std), inplace=True)
