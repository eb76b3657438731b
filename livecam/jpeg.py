"""Small facts about JPEG bytes that passthrough needs, without decoding anything."""

from __future__ import annotations

import struct

import cv2
import numpy as np

SOI, EOI, DHT, SOS = 0xD8, 0xD9, 0xC4, 0xDA
# Markers that stand alone, without a length: TEM and the restart markers.
STANDALONE = {0x01, *range(0xD0, 0xD8)}
# Start-of-frame markers (baseline, progressive, lossless...): not DHT (C4), JPG (C8), DAC (CC).
SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}

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


def _scan(data: bytes | bytearray) -> tuple[int, str | None]:
    """Where a JPEG's data ends (after its last EOI), and why it is not a whole JPEG (or None).

    Walks the header segments from SOI to SOS (a frame header must come first), then looks
    for the end marker after them. Nothing is decoded: a few lengths are read per frame.
    """
    size = len(data)
    if size < 4 or data[0] != 0xFF or data[1] != SOI:
        return size, "not a JPEG"
    offset, framed = 2, False
    while True:
        if offset + 4 > size:
            return size, "truncated JPEG"
        if data[offset] != 0xFF:
            return size, "not a JPEG"  # what follows a segment must be another marker
        marker = data[offset + 1]
        if marker == 0xFF:  # a fill byte before a marker
            offset += 1
            continue
        if marker in STANDALONE:
            offset += 2
            continue
        if marker == SOS:
            break
        if marker in (SOI, EOI):
            return size, "not a JPEG"
        framed = framed or marker in SOF
        length = struct.unpack_from(">H", data, offset + 2)[0]
        if length < 2:
            return size, "not a JPEG"
        offset += 2 + length
    if not framed:
        return size, "not a JPEG"  # no frame header: nothing a decoder could draw
    # FF D9 cannot occur inside entropy-coded data (an FF there is followed by 00), so the
    # first one after the header is the end; what follows (padding, a camera's trailer, even
    # one holding FF D9 itself) is not the picture's.
    end = data.find(b"\xff\xd9", offset)
    if end < 0:
        return size, "truncated JPEG"
    return end + 2, None


def jpeg_problem(data: Bytes) -> str | None:
    """Why ``data`` is not a whole JPEG (its markers only, no decode); None if it is."""
    return _scan(_bytes(data))[1]


def jpeg_end(data: Bytes) -> int:
    """How many bytes of a whole JPEG are the picture: bytes after its end marker are not."""
    return _scan(_bytes(data))[0]


def _bytes(data: Bytes) -> bytes | bytearray:
    if isinstance(data, np.ndarray):
        return data.tobytes()
    return data if isinstance(data, bytes | bytearray) else bytes(data)


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
