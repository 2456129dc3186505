"""A JPEG XL file's size and whether it is animated, read from its header (ISO/IEC 18181-1 SizeHeader and the start
of ImageMetadata) without decoding it. The JPEG XL plugin for Pillow decodes the whole image when it opens a file, so
the pixel limit must be checked before Pillow is handed the bytes; and it shows only an animation's first frame
after decoding every frame, so animations are refused."""
from __future__ import annotations

from dataclasses import dataclass

_CODESTREAM = b"\xff\x0a"
_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
# x / y for SizeHeader's `ratio` field 1..7
_RATIOS = ((1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))


@dataclass(frozen=True, slots=True)
class JxlHeader:
    width: int
    height: int
    animated: bool


class _Bits:
    """JPEG XL's bit reader: least significant bit first within each byte."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def bits(self, n: int) -> int:
        value = 0
        for i in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("JPEG XL header cut short")
            value |= ((self.data[byte] >> (self.pos & 7)) & 1) << i
            self.pos += 1
        return value

    def u32(self, *choices: tuple[int, int]) -> int:
        """U32(): a 2-bit selector picks (offset, bit count) among four distributions."""
        offset, n = choices[self.bits(2)]
        return offset + self.bits(n)


def _size(r: _Bits) -> tuple[int, int]:
    """SizeHeader -> (width, height)."""
    small = r.bits(1)
    dist = ((1, 9), (1, 13), (1, 18), (1, 30))
    height = (r.bits(5) + 1) * 8 if small else r.u32(*dist)
    ratio = r.bits(3)
    if ratio:
        x, y = _RATIOS[ratio - 1]
        return height * x // y, height
    return ((r.bits(5) + 1) * 8 if small else r.u32(*dist)), height


def _skip_preview(r: _Bits) -> None:
    """PreviewHeader: its own size encoding, read only to get past it."""
    div8 = r.bits(1)
    dist = ((16, 0), (32, 0), (1, 5), (33, 9)) if div8 else ((1, 6), (65, 8), (321, 10), (1345, 12))
    r.u32(*dist)
    if r.bits(3) == 0:
        r.u32(*dist)


def codestream(data: bytes) -> bytes:
    """The start of the codestream: `data` itself, or the first jxlc/jxlp box's payload in the container."""
    if data.startswith(_CODESTREAM):
        return data
    pos = len(_CONTAINER)
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = len(data) - pos
        if kind == b"jxlc":
            return data[pos + header : pos + size]
        if kind == b"jxlp":
            return data[pos + header + 4 : pos + size]  # 4 bytes of part index first
        if size < header:
            break
        pos += size
    raise ValueError("no JPEG XL codestream box")


def read_header(data: bytes) -> JxlHeader:
    """Size and animation flag of a JPEG XL file (bare codestream or container); ValueError if unreadable."""
    stream = codestream(data)
    if not stream.startswith(_CODESTREAM):
        raise ValueError("not a JPEG XL codestream")
    r = _Bits(stream[2:66])
    width, height = _size(r)
    animated = False
    if not r.bits(1):  # ImageMetadata.all_default
        if r.bits(1):  # extra_fields
            r.bits(3)  # orientation
            if r.bits(1):  # have_intrinsic_size
                _size(r)
            if r.bits(1):  # have_preview
                _skip_preview(r)
            animated = bool(r.bits(1))  # have_animation
    return JxlHeader(width=width, height=height, animated=animated)
