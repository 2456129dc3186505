"""Streaming multipart/form-data reader for the predict endpoints.

Stricter than a generic form parser: unknown or repeated fields are refused as soon as their headers arrive,
each part and the whole body are size-checked while streaming (no Content-Length needed), the number of parts
is bounded, a body without its closing boundary is refused, and parts stay in memory as bytes (no temp files).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.errors import (
    MalformedRequest,
    PayloadTooLarge,
    UnknownField,
    UnsupportedMediaType,
)

MAX_PARTS = 16


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True, slots=True)
class FormLimits:
    max_body_bytes: int
    max_part_bytes: int


class _Reader:
    def __init__(self, allowed: tuple[str, ...], limits: FormLimits) -> None:
        self.allowed = allowed
        self.limits = limits
        self.parts: dict[str, Part] = {}
        self.count = 0
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._name = b""
        self._value = b""
        self._current: Part | None = None

    def on_part_begin(self) -> None:
        self.count += 1
        if self.count > MAX_PARTS:
            raise MalformedRequest(f"too many parts in the form (more than {MAX_PARTS}); send each field once")
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        if len(self._value) > 8192:
            raise MalformedRequest("a multipart part header is longer than 8 KiB")

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise MalformedRequest("every multipart part needs 'Content-Disposition: form-data; name=...'")
        name = options[b"name"].decode("utf-8", "replace")
        if name not in self.allowed:
            raise UnknownField(f"unknown field {name!r}; the accepted fields are {', '.join(self.allowed)}")
        if name in self.parts:
            raise MalformedRequest(f"field {name!r} was sent more than once; send each field once")
        filename = options.get(b"filename")
        content_type = self._headers.get(b"content-type")
        self._current = self.parts[name] = Part(
            name=name,
            filename=None if filename is None else filename.decode("utf-8", "replace"),
            content_type=None if content_type is None else content_type.decode("latin-1"),
        )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        assert part is not None
        part.data += data[start:end]
        if len(part.data) > self.limits.max_part_bytes:
            raise PayloadTooLarge(
                f"field {part.name!r} is larger than the limit of {self.limits.max_part_bytes:,} bytes per part"
            )

    def on_part_end(self) -> None:
        self._current = None

    def on_end(self) -> None:
        self.ended = True


async def read_form(
    content_type: str | None,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    allowed: tuple[str, ...],
    limits: FormLimits,
) -> dict[str, Part]:
    """Parse a multipart/form-data body into its parts, by field name."""
    mime, params = parse_options_header(content_type or "")
    if mime != b"multipart/form-data":
        raise UnsupportedMediaType(
            f"send the request as multipart/form-data with any of the fields {', '.join(allowed)} "
            f"(got Content-Type {content_type or 'none'!r})"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedRequest("the multipart/form-data Content-Type has no boundary parameter")
    if content_length is not None and content_length.isdigit() and int(content_length) > limits.max_body_bytes:
        raise PayloadTooLarge(f"the body is larger than the limit of {limits.max_body_bytes:,} bytes")
    reader = _Reader(allowed, limits)
    callbacks = {
        "on_part_begin": reader.on_part_begin,
        "on_part_data": reader.on_part_data,
        "on_part_end": reader.on_part_end,
        "on_header_field": reader.on_header_field,
        "on_header_value": reader.on_header_value,
        "on_header_end": reader.on_header_end,
        "on_headers_finished": reader.on_headers_finished,
        "on_end": reader.on_end,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > limits.max_body_bytes:
                raise PayloadTooLarge(f"the body is larger than the limit of {limits.max_body_bytes:,} bytes")
            if chunk and not reader.ended:
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise MalformedRequest(f"the multipart body is malformed ({exc}); check the boundary and part headers") from None
    if not reader.ended:
        raise MalformedRequest("the multipart body ended before its closing boundary; the upload was cut short")
    return reader.parts
