"""MJPEG framing: parts that end with the next boundary, and HTTP/1.1 chunks."""

from __future__ import annotations

from livecam.mjpeg import chunk, make_part


def test_part_framing() -> None:
    part = make_part(b"\xff\xd8jpeg\xff\xd9", 1700000000.123456)
    head, _, rest = part.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"Content-Type: image/jpeg",
        b"Content-Length: 8",
        b"X-Timestamp: 1700000000.123456",
    ]
    assert rest == b"\xff\xd8jpeg\xff\xd9\r\n--frame\r\n"  # ends with the next boundary


def test_chunk_framing() -> None:
    assert chunk(b"hello world, this is 31 bytes..") == b"1F\r\nhello world, this is 31 bytes..\r\n"
