"""Synthetic 28x28 digit images: UCI handwriting and font glyphs, distorted and degraded per sample."""
from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont
from scipy import ndimage

from app.errors import SettingError
from app.training.distort_image import IMAGE_SIZE, SCALE, WORK, corrupt, degrade, distort

_BOX = 20 * SCALE  # like MNIST: the digit fits a 20x20 box, centred by mass in the 28x28 frame
FONT_DIRS: tuple[Path, ...] = (Path("/usr/share/fonts"),)
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
_RENDER_PT = 96
# A code point no font maps (Unicode noncharacter), so it renders as the font's .notdef glyph.
_MISSING_CHAR = "\ufdd0"
# Mean absolute difference (0..1) of two fonts' 28x28 digits below which they count as one design.
_DUPLICATE_FONT_DISTANCE = 0.01
# The held-out split's sources: one font family in HELDOUT_FONT_BUCKETS, one UCI digit in HELDOUT_UCI_EVERY.
HELDOUT_FONT_BUCKETS = 4
HELDOUT_UCI_EVERY = 5


@dataclass(frozen=True)
class ImageNoise:
    """Per-sample image degradation settings."""

    corrupt_prob: float = field(
        default=0.33, metadata={"help": "probability that an image is heavily degraded (mostly unreadable)"}
    )
    handwritten_prob: float = field(
        default=0.5, metadata={"help": "probability of a UCI handwritten digit rather than a font glyph"}
    )
    distortion: float = field(
        default=1.0, metadata={"help": "scale of the affine/elastic/noise distortion of the other images"}
    )

    def __post_init__(self) -> None:
        for name in ("corrupt_prob", "handwritten_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SettingError(f"image_{name}", "must be within [0, 1]")
        if self.distortion < 0:
            raise SettingError("image_distortion", "must be >= 0")


@dataclass(frozen=True)
class GlyphBank:
    """Centred source digits at working resolution (uint8, white on black) with their labels."""

    glyphs: np.ndarray
    labels: np.ndarray
    handwritten: np.ndarray
    fonts: tuple[str, ...]

    def indices(self, label: int, handwritten: bool) -> np.ndarray:
        """Indices of the glyphs of one digit from one source (falls back to any source)."""
        mask = self.labels == label
        chosen = np.flatnonzero(mask & (self.handwritten == handwritten))
        return chosen if chosen.size else np.flatnonzero(mask)


def _glyph_mask(font: ImageFont.FreeTypeFont, char: str) -> np.ndarray:
    mask = font.getmask(char, mode="L")
    width, height = mask.size
    return np.asarray(mask, dtype=np.uint8).reshape(height, width)


def _renders_digits(font: ImageFont.FreeTypeFont) -> bool:
    """True when all ten digits have distinct, non-empty glyphs that are not the .notdef box."""
    notdef = _glyph_mask(font, _MISSING_CHAR)
    seen: set[bytes] = set()
    for digit in "0123456789":
        glyph = _glyph_mask(font, digit)
        if glyph.size == 0 or glyph.max() == 0:
            return False
        if glyph.shape == notdef.shape and np.array_equal(glyph, notdef):
            return False
        seen.add(glyph.tobytes())
    return len(seen) == 10


def _centre(digit: np.ndarray) -> np.ndarray:
    """Fit the ink's bounding box into the 20x20 box (aspect kept) and centre it by mass in the frame."""
    ys, xs = np.nonzero(digit > 0.05 * digit.max())
    crop = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    height, width = crop.shape
    ratio = _BOX / max(height, width)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    resized = Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    fitted = np.clip(np.asarray(resized), 0.0, None)
    frame = np.zeros((WORK, WORK), dtype=np.float32)
    top, left = (WORK - size[1]) // 2, (WORK - size[0]) // 2
    frame[top : top + size[1], left : left + size[0]] = fitted
    cy, cx = ndimage.center_of_mass(frame)
    frame = ndimage.shift(frame, ((WORK - 1) / 2 - cy, (WORK - 1) / 2 - cx), order=1)
    return np.clip(frame / max(frame.max(), 1e-6), 0.0, 1.0)


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    return np.round(np.clip(frame, 0.0, 1.0) * 255).astype(np.uint8)


def usable_font(path: Path) -> bool:
    """Whether a font file opens and draws ten distinct Latin digits."""
    try:
        return _renders_digits(ImageFont.truetype(str(path), _RENDER_PT))
    except OSError:
        return False


def _font_digits(path: Path) -> np.ndarray | None:
    """The ten centred digit glyphs of a font file, or None when it cannot render Latin digits."""
    try:
        font = ImageFont.truetype(str(path), _RENDER_PT)
    except OSError:
        return None
    if not _renders_digits(font):
        return None
    return np.stack([_centre(_glyph_mask(font, str(digit)).astype(np.float32)) for digit in range(10)])


def uci_strokes(part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The UCI 8x8 handwritten digits of one part (every fifth is held out), upscaled to 40x40 strokes in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = (np.arange(len(data.target)) % HELDOUT_UCI_EVERY == 0) == (part == "heldout")
    big = np.stack(
        [
            np.asarray(Image.fromarray(image, mode="F").resize((40, 40), Image.Resampling.BICUBIC))
            for image in data.images[keep].astype(np.float32) / 16.0
        ]
    )
    big = ndimage.gaussian_filter(np.clip(big, 0.0, 1.0), (0, 1.2, 1.2))
    # A soft threshold turns the blurred 8x8 blocks back into strokes.
    return np.clip((big - 0.4) / 0.3, 0.0, 1.0), data.target[keep].astype(np.int64)


def _uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """The training part of the UCI digits, centred like the font glyphs."""
    strokes, labels = uci_strokes("train")
    return np.stack([_centre(image) for image in strokes]), labels


def font_family(path: Path) -> str | None:
    """The family name a font file declares, or None when it cannot be opened."""
    try:
        return ImageFont.truetype(str(path), 12).getname()[0] or path.stem
    except OSError:
        return None


def is_heldout_family(family: str) -> bool:
    """Whether a font family is held out of train/val/test for the held-out split: a fixed quarter of family
    names, by a stable hash, so the choice does not depend on which other fonts are installed."""
    return zlib.crc32(family.encode("utf-8")) % HELDOUT_FONT_BUCKETS == 0


def font_files(font_dirs: tuple[Path, ...] = FONT_DIRS, part: str = "train") -> list[Path]:
    """The font files under `font_dirs` of one part ("train": not held out; "heldout"), sorted."""
    candidates = sorted(
        path for root in font_dirs for path in Path(root).rglob("*") if path.suffix.lower() in _FONT_SUFFIXES
    )
    out = []
    for path in candidates:
        family = font_family(path)
        if family is not None and is_heldout_family(family) == (part == "heldout"):
            out.append(path)
    return out


@functools.lru_cache(maxsize=4)
def build_glyph_bank(font_dirs: tuple[Path, ...] = FONT_DIRS) -> GlyphBank:
    """Every digit of every usable font under `font_dirs` whose family is not held out, plus the UCI handwritten
    digits that are not held out (see is_heldout_family, uci_strokes).

    Fonts whose digits look nearly the same as an already kept font's are skipped (many script
    fonts embed the same Latin digits), so no design is over-weighted. The result is cached and
    shared: treat its arrays as read-only.
    """
    candidates = font_files(font_dirs, "train")
    fonts: list[str] = []
    font_glyphs: list[np.ndarray] = []
    thumbs: list[np.ndarray] = []
    for path in candidates:
        digits = _font_digits(path)
        if digits is None:
            continue
        thumb = digits.reshape(10, IMAGE_SIZE, SCALE, IMAGE_SIZE, SCALE).mean(axis=(2, 4))
        if all(np.abs(thumb - kept).mean() > _DUPLICATE_FONT_DISTANCE for kept in thumbs):
            fonts.append(str(path))
            font_glyphs.append(digits)
            thumbs.append(thumb)
    uci_glyphs, uci_labels = _uci_digits()
    font_labels = np.tile(np.arange(10, dtype=np.int64), len(fonts))
    glyphs = [_to_uint8(np.concatenate(font_glyphs))] if fonts else []
    return GlyphBank(
        glyphs=np.concatenate([*glyphs, _to_uint8(uci_glyphs)]),
        labels=np.concatenate([font_labels, uci_labels]),
        handwritten=np.concatenate([np.zeros(len(font_labels), dtype=bool), np.ones(len(uci_labels), dtype=bool)]),
        fonts=tuple(fonts),
    )


def render_image(bank: GlyphBank, label: int, rng: np.random.Generator, noise: ImageNoise) -> np.ndarray:
    """One 28x28 uint8 image (white digit on black) of `label`."""
    candidates = bank.indices(label, handwritten=bool(rng.random() < noise.handwritten_prob))
    glyph = bank.glyphs[candidates[rng.integers(len(candidates))]]
    heavy = rng.random() < noise.corrupt_prob
    img = distort(glyph, rng, noise.distortion)
    img = degrade(img, rng, noise.distortion)
    if heavy:
        img = corrupt(img, rng)
    return _to_uint8(img)
