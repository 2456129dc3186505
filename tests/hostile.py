"""Hostile and odd media files, made in memory: decompression bombs, lying headers, animations, exotic modes and
encodings, formats the service does not accept. Shared by the decoder unit tests, the HTTP corpus and the fuzzers."""
from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction
from functools import cache

import av
import numpy as np
import soundfile as sf
from PIL import Image

from tests import media
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


def _ispe_bomb(data: bytes, width: int, height: int) -> bytes:
    """An AVIF/HEIF whose image spatial extents ('ispe' box) declare a size the file does not hold."""
    data = bytearray(data)
    at = data.find(b"ispe") + 8  # after the box type and its version/flags
    data[at : at + 8] = struct.pack(">II", width, height)
    return bytes(data)


def avif_bomb() -> bytes:
    return _ispe_bomb(media.IMAGES["avif"](noise_image((8, 8))), 10000, 10000)


def heic_ispe_lie() -> bytes:
    return _ispe_bomb(media.IMAGES["heic"](noise_image((8, 8))), 10000, 10000)


def _jxl_size_header(width: int, height: int, metadata_bits: str = "1") -> bytes:
    """A JPEG XL codestream start: a SizeHeader for width x height (30-bit fields), then ImageMetadata's bits
    (default: all_default), then padding. Bits are written least significant first."""

    def field(value: int, n: int) -> str:
        return "".join(str((value >> i) & 1) for i in range(n))

    bits = "0" + field(3, 2) + field(height - 1, 30) + field(0, 3) + field(3, 2) + field(width - 1, 30)
    bits += metadata_bits
    bits += "0" * (-len(bits) % 8) + "0" * 64
    return b"\xff\x0a" + bytes(int(bits[i : i + 8][::-1], 2) for i in range(0, len(bits), 8))


def jxl_bomb() -> bytes:
    """A JPEG XL codestream declaring 60000 x 60000 pixels (the plugin would decode it while opening it)."""
    return _jxl_size_header(60000, 60000)


def animated_jxl() -> bytes:
    """A JPEG XL header with have_animation set: all_default=0, extra_fields=1, orientation, no intrinsic size, no
    preview, have_animation=1."""
    return _jxl_size_header(16, 16, metadata_bits="0" + "1" + "000" + "0" + "0" + "1")


# (libheif takes a HEIC's size from its HEVC stream, not from 'ispe': a HEIC bomb needs a genuinely large image, so
# tests/inputs checks HEIC against a small limit instead; the 'ispe' lie is in BROKEN_IMAGES.)
IMAGE_BOMBS = {"jpeg": jpeg_bomb, "png": png_bomb, "png-real": real_png_bomb, "gif": gif_bomb, "bmp": bmp_bomb,
               "tiff": tiff_bomb, "avif": avif_bomb, "jxl": jxl_bomb}


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
    "mp4-video": lambda: b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(64),  # ISO BMFF, no image brand
    "animated-jxl": animated_jxl,
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
    "rgba-avif": lambda: image_file(noise_image(mode="RGBA"), "AVIF"),
    "lossy-avif": lambda: image_file(noise_image(), "AVIF", quality=50),
    "heic": lambda: media.IMAGES["heic"](noise_image()),
    "rgba-heic": lambda: media.heif_bytes(noise_image(mode="RGBA"), quality=80),
    "jxl": lambda: media.IMAGES["jxl"](noise_image()),
    "jxl-in-container": lambda: media.jxl_bytes(noise_image(), lossless=True, use_container=True),
    "grey-jxl": lambda: media.jxl_bytes(noise_image(mode="L"), lossless=True),
    "16bit-jxl": lambda: media.jxl_bytes(Image.fromarray(np.full((7, 9), 40000, np.uint16)), lossless=True),
}

# Truncated or corrupt files of the formats decoded through plugins: 422, never a crash.
BROKEN_IMAGES = {
    "heic-header-only": lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
    "avif-header-only": lambda: b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64),
    "avif-half": lambda: (lambda d: d[: len(d) // 2])(image_file(noise_image(), "AVIF")),
    "heic-half": lambda: (lambda d: d[: len(d) // 2])(media.IMAGES["heic"](noise_image())),
    "jxl-half": lambda: (lambda d: d[: len(d) // 2])(media.IMAGES["jxl"](noise_image())),
    "jxl-signature-only": lambda: b"\xff\x0a",
    "heic-ispe-lie": heic_ispe_lie,
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
    # every container and codec FFmpeg decodes for us, each written by a real encoder
    **{f"{name}": (lambda make=make: make(tone(seconds=1.0)[:, 0], 16000)) for name, make in media.AUDIO.items()},
    # cut short where the container declares no length: what is there is decoded
    "mp3-cut": lambda: _half(media.AUDIO["mp3-no-xing-tag"](tone(seconds=1.0)[:, 0], 16000)),
    "adts-aac-cut": lambda: _half(media.AUDIO["adts-aac"](tone(seconds=1.0)[:, 0], 16000)),
    "webm-opus-streamed-cut": lambda: _half(media.AUDIO["webm-opus-streamed"](tone(seconds=1.0)[:, 0], 16000)),
    "caf-half": lambda: _half(media.AUDIO["caf-pcm"](tone(seconds=2.0)[:, 0], 16000)),
}

# A container that claims one codec and holds another, where the declared decoder takes anything: FFmpeg's ALAC
# decoder turns AAC packets into noise. Decoded (finite, in range), refused by nothing, harmless: 200.
DECODED_AS_NOISE = {
    "mp4-claims-alac-holds-aac": lambda: _swap(media.AUDIO["m4a-aac"](tone()[:, 0], 16000), b"mp4a", b"alac"),
}

def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _video_only(container: str, codec: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        video = out.add_stream(codec, rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
            picture.pts = i
            out.mux(video.encode(picture))
        out.mux(video.encode(None))
    return buf.getvalue()


def _encoded(container: str, codec: str, **kw: object) -> bytes:
    encoding = media.Encoding(container, codec, **kw)  # type: ignore[arg-type]
    return media.encode_with_av(tone(seconds=1.0)[:, 0], 16000, encoding)


FOREIGN_AUDIO = {
    "au": lambda: audio_file(tone(), 16000, "AU", "PCM_16"),
    "voc": lambda: audio_file(tone(), 16000, "VOC", "PCM_16"),
    "unknown-wav-codec": lambda: wav_with_header(format_tag=0x1234),
    "mp4-video-only": lambda: _video_only("mp4", "libx264"),
    "webm-video-only": lambda: _video_only("webm", "libvpx"),
    "mp4-ac3": lambda: _encoded("mp4", "ac3", rate=48000, layout="stereo"),  # a codec outside the whitelist
    "wav-ac3": lambda: _encoded("wav", "ac3", rate=48000, layout="stereo"),
    "avi": lambda: b"RIFF\x00\x01\x00\x00AVI LIST" + bytes(64),
    "amr-multichannel": lambda: b"#!AMR_MC1.0\n" + bytes(64),
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
    "header-only-streamed-wav": lambda: media.streamed_wav(np.zeros(0), 16000, 0xFFFFFFFF),
    "m4a-half": lambda: _half(media.AUDIO["m4a-aac"](tone(seconds=1.0)[:, 0], 16000)),  # its index (moov) is lost
    "webm-half": lambda: _half(media.AUDIO["webm-opus"](tone(seconds=2.0)[:, 0], 16000)),  # declares 2 s
    "mp4-fragmented-aac-cut": lambda: _half(media.AUDIO["mp4-fragmented-aac"](tone(seconds=1.0)[:, 0], 16000)),
    "aiff-half": lambda: _half(media.AUDIO["aiff"](tone(seconds=2.0)[:, 0], 16000)),
    "amr-junk": lambda: b"#!AMR\n" + bytes(range(256)) * 4,
    "m4a-claims-aac-holds-alac": lambda: _swap(media.AUDIO["m4a-alac"](tone()[:, 0], 16000), b"alac", b"mp4a"),
    "webm-claims-flac-holds-opus": lambda: _swap(media.AUDIO["webm-opus"](tone()[:, 0], 16000), b"A_OPUS", b"A_FLAC"),
    "wav-claims-mp3-holds-pcm": lambda: _pcm_as_mp3_wav(),
    "mp4-junk-after-ftyp": lambda: b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00isomiso2" + bytes(range(256)) * 8,
}


def _swap(data: bytes, old: bytes, new: bytes) -> bytes:
    """The file with its codec tag rewritten: a container that claims one codec and holds another."""
    assert old in data
    return data.replace(old, new)


def _pcm_as_mp3_wav() -> bytes:
    pcm = (tone(1.0)[:, 0] * 32767).astype("<i2").tobytes()
    header = bytearray(wav_with_header(rate=16000, frames=0, format_tag=0x55))
    header[-4:] = struct.pack("<I", len(pcm))
    header[4:8] = struct.pack("<I", len(header) - 8 + len(pcm))
    return bytes(header) + pcm


def opus_packets(seconds: float, container: str, **options: str) -> bytes:
    """`seconds` of Opus (one 120 ms packet of silence muxed over and over: 14 bytes each), in a few megabytes."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "mono", "s16"
    enc.options = {"frame_duration": "120", "application": "voip"}
    enc.time_base = Fraction(1, 48000)
    silence = av.AudioFrame.from_ndarray(np.zeros((1, 5760), np.int16), format="s16", layout="mono")
    silence.sample_rate, silence.pts = 48000, 0
    payload = bytes((enc.encode(silence) + enc.encode(silence))[-1])
    buf = io.BytesIO()
    with av.open(buf, "w", format=container, options=options) as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        stream.codec_context.extradata = enc.extradata
        for i in range(int(seconds / 0.12)):
            packet = av.Packet(payload)
            packet.stream, packet.time_base = stream, Fraction(1, 48000)
            packet.pts = packet.dts = i * 5760
            packet.duration = 5760
            out.mux(packet)
    return buf.getvalue()


@cache
def ten_hours_of_opus(container: str) -> bytes:
    """Ten hours of Opus: in Ogg the last page declares the length; in a live WebM (what a browser's MediaRecorder
    writes) nothing does, so only decoding finds it out."""
    return opus_packets(36_000, container, **({"live": "1"} if container == "webm" else {}))


@cache
def streams(count: int) -> bytes:
    """A Matroska file declaring `count` 16-bit PCM tracks; the first holds 1024 samples."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        tracks = [out.add_stream("pcm_s16le", rate=8000, layout="mono") for _ in range(count)]
        packet = av.Packet(np.full(1024, 1000, np.int16).tobytes())
        packet.stream, packet.time_base, packet.pts, packet.dts = tracks[0], Fraction(1, 8000), 0, 0
        out.mux(packet)
    return buf.getvalue()
