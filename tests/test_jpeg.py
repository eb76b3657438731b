"""JPEG facts for passthrough: recognising compressed bytes, restoring Huffman tables."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from helpers import decode
from livecam.jpeg import DHT, SOS, STANDARD_TABLES, is_jpeg, with_huffman_tables


def encoded(quality: int = 80) -> bytes:
    image = np.zeros((48, 64, 3), np.uint8)
    cv2.rectangle(image, (8, 8), (40, 30), (20, 200, 90), -1)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def without_tables(jpeg: bytes) -> bytes:
    """Drop every DHT segment, as many USB webcams do."""
    out, offset = jpeg[:2], 2
    while jpeg[offset + 1] != SOS:
        length = struct.unpack_from(">H", jpeg, offset + 2)[0]
        if jpeg[offset + 1] != DHT:
            out += jpeg[offset : offset + 2 + length]
        offset += 2 + length
    return out + jpeg[offset:]


def test_is_jpeg_tells_bytes_from_pixels() -> None:
    data = np.frombuffer(encoded(), np.uint8).reshape(1, -1)
    assert is_jpeg(data)
    assert not is_jpeg(np.zeros((48, 64, 3), np.uint8))
    assert not is_jpeg(np.zeros((1, 100), np.uint8))
    assert not is_jpeg(None)


def test_missing_tables_are_restored() -> None:
    original = encoded()
    stripped = without_tables(original)
    assert len(stripped) < len(original)
    restored = with_huffman_tables(stripped)
    assert STANDARD_TABLES in restored
    assert np.array_equal(decode(restored), decode(original))


def test_complete_jpeg_is_left_alone() -> None:
    original = encoded()
    assert with_huffman_tables(original) is original
