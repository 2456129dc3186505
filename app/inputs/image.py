"""Untrusted bytes -> PIL image. The type is decided by content, and the pixel and frame limits are checked from
the header before any pixel is decoded."""
from __future__ import annotations

import warnings

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_jxl import JpegXLImagePlugin

from app.errors import CorruptInput, PayloadTooLarge, UnsupportedMediaType
from app.inputs import image_jxl
from app.inputs.limits import DecodeLimits
from app.inputs.parts import Buffer, open_buffer
from app.inputs.sniff import sniff_image

# Pillow is only ever asked for these formats, so no other plugin (EPS via Ghostscript, say) can run; a file whose
# signature names one of them is opened by that plugin alone. AVIF is Pillow's own (libavif); HEIF (HEIC photos)
# comes from pillow-heif (libheif), JPEG XL from pillow-jxl-plugin (libjxl).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF", "JXL")
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
JpegXLImagePlugin.DECODE_THREADS = 0  # one thread per image, like every other decoder: the service runs many at once
# Our own pixel limit (configurable, checked from the header before decoding) replaces Pillow's global one.
Image.MAX_IMAGE_PIXELS = None
# Untrusted files make Pillow warn (corrupt EXIF, truncated chunks); our own checks decide what to refuse, so the
# warnings are only noise in the logs. One process-wide filter: `catch_warnings` per call is not thread-safe.
warnings.filterwarnings("ignore", module=r"(PIL(\..*)?|pillow_heif(\..*)?|pillow_jxl(\..*)?|app\.inputs\..*)$")
# Every pixel mode those formats decode to; preprocessing.to_mode converts each of them.
IMAGE_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
     "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
)


def decode_image(data: Buffer, limits: DecodeLimits) -> Image.Image:
    """The first frame of a JPEG/PNG/WebP/GIF/BMP/TIFF/AVIF/HEIF/JPEG XL, EXIF orientation applied, in its
    original mode."""
    declared = sniff_image(data)
    if declared == "JXL":
        _check_jxl_header(data, limits)
    try:
        im = Image.open(open_buffer(data), formats=(declared,) if declared else IMAGE_FORMATS)
    except UnidentifiedImageError:
        if declared is not None:
            raise CorruptInput(
                f"image: the file starts like {'an' if declared == 'AVIF' else 'a'} {declared} but is truncated or "
                "corrupt; re-encode it and send it again"
            ) from None
        raise UnsupportedMediaType(
            f"image: the file is not a supported image; send one of {', '.join(IMAGE_FORMATS)} "
            "(the type is read from the file's content, not its name)"
        ) from None
    except Image.DecompressionBombError:
        raise PayloadTooLarge(_too_many_pixels(limits)) from None
    except Exception:  # noqa: BLE001 - any failure to parse untrusted bytes is the caller's corrupt file
        raise CorruptInput("image: the file is corrupt or truncated; re-encode it and send it again") from None
    width, height = im.size
    if width < 1 or height < 1:
        raise CorruptInput("image: the file declares an empty (0-pixel) image")
    if width * height > limits.max_image_pixels:
        raise PayloadTooLarge(_too_many_pixels(limits, width, height))
    try:
        too_many_frames = _has_more_frames_than(im, limits.max_image_frames)
        if not too_many_frames:
            im.seek(0)
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
    except Image.DecompressionBombError:
        raise PayloadTooLarge(_too_many_pixels(limits)) from None
    except Exception:  # noqa: BLE001 - see above
        raise CorruptInput(
            f"image: the {im.format} file is corrupt or truncated and could not be decoded; re-encode and send it again"
        ) from None
    if too_many_frames:
        raise PayloadTooLarge(
            f"image: the file holds more than {limits.max_image_frames:,} frames; send a still image (or one frame)"
        )
    if im.mode not in IMAGE_MODES:
        raise UnsupportedMediaType(f"image: pixel mode {im.mode!r} is not supported; send grey, RGB(A) or palette")
    return im


def _has_more_frames_than(im: Image.Image, limit: int) -> bool:
    """Whether an image holds more than `limit` frames, found without decoding a pixel or walking past the limit."""
    if im.format in ("PNG", "WEBP"):
        return int(getattr(im, "n_frames", 1)) > limit  # declared in a header (APNG's acTL, WebP's ANIM)
    if im.format == "GIF":
        # GIF declares no count; Pillow's own n_frames walks the frame headers like this, but to the end of the file.
        try:
            for frame in range(1, limit + 1):
                im._seek(frame, False)  # type: ignore[attr-defined]  # noqa: SLF001 - headers only, no decoding
        except EOFError:
            return False
        return True
    try:
        im.seek(limit)  # TIFF: follows the directory chain up to frame `limit`; single-frame formats raise at once
    except EOFError:
        return False
    return True


def _check_jxl_header(data: Buffer, limits: DecodeLimits) -> None:
    """The JPEG XL plugin decodes on open: check the size (and refuse animations) from the header first."""
    try:
        header = image_jxl.read_header(data)
    except ValueError:
        raise CorruptInput("image: the file starts like a JXL but its header is truncated or corrupt") from None
    if header.width * header.height > limits.max_image_pixels:
        raise PayloadTooLarge(_too_many_pixels(limits, header.width, header.height))
    if header.animated:
        raise UnsupportedMediaType("image: animated JPEG XL is not accepted; send a still image")


def _too_many_pixels(limits: DecodeLimits, width: int | None = None, height: int | None = None) -> str:
    size = f" is {width}x{height} pixels and" if width else ""
    return f"image:{size} exceeds the limit of {limits.max_image_pixels:,} pixels; downscale it before sending"
