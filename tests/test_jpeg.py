"""JPEG facts for passthrough: recognising compressed bytes, restoring Huffman tables."""

from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest

from helpers import decode
from hostile_camera import claiming
from livecam.jpeg import (
    DHT,
    MAX_LEAD,
    MAX_SEGMENTS,
    MAX_SIDE,
    SOS,
    STANDARD_TABLES,
    is_jpeg,
    jpeg_check,
    jpeg_problem,
    jpeg_size,
    jpeg_span,
    with_huffman_tables,
)


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


def test_is_jpeg_answers_a_plain_bool_that_json_can_carry() -> None:
    data = np.frombuffer(encoded(), np.uint8).reshape(1, -1)
    for answer in (is_jpeg(data), is_jpeg(np.zeros((1, 100), np.uint8)), is_jpeg(None)):
        assert type(answer) is bool
    assert json.dumps({"passthrough": is_jpeg(data)}) == '{"passthrough": true}'


def test_a_whole_jpeg_has_no_problem_whatever_holds_it() -> None:
    jpeg = encoded()
    for data in (jpeg, bytearray(jpeg), memoryview(jpeg), np.frombuffer(jpeg, np.uint8).reshape(1, -1)):
        assert jpeg_problem(data) is None
    # Cameras pad after the end marker: CRLF before the boundary, zeros up to a block size.
    assert jpeg_problem(jpeg + b"\r\n") is None
    assert jpeg_problem(jpeg + bytes(1000)) is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not a JPEG"),
        (b"\r\n", "not a JPEG"),
        (b"<html>Server busy</html>", "not a JPEG"),
        (b" " * (MAX_LEAD + 1) + encoded(), "not a JPEG"),  # too far in to be a stray CRLF
        (b"<html>" + encoded()[2:], "not a JPEG"),
        (encoded()[:300], "truncated JPEG"),
        (encoded()[:-2] + b"\r\n", "truncated JPEG"),
        (b"\xff\xd8", "not a JPEG"),
    ],
)
def test_broken_frames_are_named(data: bytes, problem: str) -> None:
    assert jpeg_problem(data) == problem


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


def test_a_trailer_holding_an_end_marker_is_not_the_picture() -> None:
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    framed = jpeg + b"TRAILERJUNK\xff\xd9" + b"X" * 5000
    assert jpeg_span(framed) == (0, len(jpeg), None)


@pytest.mark.parametrize("lead", [b"\r\n", b"\n", b" \t\r\n", b"\0" * 16, b" " * MAX_LEAD])
def test_stray_bytes_before_the_picture_are_cut_like_those_after_it(lead: bytes) -> None:
    jpeg = encoded()
    packet = np.frombuffer(lead + jpeg, np.uint8).reshape(1, -1)  # as OpenCV hands one over
    for data in (lead + jpeg, bytearray(lead + jpeg + b"\r\n"), packet):
        span = jpeg_span(data)
        assert span == (len(lead), len(lead) + len(jpeg), None)
        assert bytes(memoryview(data).cast("B")[span.start : span.end]) == jpeg


def test_fill_bytes_before_a_marker_are_skipped_in_one_step() -> None:
    jpeg = encoded()
    # A marker may be preceded by any number of FF fill bytes (T.81 B.1.1.2).
    padded = jpeg[:2] + b"\xff" * 100_000 + jpeg[2:]
    assert jpeg_span(padded) == (0, len(padded), None)
    assert decode(padded).shape == decode(jpeg).shape


def test_a_header_of_endless_tiny_segments_is_not_walked_to_its_end() -> None:
    # Each COM segment is four bytes: a part of them must not cost a Python step per segment.
    jpeg = encoded()
    comments = b"\xff\xfe\x00\x02" * MAX_SEGMENTS
    assert jpeg_problem(jpeg[:2] + comments + jpeg[2:]) == "not a JPEG"
    assert jpeg_problem(jpeg[:2] + comments[: -4 * 20] + jpeg[2:]) is None  # a long header still passes


@pytest.mark.parametrize(
    ("width", "height"), [(60000, 60000), (MAX_SIDE + 1, 48), (64, MAX_SIDE + 1), (0, 48), (64, 0)]
)
def test_a_frame_header_claiming_a_size_out_of_bounds_is_refused(width: int, height: int) -> None:
    claimed = claiming(encoded(), width, height)
    assert jpeg_problem(claimed) == f"picture size {width}x{height} is not from 1x1 to 8192x8192"
    assert jpeg_size(claimed) is None  # never used to size anything


def test_sizes_up_to_the_bound_are_read_from_the_header() -> None:
    assert jpeg_size(encoded()) == (64, 48)
    claimed = claiming(encoded(), MAX_SIDE, MAX_SIDE)
    assert jpeg_problem(claimed) is None and jpeg_size(claimed) == (MAX_SIDE, MAX_SIDE)
    padded = encoded()[:2] + b"\xff" * 10 + encoded()[2:]  # fill bytes before the first marker
    assert jpeg_size(padded) == (64, 48)


def test_a_part_is_checked_where_it_lies_in_a_buffer() -> None:
    jpeg = encoded()
    buffer = bytearray(b"--b\r\nContent-Length: 9\r\n\r\n\r\n" + jpeg + b"\r\n--b\r\n" + b"\xff\xd8" * 50)
    start = buffer.index(b"\xff\xd8")
    end = start + len(jpeg) + 2
    # Only the bytes between start - 2 and end are looked at: the start markers after them are not.
    assert jpeg_span(buffer, start - 2, end) == (start, start + len(jpeg), None)
    assert jpeg_span(buffer, start - 2, start + 300).problem == "truncated JPEG"


def test_the_check_agrees_with_the_span_and_leaves_the_end_search_for_later() -> None:
    jpeg = encoded()
    trailer = jpeg + b"TRAILERJUNK\xff\xd9" + b"X" * 5000
    for data in (jpeg, jpeg + b"\r\n", trailer, b"\r\n" + jpeg, jpeg[:300], b"<html>" + jpeg[2:], jpeg[:-2]):
        checked, span = jpeg_check(data), jpeg_span(data)
        assert checked.problem == span.problem
        if span.problem is None:
            # The check's span holds the picture; a span over it finds the exact bytes.
            assert checked.start == span.start and checked.end >= span.end
            assert jpeg_span(data, checked.start, checked.end) == span
    # Bytes that end with an end marker are not searched: a picture with another end marker
    # inside its data ends there, and only the span over the check's bytes says so.
    inner = jpeg[:-2] + b"\xff\xd9" + b"more" + b"\xff\xd9"
    assert jpeg_check(inner) == (0, len(inner), None)
    assert jpeg_span(inner) == (0, len(jpeg), None)
