"""Small facts about JPEG bytes that passthrough needs, without decoding anything."""

from __future__ import annotations

import struct

import cv2
import numpy as np

SOI, EOI, DHT, SOS = 0xD8, 0xD9, 0xC4, 0xDA
# Cameras pad frames after the end marker (CRLF before the next boundary, zeros to a block).
PADDING = b"\r\n\t \x00"
# How far from the end to look for the end marker; a camera that pads more sends a bad frame.
TAIL = 4096

Bytes = bytes | bytearray | memoryview | np.ndarray


def is_jpeg(data: np.ndarray | None) -> bool:
    """Whether OpenCV handed over compressed JPEG bytes (a 1xN array) rather than pixels."""
    return bool(
        data is not None
        and data.ndim == 2
        and data.shape[0] == 1
        and data.shape[1] > 4
        and int(data[0, 0]) == 0xFF
        and int(data[0, 1]) == SOI
    )


def jpeg_problem(data: Bytes) -> str | None:
    """Why ``data`` is not a whole JPEG (start and end markers only, no decode); None if it is."""
    view = memoryview(data).cast("B") if isinstance(data, np.ndarray) else memoryview(data)
    if len(view) < 4 or view[0] != 0xFF or view[1] != SOI:
        return "not a JPEG"
    tail = bytes(view[-TAIL:]).rstrip(PADDING)
    if len(tail) < 2 or tail[-2] != 0xFF or tail[-1] != EOI:
        return "truncated JPEG"
    return None


def _standard_tables() -> bytes:
    """The DHT segments of the standard (Annex K) Huffman tables, as libjpeg writes them."""
    ok, buffer = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    data, tables, offset = buffer.tobytes(), b"", 2
    while data[offset + 1] != SOS:
        length = struct.unpack_from(">H", data, offset + 2)[0]
        if data[offset + 1] == DHT:
            tables += data[offset : offset + 2 + length]
        offset += 2 + length
    return tables


STANDARD_TABLES = _standard_tables()


def with_huffman_tables(jpeg: bytes) -> bytes:
    """Add the standard Huffman tables to a JPEG that leaves them out.

    Many USB webcams send "abbreviated" MJPEG frames without DHT segments, relying on the
    decoder to know the standard tables; not every browser does.
    """
    offset = 2
    while offset + 4 <= len(jpeg) and jpeg[offset] == 0xFF:
        marker = jpeg[offset + 1]
        if marker == DHT:
            return jpeg
        if marker == SOS:
            return jpeg[:offset] + STANDARD_TABLES + jpeg[offset:]
        offset += 2 + struct.unpack_from(">H", jpeg, offset + 2)[0]
    return jpeg


# Start-of-frame markers (baseline, progressive, lossless...): not DHT (C4), JPG (C8), DAC (CC).
SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(jpeg: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's frame header, without decoding; None if it has none."""
    offset = 2
    while offset + 9 <= len(jpeg) and jpeg[offset] == 0xFF:
        marker = jpeg[offset + 1]
        if marker in SOF:
            height, width = struct.unpack_from(">HH", jpeg, offset + 5)
            return width, height
        if marker == SOS:
            return None
        offset += 2 + struct.unpack_from(">H", jpeg, offset + 2)[0]
    return None
