"""Where the ink is in a picture of a glyph: its background, its polarity and its box.

The image normalisation of preprocessing (`polarity` and `fit` in config.json's image section), shared by training
and serving. A photo, a scan and a 28x28 crop of the same digit should reach the model alike: dark ink on paper or
light ink on a screen, on an evenly or unevenly lit background, small in a large frame or filling it.

The analysis runs on a copy whose longer side is at most WORK_SIDE pixels:
- background: a smooth surface (plane + radial term, for lighting gradients and vignetting) fitted to the outer
  ring of the picture, where the ink rarely is, with a robust second pass that ignores ink touching the edge;
- polarity: ink is where the picture departs most from that background, darker or lighter (the heavier tail of
  the residuals, after a 3x3 median that removes salt-and-pepper noise);
- contrast: the ink's level above the background (a high percentile of the residual), so faint pencil on grey
  paper and black marker on white reach the model at the same level;
- box: the span holding 98% of the ink's mass along each axis (robust to specks), in the original's pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

WORK_SIDE = 128
_RING = 0.12  # outer fraction of each side used to fit the background
_MIN_CONTRAST = 0.04  # below this the picture is treated as blank (no ink box)
_INK_LEVEL = 0.3  # normalised ink above this counts for the box
_BOX_MASS = 0.01  # the box leaves this fraction of the ink's mass out on each side


@dataclass(frozen=True)
class Ink:
    """The analysis of one picture, in the original picture's pixel coordinates."""

    width: int
    height: int
    background: np.ndarray  # coefficients of (1, u, v, u^2 + v^2), u and v in [-0.5, 0.5] across the picture
    dark: bool  # the ink is darker than its background
    contrast: float  # ink level above the background, in luminance units (0..1)
    box: tuple[float, float, float, float] | None  # x0, y0, x1, y1; None when the picture has no visible ink

    def surface(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The background's luminance at original pixel centres (xs, ys), broadcast together."""
        u, v = xs / self.width - 0.5, ys / self.height - 0.5
        c = self.background
        return c[0] + c[1] * u + c[2] * v + c[3] * (u * u + v * v)

    def ink_map(self, luminance: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Ink strength in [0, 1] of luminance samples taken at (xs, ys): 0 on the background, 1 at full ink."""
        residual = luminance - self.surface(xs, ys)
        if self.dark:
            residual = -residual
        return np.clip(residual / self.contrast, 0.0, 1.0) if self.contrast > 0 else np.zeros_like(residual)


def luminance(im: Image.Image) -> np.ndarray:
    """An L or RGB picture as float32 luminance in [0, 1]."""
    return np.asarray(im if im.mode == "L" else im.convert("L"), dtype=np.float32) / 255.0


def _work_copy(im: Image.Image) -> Image.Image:
    longest = max(im.size)
    if longest <= WORK_SIDE:
        return im
    factor = longest / WORK_SIDE
    size = (max(1, round(im.width / factor)), max(1, round(im.height / factor)))
    return im.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


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
    for _ in range(2):  # the second pass drops the ring pixels far from the first fit (ink touching the edge)
        coef = np.linalg.lstsq(a, b, rcond=None)[0]
        residual = b - a @ coef
        spread = 1.4826 * np.median(np.abs(residual - np.median(residual))) + 0.02
        keep = np.abs(residual) <= 2.5 * spread
        if keep.sum() < 8 or keep.all():
            break
        a, b = a[keep], b[keep]
    return coef


def analyse(im: Image.Image) -> Ink:
    """Background, polarity, contrast and ink box of an L or RGB picture."""
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
    # The surface was fitted in the work copy's coordinates; u and v are fractions of the picture, so the same
    # coefficients hold in the original's.
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


def _mass_span(profile: np.ndarray) -> tuple[float, float]:
    """Pixel-edge coordinates [start, end) of the span holding all but _BOX_MASS of the mass on each side."""
    cdf = np.cumsum(profile) / profile.sum()
    start = int(np.searchsorted(cdf, _BOX_MASS, side="right"))
    end = int(np.searchsorted(cdf, 1.0 - _BOX_MASS, side="left")) + 1
    return float(start), float(max(end, start + 1))


def square_around_ink(ink: Ink, fraction: float) -> tuple[float, float, float, float]:
    """The square (x0, y0, x1, y1) centred on the ink box whose side the box's longer side fills to `fraction`;
    the whole picture's centred square when there is no ink."""
    if ink.box is None:
        side = float(max(ink.width, ink.height))
        cx, cy = ink.width / 2, ink.height / 2
    else:
        x0, y0, x1, y1 = ink.box
        side = max(x1 - x0, y1 - y0) / fraction
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def render_ink(im: Image.Image, ink: Ink, square: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The ink map [size, size] in [0, 1] of `square` (original coordinates, may reach past the edges, which
    count as background), sampled at twice `size` and box-averaged."""
    x0, y0, x1, y1 = square
    fine = 2 * size
    side = x1 - x0
    # Shrink large pictures by an integer factor first (a fast box filter), so the final resampling never
    # skips over pixels.
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
