"""One thread writes every stream: frames go to all viewers' sockets from a selector loop.

With a thread per viewer, each frame wakes every viewer's thread to write the same bytes:
at a hundred viewers that costs several times the CPU of the camera itself. Here gunicorn's
thread answers the request, writes the headers and the opening boundary, then hands the
socket over and waits; this loop writes each new part with non-blocking sends, keeps any
unsent rest for when the socket drains, and gives a slow viewer the newest frame next.
The sockets stay in blocking mode for gunicorn: every send here uses MSG_DONTWAIT.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
import weakref
from collections.abc import Callable

from .broadcast import Broadcaster, Frame

log = logging.getLogger(__name__)

SWEEP = 0.25  # how often heartbeats and stuck viewers are looked at
CLOSING_GRACE = 2.0  # a stopped camera's viewers may finish the part they are receiving


def chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP/1.1 chunk, as the server does for a body of unknown length."""
    return b"%X\r\n%s\r\n" % (len(data), data)


class Viewer:
    """One stream handed over to the sender; ``done`` is set when the sender lets it go."""

    def __init__(
        self,
        sock: socket.socket,
        broadcaster: Broadcaster,
        chunked: bool,
        sent: Callable[[int, float | None, int], None],
    ) -> None:
        self.sock = sock
        self.broadcaster = broadcaster
        self.chunked = chunked
        self.sent = sent
        self.done = threading.Event()
        self.seq = 0  # the last frame started
        self.pending: memoryview | None = None  # the unsent rest of the part being written
        self.pending_frame: Frame | None = None
        self.pending_fresh = False  # a new frame (False: a heartbeat resend)
        self.waiting = False  # selected for writable: the socket took less than a whole part
        self.reading = True  # selected for readable: until the client sends anything, or EOF
        self.events = 0  # what the selector watches this socket for now
        self.last_frame: Frame | None = None
        self.last_write = time.monotonic()
        self.closing_since: float | None = None


class Sender:
    """The loop that writes every stream of one app."""

    def __init__(self, send_timeout: float, heartbeat: float = 1.0) -> None:
        self._send_timeout = send_timeout
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._incoming: list[Viewer] = []
        # The wake-up pipe and the selector exist only while the loop runs: an app that never
        # streams under gunicorn holds no descriptors, and a closed one is never written to.
        self._wake_r = self._wake_w = -1
        self._selector: selectors.BaseSelector | None = None
        self._viewers: dict[Broadcaster, set[Viewer]] = {}
        self._listening: weakref.WeakSet[Broadcaster] = weakref.WeakSet()
        self._chunks: dict[Broadcaster, tuple[int, bytes]] = {}
        self._fanned: dict[Broadcaster, int] = {}  # the last frame fanned out, per camera
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """Whether new viewers can be handed over (the loop runs, or has not been needed yet)."""
        return not self._stopping and (self._thread is None or self._thread.is_alive())

    @property
    def ended(self) -> bool:
        """Whether the loop has finished, having let every viewer go."""
        return self._thread is not None and not self._thread.is_alive()

    def add(self, viewer: Viewer) -> None:
        """Hand a viewer over; the loop starts on the first one."""
        with self._lock:
            if self._stopping:
                viewer.done.set()
                return
            self._incoming.append(viewer)
            if self._thread is None:
                self._wake_r, self._wake_w = os.pipe()
                os.set_blocking(self._wake_r, False)
                os.set_blocking(self._wake_w, False)
                self._selector = selectors.DefaultSelector()
                self._selector.register(self._wake_r, selectors.EVENT_READ)
                self._thread = threading.Thread(target=self._run, name="livecam-sender", daemon=True)
                self._thread.start()
        self.wake()

    def wake(self) -> None:
        """Make the loop look again (a frame was published, a camera stopped)."""
        with self._lock:  # the loop closes the pipe under this lock: never write a stale fd
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # the pipe is full: the loop is already due to wake

    def stop(self, timeout: float = 5.0) -> None:
        """Let every viewer go and end the loop, waiting up to ``timeout`` for it."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self.wake()
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            for viewer in self._incoming:
                viewer.done.set()
            self._incoming.clear()

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        """Write frames until stopped; never dies silently."""
        try:
            next_sweep = time.monotonic() + SWEEP
            while not self._stopping:
                # Nobody to serve: sleep until woken, so a server with no viewers costs nothing.
                timeout = max(0.0, next_sweep - time.monotonic()) if self._viewers else None
                for key, events in self._selector.select(timeout):
                    if key.fileobj == self._wake_r:
                        self._drain_wake()
                    elif events & selectors.EVENT_READ:
                        self._readable(key.data)
                    if key.data is not None and events & selectors.EVENT_WRITE:
                        self._write(key.data)
                self._take_incoming()
                self._new_frames()
                if time.monotonic() >= next_sweep:
                    self._sweep()
                    next_sweep = time.monotonic() + SWEEP
        except Exception:  # noqa: BLE001 - log, then let every viewer go below
            log.exception("stream sender failed")
        finally:
            for viewers in list(self._viewers.values()):
                for viewer in list(viewers):
                    self._release(viewer)
            self._selector.close()
            with self._lock:
                self._stopping = True
                for viewer in self._incoming:
                    viewer.done.set()
                self._incoming.clear()
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    def _drain_wake(self) -> None:
        """Empty the wake-up pipe."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _take_incoming(self) -> None:
        """Register the viewers handed over since the last turn."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for viewer in incoming:
            broadcaster = viewer.broadcaster
            if broadcaster not in self._listening:
                self._listening.add(broadcaster)
                broadcaster.add_listener(self.wake)
            self._viewers.setdefault(broadcaster, set()).add(viewer)
            # Readable tells a client that hung up at once, without waiting for a write.
            if not self._watch(viewer):
                self._release(viewer)
                continue
            latest = broadcaster.latest
            if latest is not None and latest.age < self._heartbeat:
                # A running camera: show its current frame at once.
                self._start(viewer, latest, fresh=True)
            elif latest is not None:
                viewer.seq = latest.seq

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
            # Turns without a new frame (writable sockets, sweeps) need no pass over the viewers:
            # busy ones take the newest frame when they finish, new ones when they are taken in.
            if latest is not None and self._fanned.get(broadcaster) != latest.seq:
                self._fanned[broadcaster] = latest.seq
                self._fan_out(latest, [v for v in viewers if v.pending is None and latest.seq > v.seq])

    def _fan_out(self, frame: Frame, viewers: list[Viewer]) -> None:
        """The hot path: one send per idle viewer, and the bookkeeping once for them all."""
        whole: dict[Callable[[int, float | None, int], None], int] = {}
        for viewer in viewers:
            data = self._part(viewer, frame)
            viewer.seq = frame.seq
            try:
                written = viewer.sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                written = 0
            except OSError:
                self._release(viewer)
                continue
            if written == len(data):
                viewer.last_frame = frame
                whole[viewer.sent] = whole.get(viewer.sent, 0) + 1
            else:
                # The socket took less: keep the rest for when it drains.
                viewer.pending = memoryview(data)[written:]
                viewer.pending_frame, viewer.pending_fresh = frame, True
                viewer.waiting = True
                self._watch(viewer)
        now = time.monotonic()
        for viewer in viewers:
            viewer.last_write = now
        latency = time.time() - frame.timestamp
        for sent, count in whole.items():
            sent(len(frame.part), latency, count)

    def _part(self, viewer: Viewer, frame: Frame, fresh: bool = True) -> bytes:
        """The bytes of ``frame`` for this viewer, chunk-framed once per frame when needed."""
        if not viewer.chunked:
            return frame.part
        if not fresh:
            return chunk(frame.part)  # a heartbeat: leave the cache to the newest frame
        cached = self._chunks.get(viewer.broadcaster)
        if cached is None or cached[0] != frame.seq:
            cached = (frame.seq, chunk(frame.part))
            self._chunks[viewer.broadcaster] = cached
        return cached[1]

    def _start(self, viewer: Viewer, frame: Frame, fresh: bool) -> None:
        """Begin writing one part to a viewer."""
        viewer.seq = max(viewer.seq, frame.seq)
        viewer.pending = memoryview(self._part(viewer, frame, fresh))
        viewer.pending_frame = frame
        viewer.pending_fresh = fresh
        self._write(viewer)

    def _write(self, viewer: Viewer) -> None:
        """Send what the socket takes now; wait for it to drain if it took less."""
        if viewer.pending is None or viewer.done.is_set():
            return
        try:
            written = viewer.sock.send(viewer.pending, socket.MSG_DONTWAIT)
        except BlockingIOError:
            written = 0
        except OSError:
            self._release(viewer)
            return
        now = time.monotonic()
        if written:
            viewer.last_write = now
        if written < len(viewer.pending):
            viewer.pending = viewer.pending[written:]
            if not viewer.waiting:
                viewer.waiting = True
                self._watch(viewer)
            return
        frame = viewer.pending_frame
        latency = time.time() - frame.timestamp if viewer.pending_fresh else None
        viewer.sent(len(frame.part), latency, 1)
        viewer.pending = viewer.pending_frame = None
        viewer.last_frame = frame
        if viewer.waiting:
            viewer.waiting = False
            self._watch(viewer)
        if viewer.broadcaster.closed:
            self._release(viewer)
            return
        latest = viewer.broadcaster.latest
        if latest is not None and latest.seq > viewer.seq:
            # Frames came while this viewer was busy: the newest one now, none in between.
            self._start(viewer, latest, fresh=True)

    def _watch(self, viewer: Viewer) -> bool:
        """Select a viewer's socket for what it needs: readable until it says something, writable
        while behind. :return: False if the socket cannot be selected (it is gone)."""
        events = (selectors.EVENT_READ if viewer.reading else 0) | (
            selectors.EVENT_WRITE if viewer.waiting else 0
        )
        try:
            if events == viewer.events:
                return True
            if not events:
                self._selector.unregister(viewer.sock)
            elif viewer.events:
                self._selector.modify(viewer.sock, events, viewer)
            else:
                self._selector.register(viewer.sock, events, viewer)
        except (KeyError, ValueError, OSError):
            return False
        viewer.events = events
        return True

    def _readable(self, viewer: Viewer) -> None:
        """A viewer's socket is readable: it reset, half-closed, or sent bytes.

        The bytes are not the sender's: they stay for gunicorn, which closes the connection
        with the stream (``Connection: close``). A half-closed client may still be reading,
        as with the thread-per-viewer path: only a failed write ends its stream.
        """
        try:
            viewer.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            self._release(viewer)  # reset: the client is gone
            return
        viewer.reading = False  # nothing more to learn from reading: stop being woken by it
        self._watch(viewer)

    def _sweep(self) -> None:
        """Heartbeats for idle viewers, and an end for stuck or long-closing ones."""
        now = time.monotonic()
        for viewers in list(self._viewers.values()):
            for viewer in list(viewers):
                if viewer.closing_since is not None and now - viewer.closing_since > CLOSING_GRACE:
                    self._release(viewer)
                elif viewer.pending is not None:
                    if now - viewer.last_write > self._send_timeout:
                        log.info("dropping a viewer that took no data for %.0f s", self._send_timeout)
                        self._release(viewer)
                elif now - viewer.last_write >= self._heartbeat and viewer.last_frame is not None:
                    # Nothing new for a second: resend, so proxies and clients see it alive.
                    self._start(viewer, viewer.last_frame, fresh=False)

    def _release(self, viewer: Viewer) -> None:
        """Stop writing to a viewer and give its socket back to gunicorn's thread."""
        if viewer.pending is not None:
            # Half a part is out: the stream cannot end cleanly, and gunicorn's closing write
            # could block on a client that reads nothing. Cut the connection so it fails at once.
            try:
                viewer.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        viewers = self._viewers.get(viewer.broadcaster)
        if viewers is not None:
            viewers.discard(viewer)
            if not viewers:
                del self._viewers[viewer.broadcaster]
                self._chunks.pop(viewer.broadcaster, None)
                self._fanned.pop(viewer.broadcaster, None)
        if viewer.events:
            try:
                self._selector.unregister(viewer.sock)
            except (KeyError, ValueError, OSError):
                pass
            viewer.events = 0
        viewer.done.set()
