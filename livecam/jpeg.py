"""Small facts about JPEG bytes that passthrough needs, without decoding anything."""

from __future__ import annotations

import struct

import cv2
import numpy as np

SOI, DHT, SOS = 0xD8, 0xC4, 0xDA


def is_jpeg(data: np.ndarray | None) -> bool:
    """Whether OpenCV handed over compressed JPEG bytes (a 1xN array) rather than pixels."""
    return (
        data is not None
        and data.ndim == 2
        and data.shape[0] == 1
        and data.shape[1] > 4
        and data[0, 0] == 0xFF
        and data[0, 1] == SOI
    )


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
