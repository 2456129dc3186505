"""Training-time image augmentation: a training picture redrawn as a photo, scan or screenshot of it might look.

The picture's ink (found by app.inputs.ink, as preprocessing finds it) is redrawn thinner or thicker, rotated, stretched,
scaled and placed in a frame of another size and shape, over a paper, screen or board background (tone, colour,
lighting gradient, texture, ruled lines), dark on light or light on dark, then blurred, noised and JPEG-compressed.
The result goes through the model's own preprocessing, exactly as an upload would.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from app.errors import SettingError
from app.inputs import ink
from app.inputs.preprocess import to_mode


@dataclass(frozen=True)
class ImageAugment:
    """Probabilities and ranges of each image augmentation (flags `--aug-image-<name>`)."""

    prob: float = field(default=0.85, metadata={"help": "share of training pictures redrawn (the rest as they are)"})
    invert: float = field(default=0.5, metadata={"help": "probability of dark ink on a light background"})
    colour: float = field(default=0.5, metadata={"help": "probability of coloured ink and background (RGB)"})
    background: float = field(
        default=0.7, metadata={"help": "probability of a lighting gradient, texture or ruled lines in the background"}
    )
    scale_min: float = field(default=0.3, metadata={"help": "smallest ink height, as a share of the frame's shorter side"})
    scale_max: float = field(default=0.95, metadata={"help": "largest ink height, as a share of the frame's shorter side"})
    aspect: float = field(default=0.3, metadata={"help": "largest change of the ink's aspect ratio (0.3: x0.77..x1.3)"})
    rotation: float = field(default=15.0, metadata={"help": "largest rotation, degrees"})
    stroke: float = field(default=0.4, metadata={"help": "probability of thinner or thicker strokes"})
    blur: float = field(default=0.3, metadata={"help": "probability of a blur"})
    noise: float = field(default=0.4, metadata={"help": "probability of sensor noise"})
    jpeg: float = field(default=0.3, metadata={"help": "probability of JPEG compression (quality 15-90)"})
    frame_min: int = field(default=28, metadata={"help": "smallest frame side, pixels"})
    frame_max: int = field(default=224, metadata={"help": "largest frame side, pixels"})

    def __post_init__(self) -> None:
        for name in ("prob", "invert", "colour", "background", "stroke", "blur", "noise", "jpeg"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SettingError(name, f"must be within [0, 1], got {getattr(self, name)}")
        if not 0.05 <= self.scale_min <= self.scale_max <= 1.0:
            raise SettingError("scale_min", f"need 0.05 <= scale_min <= scale_max <= 1, got {self.scale_min}..{self.scale_max}")
        if not 0.0 <= self.aspect < 1.0:
            raise SettingError("aspect", f"must be within [0, 1), got {self.aspect}")
        if not 0.0 <= self.rotation <= 180.0:
            raise SettingError("rotation", f"must be within [0, 180], got {self.rotation}")
        if not 8 <= self.frame_min <= self.frame_max <= 4096:
            raise SettingError("frame_min", f"need 8 <= frame_min <= frame_max <= 4096, got {self.frame_min}..{self.frame_max}")


_WORK = 112  # the ink is redrawn from a copy of this size, so thickness changes and rotations stay smooth


def _ink_alpha(im: Image.Image) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The picture's ink strength resampled to _WORK² and its ink box in that frame."""
    grey = to_mode(im, "L")
    found = ink.analyse(grey)
    xs = (np.arange(grey.width, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(grey.height, dtype=np.float32) + 0.5)[:, None]
    strength = found.ink_map(ink.luminance(grey), xs, ys) if found.box is not None else ink.luminance(grey)
    alpha = np.asarray(
        Image.fromarray(strength.astype(np.float32), mode="F").resize((_WORK, _WORK), Image.Resampling.BILINEAR)
    )
    sx, sy = _WORK / grey.width, _WORK / grey.height
    box = found.box or (0.0, 0.0, float(grey.width), float(grey.height))
    return np.clip(alpha, 0.0, 1.0), (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def _stroke(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    image = Image.fromarray(alpha, mode="F")
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.MaxFilter(int(rng.choice([3, 5, 7]))))
    else:
        image = image.filter(ImageFilter.MinFilter(3))
    return np.asarray(image)


def _place(alpha: np.ndarray, box: tuple[float, float, float, float], cfg: ImageAugment,
           rng: np.random.Generator) -> np.ndarray:
    """Rotate, stretch and scale the ink and put it somewhere in a new frame; returns the frame's alpha."""
    side = math.exp(rng.uniform(math.log(cfg.frame_min), math.log(cfg.frame_max)))
    frame_aspect = math.exp(rng.uniform(-0.3, 0.3))
    width, height = max(8, round(side * frame_aspect)), max(8, round(side / frame_aspect))
    x0, y0, x1, y1 = box
    ink_w, ink_h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    stretch = math.exp(rng.uniform(-math.log1p(cfg.aspect), math.log1p(cfg.aspect)))
    angle = math.radians(rng.uniform(-cfg.rotation, cfg.rotation))
    target = rng.uniform(cfg.scale_min, cfg.scale_max) * min(width, height)
    scale = target / ink_h
    sx, sy = scale * stretch, scale
    cos, sin = math.cos(angle), math.sin(angle)
    # Forward map (source -> frame): rotate(stretch(p - centre)) + position.
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.diag([sx, sy])
    half_w = 0.5 * (abs(forward[0, 0]) * ink_w + abs(forward[0, 1]) * ink_h)
    half_h = 0.5 * (abs(forward[1, 0]) * ink_w + abs(forward[1, 1]) * ink_h)
    if 2 * max(half_w / width, half_h / height) > 1.0:  # too big to fit once rotated: shrink it
        shrink = 1.0 / (2 * max(half_w / width, half_h / height))
        forward, half_w, half_h = forward * shrink, half_w * shrink, half_h * shrink
    cx = rng.uniform(half_w, max(half_w, width - half_w))
    cy = rng.uniform(half_h, max(half_h, height - half_h))
    inverse = np.linalg.inv(forward)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    offset = centre - inverse @ np.array([cx, cy])
    data = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    placed = Image.fromarray(alpha, mode="F").transform((width, height), Image.Transform.AFFINE, data,
                                                        resample=Image.Resampling.BILINEAR)
    return np.clip(np.asarray(placed), 0.0, 1.0)


def _tones(cfg: ImageAugment, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """Background and ink colours (RGB in [0, 1]) and whether the picture is in colour."""
    dark_ink = rng.random() < cfg.invert
    colour = rng.random() < cfg.colour
    if dark_ink:
        paper, pen = rng.uniform(0.6, 1.0), rng.uniform(0.0, max(0.05, rng.uniform(0.2, 0.55)))
    else:
        paper, pen = rng.uniform(0.0, 0.35), rng.uniform(0.65, 1.0)
    background, ink_tone = np.full(3, paper), np.full(3, pen)
    if colour:
        background = np.clip(background + rng.normal(0, 0.08, 3), 0, 1)
        ink_tone = np.clip(ink_tone + rng.normal(0, 0.25, 3), 0, 1)
        if abs(ink_tone.mean() - background.mean()) < 0.25:  # keep the ink readable
            ink_tone = np.clip(ink_tone + (0.35 if not dark_ink else -0.35), 0, 1)
    return background, ink_tone, colour


def _backdrop(height: int, width: int, tone: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A background of `tone` with a lighting gradient, paper texture and maybe ruled lines."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xs / width - 0.5, ys / height - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    light = rng.uniform(0.0, 0.35) * (u * math.cos(angle) + v * math.sin(angle))
    light -= rng.uniform(0.0, 0.4) * (u * u + v * v)  # vignetting
    out = tone[None, None, :] + light[..., None]
    if rng.random() < 0.5:  # paper grain: smooth noise at a random scale
        cells = int(rng.integers(4, 24))
        grain = rng.normal(0, rng.uniform(0.01, 0.06), (cells, cells)).astype(np.float32)
        grain = np.asarray(Image.fromarray(grain, mode="F").resize((width, height), Image.Resampling.BICUBIC))
        out = out + grain[..., None]
    if rng.random() < 0.2:  # ruled or squared paper
        spacing = rng.uniform(0.08, 0.25) * height
        lines = (np.mod(ys + rng.uniform(0, spacing), spacing) < max(1.0, 0.01 * height)).astype(np.float32)
        if rng.random() < 0.4:
            lines = np.maximum(lines, (np.mod(xs + rng.uniform(0, spacing), spacing) < max(1.0, 0.01 * width)))
        shade = rng.uniform(-0.25, 0.25, 3)
        out = out + lines[..., None] * shade[None, None, :]
    return out


def augment_image(im: Image.Image, cfg: ImageAugment, rng: np.random.Generator) -> Image.Image:
    """`im` redrawn as described in the module docstring (or as it is, with probability 1 - prob)."""
    if rng.random() >= cfg.prob:
        return im
    alpha, box = _ink_alpha(im)
    if rng.random() < cfg.stroke:
        alpha = _stroke(alpha, rng)
    alpha = _place(alpha, box, cfg, rng)
    height, width = alpha.shape
    background, ink_tone, colour = _tones(cfg, rng)
    if rng.random() < cfg.background:
        paper = _backdrop(height, width, background, rng)
    else:
        paper = np.broadcast_to(background, (height, width, 3))
    picture = paper * (1.0 - alpha[..., None]) + ink_tone[None, None, :] * alpha[..., None]
    if rng.random() < cfg.noise:
        picture = picture + rng.normal(0, rng.uniform(0.01, 0.08), picture.shape)
    out = Image.fromarray(np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8), mode="RGB")
    if not colour:
        out = out.convert("L")
    if rng.random() < cfg.blur:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * max(width, height) / 56))
    if rng.random() < cfg.jpeg:
        buffer = io.BytesIO()
        out.save(buffer, format="JPEG", quality=int(rng.integers(15, 91)))
        buffer.seek(0)
        out = Image.open(buffer)
        out.load()
    return out
