"""A viewer's MJPEG body, written by whichever delivery path fits the connection.

Two paths follow the one stream policy (cursor.py): under gunicorn on a plain TCP socket the
request's thread hands the socket to the sender, which writes every stream from one thread;
anywhere else (the development server, the test client, TLS or HTTP/2 straight to gunicorn)
the body is a generator that the server's thread writes. Views ask ``body()`` and never
choose.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from .broadcast import BroadcastClosed, Broadcaster
from .cursor import HEARTBEAT, Cursor
from .mjpeg import OPENING, STREAM_HEADERS, label
from .sender import Sender, Sent, Viewer

PARKED_CHECK = 30.0  # how often a parked request thread looks whether the sender still runs


def _ignore(size: int, latency: float | None, count: int = 1) -> None:
    """The default: nobody counts what was sent."""


def written_by_thread(
    broadcaster: Broadcaster, heartbeat: float = HEARTBEAT, sent: Sent = _ignore
) -> Iterator[bytes]:
    """Yield one viewer's body for the server's thread to write, part by part.

    The viewer counts as watching from the first ``next()`` until the server closes the
    generator (the client went away) or the camera stops. After each part is written,
    ``sent(size, latency)`` is told its size and capture-to-send latency (None for a resend).
    """
    with broadcaster.watching():
        yield OPENING
        cursor = Cursor(broadcaster, heartbeat)
        frame = cursor.first()
        if frame is not None:
            yield frame.part
            sent(len(frame.part), time.time() - frame.timestamp, 1)
        while True:
            try:
                frame, fresh = cursor.wait()
            except BroadcastClosed:
                return
            yield frame.part
            # The server has written the part when the generator resumes.
            sent(len(frame.part), time.time() - frame.timestamp if fresh else None, 1)


def written_by_sender(
    broadcaster: Broadcaster, sender: Sender, sock: socket.socket, chunked: bool, sent: Sent = _ignore
) -> Iterator[bytes]:
    """Yield the opening boundary, then let ``sender`` write the parts until it lets go.

    The server has written the headers and the opening when this resumes, so the socket is
    the sender's until ``done``; this thread only waits, using no CPU per frame.
    """
    with broadcaster.watching():
        yield OPENING
        viewer = Viewer(sock, Cursor(broadcaster), chunked, sent)
        sender.add(viewer)
        # The sender sets done whenever it lets go, even when it fails; the timeout is only a
        # safety net, long so that hundreds of parked threads do not wake for nothing.
        while not viewer.done.wait(PARKED_CHECK):
            if sender.ended:
                break


@dataclass(frozen=True)
class Track:
    """One camera's profile in a multiplexed stream."""

    camera: int
    profile: str
    broadcaster: Broadcaster
    sent: Sent = _ignore


def multiplexed(tracks: list[Track], heartbeat: float = HEARTBEAT) -> Iterator[bytes]:
    """Yield one body carrying several cameras' streams, each part labelled with its camera
    and profile (``X-Camera``, ``X-Profile``), for the server's thread to write.

    Each track follows the one stream policy (a Cursor each): its current frame at once if
    fresh, then its newest frame, never a backlog, its last frame again after a heartbeat
    without a new one. A track whose camera stops leaves the stream; the stream ends when
    every track has. One thread serves the whole body, woken by any of its cameras.
    """
    woken = threading.Event()
    with ExitStack() as stack:
        for track in tracks:
            stack.enter_context(track.broadcaster.watching())
            track.broadcaster.add_listener(woken.set)
            stack.callback(track.broadcaster.remove_listener, woken.set)
        yield OPENING
        cursors = {track: Cursor(track.broadcaster, heartbeat) for track in tracks}
        resent = {track: time.monotonic() for track in tracks}  # when each last had a part
        for track, cursor in cursors.items():
            frame = cursor.first()
            if frame is not None:
                yield label(frame.part, track.camera, track.profile)
                track.sent(len(frame.part), time.time() - frame.timestamp, 1)
        while cursors:
            woken.wait(heartbeat / 4)
            woken.clear()  # before looking: a frame published from here on wakes the next wait
            now = time.monotonic()
            for track, cursor in list(cursors.items()):
                if track.broadcaster.closed:
                    del cursors[track]
                    continue
                frame, fresh = cursor.newer(), True
                if frame is None:
                    frame, fresh = cursor.heartbeat_after(now - resent[track]), False
                if frame is None:
                    continue
                resent[track] = now
                yield label(frame.part, track.camera, track.profile)
                track.sent(len(frame.part), time.time() - frame.timestamp if fresh else None, 1)


def multiplexed_body(tracks: list[Track], environ: dict[str, Any], send_timeout: float) -> Iterator[bytes]:
    """A multiplexed body for this request, written by the server's thread."""
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        sock.settimeout(send_timeout)  # a client that stops reading cannot hold the thread
    return multiplexed(tracks)


def headers(environ: dict[str, Any]) -> dict[str, str]:
    """The stream response's headers."""
    result = dict(STREAM_HEADERS)
    if environ.get("SERVER_PROTOCOL") in ("HTTP/1.0", "HTTP/1.1"):
        # The connection is the stream's: a request sent behind it is never answered, so end
        # the connection with the stream rather than leave a client waiting on it.
        result["Connection"] = "close"
    return result


def body(
    broadcaster: Broadcaster, environ: dict[str, Any], sender: Sender, send_timeout: float, sent: Sent
) -> Iterator[bytes]:
    """The stream body for this request, on the delivery path its connection allows."""
    sock = environ.get("gunicorn.socket")
    protocol = environ.get("SERVER_PROTOCOL")
    if (
        type(sock) is socket.socket  # plain TCP: not TLS, which gunicorn would have to encrypt
        and sock.gettimeout() is None
        and protocol in ("HTTP/1.0", "HTTP/1.1")
        and sender.alive
    ):
        # gunicorn frames an HTTP/1.1 body of unknown length in chunks; the sender must too.
        return written_by_sender(broadcaster, sender, sock, protocol == "HTTP/1.1", sent)
    if sock is not None:
        # A viewer that stops reading fills its socket buffer; without a timeout the write
        # would block its thread forever. gunicorn resets the socket mode after.
        sock.settimeout(send_timeout)
    return written_by_thread(broadcaster, sent=sent)
