"""Small facts about JPEG bytes that passthrough needs, without decoding anything."""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

import cv2
import numpy as np

SOI, EOI, DHT, SOS = 0xD8, 0xD9, 0xC4, 0xDA
# Markers that stand alone, without a length: TEM and the restart markers.
STANDALONE = {0x01, *range(0xD0, 0xD8)}
# Start-of-frame markers (baseline, progressive, lossless...): not DHT (C4), JPG (C8), DAC (CC).
SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Bytes a camera may send before the picture's start (a stray CRLF, spaces) are cut, like
# those after its end; FFmpeg's decoder skips any number, a bound keeps the check a check.
MAX_LEAD = 256
# Marker segments before the picture data: real JPEGs have a few dozen, and a part made of
# millions of tiny segments must not cost a Python step every four bytes.
MAX_SEGMENTS = 256
# Width and height a frame header may claim: sizes are read from headers without decoding,
# and a claim of 60000x60000 must size nothing (a decode alone would want 10 GB).
MAX_SIDE = 8192

_SOI = re.compile(rb"\xff\xd8")
# re rather than bytes.find: one C scan, about twice as fast here, and it reads any buffer
# (an OpenCV packet too) without a copy.
_EOI = re.compile(rb"\xff\xd9")
_NOT_FILL = re.compile(rb"[^\xff]")

Bytes = bytes | bytearray | memoryview | np.ndarray


class Span(NamedTuple):
    """Where the picture lies in a frame's bytes, from its start marker to just after its end
    marker; or why the bytes hold no whole JPEG (``problem``, then start and end are 0)."""

    start: int
    end: int
    problem: str | None = None


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


def jpeg_span(data: Bytes, start: int = 0, end: int | None = None) -> Span:
    """Find the picture in a camera's frame bytes, checking its markers (nothing is decoded).

    Only ``data[start:end]`` is looked at (a part inside a reader's buffer, without a copy);
    the span is where the picture lies in ``data``. The start marker may follow a few stray
    bytes (MAX_LEAD at most); the header segments are walked from there to the picture data
    (a frame header of a bounded size must come first), then one search finds the end
    marker. Bytes before the start and after the end are not the picture's.
    """
    view = _view(data)
    end = len(view) if end is None else min(end, len(view))
    found = _start(view, start, end)
    if isinstance(found, str):
        return _bad(found)
    first, body = found
    # FF D9 cannot occur inside entropy-coded data (an FF there is followed by 00), so the
    # first one after the header is the end; what follows (padding, a camera's trailer, even
    # one holding FF D9 itself) is not the picture's.
    stop = _EOI.search(view, body, end)
    if stop is None:
        return _bad("truncated JPEG")
    return Span(first, stop.end())


def jpeg_check(data: bytes | bytearray, start: int = 0, end: int | None = None) -> Span:
    """jpeg_span's verdict on ``data[start:end]``, without reading the picture's data where
    the bytes end with an end marker (as a camera's parts do).

    The span then ends with the bytes: the picture ends there, or earlier where a broken one
    holds an end marker inside its data, so ``jpeg_span`` over the span gives its exact bytes
    when they are wanted. A camera nobody watches is checked without a search of each frame.
    """
    end = len(data) if end is None else min(end, len(data))
    found = _start(data, start, end)
    if isinstance(found, str):
        return _bad(found)
    first, body = found
    if end - body >= 2 and data[end - 2] == 0xFF and data[end - 1] == EOI:
        return Span(first, end)
    return jpeg_span(data, first, end)


def _start(view: bytes | bytearray | memoryview, start: int, end: int) -> tuple[int, int] | str:
    """Where the picture starts and its data begins, its header checked; or why not."""
    found = _SOI.search(view, start, min(end, start + MAX_LEAD + 2))
    if found is None or found.end() + 2 > end:  # a start marker alone is no picture either
        return "not a JPEG"
    header = _header(view, found.end(), end)
    if isinstance(header, str):
        return header
    return found.start(), header[0]


def _header(view: bytes | bytearray | memoryview, offset: int, size: int) -> tuple[int, int, int] | str:
    """Walk the header segments from ``offset`` (just after the start marker) to the picture
    data, which ends by ``size``: where it begins and the frame header's width and height, or
    why there is none."""
    frame = None
    for _ in range(MAX_SEGMENTS):
        if offset + 4 > size:
            return "truncated JPEG"
        if view[offset] != 0xFF:
            return "not a JPEG"  # what follows a segment must be another marker
        marker = view[offset + 1]
        if marker == 0xFF:  # fill bytes before a marker: skipped in one search, however many
            marker_at = _NOT_FILL.search(view, offset, size)
            offset = (marker_at.start() if marker_at else size) - 1
            continue
        if marker in STANDALONE:
            offset += 2
            continue
        if marker == SOS:
            break
        if marker in (SOI, EOI):
            return "not a JPEG"
        if marker in SOF and frame is None:
            if offset + 9 > size:
                return "truncated JPEG"
            height, width = struct.unpack_from(">HH", view, offset + 5)
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
                return f"picture size {width}x{height} is not from 1x1 to {MAX_SIDE}x{MAX_SIDE}"
            frame = width, height
        length = struct.unpack_from(">H", view, offset + 2)[0]
        if length < 2:
            return "not a JPEG"
        offset += 2 + length
    else:
        return "not a JPEG"  # more header segments than any camera writes
    if frame is None:
        return "not a JPEG"  # no frame header: nothing a decoder could draw
    return offset, *frame


def jpeg_problem(data: Bytes) -> str | None:
    """Why ``data`` holds no whole JPEG (its markers only, no decode); None if it does."""
    return jpeg_span(data).problem


def _bad(problem: str) -> Span:
    """No picture, and why."""
    return Span(0, 0, problem)


def _view(data: Bytes) -> bytes | bytearray | memoryview:
    """The bytes of ``data`` as something indexable and searchable, copied only if scattered."""
    if isinstance(data, bytes | bytearray):
        return data
    view = memoryview(data)
    if not view.c_contiguous:
        return view.tobytes()
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


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


def jpeg_size(jpeg: Bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's frame header, without decoding; None if it has none, or
    claims 0 or more than MAX_SIDE (such frames are dropped before anything sees them)."""
    view = _view(jpeg)
    if view[:2] != b"\xff\xd8":
        return None
    header = _header(view, 2, len(view))
    return None if isinstance(header, str) else header[1:]
