"""Untrusted bytes -> text: strict UTF-8, bounded in characters, never empty."""
from __future__ import annotations

import unicodedata

from app.errors import CorruptInput, PayloadTooLarge
from app.inputs.limits import DecodeLimits
from app.inputs.parts import Buffer

_UTF8_MAX_BYTES_PER_CHAR = 4
# Characters that show nothing but that str.isspace() does not count: every format character (Cf: zero-width space,
# word joiner, BOM, bidi marks, soft hyphen, tags), controls (Cc), and the fillers and blanks of other categories.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp"})
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5")


def decode_text(data: Buffer | str, limits: DecodeLimits) -> str:
    """Strict UTF-8 text; NUL characters and texts that show nothing (empty, whitespace or invisible characters
    only) are refused."""
    if not isinstance(data, str):
        if len(data) > _UTF8_MAX_BYTES_PER_CHAR * limits.max_text_chars:  # over the limit whatever it decodes to
            raise PayloadTooLarge(f"text: {len(data):,} bytes; the limit is {limits.max_text_chars:,} characters")
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptInput(f"text: not valid UTF-8 (bad byte at offset {exc.start}); send UTF-8 text") from None
    else:
        text = data
    if len(text) > limits.max_text_chars:
        raise PayloadTooLarge(f"text: {len(text):,} characters; the limit is {limits.max_text_chars:,}")
    if "\x00" in text:
        raise CorruptInput("text: contains NUL characters; remove them")
    if all(_shows_nothing(c) for c in text):  # stops at the first visible character: one step for most texts
        raise CorruptInput(
            "text: empty or only whitespace or invisible characters; send some text, or leave the field out"
        )
    return text


def _shows_nothing(c: str) -> bool:
    """Whitespace, or a character that renders as nothing on its own (variation selectors included)."""
    return (
        c.isspace()
        or c in _INVISIBLE
        or unicodedata.category(c) in _INVISIBLE_CATEGORIES
        or "\ufe00" <= c <= "\ufe0f"
        or "\U000e0100" <= c <= "\U000e01ef"
    )
