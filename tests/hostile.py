"""Hostile and odd media files, made in memory: decompression bombs, lying headers, animations, exotic modes and
encodings, formats the service does not accept. Shared by the decoder unit tests, the HTTP corpus and the fuzzers."""
from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import numpy as np
import soundfile as sf
from PIL import Image

from tests.helpers import png_bytes, wav_bytes


def image_file(im: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def noise_image(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    arr = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr, "RGB")
    return im if mode == "RGB" else im.convert(mode)


# --- images whose header declares far more pixels than the file holds ---

def jpeg_bomb(width: int = 60000, height: int = 60000) -> bytes:
    data = bytearray(image_file(noise_image((8, 8)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    data = bytearray(image_file(noise_image((8, 8)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR's CRC, so only the size is a lie
    return bytes(data)


@cache
def real_png_bomb() -> bytes:
    """A genuine 20000 x 20000 1-bit PNG that compresses to a few dozen kilobytes."""
    return image_file(Image.new("1", (20000, 20000)), "PNG")


def gif_bomb() -> bytes:
    data = bytearray(image_file(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen size
    return bytes(data)


def bmp_bomb() -> bytes:
    data = bytearray(image_file(noise_image((8, 8)), "BMP"))
    data[18:26] = struct.pack("<ii", 50000, 50000)
    return bytes(data)


@cache
def tiff_bomb() -> bytes:
    """A genuine 30000 x 30000 bilevel TIFF (CCITT G4): 25 kB on disk, 900 M pixels."""
    return image_file(Image.new("1", (30000, 30000)), "TIFF", compression="group4")


IMAGE_BOMBS = {"jpeg": jpeg_bomb, "png": png_bomb, "png-real": real_png_bomb, "gif": gif_bomb, "bmp": bmp_bomb,
               "tiff": tiff_bomb}


def animation(fmt: str, frames: int, size: tuple[int, int] = (4, 4)) -> bytes:
    """An animated GIF / APNG / WebP / multi-page TIFF with `frames` distinct frames."""
    ims = [Image.new("L", size, (i * 37) % 256) for i in range(frames)]
    return image_file(ims[0], fmt, save_all=True, append_images=ims[1:])


def eps_file() -> bytes:
    """A real EPS (Pillow itself identifies it; reading its pixels would run Ghostscript)."""
    return image_file(Image.new("RGB", (16, 16)), "EPS")


FOREIGN_IMAGES = {
    "svg": lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
    "pdf": lambda: image_file(Image.new("RGB", (16, 16)), "PDF"),
    "eps": eps_file,
    "heic": lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
    "avif": lambda: b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64),
    "ico": lambda: image_file(Image.new("RGB", (16, 16)), "ICO"),
    "ppm": lambda: image_file(Image.new("RGB", (16, 16)), "PPM"),
    "tga": lambda: image_file(Image.new("RGB", (16, 16)), "TGA"),
    "jpeg2000": lambda: image_file(Image.new("RGB", (16, 16)), "JPEG2000"),
    "psd": lambda: b"8BPS\x00\x01" + bytes(6) + b"\x00\x03\x00\x00\x00\x10\x00\x00\x00\x10\x00\x08\x00\x03" + bytes(64),
    "html": lambda: b"<!doctype html><html><body>hi</body></html>",
    "zip": lambda: b"PK\x03\x04" + bytes(60),
}

# Modes that 6 accepted formats can hold, each a file of that format.
EXOTIC_IMAGES = {
    "cmyk-jpeg": lambda: image_file(noise_image(mode="CMYK"), "JPEG"),
    "16bit-png": lambda: image_file(Image.fromarray(np.full((7, 9), 40000, np.uint16)), "PNG"),
    "palette-transparent-png": lambda: image_file(noise_image(mode="P"), "PNG", transparency=0),
    "1bit-png": lambda: image_file(noise_image(mode="1"), "PNG"),
    "1bit-bmp": lambda: image_file(noise_image(mode="1"), "BMP"),
    "la-png": lambda: image_file(noise_image(mode="LA"), "PNG"),
    "rgba-webp": lambda: image_file(noise_image(mode="RGBA"), "WEBP"),
    "lab-tiff": lambda: image_file(noise_image(mode="LAB"), "TIFF"),
    "float-tiff": lambda: image_file(noise_image(mode="F"), "TIFF"),
    "int32-tiff": lambda: image_file(noise_image(mode="I"), "TIFF"),
    "16bit-bigendian-tiff": lambda: image_file(noise_image(mode="I;16B"), "TIFF"),
    "ycbcr-tiff": lambda: image_file(noise_image(mode="YCbCr"), "TIFF"),
    "cmyk-tiff": lambda: image_file(noise_image(mode="CMYK"), "TIFF"),
    "palette-gif": lambda: image_file(noise_image(mode="P"), "GIF"),
}


# --- audio ---

def wav_with_header(rate: int = 8000, channels: int = 1, bits: int = 16, frames: int = 100,
                    data_size: int | None = None, format_tag: int = 1) -> bytes:
    """A hand-made RIFF/WAVE whose header says whatever it is told."""
    data = bytes(frames * max(channels, 1) * bits // 8)
    align = max(channels, 1) * bits // 8
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def audio_file(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@cache
def silent_flac(seconds: float, rate: int = 8000, channels: int = 1) -> bytes:
    """Silence compresses to almost nothing in FLAC: an hour is well under 100 kB."""
    buf = io.BytesIO()
    block = np.zeros((rate * 10, channels), dtype=np.int16)
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(seconds // 10)):
            f.write(block)
    return buf.getvalue()


def tone(seconds: float = 0.3, rate: int = 16000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * channels, axis=1)


EXOTIC_AUDIO = {
    "wav-ulaw": lambda: audio_file(tone(), 16000, "WAV", "ULAW"),
    "wav-alaw": lambda: audio_file(tone(), 16000, "WAV", "ALAW"),
    "wav-ima-adpcm": lambda: audio_file(tone(), 16000, "WAV", "IMA_ADPCM"),
    "wav-ms-adpcm": lambda: audio_file(tone(), 16000, "WAV", "MS_ADPCM"),
    "wav-u8": lambda: audio_file(tone(), 16000, "WAV", "PCM_U8"),
    "wav-double": lambda: audio_file(tone(), 16000, "WAV", "DOUBLE"),
    "wavex-6ch": lambda: audio_file(tone(channels=6), 48000, "WAVEX", "PCM_24"),
    "w64": lambda: audio_file(tone(), 16000, "W64", "PCM_16"),
    "rf64": lambda: audio_file(tone(), 16000, "RF64", "PCM_16"),
    "flac-24bit-8ch": lambda: audio_file(tone(channels=8), 96000, "FLAC", "PCM_24"),
    "ogg-vorbis-stereo": lambda: audio_file(tone(channels=2), 44100, "OGG", "VORBIS"),
    "ogg-opus": lambda: audio_file(tone(), 48000, "OGG", "OPUS"),
    "mp3": lambda: audio_file(tone(seconds=1.0), 44100, "MP3", "MPEG_LAYER_III"),
    "wav-11025hz": lambda: wav_bytes(seconds=0.3, rate=11025),
    "wav-384khz": lambda: wav_bytes(seconds=0.05, rate=384000),
}

FOREIGN_AUDIO = {
    "aiff": lambda: audio_file(tone(), 16000, "AIFF", "PCM_16"),
    "au": lambda: audio_file(tone(), 16000, "AU", "PCM_16"),
    "caf": lambda: audio_file(tone(), 16000, "CAF", "PCM_16"),
    "voc": lambda: audio_file(tone(), 16000, "VOC", "PCM_16"),
    "mp3-in-wav": lambda: wav_with_header(format_tag=0x55),
    "unknown-wav-codec": lambda: wav_with_header(format_tag=0x1234),
    "midi": lambda: b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
    "png": lambda: png_bytes(),
}

LYING_AUDIO = {
    "rate-0": lambda: wav_with_header(rate=0),
    "rate-1": lambda: wav_with_header(rate=1),
    "rate-huge": lambda: wav_with_header(rate=4_000_000_000),
    "channels-0": lambda: wav_with_header(channels=0),
    "channels-65": lambda: wav_with_header(channels=65),
    "data-size-4gb": lambda: wav_with_header(data_size=0xFFFFFFF0),
    "zero-samples": lambda: wav_with_header(frames=0),
    "truncated-wav": lambda: wav_bytes(seconds=0.5)[:500],
    "truncated-flac": lambda: (lambda d: d[: len(d) // 2])(audio_file(tone(1.0), 16000, "FLAC")),
    "truncated-ogg": lambda: (lambda d: d[: len(d) // 2])(audio_file(tone(1.0), 16000, "OGG", "VORBIS")),
    "header-only-wav": lambda: wav_bytes()[:44],
    "header-only-flac": lambda: audio_file(tone(), 16000, "FLAC")[:42],
}
