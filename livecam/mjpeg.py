"""MJPEG over HTTP: ``multipart/x-mixed-replace`` framing, and nothing else.

Each part ends with the *next* boundary, so a browser shows a frame as soon as its last
byte arrives instead of waiting for the following frame to prove the part complete. This
module imports nothing from livecam.
"""

from __future__ import annotations

BOUNDARY = "frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
STREAM_HEADERS = {
    "Cache-Control": "no-store, no-cache, must-revalidate",
    "Pragma": "no-cache",
    # Tell nginx not to buffer: a buffered MJPEG stream arrives in bursts or not at all.
    "X-Accel-Buffering": "no",
}
OPENING = b"--" + BOUNDARY.encode() + b"\r\n"
_CLOSING = b"\r\n" + OPENING


def make_part(jpeg: bytes, timestamp: float) -> bytes:
    """Frame one JPEG as a multipart part, ending with the next boundary."""
    head = b"Content-Type: image/jpeg\r\nContent-Length: %d\r\nX-Timestamp: %.6f\r\n\r\n" % (
        len(jpeg),
        timestamp,
    )
    return head + jpeg + _CLOSING


def chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP/1.1 chunk, as a server does for a body of unknown length."""
    return b"%X\r\n%s\r\n" % (len(data), data)


def label(part: bytes, camera: int, profile: str) -> bytes:
    """A part of a multiplexed stream: ``part`` with headers naming its camera and profile."""
    return b"X-Camera: %d\r\nX-Profile: %s\r\n%s" % (camera, profile.encode(), part)
