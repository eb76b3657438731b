"""A camera: switched on and off, its state (off, starting, on, error), its record, snapshots.

Each switch-on starts a capture thread running one CaptureSession (session.py), with feeds of
its own (a broadcaster per stream profile); switching off stops the thread and closes them,
which ends every stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .broadcast import BroadcastClosed, Broadcaster, Feeds, Frame
from .config import FULL, CameraConfig
from .events import EventLog
from .frames import output_size, stream_size
from .record import CameraBusy, profile_record, record
from .redaction import redact
from .session import IDLE_CLOSE, CaptureSession
from .source_base import Source, StopSignal
from .sources import open_source
from .stats import CaptureStats, ProfileStats, SendStats
from .watcher import MotionWatch

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # longest a stop waits for the thread; a healthy source stops in one frame
SNAPSHOT_FRESH = 0.25  # a frame younger than this is fresh enough for a snapshot
SNAPSHOT_TIMEOUT = 3.0


class Camera:
    """One configured camera, switched on and off by start, stop and toggle."""

    def __init__(
        self,
        config: CameraConfig,
        opener: Callable[..., Source] = open_source,
        idle_close: float = IDLE_CLOSE,
        max_frame: int = 16 * 2**20,
        events: EventLog | None = None,
    ) -> None:
        """:param events: where its state changes (and motion, when enabled) are noted."""
        self.config = config
        self._events = events
        self.motion = MotionWatch(config, events) if events is not None and config.motion.enabled else None
        self._opener = opener
        self._idle_close = idle_close
        self._max_frame = max_frame
        # Serialises start/stop/toggle; held while a stop joins the thread.
        self._control = threading.RLock()
        # Guards state, error, since and _running against the capture thread's reports, so
        # that a report from a thread told to stop never overwrites "off".
        self._state_lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._feeds = Feeds(config.profiles)
        self._feeds.close()
        self.state = "off"
        self.since = time.time()
        self.error: str | None = None
        # Written by the capture thread alone.
        self.stats = CaptureStats(profiles={name: ProfileStats() for name in config.profiles})
        self.sends = SendStats()  # bytes and latency of what viewers were sent, every profile
        self.profile_sends = {name: SendStats(total=self.sends) for name in config.profiles}

    @property
    def id(self) -> int:
        """The camera's id."""
        return self.config.id

    def rename(self, name: str) -> None:
        """Give the camera a new name, at once, without reopening its source."""
        self.config = replace(self.config, name=name)
        if self.motion is not None:
            self.motion.config = self.config

    @property
    def broadcaster(self) -> Broadcaster:
        """The current capture session's broadcaster of the full stream (closed while off)."""
        return self._feeds[FULL]

    @property
    def feeds(self) -> Feeds:
        """The current capture session's broadcasters, one per profile (closed while off)."""
        return self._feeds

    @property
    def is_on(self) -> bool:
        """Whether the camera is switched on (starting, on or failing)."""
        return self._running

    @property
    def frames(self) -> int:
        """Frames captured from the source so far."""
        return self.stats.frames

    @property
    def encoded(self) -> int:
        """Frames encoded to JPEG so far."""
        return self.stats.encoded

    @property
    def dropped(self) -> int:
        """Frames dropped by the fps cap so far."""
        return self.stats.dropped

    @property
    def errors(self) -> int:
        """Times the source failed so far."""
        return self.stats.errors

    @property
    def idle(self) -> bool:
        """Whether its costly source is closed until someone watches."""
        return self.stats.idle

    # -- control ------------------------------------------------------------------

    def start(self) -> None:
        """Switch on: start the capture thread unless it runs already."""
        with self._control:
            if self._running:
                return
            self._reap()
            if self._thread is not None:
                raise CameraBusy(f"camera {self.id} is still releasing its source")
            # A StopSignal, so that a switch-off also wakes a read stalled on a silent camera.
            stop = self._stop = StopSignal()
            feeds = self._feeds = Feeds(self.config.profiles, f"camera {self.id} ({self.config.name})")
            self._running = True
            self._set_state("starting", None, stop)
            session = CaptureSession(
                self.config,
                self._opener,
                stop,
                feeds,
                self.stats,
                report=lambda state, error: self._set_state(state, error, stop),
                ended=lambda: self._end_of_file(stop, feeds),
                idle_close=self._idle_close,
                max_frame=self._max_frame,
                motion=self.motion,
            )
            self._thread = threading.Thread(
                target=session.run, name=f"livecam-capture-{self.id}", daemon=True
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
                self._feeds.close()
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
        if self._events is not None:
            self._events.add(
                "camera.state", self.id, self.config.name, state=state, error=error, previous=previous
            )
        if state == "error":
            log.warning("camera %s (%s): %s", self.id, self.config.name, error)
        elif previous == "error" and state == "on":
            log.info("camera %s (%s): source is back", self.id, self.config.name)
        else:
            log.info("camera %s (%s): %s", self.id, self.config.name, state)

    def _end_of_file(self, stop: threading.Event, feeds: Feeds) -> None:
        """A file that does not loop has played to its end: the camera switches itself off."""
        with self._state_lock:
            if stop.is_set():
                return
            stop.set()
            self._running = False
            log.info("camera %s (%s): the file has played to its end", self.id, self.config.name)
            self._change("off", None)
        feeds.close()

    @property
    def fps(self) -> float:
        """Measured frames per second after the fps cap."""
        return self.stats.rate.rate() if self.state == "on" else 0.0

    @property
    def size(self) -> tuple[int, int] | None:
        """Width and height of the frames viewers get, once the source's size is known."""
        source_size = self.stats.source_size
        return output_size(source_size, self.config.width, self.config.rotate) if source_size else None

    def status(self) -> dict[str, Any]:
        """The camera's JSON record."""
        size, stats = self.size, self.stats
        return record(
            self.config,
            state=self.state,
            since=round(self.since, 3),
            error=self.error,
            fps=round(self.fps, 2),
            width=size[0] if size else None,
            height=size[1] if size else None,
            viewers=self._feeds.viewers,
            frames=stats.frames,
            decoded=stats.decoded,
            encoded=stats.encoded,
            dropped=stats.dropped,
            errors=stats.errors,
            rejected=stats.rejected,
            last_rejection=stats.last_rejection,
            passthrough=bool(stats.passthrough and self.state == "on"),
            idle=bool(stats.idle and self.state == "on"),
            bus_rejected=0,
            bus_dropped=0,
            motion=self.motion is not None,
            motion_active=bool(self.motion is not None and self.motion.active and self.state == "on"),
            profiles=self._profiles(),
        )

    def _profiles(self) -> dict[str, dict[str, Any]]:
        """Each stream profile's settings, size, viewers, fps, frames encoded and bytes sent."""
        source_size, on = self.stats.source_size, self.state == "on"
        result = {}
        for name, profile in self.config.profiles.items():
            size = stream_size(self.config, profile, source_size) if source_size else None
            stats = self.stats.profiles[name]
            result[name] = profile_record(
                width=size[0] if size else None,
                height=size[1] if size else None,
                max_fps=profile.fps,
                quality=profile.quality,
                viewers=self._feeds[name].viewers,
                fps=round(stats.rate.rate(), 2) if on else 0.0,
                encoded=stats.encoded,
                bytes=self.profile_sends[name].snapshot()[0],
            )
        return result

    # -- frames for viewers ---------------------------------------------------------

    def snapshot(self, timeout: float = SNAPSHOT_TIMEOUT, profile: str = FULL) -> Frame | None:
        """A fresh live frame of ``profile``, waiting up to ``timeout`` for one; None if none comes."""
        return fresh_frame(self._feeds[profile], timeout)


def fresh_frame(broadcaster: Broadcaster, timeout: float = SNAPSHOT_TIMEOUT) -> Frame | None:
    """A fresh live frame of ``broadcaster``, waiting up to ``timeout`` for one (as a snapshot
    waiter, which makes its source encode one); None if none comes or only a placeholder."""
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
