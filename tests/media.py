"""Audio and image files in every accepted format, made at test time with real encoders (FFmpeg's through PyAV,
libsndfile's, Pillow's and its plugins'), from any content: nothing is a committed blob."""
from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
import soundfile as sf
from PIL import Image


@dataclass(frozen=True)
class Encoding:
    """One way to write audio: an FFmpeg muxer and encoder (with a video track, if `video` names its encoder)."""

    container: str
    codec: str
    rate: int | None = None  # the encoder's rate, where it only takes some (Opus 48 kHz, AMR 8 kHz)
    layout: str = "mono"
    video: str | None = None
    options: dict[str, str] = field(default_factory=dict)  # the muxer's
    codec_options: dict[str, str] = field(default_factory=dict)
    seekable: bool = True  # False: written to a pipe, so the muxer cannot go back to fill in lengths


class _Pipe(io.RawIOBase):
    """A write-only, unseekable output: what a tool streaming to stdout sees."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.chunks.append(bytes(b))
        return len(b)


def encode_with_av(samples: np.ndarray, rate: int, enc: Encoding) -> bytes:
    """`samples` (mono float in [-1, 1]) at `rate` Hz, encoded and muxed by FFmpeg."""
    out_rate = enc.rate or rate
    sink: io.BytesIO | _Pipe = io.BytesIO() if enc.seekable else _Pipe()
    with av.open(sink, "w", format=enc.container, options=enc.options) as out:
        video = None
        if enc.video:
            video = out.add_stream(enc.video, rate=10)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream(enc.codec, rate=out_rate, layout=enc.layout, options=enc.codec_options)
        resampler = av.AudioResampler(format=audio.codec_context.format, layout=enc.layout, rate=out_rate)
        channels = av.AudioLayout(enc.layout).nb_channels  # the same signal in each (no -3 dB upmix)
        planes = np.repeat(samples.astype(np.float32).reshape(1, -1), channels, axis=0)
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=enc.layout)
        frame.sample_rate, frame.pts = rate, 0
        for f in resampler.resample(frame) + resampler.resample(None):
            out.mux(audio.encode(f))
        out.mux(audio.encode(None))
        if video is not None:
            for i in range(int(len(samples) / rate * 10) + 1):
                picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20 % 256, np.uint8), format="rgb24")
                picture.pts = i
                out.mux(video.encode(picture))
            out.mux(video.encode(None))
    return sink.getvalue() if isinstance(sink, io.BytesIO) else b"".join(sink.chunks)


def encode_with_soundfile(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def streamed_wav(samples: np.ndarray, rate: int, size_field: int) -> bytes:
    """A 16-bit WAV as a tool writing to a pipe leaves it: RIFF and data sizes unknown (0 or 0xFFFFFFFF)."""
    data = bytearray(encode_with_soundfile(samples, rate, "WAV", "PCM_16"))
    assert data[36:40] == b"data"
    data[4:8] = struct.pack("<I", size_field)
    data[40:44] = struct.pack("<I", size_field)
    return bytes(data)


# Every audio format a phone, a browser or a recorder sends, by a short name. AMR-WB has no encoder in FFmpeg's
# build (decode-only: its decoder runs in tests/inputs on AMR-NB's sibling path, see test_formats).
AUDIO: dict[str, Callable[[np.ndarray, int], bytes]] = {
    "webm-opus": lambda x, r: encode_with_av(x, r, Encoding("webm", "libopus", rate=48000)),
    "webm-opus-streamed": lambda x, r: encode_with_av(x, r, Encoding("webm", "libopus", rate=48000, seekable=False)),
    "webm-vorbis": lambda x, r: encode_with_av(
        x, r, Encoding("webm", "vorbis", layout="stereo", codec_options={"strict": "experimental"})
    ),
    "ogg-opus": lambda x, r: encode_with_av(x, r, Encoding("ogg", "libopus", rate=48000)),
    "ogg-vorbis": lambda x, r: encode_with_soundfile(x, r, "OGG", "VORBIS"),
    "m4a-aac": lambda x, r: encode_with_av(x, r, Encoding("ipod", "aac")),
    "mp4-fragmented-aac": lambda x, r: encode_with_av(  # what Safari's MediaRecorder writes
        x, r, Encoding("mp4", "aac", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
    ),
    "m4a-alac": lambda x, r: encode_with_av(x, r, Encoding("ipod", "alac")),
    "mp3": lambda x, r: encode_with_av(x, r, Encoding("mp3", "libmp3lame")),
    "mp3-no-xing-tag": lambda x, r: encode_with_av(x, r, Encoding("mp3", "libmp3lame", options={"write_xing": "0"})),
    "flac": lambda x, r: encode_with_av(x, r, Encoding("flac", "flac")),
    "aiff": lambda x, r: encode_with_av(x, r, Encoding("aiff", "pcm_s16be")),
    "aiff-streamed": lambda x, r: encode_with_av(x, r, Encoding("aiff", "pcm_s16be", seekable=False)),
    "aifc-ulaw": lambda x, r: encode_with_av(x, r, Encoding("aiff", "pcm_mulaw")),
    "caf-alac": lambda x, r: encode_with_av(x, r, Encoding("caf", "alac")),
    "caf-pcm": lambda x, r: encode_with_av(x, r, Encoding("caf", "pcm_s16le")),
    "wav-mp3": lambda x, r: encode_with_av(x, r, Encoding("wav", "libmp3lame")),
    "wav-gsm": lambda x, r: encode_with_soundfile(x, r, "WAV", "GSM610"),
    "wav-streamed-0": lambda x, r: streamed_wav(x, r, 0),
    "wav-streamed-ffffffff": lambda x, r: streamed_wav(x, r, 0xFFFFFFFF),
    "amr-nb": lambda x, r: encode_with_av(x, r, Encoding("amr", "libopencore_amrnb", rate=8000)),
    "3gp-amr-nb": lambda x, r: encode_with_av(x, r, Encoding("3gp", "libopencore_amrnb", rate=8000)),
    "3gp-aac": lambda x, r: encode_with_av(x, r, Encoding("3gp", "aac")),
    "adts-aac": lambda x, r: encode_with_av(x, r, Encoding("adts", "aac")),
    "mp4-h264-aac-video": lambda x, r: encode_with_av(x, r, Encoding("mp4", "aac", video="libx264")),
    "mkv-mpeg4-opus-video": lambda x, r: encode_with_av(x, r, Encoding("matroska", "libopus", 48000, video="mpeg4")),
    "mov-h264-alac-video": lambda x, r: encode_with_av(x, r, Encoding("mov", "alac", video="libx264")),
}
# Formats whose encoders drop the band above 4 kHz (narrowband speech codecs, 8 kHz): the same words, less detail.
NARROWBAND = frozenset({"amr-nb", "3gp-amr-nb", "wav-gsm"})


def image_file(im: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def heif_bytes(im: Image.Image, **save: object) -> bytes:
    import pillow_heif

    heif = pillow_heif.from_pillow(im if im.mode == "RGBA" else im.convert("RGB"))
    buf = io.BytesIO()
    heif.save(buf, **save)
    return buf.getvalue()


def jxl_bytes(im: Image.Image, **save: object) -> bytes:
    import pillow_jxl  # noqa: F401 - registers Pillow's JXL writer

    return image_file(im if im.mode in ("L", "I;16") else im.convert("RGB"), "JXL", **save)


# Every image format a phone or a browser sends beyond the classic ones, lossless where the format can be.
IMAGES: dict[str, Callable[[Image.Image], bytes]] = {
    "avif": lambda im: image_file(im.convert("RGB"), "AVIF", quality=100, subsampling="4:4:4"),
    "heic": lambda im: heif_bytes(im, quality=-1),
    "jxl": lambda im: jxl_bytes(im, lossless=True),
    "jxl-lossy": lambda im: jxl_bytes(im, quality=90),
}
LOSSLESS_IMAGES = frozenset({"avif", "heic", "jxl"})
