"""MJPEG framing: parts that end with the next boundary, and HTTP/1.1 chunks."""

from __future__ import annotations

from livecam.mjpeg import CONTENT_TYPE, OPENING, STREAM_HEADERS, chunk, label, make_part


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


def test_a_stream_body_byte_for_byte() -> None:
    """The framing FFmpeg's mpjpeg demuxer (Frigate, go2rtc's ffmpeg sources) and go2rtc's own
    parser read: a boundary line first, then each part with its type and Content-Length, its
    JPEG, and the next boundary line. Any change here is a change for every client."""
    body = OPENING + make_part(b"\xff\xd8AB\xff\xd9", 1.5) + make_part(b"\xff\xd8C\xff\xd9", 2.25)
    assert body == (
        b"--frame\r\n"
        b"Content-Type: image/jpeg\r\n"
        b"Content-Length: 6\r\n"
        b"X-Timestamp: 1.500000\r\n"
        b"\r\n"
        b"\xff\xd8AB\xff\xd9"
        b"\r\n--frame\r\n"
        b"Content-Type: image/jpeg\r\n"
        b"Content-Length: 5\r\n"
        b"X-Timestamp: 2.250000\r\n"
        b"\r\n"
        b"\xff\xd8C\xff\xd9"
        b"\r\n--frame\r\n"
    )
    assert CONTENT_TYPE == "multipart/x-mixed-replace; boundary=frame"
    assert STREAM_HEADERS == {
        "Cache-Control": "no-store, no-cache, must-revalidate",
        "Pragma": "no-cache",
        "X-Accel-Buffering": "no",
    }


def test_a_multiplexed_part_names_its_camera_before_its_type() -> None:
    part = label(make_part(b"\xff\xd8\xff\xd9", 3.0), 7, "preview")
    assert part == (
        b"X-Camera: 7\r\nX-Profile: preview\r\n"
        b"Content-Type: image/jpeg\r\nContent-Length: 4\r\nX-Timestamp: 3.000000\r\n\r\n"
        b"\xff\xd8\xff\xd9\r\n--frame\r\n"
    )
