"""One capture session: the capture thread's work from a camera's switch-on to its switch-off.

The thread owns its source from open to release. It grabs every frame (so a live source
never queues up stale ones) but decodes, transforms and encodes only frames that a viewer or
a snapshot will see, and publishes each frame once to the session's broadcaster. A failing
source is retried with a capped backoff while viewers see a "no signal" placeholder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from .broadcast import Broadcaster
from .config import CameraConfig
from .frames import encode, output_size, placeholder_size, transform
from .jpeg import jpeg_size
from .pattern import no_signal
from .redaction import redact
from .source_base import Source, SourceError
from .stats import CaptureStats

log = logging.getLogger(__name__)

# A source whose every grab decodes (H.264 over RTSP, an MP4 file: FFmpeg's grab() decodes)
# is closed after this long with nobody watching, and opened again for the next viewer.
IDLE_CLOSE = 10.0
BACKOFF_MIN, BACKOFF_MAX = 0.5, 10.0
# While someone watches the placeholder, retry at least this often: a camera that comes back
# must be live again within two seconds, whatever the backoff has grown to.
WATCHED_RETRY = 1.5
PLACEHOLDER_INTERVAL = 1.0
SIZE_CHECK = 1.0  # how often an unwatched JPEG camera's frame size is looked at

Report = Callable[[str, "str | None"], None]  # (state, reason): a state change, unless stopping


class CaptureSession:
    """The capture thread of one switch-on: open, capture, retry, release, until stopped."""

    def __init__(
        self,
        config: CameraConfig,
        opener: Callable[..., Source],
        stop: threading.Event,
        broadcaster: Broadcaster,
        stats: CaptureStats,
        report: Report,
        ended: Callable[[], None],
        idle_close: float = IDLE_CLOSE,
        max_frame: int = 16 * 2**20,
    ) -> None:
        self.config = config
        self._opener = opener
        self._stop = stop
        self._broadcaster = broadcaster
        self.stats = stats
        self._report = report
        self._ended = ended  # a file that does not loop played to its end
        self._idle_close = idle_close
        self._max_frame = max_frame
        self._reason = ""  # why the source failed, and since when, for the placeholder
        self._failing_since = time.time()

    def run(self) -> None:
        """Capture until told to stop; a failing source is retried with capped backoff."""
        stop, stats = self._stop, self.stats
        backoff = BACKOFF_MIN
        while not stop.is_set():
            frames_before = stats.frames
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
                    tls_verify=self.config.tls_verify,
                )
                try:
                    outcome = self._pump(source)
                finally:
                    source.release()
                reason = "source stopped delivering frames"
            except SourceError as exc:
                reason = str(exc)
                refused = exc.refused
            except Exception as exc:  # noqa: BLE001 - a capture thread must never die silently
                log.exception("camera %s: unexpected capture failure", self.config.id)
                reason = f"capture failed: {exc}"
            if stop.is_set():
                break
            if outcome == "ended":
                self._ended()
                break
            if outcome == "idle":
                self._wait_for_viewers()
                continue
            stats.errors += 1
            if self._reason != reason or stats.frames > frames_before:
                self._failing_since = time.time()
            self._reason = reason
            self._report("error", reason)
            # A source that delivered frames earns a fresh backoff, however it ended.
            backoff = BACKOFF_MIN if stats.frames > frames_before else backoff
            try:
                # A camera refusing the credentials is not retried every second and a half
                # while watched: real cameras lock accounts after a few wrong logins.
                self._show_no_signal(backoff, watched_retry=not refused)
            except Exception:  # noqa: BLE001 - a broken placeholder must not end the retries
                log.exception("camera %s: cannot show the placeholder", self.config.id)
                stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        log.debug("camera %s: capture thread ends", self.config.id)

    def _wait_for_viewers(self) -> None:
        """Keep a costly source closed until someone watches (or the camera stops)."""
        self.stats.idle = True
        log.info(
            "camera %s (%s): nobody watching, source closed until someone does",
            self.config.id,
            self.config.name,
        )
        try:
            while not self._stop.is_set() and not self._broadcaster.wait_wanted(1.0):
                pass
        finally:
            self.stats.idle = False

    def _pump(self, source: Source) -> str:
        """Move frames from an open source to viewers until stopped, idle, ended or failed.

        :return: "stopped"; "idle" when a costly source went unwatched for a while; "ended"
            when a file that does not loop reached its end.
        :raise SourceError: the source failed.
        """
        config, stats, stop, broadcaster = self.config, self.stats, self._stop, self._broadcaster
        stats.source_size = (source.width, source.height)
        stats.passthrough = source.compressed and not (config.width or config.rotate or config.quality)
        # FFmpeg decodes in grab() whatever is not JPEG: such a source costs a decode per
        # frame even unwatched, so it is closed while nobody watches.
        costly = config.source.kind in ("url", "file") and not source.compressed
        interval = 1.0 / config.fps if config.fps else 0.0
        next_due = 0.0
        delivered = False
        last_wanted = size_seen = time.monotonic()
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
                stats.frames += 1
                if not delivered:
                    delivered = True
                    self._report("on", None)
                if interval:
                    # Drop frames to respect the cap; never sleep, a live source must be drained.
                    if now < next_due - interval * 0.25:
                        stats.dropped += 1
                        continue
                    next_due = max(next_due, now - interval) + interval
                stats.rate.tick(now)
                if not broadcaster.wanted:
                    if costly and now - last_wanted > self._idle_close:
                        return "idle"
                    if source.compressed and now - size_seen > SIZE_CHECK:
                        # Unwatched, the record still follows a change of resolution: reading
                        # a JPEG's frame header costs no decode.
                        size_seen = now
                        self._follow_size(jpeg_size(source.jpeg() or b""))
                    continue
                last_wanted = now
                jpeg = source.jpeg() if stats.passthrough else self._process(source.retrieve())
                if jpeg is None:
                    raise SourceError("frame could not be read")
                if stats.passthrough:
                    self._follow_size(jpeg_size(jpeg))
                broadcaster.publish(jpeg, timestamp)
        finally:
            self._count_rejections(source, counted)  # those that made the source give up too
        return "stopped"

    def _count_rejections(self, source: Source, counted: int) -> int:
        """Add the frames the source dropped since ``counted`` to the camera's; the new count."""
        if source.rejected != counted:
            self.stats.rejected += source.rejected - counted
            self.stats.last_rejection = source.last_rejection
        return source.rejected

    def _follow_size(self, size: tuple[int, int] | None) -> None:
        """The camera switched resolution: the record and the placeholder follow it."""
        if size is not None and size != self.stats.source_size:
            self.stats.source_size = size

    def _process(self, image: np.ndarray | None) -> bytes | None:
        """Resize, rotate and encode a decoded frame; None if it could not be decoded."""
        if image is None:
            return None
        self._follow_size((image.shape[1], image.shape[0]))
        return self._encode(transform(image, self.config.width, self.config.rotate))

    def _encode(self, image: np.ndarray) -> bytes:
        """Encode one frame to JPEG at the configured quality, counting it."""
        jpeg = encode(image, self.config.quality)
        if jpeg is None:
            raise SourceError("frame could not be encoded")
        self.stats.encoded += 1
        return jpeg

    def _show_no_signal(self, delay: float, watched_retry: bool = True) -> None:
        """Wait ``delay`` before the next attempt, showing viewers a placeholder each second."""
        stop, broadcaster, config = self._stop, self._broadcaster, self.config
        start = time.monotonic()
        deadline = start + delay
        while not stop.is_set():
            if broadcaster.wanted:
                if watched_retry:
                    deadline = min(deadline, start + WATCHED_RETRY)
                source_size = self.stats.source_size
                width, height = (
                    output_size(source_size, config.width, config.rotate)
                    if source_size
                    else placeholder_size(config.width)
                )
                reason = redact(self._reason)
                image = no_signal(width, height, config.name, reason, self._failing_since)
                broadcaster.publish(self._encode(image), time.time(), placeholder=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.wait(min(PLACEHOLDER_INTERVAL, remaining)):
                return
