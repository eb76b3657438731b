"""A viewer's MJPEG body, or a subscriber's event stream, written by whichever delivery path
fits the connection.

Two paths follow the one stream policy (cursor.py): under gunicorn on a plain TCP socket the
request's thread hands the socket to the sender, which writes every stream from one thread;
anywhere else (the development server, the test client, TLS or HTTP/2 straight to gunicorn)
the body is a generator that the server's thread writes. Under livecam's own worker the
hand-over is complete: the worker lets go of the connection (``DETACH``) and the request's
thread goes back to the pool, so a viewer costs a socket, not a parked thread. An event
stream (Server-Sent Events) takes the same two paths: handed over for good to the sender,
or written by the request's thread. Views ask ``open_stream()`` or ``open_events()`` and
never choose.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import sse
from .broadcast import BroadcastClosed, Broadcaster
from .cursor import HEARTBEAT, Cursor
from .events import Event, EventLog
from .mjpeg import OPENING, STREAM_HEADERS, label
from .registry import Slots
from .sender import (
    EVENTS_SEND_BUFFER,
    Sender,
    Sent,
    Subscriber,
    Viewer,
    framed,
    limit_send_buffer,
    reset_on_close,
    send_buffer_for,
)

PARKED_CHECK = 30.0  # how often a parked request thread looks whether the sender still runs
# The WSGI environ key under which livecam's worker offers to let go of the connection: a
# callable returning a socket of its own for it (see worker.py).
DETACH = "livecam.detach"
HTTP1 = ("HTTP/1.0", "HTTP/1.1")  # protocols whose connection carries the one stream alone


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


def open_multiplexed(
    tracks: list[Track], environ: dict[str, Any], slots: Slots, send_timeout: float
) -> Iterator[bytes] | None:
    """A multiplexed body for this request, written by the server's thread and holding one
    of ``slots``; None when none is left (the caller answers 503)."""
    if not slots.take():
        return None
    broadcasters = [track.broadcaster for track in tracks]
    frames = on_connection(multiplexed(tracks), environ, send_timeout, partial(_parts_buffer, broadcasters))
    return Held(frames, Place(slots.give_back))


class Place:
    """A place taken for one stream from a bounded pool, given back exactly once: by the
    body holding it, or by the sender once the body has handed it on with the connection."""

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back: Callable[[], None] | None = give_back

    def hand_on(self) -> None:
        """The place is now the new owner's to give back."""
        self._give_back = None

    def give_back(self) -> None:
        """Give the place back, unless that was done or it was handed on."""
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back()


class Held:
    """A stream's body, holding the place its stream took when its answer was decided.

    Taking the place before the status line is what lets a stream with none left get a 503
    rather than an empty 200. The place comes back when the body ends, when the server
    closes it (a client gone before the first byte too), or when it is dropped unclosed
    (a failing hook between the view and the server discards the response).
    """

    def __init__(self, frames: Iterator[bytes], place: Place) -> None:
        self._frames = frames
        self._place = place

    def __iter__(self) -> Held:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._frames)
        except StopIteration:
            self._place.give_back()
            raise

    def close(self) -> None:
        """End the body (the server is done with it) and give its place back."""
        try:
            self._frames.close()
        finally:
            self._place.give_back()

    def __del__(self) -> None:
        self._place.give_back()


def handed_over(
    broadcaster: Broadcaster,
    sender: Sender,
    detach: Callable[[], socket.socket],
    chunked: bool,
    place: Place,
    sent: Sent = _ignore,
) -> Iterator[bytes]:
    """Yield the opening boundary, then give the connection to ``sender`` for good.

    The server has written the headers and the opening when this resumes; ``detach()``
    takes the connection from it, and the body ends here, freeing the request's thread. The
    viewer counts as watching until the sender lets it go, and holds the sender's ``place``.
    """
    watching = ExitStack()
    watching.enter_context(broadcaster.watching())
    handed = False
    try:
        yield OPENING
        viewer = Viewer(detach(), Cursor(broadcaster), chunked, sent, ended=watching.close)
        handed = True
        place.hand_on()  # the sender gives the place back when it lets the viewer go
        sender.add(viewer)
    finally:
        if not handed:  # the client left before the opening, or the hand-over failed
            watching.close()


def sender_can_write(environ: dict[str, Any], sender: Sender) -> bool:
    """Whether the sender can write this request's connection: plain TCP (not TLS, which
    gunicorn would have to encrypt), left blocking by the server, HTTP/1.x (a connection of
    its own, not HTTP/2's shared one), and the sender running."""
    sock = environ.get("gunicorn.socket")
    return (
        type(sock) is socket.socket
        and sock.gettimeout() is None
        and environ.get("SERVER_PROTOCOL") in HTTP1
        and sender.alive
    )


def open_stream(
    broadcaster: Broadcaster,
    environ: dict[str, Any],
    sender: Sender,
    slots: Slots,
    send_timeout: float,
    sent: Sent = _ignore,
) -> Iterator[bytes] | None:
    """The stream body for this request, on the delivery path its connection allows; None
    when that path has no room left (the caller answers 503).

    A stream that keeps a request thread (parked for the sender, or writing) holds one of
    ``slots``; one the worker lets go of holds one of the sender's own places instead. The
    place is taken here, before the answer's status is decided, and held by the body.
    """
    if sender_can_write(environ, sender):
        sock = environ["gunicorn.socket"]
        # gunicorn frames an HTTP/1.1 body of unknown length in chunks; the sender must too.
        chunked = environ["SERVER_PROTOCOL"] == "HTTP/1.1"
        detach = environ.get(DETACH)
        if detach is not None:
            if not sender.reserve():
                return None
            place = Place(sender.unreserve)
            return Held(handed_over(broadcaster, sender, detach, chunked, place, sent), place)
        frames = written_by_sender(broadcaster, sender, sock, chunked, sent)
    else:
        frames = written_by_thread(broadcaster, sent=sent)
        frames = on_connection(frames, environ, send_timeout, partial(_parts_buffer, [broadcaster]))
    if not slots.take():
        return None  # the body never started: it holds nothing yet
    return Held(frames, Place(slots.give_back))


def _parts_buffer(broadcasters: list[Broadcaster]) -> int:
    """The send buffer for a stream of these cameras' parts, as the sender sizes its viewers'."""
    return send_buffer_for(sum(len(b.latest.part) for b in broadcasters if b.latest is not None))


Framer = Callable[[Event], bytes | None]  # an event as one subscriber sees it: a message, or None


def events_by_thread(
    events: EventLog, since: int, frame: Framer, keepalive: float = sse.KEEPALIVE_INTERVAL
) -> Iterator[bytes]:
    """Yield an event stream for the server's thread to write: the retry hint, the kept events
    after ``since``, then every new one as it comes (those waiting batched in one write), a
    keepalive comment after ``keepalive`` seconds without a write; the end when the log closes.
    """
    yield sse.OPENING
    last, written = since, time.monotonic()
    while not events.closed:
        kept = events.wait_after(last, max(0.0, written + keepalive - time.monotonic()))
        data = b""
        if kept:
            last = kept[-1].id
            data = framed(frame, kept)
        elif time.monotonic() - written >= keepalive:
            data = sse.KEEPALIVE
        if data:
            yield data
            written = time.monotonic()  # the server has written it when the generator resumes


def events_handed_over(
    events: EventLog,
    since: int,
    frame: Framer,
    sender: Sender,
    detach: Callable[[], socket.socket],
    chunked: bool,
    place: Place,
) -> Iterator[bytes]:
    """Yield the retry hint, then give the connection to ``sender`` for good, which writes
    the kept events after ``since`` and every new one; the request's thread is free."""
    yield sse.OPENING
    subscriber = Subscriber(detach(), events, since, frame, chunked, ended=_nothing)
    place.hand_on()  # the sender gives the place back when it lets the subscriber go
    sender.add(subscriber)


def _nothing() -> None:
    """A subscriber's end needs nothing more than its socket closed."""


def open_events(
    events: EventLog,
    since: int,
    frame: Framer,
    environ: dict[str, Any],
    sender: Sender,
    slots: Slots,
    send_timeout: float,
) -> Iterator[bytes] | None:
    """An event stream's body for this request, on the delivery path its connection allows;
    None when that path has no room left (the caller answers 503).

    Under livecam's worker on plain HTTP/1.x the sender takes the connection over, on one of
    its own places; anywhere else the request's thread writes the stream, holding one of
    ``slots`` as an MJPEG stream written by a thread does.
    """
    detach = environ.get(DETACH)
    if detach is not None and sender_can_write(environ, sender):
        if not sender.reserve(subscriber=True):
            return None
        place = Place(partial(sender.unreserve, subscriber=True))
        chunked = environ["SERVER_PROTOCOL"] == "HTTP/1.1"
        return Held(events_handed_over(events, since, frame, sender, detach, chunked, place), place)
    body = on_connection(
        events_by_thread(events, since, frame), environ, send_timeout, lambda: EVENTS_SEND_BUFFER
    )
    if not slots.take(subscriber=True):
        return None
    return Held(body, Place(partial(slots.give_back, subscriber=True)))


def on_connection(
    frames: Iterator[bytes], environ: dict[str, Any], send_timeout: float, send_buffer: Callable[[], int]
) -> Iterator[bytes]:
    """Yield ``frames`` for the server's thread to write, its connection set up for a stream
    at the first step, before the server writes anything.

    A viewer that stops reading fills its socket buffer: without a timeout the write would
    block the thread forever (gunicorn resets the socket's mode after). Where the connection
    is the stream's alone (HTTP/1.x), its send buffer is bounded to ``send_buffer()`` as the
    sender bounds its clients', and a body the server gives up on before its end (a write failed or timed
    out) resets the connection, freeing what waits in that buffer at once.
    """
    sock = environ.get("gunicorn.socket")
    own = sock is not None and environ.get("SERVER_PROTOCOL") in HTTP1  # not HTTP/2's shared one
    if sock is not None:
        sock.settimeout(send_timeout)
    if own:
        limit_send_buffer(sock, send_buffer())
    try:
        yield from frames
    except GeneratorExit:
        if own:
            reset_on_close(sock)
            try:  # and end gunicorn's graceful close, which would wait for the client, at once
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        raise


def headers(environ: dict[str, Any]) -> dict[str, str]:
    """The stream response's headers."""
    result = dict(STREAM_HEADERS)
    if environ.get("SERVER_PROTOCOL") in ("HTTP/1.0", "HTTP/1.1"):
        # The connection is the stream's: a request sent behind it is never answered, so end
        # the connection with the stream rather than leave a client waiting on it.
        result["Connection"] = "close"
    return result
