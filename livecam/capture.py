"""A camera: its capture thread, its state (off, starting, on, error) and its counters.

The capture thread owns its source from open to release. It grabs every frame (so a live
source never queues up stale ones) but decodes, transforms and encodes only frames that a
viewer or a snapshot will see, and publishes each encoded frame once to the broadcaster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import imutils
import numpy as np

from .broadcast import BroadcastClosed, Broadcaster, Frame
from .config import CameraConfig
from .jpeg import jpeg_size
from .pattern import no_signal
from .redaction import redact
from .source_base import Source, SourceError
from .sources import open_source
from .stats import RateMeter, SendStats

log = logging.getLogger(__name__)

STATES = ("off", "starting", "on", "error")
STOP_TIMEOUT = 5.0  # longest a stop waits for the thread; a healthy source stops in one frame
# A source whose every grab decodes (H.264 over RTSP, an MP4 file: FFmpeg's grab() decodes)
# is closed after this long with nobody watching, and opened again for the next viewer.
IDLE_CLOSE = 10.0
BACKOFF_MIN, BACKOFF_MAX = 0.5, 10.0
# While someone watches the placeholder, retry at least this often: a camera that comes back
# must be live again within two seconds, whatever the backoff has grown to.
WATCHED_RETRY = 1.5
PLACEHOLDER_INTERVAL = 1.0
SNAPSHOT_FRESH = 0.25  # a frame younger than this is fresh enough for a snapshot
SNAPSHOT_TIMEOUT = 3.0
DEFAULT_QUALITY = 80
# Exact right-angle rotations; imutils.rotate_bound interpolates and shifts by a pixel.
ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


class CameraBusy(Exception):
    """The camera's previous capture thread has not let go of its source yet."""


class Camera:
    """One configured camera, switched on and off by start, stop and toggle."""

    def __init__(
        self,
        config: CameraConfig,
        opener: Callable[..., Source] = open_source,
        idle_close: float = IDLE_CLOSE,
        max_frame: int = 16 * 2**20,
    ) -> None:
        self.config = config
        self._opener = opener
        self._idle_close = idle_close
        self._max_frame = max_frame
        self._control = threading.RLock()  # serialises start/stop/toggle
        self._state_lock = threading.Lock()  # pairs a stop request with the state it sets
        self._running = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._broadcaster = Broadcaster()
        self._broadcaster.close()
        self.state = "off"
        self.since = time.time()
        self.error: str | None = None
        self.source_size: tuple[int, int] | None = None
        self.passthrough = False  # forwarding the camera's own JPEGs, no decode or encode
        self.idle = False  # its costly source is closed until someone watches
        self.frames = 0  # frames captured from the source
        self.encoded = 0  # frames encoded to JPEG
        self.dropped = 0  # frames dropped by the fps cap
        self.errors = 0  # source failures
        self.rejected = 0  # frames the source dropped: not whole JPEGs, or beyond the size cap
        self.last_rejection: str | None = None  # why the last one was dropped
        self._rate = RateMeter()
        self.sends = SendStats()  # bytes and latency of what viewers were sent

    @property
    def id(self) -> int:
        """The camera's id."""
        return self.config.id

    @property
    def broadcaster(self) -> Broadcaster:
        """The current capture session's broadcaster (closed while off)."""
        return self._broadcaster

    @property
    def is_on(self) -> bool:
        """Whether the camera is switched on (starting, on or failing)."""
        return self._running

    # -- control ------------------------------------------------------------------

    def start(self) -> None:
        """Switch on: start the capture thread unless it runs already."""
        with self._control:
            if self._running:
                return
            self._reap()
            if self._thread is not None:
                raise CameraBusy(f"camera {self.id} is still releasing its source")
            self._stop = threading.Event()
            self._broadcaster = Broadcaster(f"camera {self.id} ({self.config.name})")
            self._running = True
            self._set_state("starting", None, self._stop)
            self._thread = threading.Thread(
                target=self._run,
                args=(self._stop, self._broadcaster),
                name=f"livecam-capture-{self.id}",
                daemon=True,
            )
            self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Switch off: end every stream, stop the thread and, with ``wait``, join it."""
        with self._control:
            if self._running:
                self._running = False
                with self._state_lock:
                    self._stop.set()
                    self._change("off", None)
                self._broadcaster.close()
            if wait:
                self._reap()

    def toggle(self) -> None:
        """Flip between on and off, atomically with respect to other control calls."""
        with self._control:
            if self._running:
                self.stop()
            else:
                self.start()

    def join(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Wait up to ``timeout`` for a stopping capture thread; return whether it has ended."""
        deadline = time.monotonic() + timeout
        if not self._control.acquire(timeout=timeout):  # a switch is under way: do not queue
            return False
        try:
            self._reap(max(0.0, deadline - time.monotonic()))
            return self._thread is None
        finally:
            self._control.release()

    def _reap(self, timeout: float = STOP_TIMEOUT) -> None:
        """Join a stopping capture thread, bounded; forget it once it has ended."""
        thread = self._thread
        if thread is None or self._running:
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("camera %s: capture thread still busy after %.1f s", self.id, timeout)
        else:
            self._thread = None

    # -- state --------------------------------------------------------------------

    def _set_state(self, state: str, error: str | None, stop: threading.Event) -> None:
        """Record a state change made by a capture session, unless it was told to stop."""
        with self._state_lock:
            if not stop.is_set():
                self._change(state, error)

    def _change(self, state: str, error: str | None) -> None:
        # Every reason passes here on its way to the record, the log and the placeholder.
        error = redact(error) if error else error
        if state == self.state and error == self.error:
            return
        previous, self.state, self.error, self.since = self.state, state, error, time.time()
        if state == "error":
            log.warning("camera %s (%s): %s", self.id, self.config.name, error)
        elif previous == "error" and state == "on":
            log.info("camera %s (%s): source is back", self.id, self.config.name)
        else:
            log.info("camera %s (%s): %s", self.id, self.config.name, state)

    @property
    def fps(self) -> float:
        """Measured frames per second after the fps cap."""
        return self._rate.rate() if self.state == "on" else 0.0

    @property
    def size(self) -> tuple[int, int] | None:
        """Width and height of the frames viewers get, once the source's size is known."""
        if self.source_size is None:
            return None
        width, height = self.source_size
        if self.config.width and self.config.width != width:
            # The same arithmetic as imutils.resize.
            width, height = self.config.width, int(height * self.config.width / float(width))
        if self.config.rotate in (90, 270):
            width, height = height, width
        return width, height

    def status(self) -> dict[str, Any]:
        """The camera's JSON record."""
        size = self.size
        return {
            "id": self.id,
            "name": self.config.name,
            "source": redact(str(self.config.source)),
            "kind": self.config.source.kind,
            "test_pattern": self.config.source.kind == "testsrc",
            "state": self.state,
            "since": round(self.since, 3),
            "error": self.error,
            "fps": round(self.fps, 2),
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "viewers": self._broadcaster.viewers,
            "frames": self.frames,
            "encoded": self.encoded,
            "dropped": self.dropped,
            "errors": self.errors,
            "rejected": self.rejected,
            "last_rejection": self.last_rejection,
            "passthrough": bool(self.passthrough and self.state == "on"),
            "idle": bool(self.idle and self.state == "on"),
        }

    # -- frames for viewers ---------------------------------------------------------

    def snapshot(self, timeout: float = SNAPSHOT_TIMEOUT) -> Frame | None:
        """A fresh live frame, waiting up to ``timeout`` for one; None if none comes."""
        broadcaster = self._broadcaster
        latest = broadcaster.latest
        if latest is not None and not latest.placeholder and latest.age <= SNAPSHOT_FRESH:
            return latest
        deadline = time.monotonic() + timeout
        seq = latest.seq if latest is not None else 0
        with broadcaster.watching(snapshot=True):
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    frame = broadcaster.wait_next(seq, remaining)
                except BroadcastClosed:
                    return None
                if frame is None or frame.placeholder:
                    return None
                return frame
        return None

    # -- the capture thread ---------------------------------------------------------

    def _run(self, stop: threading.Event, broadcaster: Broadcaster) -> None:
        """Capture until told to stop; a failing source is retried with capped backoff."""
        backoff = BACKOFF_MIN
        while not stop.is_set():
            frames_before = self.frames
            refused = False
            outcome = "failed"
            try:
                source = self._opener(
                    self.config.source,
                    self.config.name,
                    stop,
                    width=self.config.width,
                    loop=self.config.loop,
                    size=self.config.size,
                    fps=self.config.fps,
                    max_frame=self._max_frame,
                )
                try:
                    outcome = self._pump(source, stop, broadcaster)
                finally:
                    source.release()
                reason = "source stopped delivering frames"
            except SourceError as exc:
                reason = str(exc)
                refused = getattr(exc, "refused", False)
            except Exception as exc:  # noqa: BLE001 - a capture thread must never die silently
                log.exception("camera %s: unexpected capture failure", self.id)
                reason = f"capture failed: {exc}"
            if stop.is_set():
                break
            if outcome == "ended":
                self._end_of_file(stop, broadcaster)
                break
            if outcome == "idle":
                self._wait_for_viewers(stop, broadcaster)
                continue
            self.errors += 1
            self._set_state("error", reason, stop)
            # A source that delivered frames earns a fresh backoff, however it ended.
            backoff = BACKOFF_MIN if self.frames > frames_before else backoff
            try:
                # A camera refusing the credentials is not retried every second and a half
                # while watched: real cameras lock accounts after a few wrong logins.
                self._show_no_signal(stop, broadcaster, backoff, watched_retry=not refused)
            except Exception:  # noqa: BLE001 - a broken placeholder must not end the retries
                log.exception("camera %s: cannot show the placeholder", self.id)
                stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        log.debug("camera %s: capture thread ends", self.id)

    def _end_of_file(self, stop: threading.Event, broadcaster: Broadcaster) -> None:
        """A file that does not loop has played to its end: switch the camera off."""
        with self._state_lock:
            if stop.is_set():
                return
            stop.set()
            self._running = False
            log.info("camera %s (%s): the file has played to its end", self.id, self.config.name)
            self._change("off", None)
        broadcaster.close()

    def _wait_for_viewers(self, stop: threading.Event, broadcaster: Broadcaster) -> None:
        """Keep a costly source closed until someone watches (or the camera stops)."""
        self.idle = True
        log.info(
            "camera %s (%s): nobody watching, source closed until someone does", self.id, self.config.name
        )
        try:
            while not stop.is_set() and not broadcaster.wait_wanted(1.0):
                pass
        finally:
            self.idle = False

    def _pump(self, source: Source, stop: threading.Event, broadcaster: Broadcaster) -> str:
        """Move frames from an open source to viewers until stopped, idle, ended or failed.

        :return: "stopped"; "idle" when a costly source went unwatched for a while; "ended"
            when a file that does not loop reached its end.
        :raise SourceError: the source failed.
        """
        self.source_size = (source.width, source.height)
        config = self.config
        self.passthrough = source.compressed and not (config.width or config.rotate or config.quality)
        # FFmpeg decodes in grab() whatever is not JPEG: such a source costs a decode per
        # frame even unwatched, so it is closed while nobody watches.
        costly = config.source.kind in ("url", "file") and not source.compressed
        interval = 1.0 / self.config.fps if self.config.fps else 0.0
        next_due = 0.0
        delivered = False
        last_wanted = time.monotonic()
        counted = 0  # the source's rejections already added to the camera's
        try:
            while not stop.is_set():
                grabbed = source.grab()
                counted = self._count_rejections(source, counted)
                if not grabbed:
                    if stop.is_set():
                        break
                    if config.source.kind == "file" and not config.loop and delivered:
                        return "ended"
                    raise SourceError("source stopped delivering frames")
                timestamp = time.time()
                now = time.monotonic()
                self.frames += 1
                if not delivered:
                    delivered = True
                    self._set_state("on", None, stop)
                if interval:
                    # Drop frames to respect the cap; never sleep, a live source must be drained.
                    if now < next_due - interval * 0.25:
                        self.dropped += 1
                        continue
                    next_due = max(next_due, now - interval) + interval
                self._rate.tick(now)
                if not broadcaster.wanted:
                    if costly and now - last_wanted > self._idle_close:
                        return "idle"
                    continue
                last_wanted = now
                jpeg = source.jpeg() if self.passthrough else self._process(source.retrieve())
                if jpeg is None:
                    raise SourceError("frame could not be read")
                if self.passthrough:
                    self._follow_size(jpeg_size(jpeg))
                broadcaster.publish(jpeg, timestamp)
        finally:
            self._count_rejections(source, counted)  # those that made the source give up too
        return "stopped"

    def _count_rejections(self, source: Source, counted: int) -> int:
        """Add the frames the source dropped since ``counted`` to the camera's; the new count."""
        if source.rejected != counted:
            self.rejected += source.rejected - counted
            self.last_rejection = source.last_rejection
        return source.rejected

    def _follow_size(self, size: tuple[int, int] | None) -> None:
        """The camera switched resolution: the record and the placeholder follow it."""
        if size is not None and size != self.source_size:
            self.source_size = size

    def _process(self, image: np.ndarray | None) -> bytes | None:
        """Resize, rotate and encode a decoded frame; None if it could not be decoded."""
        if image is None:
            return None
        self._follow_size((image.shape[1], image.shape[0]))
        return self._encode(self._transform(image))

    def _transform(self, image: np.ndarray) -> np.ndarray:
        """Apply the configured resize and rotation."""
        if self.config.width and image.shape[1] != self.config.width:
            image = imutils.resize(image, width=self.config.width)
        if self.config.rotate:
            image = cv2.rotate(image, ROTATIONS[self.config.rotate])
        return image

    def _encode(self, image: np.ndarray) -> bytes:
        """Encode one frame to JPEG at the configured quality."""
        quality = self.config.quality or DEFAULT_QUALITY
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise SourceError("frame could not be encoded")
        self.encoded += 1
        return buffer.tobytes()

    def _default_size(self) -> tuple[int, int]:
        """A 4:3 size for a placeholder shown before the source ever delivered a frame."""
        width = self.config.width or 640
        return width, width * 3 // 4

    def _show_no_signal(
        self, stop: threading.Event, broadcaster: Broadcaster, delay: float, watched_retry: bool = True
    ) -> None:
        """Wait ``delay`` before the next attempt, showing viewers a placeholder each second."""
        start = time.monotonic()
        deadline = start + delay
        while not stop.is_set():
            if broadcaster.wanted:
                if watched_retry:
                    deadline = min(deadline, start + WATCHED_RETRY)
                width, height = self.size or self._default_size()
                image = no_signal(width, height, self.config.name, self.error or "", self.since)
                jpeg = self._encode(image)
                now = time.time()
                broadcaster.publish(jpeg, now, placeholder=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.wait(min(PLACEHOLDER_INTERVAL, remaining)):
                return
