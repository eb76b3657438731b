"""One thread writes every stream: frames go to all viewers' sockets from a selector loop, and
events to every event subscriber's.

With a thread per viewer, each frame wakes every viewer's thread to write the same bytes:
at a hundred viewers that costs several times the CPU of the camera itself. Here gunicorn's
thread answers the request, writes the headers and the opening boundary, then hands the
socket over and waits; this loop writes each new part with non-blocking sends, keeps any
unsent rest for when the socket drains, and follows the one stream policy (cursor.py) for
what each viewer gets next. The sockets stay in blocking mode for gunicorn: every send here
uses MSG_DONTWAIT. The shape follows gunicorn's gthread worker: a waker that owns its pipe,
selector keys that carry their handler, a viewer that knows how to write its part.

An event subscriber (an SSE stream) is the second kind of client: the loop listens to the
event log as it listens to a camera, and writes each new event to every subscriber. Unlike
frames, events are never skipped: a subscriber that is slow gets every event after its last
one, batched into one write; one whose unsent events pass MAX_BACKLOG, or stay stuck past
the send timeout, is cut off, so nothing is ever queued without bound.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial

from .broadcast import Broadcaster, Frame
from .cursor import Cursor
from .events import Event, EventLog
from .mjpeg import chunk
from .sse import KEEPALIVE, KEEPALIVE_INTERVAL

log = logging.getLogger(__name__)

SWEEP = 0.25  # how often heartbeats, keepalives and stuck clients are looked at
CLOSING_GRACE = 2.0  # a stopped camera's viewers may finish the part they are receiving
# A TCP viewer's kernel send buffer holds a few parts, not the megabytes Linux autotunes it
# to for a client that reads nothing (up to tcp_wmem's 4 MiB): a stream needs only the part
# under way and the next ones, since a slow viewer skips to the newest frame anyway. Three
# parts, and at least 256 KiB, keep a full rate across a link of about 100 ms round trip.
# Linux doubles the size asked for (its bookkeeping), so 2 MiB asked is autotuning's ceiling.
FRAMES_BUFFERED = 3
MIN_SEND_BUFFER = 256 * 1024
MAX_SEND_BUFFER = 2 * 1024 * 1024
# An event is a few hundred bytes: a subscriber's kernel send buffer of 64 KiB (128 KiB as
# Linux counts it) and MAX_BACKLOG framed in memory hold about a thousand, the whole log kept
# (events.MAX_EVENTS), so even a client resuming from the oldest kept event is not cut off.
EVENTS_SEND_BUFFER = 64 * 1024
MAX_BACKLOG = 256 * 1024
# Bytes a subscriber sends after its request are read and dropped, a few KiB a turn, up to
# this many in all: a client that keeps talking is not listened to for ever.
UNHEARD_READ = 4096
MAX_UNHEARD = 64 * 1024
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, for 0 s: close() resets the connection

Sent = Callable[[int, float | None, int], None]  # (part size, latency or None, viewers)


def send_buffer_for(part_size: int) -> int:
    """The send buffer for a stream whose parts are ``part_size`` bytes: a few parts, within bounds."""
    return min(MAX_SEND_BUFFER, max(MIN_SEND_BUFFER, FRAMES_BUFFERED * part_size))


def limit_send_buffer(sock: socket.socket, size: int) -> int:
    """Bound a TCP socket's kernel send buffer to ``size`` bytes (which Linux doubles, capped
    at net.core.wmem_max); return ``size``, or 0 for a socket left as it is.

    Only TCP buffers grow by themselves: a Unix socket keeps its fixed, smaller default.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return 0
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError:
        return 0
    return size


def reset_on_close(sock: socket.socket) -> None:
    """Make the last close of ``sock`` reset the connection and free its send buffer at once.

    A plain close keeps unsent data in FIN-WAIT-1 until the client reads it or the kernel
    gives up, minutes later: for a viewer cut off for not reading, a whole send buffer.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    except OSError:
        pass  # already closed, or not a socket that lingers: nothing to free


class Waker:
    """A pipe that wakes a selector loop from any thread; the loop owns it and closes it."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()  # guards the descriptors: never write to a closed one

    def fileno(self) -> int:
        """The end the loop selects on."""
        return self._read

    def wake(self) -> None:
        """Make the loop look again; a no-op once closed."""
        with self._lock:
            if self._write < 0:
                return
            try:
                os.write(self._write, b"x")
            except BlockingIOError:
                pass  # the pipe is full: the loop is already due to wake

    def drain(self, _events: int = 0) -> None:
        """Empty the pipe (the loop's handler for its readable end)."""
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close both ends."""
        with self._lock:
            os.close(self._read)
            os.close(self._write)
            self._read = self._write = -1


def framed(frame: Callable[[Event], bytes | None], events: Iterable[Event]) -> bytes:
    """``events`` as one subscriber sees them, in one piece: those ``frame`` turns into bytes."""
    return b"".join(data for data in map(frame, events) if data is not None)


class Client:
    """A connection handed over to the sender: its socket, the bytes not yet sent, how it ends.

    With ``ended`` the socket is the sender's own (the server let go of the connection, see
    streams.handed_over): letting the client go, the sender ends the body, closes the
    socket and calls ``ended()``. Without it the socket goes back to the server's thread.
    ``done`` is set when the sender lets it go.
    """

    def __init__(self, sock: socket.socket, chunked: bool, ended: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.chunked = chunked  # HTTP/1.1: each write is one chunk of the body
        self.ended = ended
        self.done = threading.Event()
        self.pending: memoryview | None = None  # the unsent rest of the write under way
        self.last_write = time.monotonic()
        # Selected for readable until the client says anything (a subscriber: past MAX_UNHEARD).
        self.reading = True
        self.events = 0  # what the selector watches this socket for now

    def flush(self, now: float) -> bool | None:
        """Send what the socket takes now: True when the write is out, False when some of it
        waits for the socket to drain, None when the connection failed."""
        try:
            written = self.sock.send(self.pending, socket.MSG_DONTWAIT)
        except BlockingIOError:
            written = 0
        except OSError:
            return None
        if written:
            self.last_write = now
        if written < len(self.pending):
            self.pending = self.pending[written:]
            return False
        self.pending = None
        return True


class Viewer(Client):
    """One MJPEG stream handed over to the sender: the newest frame of its camera, never a backlog."""

    def __init__(
        self,
        sock: socket.socket,
        cursor: Cursor,
        chunked: bool,
        sent: Sent,
        ended: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(sock, chunked, ended)
        self.cursor = cursor
        self.sent = sent
        self.pending_frame: Frame | None = None  # the frame of the part under way
        self.pending_fresh = False  # a new frame (False: a heartbeat resend)
        self.closing_since: float | None = None
        self.send_buffer = 0  # the bound set on the socket's send buffer, 0 before the first part

    @property
    def broadcaster(self) -> Broadcaster:
        """The camera session this viewer watches."""
        return self.cursor.broadcaster

    def begin(self, frame: Frame, fresh: bool, data: bytes) -> None:
        """Start writing ``frame``'s part (``data``, framed for this viewer)."""
        if self.send_buffer < MAX_SEND_BUFFER and FRAMES_BUFFERED * len(data) > self.send_buffer:
            # Set before the first part, while the buffer is empty; raised for larger parts.
            # A socket left as it is (not TCP, or refusing) is not asked again.
            wanted = send_buffer_for(len(data))
            self.send_buffer = limit_send_buffer(self.sock, wanted) or MAX_SEND_BUFFER
        self.pending = memoryview(data)
        self.pending_frame, self.pending_fresh = frame, fresh


class Subscriber(Client):
    """One event stream handed over to the sender: every event after the last one it was
    given, in order, framed for it by ``frame`` (None: an event it does not want). Unlike
    frames, events are never skipped: a slow subscriber gets them all, batched, or is cut off.
    The socket is always the sender's own (``ended``)."""

    def __init__(
        self,
        sock: socket.socket,
        log: EventLog,
        since: int,
        frame: Callable[[Event], bytes | None],
        chunked: bool,
        ended: Callable[[], None],
    ) -> None:
        super().__init__(sock, chunked, ended)
        self.log = log
        self.since = since  # the last event the client has: the kept ones after it come first
        self.frame = frame
        self.queued = bytearray()  # framed, behind the write under way
        # The ids of the kept events it was given when taken in: some of them may still be
        # on their way to the sender as noticed events, and must not be sent twice.
        self.replayed: set[int] | None = None
        self.unheard = 0  # bytes it sent after its request, read and dropped

    @property
    def backlog(self) -> int:
        """Bytes framed for this subscriber and not yet taken by its socket."""
        return len(self.queued) + (len(self.pending) if self.pending is not None else 0)

    def take(self, events: Iterable[Event]) -> None:
        """Frame ``events`` behind what the subscriber has yet to receive, as one write."""
        self.queue(framed(self.frame, events))

    def queue(self, data: bytes) -> None:
        """Put ``data`` (whole messages or a comment) behind what waits."""
        if data:
            self.queued += chunk(data) if self.chunked else data

    def next_write(self) -> bool:
        """Put what is queued under way if nothing is; whether something waits to be sent."""
        if self.pending is None and self.queued:
            self.pending = memoryview(bytes(self.queued))
            self.queued.clear()
        return self.pending is not None


class Sender:
    """The loop that writes every stream of one app: its viewers' frames and its subscribers' events."""

    def __init__(
        self, send_timeout: float, capacity: int = 4096, keepalive: float = KEEPALIVE_INTERVAL
    ) -> None:
        self._send_timeout = send_timeout
        self._keepalive = keepalive  # seconds without a write before a subscriber gets a comment
        self.capacity = capacity  # clients whose socket the sender owns, at most
        # Guards _incoming, _stopping, owned, subscribers and the loop's start.
        self._lock = threading.Lock()
        self._incoming: list[Client] = []
        self.owned = 0  # clients whose socket the sender owns now, viewers and subscribers
        self.subscribers = 0  # of those, the event subscribers
        # The waker and the selector exist only while the loop runs: an app that never
        # streams under gunicorn holds no descriptors.
        self._waker: Waker | None = None
        self._selector: selectors.BaseSelector | None = None
        # The loop's own (no lock): the viewers of each camera it listens to, and only those, so
        # a camera nobody watches through the sender never wakes it.
        self._viewers: dict[Broadcaster, set[Viewer]] = {}
        self._chunks: dict[Broadcaster, tuple[int, bytes]] = {}  # each frame chunk-framed once
        self._fanned: dict[Broadcaster, int] = {}  # the last frame fanned out, per camera
        # The subscribers of each event log it listens to, and how to stop listening.
        self._subscribers: dict[EventLog, set[Subscriber]] = {}
        self._unlisten: dict[EventLog, Callable[[], None]] = {}
        # Events noticed since the loop last looked, in the order they were kept; appended in
        # the noticing thread (under the log's lock, so quickly), taken whole by the loop.
        self._noticed_lock = threading.Lock()  # guards _noticed
        self._noticed: list[tuple[EventLog, Event]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """Whether new clients can be handed over (the loop runs, or has not been needed yet)."""
        return not self._stopping and (self._thread is None or self._thread.is_alive())

    @property
    def ended(self) -> bool:
        """Whether the loop has finished, having let every client go."""
        return self._thread is not None and not self._thread.is_alive()

    def census(self) -> tuple[int, int]:
        """The viewers and the subscribers whose socket the sender owns now, read together."""
        with self._lock:
            return self.owned - self.subscribers, self.subscribers

    def reserve(self, subscriber: bool = False) -> bool:
        """Take a place for a client whose socket the sender will own (a viewer, or with
        ``subscriber`` an event subscriber), if one is left.

        Taken when the stream's answer is decided, so a stream with no place left is refused
        with a 503 rather than cut after its 200; ``add()`` hands the client in on it.
        """
        with self._lock:
            if not self.alive or self.owned >= self.capacity:
                return False
            self.owned += 1
            self.subscribers += subscriber
            return True

    def unreserve(self, subscriber: bool = False) -> None:
        """Give back a place taken by ``reserve()`` for a client never handed over."""
        with self._lock:
            self.owned -= 1
            self.subscribers -= subscriber

    def _give_back(self, client: Client) -> None:
        """Give back the place of a client the sender owned (under the lock)."""
        if client.ended is not None:
            self.owned -= 1
            self.subscribers -= isinstance(client, Subscriber)

    def add(self, client: Client) -> None:
        """Hand a client over; the loop starts on the first one. A client whose socket the
        sender will own comes in on a place ``reserve()`` took. A client refused (the sender
        is stopping) is let go at once, and its place with it."""
        with self._lock:
            refused = self._stopping
            # One wake takes in every client handed over until the loop looks: a burst of
            # viewers wakes it once per turn, not once each.
            woken = bool(self._incoming)
            if refused:
                self._give_back(client)
            else:
                self._incoming.append(client)
                if self._thread is None:
                    self._waker = Waker()
                    self._selector = selectors.DefaultSelector()
                    self._selector.register(self._waker, selectors.EVENT_READ, self._waker.drain)
                    thread = threading.Thread(target=self._run, name="livecam-sender", daemon=True)
                    try:
                        thread.start()
                    finally:
                        # Known once it runs (or failed to start): a thread not yet started
                        # reads as one that ended, and a request asking ``alive`` meanwhile,
                        # without the lock, would think the loop dead and have its stream
                        # written by a thread, which notices a closed subscriber only when a
                        # keepalive fails to go out.
                        self._thread = thread
        if refused:
            _let_go(client, clean=False)
        elif not woken:
            self.wake()

    def wake(self) -> None:
        """Make the loop look again (a frame was published, a camera stopped, an event was kept)."""
        waker = self._waker
        if waker is not None:
            waker.wake()

    def stop(self, timeout: float = 5.0) -> None:
        """Let every client go and end the loop, waiting up to ``timeout`` for it."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self.wake()
        if thread is not None:
            thread.join(timeout)
        self._let_incoming_go()

    def _let_incoming_go(self) -> None:
        """Let go of the clients handed over but not yet taken by the loop."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
            for client in incoming:
                self._give_back(client)
        for client in incoming:
            _let_go(client, clean=False)

    def _notice(self, log: EventLog, event: Event) -> None:
        """An event was kept (called in the noticing thread): queue it for the loop, wake it."""
        with self._noticed_lock:
            self._noticed.append((log, event))
        self.wake()

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        """Write frames and events until stopped; never dies silently."""
        try:
            next_sweep = time.monotonic() + SWEEP
            while not self._stopping:
                # Nobody to serve: sleep until woken, so a server with no clients costs nothing.
                serving = self._viewers or self._subscribers
                timeout = max(0.0, next_sweep - time.monotonic()) if serving else None
                for key, events in self._selector.select(timeout):
                    key.data(events)
                # Events first: a subscriber taken in below gets the kept events from the log
                # itself, and only later ones as noticed events.
                self._new_events()
                self._take_incoming()
                self._new_frames()
                if time.monotonic() >= next_sweep:
                    self._sweep()
                    next_sweep = time.monotonic() + SWEEP
        except Exception:  # noqa: BLE001 - log, then let every client go below
            log.exception("stream sender failed")
        finally:
            for clients in [*self._viewers.values(), *self._subscribers.values()]:
                for client in list(clients):
                    self._release(client)
            self._selector.close()
            with self._lock:
                self._stopping = True
            self._let_incoming_go()
            self._waker.close()

    def _take_incoming(self) -> None:
        """Register the clients handed over since the last turn."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for client in incoming:
            if isinstance(client, Subscriber):
                self._subscribe(client)
            elif isinstance(client, Viewer):
                self._view(client)

    def _view(self, viewer: Viewer) -> None:
        """Take a viewer in: its camera's current frame at once, if fresh."""
        broadcaster = viewer.broadcaster
        if broadcaster not in self._viewers:
            broadcaster.add_listener(self.wake)
            self._viewers[broadcaster] = set()
        self._viewers[broadcaster].add(viewer)
        # Readable tells a client that reset at once, without waiting for a write.
        if not self._watch(viewer):
            self._release(viewer)
            return
        frame = viewer.cursor.first()
        if frame is not None:
            self._start(viewer, frame, fresh=True)

    def _subscribe(self, subscriber: Subscriber) -> None:
        """Take a subscriber in: the kept events after the last one it has, at once."""
        events = subscriber.log
        if events not in self._subscribers:
            self._subscribers[events] = set()
            self._unlisten[events] = events.listen(partial(self._notice, events))
        self._subscribers[events].add(subscriber)
        limit_send_buffer(subscriber.sock, EVENTS_SEND_BUFFER)
        if not self._watch(subscriber):
            self._release(subscriber)
            return
        # Read after listening: an event kept from here on is noticed too, or is in this list
        # (or both: the next drain skips the ones replayed).
        kept = events.after(subscriber.since)
        subscriber.replayed = {event.id for event in kept}
        self._deliver(subscriber, kept)

    def _new_events(self) -> None:
        """Frame every event noticed since the last turn for each subscriber, and write."""
        with self._noticed_lock:
            noticed, self._noticed = self._noticed, []
        if not noticed:
            return
        for events, subscribers in list(self._subscribers.items()):
            new = [event for source, event in noticed if source is events]
            for subscriber in list(subscribers) if new else ():
                replayed, subscriber.replayed = subscriber.replayed, None
                # The first drain after it joined may hold events noticed before it did: those
                # replayed, and those it had already (ids only grow: at most its ``since``).
                fresh = new
                if replayed is not None:
                    fresh = [e for e in new if e.id > subscriber.since and e.id not in replayed]
                self._deliver(subscriber, fresh)

    def _deliver(self, subscriber: Subscriber, events: list[Event]) -> None:
        """Frame ``events`` for a subscriber and write what its socket takes."""
        try:
            subscriber.take(events)
        except Exception:  # noqa: BLE001 - a framing bug ends this stream, never every stream
            log.exception("an event could not be framed for a subscriber")
            self._release(subscriber)
            return
        self._write_events(subscriber)

    def _write_events(self, subscriber: Subscriber) -> None:
        """Write what a subscriber's socket takes now; cut off one too far behind."""
        now = time.monotonic()
        while subscriber.next_write():
            outcome = subscriber.flush(now)
            if outcome is None:
                self._release(subscriber)
                return
            if not outcome:
                break
        if subscriber.backlog > MAX_BACKLOG:
            # Never queued without bound: a client this far behind has stopped reading.
            log.info("dropping an event subscriber %d bytes behind", subscriber.backlog)
            self._release(subscriber)
            return
        self._watch(subscriber)  # writable while something waits

    def _new_frames(self) -> None:
        """Start the newest frame on every idle viewer of each camera that published one."""
        for broadcaster, viewers in list(self._viewers.items()):
            if broadcaster.closed:
                now = time.monotonic()
                for viewer in list(viewers):
                    viewer.closing_since = viewer.closing_since or now
                    if viewer.pending is None:
                        self._release(viewer)
                continue
            latest = broadcaster.latest
            # Turns without a new frame (writable sockets, sweeps) need no pass over the
            # viewers: busy ones take the newest frame when they finish.
            if latest is not None and self._fanned.get(broadcaster) != latest.seq:
                self._fanned[broadcaster] = latest.seq
                self._fan_out([v for v in viewers if v.pending is None])

    def _fan_out(self, viewers: list[Viewer]) -> None:
        """The hot path: each idle viewer's newest frame, and the bookkeeping once per frame."""
        whole: dict[tuple[Sent, int], int] = {}
        frames: dict[int, Frame] = {}
        for viewer in viewers:
            frame = viewer.cursor.newer()
            if frame is not None and self._start(viewer, frame, fresh=True, account=False):
                key = (viewer.sent, frame.seq)
                whole[key] = whole.get(key, 0) + 1
                frames[frame.seq] = frame
        now = time.time()
        for (sent, seq), count in whole.items():
            sent(len(frames[seq].part), now - frames[seq].timestamp, count)

    def _data(self, broadcaster: Broadcaster, frame: Frame, chunked: bool, fresh: bool = True) -> bytes:
        """The bytes of ``frame``'s part for a viewer, chunk-framed once per frame when needed."""
        if not chunked:
            return frame.part
        if not fresh:
            return chunk(frame.part)  # a heartbeat: leave the cache to the newest frame
        cached = self._chunks.get(broadcaster)
        if cached is None or cached[0] != frame.seq:
            cached = (frame.seq, chunk(frame.part))
            self._chunks[broadcaster] = cached
        return cached[1]

    def _start(self, viewer: Viewer, frame: Frame, fresh: bool, account: bool = True) -> bool:
        """Begin writing one part to a viewer; return whether it went out whole at once.

        With ``account`` a whole part is counted here; the fan-out counts its own, once.
        """
        viewer.begin(frame, fresh, self._data(viewer.broadcaster, frame, viewer.chunked, fresh))
        return self._flush(viewer, account)

    def _flush(self, viewer: Viewer, account: bool = True) -> bool:
        """Write what the socket takes; finish the part's bookkeeping once it is out."""
        frame, fresh = viewer.pending_frame, viewer.pending_fresh
        outcome = viewer.flush(time.monotonic())
        if outcome is None:
            self._release(viewer)
            return False
        if not outcome:
            self._watch(viewer)  # writable: the rest goes when the socket drains
            return False
        viewer.pending_frame = None
        if account:
            viewer.sent(len(frame.part), time.time() - frame.timestamp if fresh else None, 1)
        self._watch(viewer)
        return True

    def _on_client(self, client: Client, events: int) -> None:
        """A client's socket is ready: it said something (or reset), or it can take more."""
        if events & selectors.EVENT_READ:
            self._readable(client)
        if events & selectors.EVENT_WRITE and not client.done.is_set() and client.pending is not None:
            if isinstance(client, Subscriber):
                self._write_events(client)
            elif self._flush(client):
                self._next(client)

    def _next(self, viewer: Viewer) -> None:
        """A viewer finished a part: end it if its camera stopped, else catch up at once."""
        if viewer.broadcaster.closed:
            self._release(viewer)
            return
        frame = viewer.cursor.newer()
        if frame is not None:
            # Frames came while this viewer was busy: the newest one now, none in between.
            if self._start(viewer, frame, fresh=True):
                self._next(viewer)

    def _watch(self, client: Client) -> bool:
        """Select a client's socket for what it needs: readable until it says something,
        writable while a write waits. :return: False if the socket cannot be selected."""
        events = (selectors.EVENT_READ if client.reading else 0) | (
            selectors.EVENT_WRITE if client.pending is not None else 0
        )
        try:
            if events == client.events:
                return True
            if not events:
                self._selector.unregister(client.sock)
            elif client.events:
                self._selector.modify(client.sock, events, partial(self._on_client, client))
            else:
                self._selector.register(client.sock, events, partial(self._on_client, client))
        except (KeyError, ValueError, OSError):
            return False
        client.events = events
        return True

    def _readable(self, client: Client) -> None:
        """A client's socket is readable: it reset, half-closed, or sent bytes.

        A viewer's bytes are not the sender's: they stay for gunicorn, which closes the
        connection with the stream (``Connection: close``). A half-closed viewer may still be
        reading, as with the thread-per-viewer path: only a failed write ends its stream. A
        subscriber that closed its side is let go at once: an EventSource closes the whole
        connection, and its place is better free now than at the next keepalive's failed write.
        """
        if isinstance(client, Subscriber):
            self._hear(client)
            return
        try:  # only whether it reset matters: bytes or an end of input leave the stream as it is
            client.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            self._release(client)  # reset: the client is gone
            return
        client.reading = False  # nothing more to learn from reading: stop being woken by it
        self._watch(client)

    def _hear(self, subscriber: Subscriber) -> None:
        """A subscriber's socket is readable: let it go if it closed or reset; drop what it sent.

        Its socket is the sender's alone and its request answered, so bytes it sends are for
        nobody: read and dropped, they leave readability free to tell when it closes. One that
        keeps sending past MAX_UNHEARD is no longer read (it would wake the loop for nothing):
        its close is noticed by a failed write then, as a viewer's is.
        """
        try:
            said = subscriber.sock.recv(UNHEARD_READ, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            self._release(subscriber)  # reset: the client is gone
            return
        if not said:
            self._release(subscriber)  # closed its side
            return
        subscriber.unheard += len(said)
        if subscriber.unheard > MAX_UNHEARD:
            subscriber.reading = False
            self._watch(subscriber)

    def _sweep(self) -> None:
        """Heartbeats for idle clients, and an end for stuck or long-closing ones."""
        now = time.monotonic()
        for viewers in list(self._viewers.values()):
            for viewer in list(viewers):
                if viewer.closing_since is not None and now - viewer.closing_since > CLOSING_GRACE:
                    self._release(viewer)
                elif self._stuck(viewer, now):
                    self._release(viewer)
                elif viewer.pending is None and (
                    (frame := viewer.cursor.heartbeat_after(now - viewer.last_write)) is not None
                ):
                    self._start(viewer, frame, fresh=False)
        for subscribers in list(self._subscribers.values()):
            for subscriber in list(subscribers):
                if subscriber.log.closed or self._stuck(subscriber, now):
                    self._release(subscriber)  # the app is stopping, or the client stopped reading
                elif subscriber.pending is None and now - subscriber.last_write >= self._keepalive:
                    subscriber.queue(KEEPALIVE)
                    self._write_events(subscriber)

    def _stuck(self, client: Client, now: float) -> bool:
        """Whether a client's write has waited longer than the send timeout for the socket."""
        if client.pending is None or now - client.last_write <= self._send_timeout:
            return False
        log.info("dropping a client that took no data for %.0f s", self._send_timeout)
        return True

    def _release(self, client: Client) -> None:
        """Stop writing to a client: give its socket back to gunicorn's thread, or end the
        stream and close the socket when the sender owns it."""
        if client.done.is_set():
            return
        if client.pending is not None:
            # Half a write is out: the stream cannot end cleanly. Reset the connection when it
            # is closed, freeing what waits in its send buffer (see reset_on_close).
            reset_on_close(client.sock)
            if client.ended is None:
                # gunicorn's closing write could block on a client that reads nothing: cut
                # the connection so it fails at once.
                try:
                    client.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if isinstance(client, Subscriber):
            self._unsubscribe(client)
        elif isinstance(client, Viewer):
            viewers = self._viewers.get(client.broadcaster)
            if viewers is not None:
                viewers.discard(client)
                if not viewers:
                    self._forget(client.broadcaster)
        if client.events:
            try:
                self._selector.unregister(client.sock)
            except (KeyError, ValueError, OSError):
                pass
            client.events = 0
        with self._lock:
            self._give_back(client)
        _let_go(client, clean=client.pending is None)

    def _forget(self, broadcaster: Broadcaster) -> None:
        """Stop listening to a camera whose last viewer left, and drop what was kept for it."""
        # Left listening, the camera would wake this loop at every frame for as long as it runs.
        broadcaster.remove_listener(self.wake)
        del self._viewers[broadcaster]
        self._chunks.pop(broadcaster, None)
        self._fanned.pop(broadcaster, None)

    def _unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a subscriber; stop listening to its event log when it was the last."""
        subscribers = self._subscribers.get(subscriber.log)
        if subscribers is None:
            return
        subscribers.discard(subscriber)
        if not subscribers:
            del self._subscribers[subscriber.log]
            self._unlisten.pop(subscriber.log)()


def _let_go(client: Client, clean: bool) -> None:
    """The end of a client for the sender: a socket it owns is closed, after the body's last
    chunk when the stream ends ``clean`` (between writes); then ``done`` is set."""
    if client.ended is not None:
        if clean and client.chunked:
            try:  # best effort: a client that stopped reading just misses the clean end
                client.sock.send(b"0\r\n\r\n", socket.MSG_DONTWAIT)
            except OSError:
                pass
        client.sock.close()
        client.ended()
    client.done.set()
