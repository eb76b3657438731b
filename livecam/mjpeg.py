"""MJPEG over HTTP: ``multipart/x-mixed-replace`` framing and the per-viewer stream.

Each part ends with the *next* boundary, so a browser shows a frame as soon as its last
byte arrives instead of waiting for the following frame to prove the part complete.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

from .broadcast import BroadcastClosed, Broadcaster
from .sender import Sender, Viewer

BOUNDARY = "frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
STREAM_HEADERS = {
    "Cache-Control": "no-store, no-cache, must-revalidate",
    "Pragma": "no-cache",
    # Tell nginx not to buffer: a buffered MJPEG stream arrives in bursts or not at all.
    "X-Accel-Buffering": "no",
}
HEARTBEAT = 1.0
_OPENING = b"--" + BOUNDARY.encode() + b"\r\n"
_CLOSING = b"\r\n" + _OPENING


def make_part(jpeg: bytes, timestamp: float) -> bytes:
    """Frame one JPEG as a multipart part, ending with the next boundary."""
    head = b"Content-Type: image/jpeg\r\nContent-Length: %d\r\nX-Timestamp: %.6f\r\n\r\n" % (
        len(jpeg),
        timestamp,
    )
    return head + jpeg + _CLOSING


def _ignore(size: int, latency: float | None, count: int = 1) -> None:
    """The default: nobody counts what was sent."""


def stream(
    broadcaster: Broadcaster,
    heartbeat: float = HEARTBEAT,
    sent: Callable[..., None] = _ignore,
) -> Iterator[bytes]:
    """Yield one viewer's MJPEG body: each new frame once, the last one again as a heartbeat.

    The viewer counts as watching from the first ``next()`` until the server closes the
    generator (the client went away) or the camera stops. After each part is written,
    ``sent(size, latency)`` is told its size and capture-to-send latency (None for a resend).
    """
    with broadcaster.watching():
        yield _OPENING
        last = broadcaster.latest
        if last is not None and last.age < heartbeat:
            # A running camera: show its current frame at once rather than after one interval.
            yield last.part
            sent(len(last.part), time.time() - last.timestamp)
        seq = last.seq if last is not None else 0
        while True:
            try:
                frame = broadcaster.wait_next(seq, heartbeat)
            except BroadcastClosed:
                return
            if frame is not None:
                seq, last = frame.seq, frame
                yield frame.part
                # The server has written the part when the generator resumes.
                sent(len(frame.part), time.time() - frame.timestamp)
            elif last is not None:
                # Nothing new for a second: resend, so a vanished client fails a write and
                # frees its thread, and proxies see the connection is alive.
                yield last.part
                sent(len(last.part), None)


def handed_over(
    broadcaster: Broadcaster,
    sender: Sender,
    sock: socket.socket,
    chunked: bool,
    sent: Callable[[int, float | None, int], None] = _ignore,
) -> Iterator[bytes]:
    """Yield the opening boundary, then let ``sender`` write the parts until it lets go.

    The server has written the headers and the opening when this resumes, so the socket is
    the sender's until ``done``; this thread only waits, using no CPU per frame.
    """
    with broadcaster.watching():
        yield _OPENING
        viewer = Viewer(sock, broadcaster, chunked, sent)
        sender.add(viewer)
        # The sender sets done whenever it lets go, even when it fails; the timeout is only a
        # safety net, long so that hundreds of parked threads do not wake for nothing.
        while not viewer.done.wait(30.0):
            if sender.ended:
                break
