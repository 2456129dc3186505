"""Messages between the service's own processes (front ends and model owners), over a stream (a Unix socket).

A frame is a pickled (protocol 5) tuple whose arrays travel out of band: each array's bytes are written to the
socket as they are and read back into one buffer, so a tensor is copied into the socket once and out of it once,
never pickled into an intermediate bytes object. Pickle is safe here because only this service's processes can
connect: the socket lives in a folder that only the service's user may open (app.http.supervisor). Untrusted
input never travels as a pickle: what crosses is decoded, checked tensors and the model's answers.
"""
from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from app import errors
from app.errors import ServiceError
from app.model.batch import Sample

_HEADER = struct.Struct("<II")  # pickled message length, out-of-band buffer count
_LENGTH = struct.Struct("<Q")
MAX_FRAME_BYTES = 1 << 31  # a corrupt length must not make a reader allocate without bound


def encode(message: object) -> list[bytes | memoryview]:
    """The frame of `message`, as the parts to write (in order, without joining them)."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    parts: list[bytes | memoryview] = [_HEADER.pack(len(head), len(buffers)), head]
    for buffer in buffers:
        raw = buffer.raw()
        parts += [_LENGTH.pack(raw.nbytes), raw]
    return parts


async def send(writer: asyncio.StreamWriter, message: object) -> None:
    writer.writelines(encode(message))
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> Any:
    """The next message; IncompleteReadError at the end of the stream."""
    length, count = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    head = await reader.readexactly(_checked(length))
    buffers = []
    for _ in range(count):
        (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        buffers.append(bytearray(await reader.readexactly(_checked(size))))  # writable, for torch.from_numpy
    return pickle.loads(head, buffers=buffers)  # noqa: S301 - only this service's processes write here


def _checked(size: int) -> int:
    if size > MAX_FRAME_BYTES:
        raise ConnectionError(f"a frame of {size} bytes: the stream is corrupt")
    return size


def pack_samples(samples: Sequence[Sample]) -> list[tuple[np.ndarray | None, ...]]:
    """Preprocessed samples as arrays (views of the tensors' memory: nothing is copied here)."""
    return [tuple(None if t is None else t.numpy() for t in (s.image, s.text, s.audio)) for s in samples]


def unpack_samples(packed: Sequence[tuple[np.ndarray | None, ...]]) -> list[Sample]:
    return [
        Sample(*(None if a is None else torch.from_numpy(a) for a in arrays))  # type: ignore[arg-type]
        for arrays in packed
    ]


def error_fields(exc: ServiceError) -> tuple[str, str, float | None]:
    """A service error as plain data, to cross a process boundary."""
    return type(exc).__name__, exc.message, exc.retry_after_s


def error_from_fields(name: str, message: str, retry_after_s: float | None) -> ServiceError:
    """The service error `error_fields` described (a ModelFailure if the class is unknown here)."""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ServiceError)):
        cls = errors.ModelFailure
    return cls(message, retry_after_s=retry_after_s)
