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

It runs once per picture on the request path, so it is written to be cheap per call: what depends on the size alone
is cached, the ring's least squares is one cached pseudo-inverse, the median filter and the percentiles use whole-
array min/max and one partition. The tensors it leads to are those of the version the shipped weights were trained
with, to the last bit (tests/inputs/test_ink.py checks against that version, kept in bench/reference_ink.py).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

WORK_SIDE = 128
_RING = 0.12  # outer fraction of each side used to fit the background
_MIN_CONTRAST = 0.04  # below this the picture is treated as blank (no ink box)
_INK_LEVEL = 0.3  # normalised ink above this counts for the box
_BOX_MASS = 0.01  # the box leaves this fraction of the ink's mass out on each side
_PERCENTS = (1.0, 99.0, 99.5)  # the residual's percentiles the analysis reads


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


@dataclass(frozen=True)
class _Grid:
    """What the analysis of an h x w work copy needs that depends on its size alone (cached per size)."""

    design: np.ndarray  # [h, w, 4] float32: (1, u, v, u^2 + v^2) at each pixel centre
    ring: np.ndarray  # [n] flat indices of the outer ring's pixels
    ring_design: np.ndarray  # [n, 4] float64: the design's rows on the ring
    ring_solve: np.ndarray  # [4, n] float64: least squares on the whole ring, as one matrix (its pseudo-inverse)


@functools.lru_cache(maxsize=64)
def _grid(h: int, w: int) -> _Grid:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xs + 0.5) / w - 0.5, (ys + 0.5) / h - 0.5
    design = np.stack([np.ones_like(u), u, v, u * u + v * v], axis=-1)
    ring_width = max(1, round(_RING * min(h, w)))
    edge = np.zeros((h, w), dtype=bool)
    edge[:ring_width], edge[-ring_width:], edge[:, :ring_width], edge[:, -ring_width:] = True, True, True, True
    ring = np.flatnonzero(edge)
    rows = design.reshape(-1, 4)[ring].astype(np.float64)
    grid = _Grid(design=design, ring=ring, ring_design=rows, ring_solve=np.linalg.pinv(rows))
    for array in (grid.design, grid.ring, grid.ring_design, grid.ring_solve):
        array.setflags(write=False)
    return grid


def _fit_background(lum: np.ndarray, grid: _Grid) -> np.ndarray:
    """The surface's float32 coefficients: least squares on the ring, then again without the ring pixels far from
    that first fit (ink touching the edge)."""
    b = lum.reshape(-1)[grid.ring].astype(np.float64)
    coef = grid.ring_solve @ b
    residual = b - grid.ring_design @ coef
    spread = 1.4826 * _median(np.abs(residual - _median(residual))) + 0.02
    keep = np.abs(residual) <= 2.5 * spread
    kept = int(np.count_nonzero(keep))
    if 8 <= kept < keep.size:
        a, b = grid.ring_design[keep], b[keep]
        try:
            coef = np.linalg.solve(a.T @ a, a.T @ b)
        except np.linalg.LinAlgError:  # the kept pixels do not pin the surface down: the least-norm fit
            coef = np.linalg.lstsq(a, b, rcond=None)[0]
    return coef.astype(np.float32)


def _median(x: np.ndarray) -> float:
    """np.median of a 1-D array, without its generic machinery (the same value)."""
    k = x.size // 2
    if x.size % 2:
        return float(np.partition(x, k)[k])
    lower, upper = np.partition(x, (k - 1, k))[k - 1:k + 1]
    return float((lower + upper) / 2)


def _median3x3(grey: np.ndarray) -> np.ndarray:
    """scipy.ndimage.median_filter(grey, size=3, mode="nearest"), exactly, as min/max over whole arrays: each
    pixel's column of three is sorted once and shared by its row neighbours; the median of the nine is then the
    median of (the largest of the three minima, the median of the three medians, the smallest of the three maxima)."""
    h, w = grey.shape
    p = np.empty((h + 2, w + 2), grey.dtype)  # grey with its edge pixels repeated once outwards (np.pad's "edge")
    p[1:-1, 1:-1] = grey
    p[0, 1:-1], p[-1, 1:-1] = grey[0], grey[-1]
    p[:, 0], p[:, -1] = p[:, 1], p[:, -2]
    top, centre, bottom = p[:-2], p[1:-1], p[2:]
    low, high = np.minimum(top, centre), np.maximum(top, centre)
    mid, high = np.minimum(high, bottom), np.maximum(high, bottom)
    low, mid = np.minimum(low, mid), np.maximum(low, mid)
    lows = np.maximum(np.maximum(low[:, :-2], low[:, 1:-1]), low[:, 2:])
    highs = np.minimum(np.minimum(high[:, :-2], high[:, 1:-1]), high[:, 2:])
    mids = _median3(mid[:, :-2], mid[:, 1:-1], mid[:, 2:])
    return _median3(lows, mids, highs)


def _median3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def _percentile_ranks(n: int, percent: float) -> tuple[int, int, np.float64]:
    """The two ranks (0-based, ascending) and the weight that numpy's linear percentile interpolates between."""
    virtual = (n - 1) * np.true_divide(percent, 100)
    if virtual >= n - 1:  # numpy takes the last value twice, with its index as -1
        return n - 1, n - 1, virtual + 1
    below = np.floor(virtual)
    return int(below), int(below) + 1, virtual - below


def _percentile(ranked: np.ndarray, percent: float, *, weak: bool) -> float:
    """np.percentile(values, percent) (linear method), to the last bit, from the values with at least the ranks it
    needs in place (sorted, or partitioned at `_percentile_ranks`). numpy interpolates in float64 for a sequence of
    percents (`weak=False`) and in the values' dtype for one Python float (`weak=True`); this does the same."""
    below, above, gamma = _percentile_ranks(ranked.size, percent)
    a, b = ranked[below], ranked[above]
    t = float(gamma) if weak else gamma
    diff = b - a
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)


def _ranked(values: np.ndarray) -> np.ndarray:
    """The values partitioned at the ranks that the analysis's percentiles read: 1 and 99, and 99.5 of the values
    or of their negation (`-ranked[::-1]` is the negated values partitioned alike)."""
    n = values.size
    ranks: set[int] = set()
    for percent in _PERCENTS:
        below, above, _ = _percentile_ranks(n, percent)
        ranks.update((below, above, n - 1 - below, n - 1 - above))
    return np.partition(values.reshape(-1), sorted(ranks))


def analyse(im: Image.Image) -> Ink:
    """Background, polarity, contrast and ink box of an L or RGB picture."""
    work = _work_copy(im)
    grey = np.asarray(work if work.mode == "L" else work.convert("L"))
    lum = grey / np.float32(255.0)  # what luminance(work) is
    h, w = lum.shape
    grid = _grid(h, w)
    coef = _fit_background(lum, grid)
    # The 3x3 median of the grey levels is the grey level of the median (the scale to [0, 1] keeps order).
    smooth = _median3x3(grey) / np.float32(255.0) if min(h, w) >= 3 else lum
    residual = smooth - grid.design @ coef
    ranked = _ranked(residual)
    low, high = _percentile(ranked, 1.0, weak=False), _percentile(ranked, 99.0, weak=False)
    dark = bool(-low > high)
    signed = -residual if dark else residual
    contrast = _percentile(-ranked[::-1] if dark else ranked, 99.5, weak=True)
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
    # The mean of each 2x2 block, summed in the order numpy's mean sums them (the same bits, without its strided
    # reduction).
    quads = strength.astype(np.float32, copy=False).reshape(size, 2, size, 2)
    return ((quads[:, 0, :, 0] + quads[:, 0, :, 1]) + (quads[:, 1, :, 0] + quads[:, 1, :, 1])) * np.float32(0.25)
