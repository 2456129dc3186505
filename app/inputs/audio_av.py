"""Audio through FFmpeg's libraries (PyAV): the containers and codecs libsndfile lacks (WebM/Matroska, MP4/M4A/3GP,
CAF, AIFF, AMR, ADTS, MP3 or GSM inside RIFF, the audio track of a video file).

FFmpeg never guesses: the demuxer is the one the content was sniffed as (app.inputs.sniff), only the decoders in
`AUDIO_CODECS` run (the demuxer's probing may not open any other, so a video track is never decoded), nested or
external resources cannot be opened, and the stream count, rate, channels, duration and decoded samples are checked
before decoding where the container declares them and again on every decoded frame, so a file that hides its length
is stopped at the limit, not decoded to its end. Decoding is bounded in CPU time as well (`DecodeLimits.
max_decode_seconds`, the decoding thread's CPU clock, so a loaded machine does not refuse good files): checked
before every packet and on every read FFmpeg makes from the upload, so a demuxer that scans megabytes of junk for a
sync code is stopped too. (PyAV's `timeout`, FFmpeg's interrupt callback, was tried: for a file read from memory
the demuxers never consult it.)"""
from __future__ import annotations

import io
import time
from collections.abc import Iterator

import av
import numpy as np

from app.errors import CorruptInput, PayloadTooLarge, UnsupportedMediaType
from app.inputs.limits import DecodeLimits, Waveform, check_rate_and_channels
from app.inputs.parts import Buffer, open_buffer
from app.inputs.sniff import AudioType

# FFmpeg decoder names. What phones, browsers, recorders and video cameras write; every other codec is refused.
AUDIO_CODECS = frozenset(
    {
        "aac", "aac_fixed", "alac", "mp3", "mp3float", "mp2", "mp2float", "opus", "libopus", "vorbis", "flac",
        "amrnb", "amrwb", "libopencore_amrnb", "libopencore_amrwb", "gsm", "gsm_ms",
        "adpcm_ima_wav", "adpcm_ima_qt", "adpcm_ms", "pcm_mulaw", "pcm_alaw",
        "pcm_u8", "pcm_s8", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be",
        "pcm_f32le", "pcm_f32be", "pcm_f64le", "pcm_f64be",
    }
)
MAX_STREAMS = 16  # tracks of any kind in one container: a video file's audio, video and subtitles fit
# Containers whose declared duration is exact (sample tables, chunk sizes): decoding much less than it is truncation.
# Elsewhere (MP3, ADTS, AMR) FFmpeg only estimates a duration from the bit rate.
_EXACT_DURATION = frozenset({"mov", "matroska", "caf", "aiff", "wav", "w64", "ogg"})
_FORMAT_OPTIONS = {
    "codec_whitelist": ",".join(sorted(AUDIO_CODECS)),  # decoders the demuxer may open while probing streams
    "max_streams": str(MAX_STREAMS + 1),  # FFmpeg stops creating streams past it; one more tells us it was exceeded
    "protocol_whitelist": "none",  # no nested or external resource (MOV references, playlists) is ever opened
    "probesize": str(1 << 20),
    "analyzeduration": "2000000",  # microseconds of each stream the prober may read: enough to know its format
}
# Integer sample formats -> the scale that maps them to [-1, 1].
_INT_SCALE = {"u8": 128.0, "u8p": 128.0, "s16": 32768.0, "s16p": 32768.0, "s32": 2.0**31, "s32p": 2.0**31,
              "s64": 2.0**63, "s64p": 2.0**63}


class _BudgetedReader(io.RawIOBase):
    """The upload as FFmpeg reads it (in place: app.inputs.parts.open_buffer), and the decoding's CPU budget: once
    it is spent, the upload reads as ended (an exception raised here would be logged by PyAV for every read FFmpeg
    retries), and `over_budget` says so."""

    def __init__(self, data: Buffer, budget: float) -> None:
        super().__init__()
        self._file = open_buffer(data)
        # A thread's CPU time never runs ahead of the wall clock, and the wall clock is the cheaper read (no system
        # call): the CPU clock is only consulted once the budget has passed in wall time.
        self.wall_deadline = time.monotonic() + budget
        self.cpu_deadline = time.thread_time() + budget
        self.over_budget = False

    def spent(self) -> bool:
        if not self.over_budget and time.monotonic() > self.wall_deadline:
            self.over_budget = time.thread_time() > self.cpu_deadline
        return self.over_budget

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return b"" if self.spent() else self._file.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


def decode_with_av(data: Buffer, kind: AudioType, limits: DecodeLimits) -> Waveform:
    """Decode the first audio track of `data`, read with the demuxer of the sniffed `kind` (FFmpeg never probes)."""
    budget = limits.max_decode_seconds
    label = kind.name
    reader = _BudgetedReader(data, budget)
    try:
        container = av.open(reader, format=kind.demuxer, options=_FORMAT_OPTIONS)
    except (av.FFmpegError, EOFError, ValueError, UnicodeDecodeError):
        if reader.over_budget:
            raise _over_budget(label, budget) from None
        raise CorruptInput(
            f"audio: the file starts like {kind.label} but is truncated or corrupt; re-encode it"
        ) from None
    with container:
        stream = _audio_stream(container, label)
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        check_rate_and_channels(rate, channels)
        # Only an exact length refuses a file unread; MP3's and ADTS's are estimated from the first frame's bit rate.
        declared = _declared_seconds(stream, container) if kind.demuxer in _EXACT_DURATION else None
        if declared is not None and declared > limits.max_audio_seconds:
            raise PayloadTooLarge(_too_long(declared, limits))
        chunks: list[np.ndarray] = []
        total = 0
        for frame in _frames(container, stream, reader, budget, label):
            if frame.sample_rate != rate or len(frame.layout.channels) != channels:
                raise CorruptInput(
                    f"audio: the {label} file changes from {rate} Hz, {channels} channels to {frame.sample_rate} Hz, "
                    f"{len(frame.layout.channels)} channels mid-stream; re-encode it"
                )
            total += frame.samples
            if total > limits.max_audio_seconds * rate:  # the limit, checked as it is reached: nothing decoded past it
                raise PayloadTooLarge(_too_long(total / rate, limits, at_least=True))
            if total * channels > limits.max_audio_samples:
                raise PayloadTooLarge(
                    f"audio: {channels} channels at {rate} Hz decode to more than {limits.max_audio_samples:,} "
                    "samples; the limit is that many samples in all: downmix, resample or trim it first"
                )
            chunks.append(_as_float(frame, channels))
    if reader.over_budget:  # FFmpeg saw the end of the file early: the budget ran out inside a read
        raise _over_budget(label, budget)
    if total == 0:
        raise CorruptInput(f"audio: the {label} file holds no samples")
    if declared is not None and total / rate < 0.9 * declared - 0.05:
        raise CorruptInput(
            f"audio: the {label} file is truncated: it declares {declared:.2f} s but holds {total / rate:.2f} s"
        )
    samples = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    if not np.isfinite(samples).all():
        raise CorruptInput("audio: the file holds NaN or infinite samples")
    return Waveform(samples=samples, sample_rate=rate)


def _audio_stream(container: av.container.InputContainer, label: str) -> av.AudioStream:
    if len(container.streams) > MAX_STREAMS:
        raise PayloadTooLarge(f"audio: the {label} file holds more than {MAX_STREAMS} tracks; send one audio track")
    audio = container.streams.audio
    if not audio:
        raise UnsupportedMediaType(f"audio: the {label} file holds no audio track")
    stream = audio[0]
    codec = stream.codec_context.name if stream.codec_context is not None else "an unknown codec"
    if codec not in AUDIO_CODECS:
        raise UnsupportedMediaType(
            f"audio: the {label} file's audio is encoded as {codec!r}, which is not accepted; "
            "send AAC, Opus, Vorbis, MP3, FLAC, ALAC, AMR or PCM audio"
        )
    stream.codec_context.thread_count = 1  # audio decoders gain nothing from threads; keeps the CPU clock honest
    return stream


def _frames(
    container: av.container.InputContainer, stream: av.AudioStream, reader: _BudgetedReader, budget: float, label: str
) -> Iterator[av.AudioFrame]:
    """Decoded frames of `stream`; CorruptInput on a packet the decoder rejects (but the last: a file cut short
    mid-packet keeps what came before it) or once the CPU budget is spent."""
    rejected = False
    try:
        for packet in container.demux(stream):
            if reader.spent():
                raise _over_budget(label, budget)
            if rejected and packet.size:  # a rejected packet with more after it: corrupt, not cut short
                raise CorruptInput(f"audio: the {label} file holds a corrupt packet; re-encode it")
            try:
                yield from packet.decode()
            except (av.InvalidDataError, av.PatchWelcomeError):
                rejected = True
    except (av.FFmpegError, EOFError, ValueError, UnicodeDecodeError):
        if reader.over_budget:
            raise _over_budget(label, budget) from None
        raise CorruptInput(
            f"audio: the {label} file is corrupt, or holds something other than the codec it declares; re-encode it"
        ) from None


def _declared_seconds(stream: av.AudioStream, container: av.container.InputContainer) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _as_float(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """[samples, channels] float32 in [-1, 1], whatever the decoder's sample format."""
    fmt = frame.format.name
    arr = frame.to_ndarray()
    arr = arr.T if frame.format.is_planar else arr.reshape(-1, channels)
    if fmt in _INT_SCALE:
        out = arr.astype(np.float32)
        if fmt.startswith("u8"):
            out -= 128.0
        out *= np.float32(1.0 / _INT_SCALE[fmt])
        return out
    # Lossy decoders overshoot full scale on loud passages (and on noise): clip, as playback would.
    return np.clip(arr, -1.0, 1.0, dtype=np.float32)


def _over_budget(label: str, budget: float) -> CorruptInput:
    return CorruptInput(
        f"audio: decoding the {label} file took more than {budget:g} s of CPU time; it is corrupt or crafted, "
        "re-encode it"
    )


def _too_long(seconds: float, limits: DecodeLimits, at_least: bool = False) -> str:
    length = f"more than {limits.max_audio_seconds:g} s" if at_least else f"{seconds:.1f} s"
    return f"audio: the file is {length} long; the limit is {limits.max_audio_seconds:g} s, trim it first"
