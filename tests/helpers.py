"""Test helpers: read MJPEG streams the way a client does, decode JPEGs, find threads."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np


def capture_threads() -> list[threading.Thread]:
    """The livecam capture threads alive in this process."""
    return [t for t in threading.enumerate() if t.name.startswith("livecam-capture-")]


def decode(jpeg: bytes) -> np.ndarray:
    """Decode JPEG bytes, failing the test if they are not a valid image."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


class Readable(Protocol):
    def read(self, size: int) -> bytes: ...

    def readline(self) -> bytes: ...


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes


class ChunkReader:
    """A file-like view of an iterable of byte chunks (a WSGI response body)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def _fill(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._buffer += chunk
        return True

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size and self._fill():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self) -> bytes:
        while b"\n" not in self._buffer and self._fill():
            pass
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line


def read_parts(stream: Readable, boundary: bytes = b"frame") -> Iterator[Part]:
    """Yield parts until the stream ends; assert the framing livecam promises."""
    opening = stream.readline()
    assert opening == b"--" + boundary + b"\r\n", opening
    while True:
        headers = {}
        while True:
            line = stream.readline()
            if not line:
                return
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        body = stream.read(length)
        if len(body) < length:
            return
        # Each part ends with the next boundary, so the client knows at once it is complete.
        closing = stream.read(len(boundary) + 6)
        assert closing == b"\r\n--" + boundary + b"\r\n", closing
        yield Part(headers, body)
