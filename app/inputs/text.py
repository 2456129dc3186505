"""Untrusted bytes -> text: strict UTF-8, bounded in characters, never empty."""
from __future__ import annotations

from app.errors import CorruptInput, PayloadTooLarge
from app.inputs.limits import DecodeLimits

_UTF8_MAX_BYTES_PER_CHAR = 4


def decode_text(data: bytes | str, limits: DecodeLimits) -> str:
    """Strict UTF-8 text; NUL characters and empty or whitespace-only texts are refused."""
    if isinstance(data, bytes):
        if len(data) > _UTF8_MAX_BYTES_PER_CHAR * limits.max_text_chars:  # over the limit whatever it decodes to
            raise PayloadTooLarge(f"text: {len(data):,} bytes; the limit is {limits.max_text_chars:,} characters")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptInput(f"text: not valid UTF-8 (bad byte at offset {exc.start}); send UTF-8 text") from None
    else:
        text = data
    if len(text) > limits.max_text_chars:
        raise PayloadTooLarge(f"text: {len(text):,} characters; the limit is {limits.max_text_chars:,}")
    if "\x00" in text:
        raise CorruptInput("text: contains NUL characters; remove them")
    if not text.strip():
        raise CorruptInput("text: empty or only whitespace; send some text, or leave the field out")
    return text
