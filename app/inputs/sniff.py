"""What a file is, read from its first bytes: never from its name or the part's Content-Type. Each audio type names
the one decoder path and the one FFmpeg demuxer that may read it."""
from __future__ import annotations

from dataclasses import dataclass

from app.inputs.parts import Buffer


@dataclass(frozen=True, slots=True)
class AudioType:
    """A sniffed audio container: how to name it to the user, and who decodes it."""

    name: str  # "WAV", "WebM/Matroska", ...
    demuxer: str  # the FFmpeg demuxer that reads it (passed explicitly: FFmpeg never probes)
    soundfile: bool  # libsndfile reads it first (faster for these); PyAV only for what libsndfile cannot

    @property
    def label(self) -> str:
        return f"{'an' if self.name[0] in 'AEIMO' else 'a'} {self.name}"  # an MP3, a FLAC


WAV = AudioType("WAV", "wav", soundfile=True)
W64 = AudioType("W64", "w64", soundfile=True)
FLAC = AudioType("FLAC", "flac", soundfile=True)
OGG = AudioType("OGG", "ogg", soundfile=True)
MP3 = AudioType("MP3", "mp3", soundfile=False)  # libsndfile only estimates an MP3's length when no tag declares it
AIFF = AudioType("AIFF", "aiff", soundfile=False)
CAF = AudioType("CAF", "caf", soundfile=False)
MATROSKA = AudioType("WebM/Matroska", "matroska", soundfile=False)
MP4 = AudioType("MP4/M4A/3GP/MOV", "mov", soundfile=False)
AMR = AudioType("AMR", "amr", soundfile=False)
ADTS = AudioType("AAC (ADTS)", "aac", soundfile=False)
AUDIO_NAMES = "WAV, W64, RF64, FLAC, OGG, MP3, AIFF, CAF, WebM/Matroska, MP4/M4A/3GP/MOV, AMR or AAC (ADTS)"

_W64_GUID = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
# Box types a QuickTime/MP4 file may start with (ISO BMFF's ftyp; old QuickTime files start with others).
_MP4_FIRST_BOXES = (b"ftyp", b"moov", b"wide", b"free", b"skip", b"mdat")


def sniff_audio(data: Buffer) -> AudioType | None:
    """The audio container `data` is, or None if it is none of the accepted ones."""
    head = bytes(data[:16])
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return WAV
    if head.startswith(_W64_GUID):
        return W64
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return AIFF
    by_magic = {b"fLaC": FLAC, b"OggS": OGG, b"caff": CAF, b"\x1aE\xdf\xa3": MATROSKA, b"#!AM": AMR}
    if (found := by_magic.get(head[:4])) is not None:
        return found if found is not AMR or head.startswith((b"#!AMR\n", b"#!AMR-WB\n")) else None
    if head[4:8] in _MP4_FIRST_BOXES:
        return MP4
    return _mpeg_audio(data)


def _mpeg_audio(data: Buffer) -> AudioType | None:
    """MP3 (MPEG audio frames) or AAC in ADTS frames, after an ID3v2 tag if there is one."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = 0
        for byte in data[6:10]:  # a "syncsafe" integer: 7 bits per byte
            size = (size << 7) | (byte & 0x7F)
        start = 10 + size + (10 if data[5] & 0x10 else 0)  # the footer flag adds 10 bytes
        if start >= len(data) - 1:
            return MP3  # a tag and nothing after it: the MP3 decoder says what is wrong
    sync = bytes(data[start : start + 2])
    if len(sync) < 2 or sync[0] != 0xFF or sync[1] & 0xE0 != 0xE0:
        return MP3 if start else None  # an ID3 tag is (almost) always MP3's
    layer = (sync[1] >> 1) & 3
    if layer == 0:
        return ADTS if sync[1] & 0xF6 == 0xF0 else None
    return MP3


_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"\xff\x0a", "JXL"),  # a bare JPEG XL codestream
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JXL"),  # JPEG XL in its ISO BMFF container
)
_AVIF_BRANDS = (b"avif", b"avis")
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")


def sniff_image(data: Buffer) -> str | None:
    """The accepted image format (Pillow's name) whose signature `data` starts with, if any."""
    data = bytes(data[:4096])  # as far as any signature or an ftyp box's brands reach
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        brands = _ftyp_brands(data)
        if any(b in _AVIF_BRANDS for b in brands):
            return "AVIF"
        if any(b in _HEIF_BRANDS for b in brands):
            return "HEIF"
        return None
    return next((fmt for magic, fmt in _IMAGE_SIGNATURES if data.startswith(magic)), None)


def _ftyp_brands(data: bytes) -> list[bytes]:
    """The major and compatible brands of an ISO BMFF file's leading ftyp box."""
    size = int.from_bytes(data[:4], "big")
    box = data[8 : min(max(size, 16), 4096, len(data))]
    return [box[:4]] + [box[i : i + 4] for i in range(8, len(box) - 3, 4)]
