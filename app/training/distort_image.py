"""The per-sample variation of a synthetic digit image (app/training/synth_image.py): ordinary distortion (stroke,
affine, elastic), photographic degradation, and the heavy corruption that leaves a picture mostly unreadable."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

IMAGE_SIZE = 28
# Glyphs are stored and distorted at twice the output resolution, so stroke-thickness changes and
# rotations are finer than one output pixel; the result is box-downsampled at the end.
SCALE = 2
WORK = IMAGE_SIZE * SCALE


def _affine(frame: np.ndarray, rotation: float, scale: float, shear: float, shift: np.ndarray) -> np.ndarray:
    """Rotate/scale/shear about the centre and translate (angles in radians, shift in work pixels)."""
    cos, sin = np.cos(rotation), np.sin(rotation)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) * scale
    inverse = np.linalg.inv(forward)
    centre = np.array([(WORK - 1) / 2, (WORK - 1) / 2])
    offset = centre - inverse @ (centre + shift)
    return ndimage.affine_transform(frame, inverse, offset=offset, order=1, mode="constant")


def _elastic(frame: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    dy, dx = (ndimage.gaussian_filter(rng.uniform(-1, 1, frame.shape), sigma) * alpha for _ in range(2))
    ys, xs = np.meshgrid(np.arange(WORK), np.arange(WORK), indexing="ij")
    return ndimage.map_coordinates(frame, (ys + dy, xs + dx), order=1, mode="constant")


def _stroke(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thicken or thin strokes: blur, then re-threshold at a random level."""
    blurred = ndimage.gaussian_filter(frame, rng.uniform(0.8, 2.0))
    level = rng.uniform(0.1, 0.55)
    return np.clip((blurred - level) / 0.2 + 0.5, 0.0, 1.0)


def _occlude(img: np.ndarray, rng: np.random.Generator, heavy: bool) -> np.ndarray:
    """Paint a bar or a blob (black or white) over the digit."""
    value = float(rng.choice([0.0, rng.uniform(0.6, 1.0)]))
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    centre = IMAGE_SIZE / 2 + rng.normal(0, 2.5 if heavy else 5.0, 2)
    if rng.random() < 0.5:
        radius = rng.uniform(6.5, 10.0) if heavy else rng.uniform(2.5, 5.0)
        mask = (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 < radius**2
    else:
        angle = rng.uniform(0, np.pi)
        width = rng.uniform(5.0, 9.0) if heavy else rng.uniform(1.5, 3.5)
        mask = np.abs((ys - centre[0]) * np.cos(angle) - (xs - centre[1]) * np.sin(angle)) < width / 2
    out = img.copy()
    out[mask] = value
    return out


def distort(glyph: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Ordinary variation: affine, elastic and stroke changes at working resolution, then 28x28."""
    frame = glyph.astype(np.float32) / 255.0
    if rng.random() < 0.6:
        frame = _stroke(frame, rng)
    frame = _affine(
        frame,
        rotation=np.deg2rad(np.clip(rng.normal(0, 8 * strength), -30, 30)),
        scale=rng.uniform(1 - 0.15 * strength, 1 + 0.08 * strength),
        shear=np.clip(rng.normal(0, 0.12 * strength), -0.4, 0.4),
        shift=rng.normal(0, 0.8 * strength * SCALE, 2),
    )
    if rng.random() < 0.5:
        frame = _elastic(frame, rng, alpha=rng.uniform(15, 40) * strength, sigma=rng.uniform(4, 6))
    return frame.reshape(IMAGE_SIZE, SCALE, IMAGE_SIZE, SCALE).mean(axis=(1, 3))


def degrade(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Ordinary photographic noise: occasional occlusion, blur, contrast loss, gaussian and salt noise."""
    if rng.random() < 0.25:
        img = _occlude(img, rng, heavy=False)
    if rng.random() < 0.5:
        img = ndimage.gaussian_filter(img, rng.uniform(0.3, 1.0) * strength)
    img = img * rng.uniform(0.6, 1.0) + rng.uniform(0.0, 0.15)
    img = img + rng.normal(0, rng.uniform(0.0, 0.12) * strength, img.shape)
    if rng.random() < 0.3:
        salt = rng.random(img.shape) < rng.uniform(0.01, 0.05) * strength
        img = np.where(salt, rng.integers(0, 2, img.shape).astype(np.float32), img)
    return img


def corrupt(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Heavy degradation: two or three of big occlusion, strong blur, crushed contrast, cropping, noise."""
    steps = rng.choice(5, size=int(rng.integers(2, 4)), replace=False)
    for step in sorted(steps):
        if step == 0:
            img = _occlude(img, rng, heavy=True)
        elif step == 1:
            img = ndimage.gaussian_filter(img, rng.uniform(2.0, 3.5))
        elif step == 2:
            img = img * rng.uniform(0.08, 0.25) + rng.uniform(0.1, 0.5)
        elif step == 3:
            keep = IMAGE_SIZE // 2 + int(rng.integers(-3, 2))
            half = [slice(None), slice(None)]
            axis = int(rng.integers(0, 2))
            half[axis] = slice(keep, None) if rng.random() < 0.5 else slice(0, IMAGE_SIZE - keep)
            img = img.copy()
            img[tuple(half)] = 0.0
        else:
            img = img + rng.normal(0, rng.uniform(0.35, 0.6), img.shape)
    return img
