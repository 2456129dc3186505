"""One sample's undecoded parts, as a request brings them (no decoding here: the engine decides where that runs)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO, TypeAlias

from app.model.spec import MODALITIES, Modality

# An upload's bytes as the request parser left them: the multipart reader's bytearray, a view into an OIP body.
# Handed on as they are, so each upload is held once (a `bytes(...)` would copy it).
Buffer: TypeAlias = bytes | bytearray | memoryview
# Below this, a buffer is copied into an io.BytesIO rather than read in place: a small, short-lived copy, and the
# decoders' many small header reads then stay in C instead of going through the Python reader below.
COPY_BELOW = 1 << 20


@dataclass(frozen=True, slots=True)
class RawInputs:
    """One sample's undecoded parts; None where the modality was not sent."""

    image: Buffer | None = None
    text: Buffer | str | None = None
    audio: Buffer | None = None

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)


def open_buffer(data: Buffer) -> BinaryIO:
    """A read-only, seekable file over `data` that does not copy it (`io.BytesIO` copies all but `bytes`), but for
    a small one (COPY_BELOW)."""
    if isinstance(data, bytes) or len(data) < COPY_BELOW:
        return io.BytesIO(data)  # shares a bytes object's memory (until written to, which no decoder does)
    return io.BufferedReader(_BufferFile(data))  # type: ignore[return-value]


class _BufferFile(io.RawIOBase):
    """The raw file under `open_buffer`: reads copy only what is asked for."""

    def __init__(self, data: bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(buffer), len(self._view) - self._pos))
        memoryview(buffer).cast("B")[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._view.release()
        super().close()
