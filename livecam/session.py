"""One capture session: the capture thread's work from a camera's switch-on to its switch-off.

The thread owns its source from open to release. It grabs every frame (so a live source
never queues up stale ones) but decodes, transforms and encodes only frames that a viewer or
a snapshot will see: each frame is decoded at most once, encoded once for each stream
profile that has viewers (and is due by its fps cap), and published once to that profile's
broadcaster. A failing source is retried with a capped backoff while viewers see a "no
signal" placeholder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from .broadcast import Broadcaster, Feeds
from .config import FULL, CameraConfig, Profile
from .frames import decode, encode, no_signal_image, stream_size, stream_width, transform
from .jpeg import jpeg_size
from .redaction import redact
from .source_base import Skimming, Source, SourceError
from .stats import CaptureStats
from .watcher import MotionWatch

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
UNWATCHED_READ = 0.2  # seconds between reads of a camera nobody watches that can be skimmed

Report = Callable[[str, "str | None"], None]  # (state, reason): a state change, unless stopping


class Pacer:
    """Keeps a stream at or under an fps cap by dropping frames, never by sleeping."""

    def __init__(self, fps: float | None) -> None:
        self.interval = 1.0 / fps if fps else 0.0
        self._next_due = 0.0

    def due(self, now: float) -> bool:
        """Whether a frame at monotonic time ``now`` is kept (and counted as the latest kept)."""
        if not self.interval:
            return True
        if not self._next_due:  # the first frame
            self._next_due = now + self.interval
            return True
        # A quarter interval of slack: a source at exactly the cap keeps every frame. Credit
        # for one late frame is kept, so a 30 fps source capped at 20 keeps 20, not 15.
        if now < self._next_due - self.interval * 0.25:
            return False
        self._next_due = max(self._next_due, now - self.interval) + self.interval
        return True


class ProfileFeed:
    """A profile other than full as the capture thread serves it: its viewers and its pace."""

    def __init__(self, profile: Profile, broadcaster: Broadcaster) -> None:
        self.profile = profile
        self.broadcaster = broadcaster
        self.pacer = Pacer(profile.fps)


class CaptureSession:
    """The capture thread of one switch-on: open, capture, retry, release, until stopped."""

    def __init__(
        self,
        config: CameraConfig,
        opener: Callable[..., Source],
        stop: threading.Event,
        feeds: Feeds,
        stats: CaptureStats,
        report: Report,
        ended: Callable[[], None],
        idle_close: float = IDLE_CLOSE,
        max_frame: int = 16 * 2**20,
        motion: MotionWatch | None = None,
    ) -> None:
        """:param motion: the camera's motion watch, fed at its own rate whoever watches."""
        self.config = config
        self._motion = motion
        self._opener = opener
        self._stop = stop
        self._feeds = feeds
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
                source = self._open()
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
            if self._motion is not None:
                self._motion.interrupted()  # no more pictures: an event under way ends
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

    def _open(self) -> Source:
        """Open the camera's source; frames it dropped on the way count even if the open fails.

        :raise SourceError: the source cannot be opened.
        """
        config = self.config
        try:
            return self._opener(
                config.source,
                config.name,
                self._stop,
                width=config.width,
                loop=config.loop,
                size=config.size,
                fps=config.fps,
                max_frame=self._max_frame,
                tls_verify=config.tls_verify,
            )
        except SourceError as error:
            if error.rejected:
                self.stats.rejected += error.rejected
                self.stats.last_rejection = error.last_rejection
            raise

    def _wait_for_viewers(self) -> None:
        """Keep a costly source closed until someone watches (or the camera stops)."""
        self.stats.idle = True
        log.info(
            "camera %s (%s): nobody watching, source closed until someone does",
            self.config.id,
            self.config.name,
        )
        try:
            while not self._stop.is_set() and not self._feeds.wait_wanted(1.0):
                pass
        finally:
            self.stats.idle = False

    def _pump(self, source: Source) -> str:
        """Move frames from an open source to viewers until stopped, idle, ended or failed.

        :return: "stopped"; "idle" when a costly source went unwatched for a while; "ended"
            when a file that does not loop reached its end.
        :raise SourceError: the source failed.
        """
        config, stats, stop, feeds = self.config, self.stats, self._stop, self._feeds
        stats.source_size = (source.width, source.height)
        stats.passthrough = source.compressed and not (config.width or config.rotate or config.quality)
        # FFmpeg decodes in grab() whatever is not JPEG: such a source costs a decode per
        # frame even unwatched, so it is closed while nobody watches.
        costly = config.source.kind in ("url", "file") and not source.compressed and self._motion is None
        pacer = Pacer(config.fps)  # the camera's cap: every profile's frames come from these
        others = [ProfileFeed(p, feeds[name]) for name, p in config.profiles.items() if name != FULL]
        delivered = False
        last_wanted = size_seen = time.monotonic()
        counted = 0  # the source's rejections already added to the camera's
        # Nobody watching a camera that sends JPEG over plain HTTP, its frames are left to
        # gather in the socket and read a few times a second, one after another: waking at
        # every frame cost three times what reading the socket costs. (Not under an fps cap,
        # which keeps frames by when they come, nor for motion, which looks at each.)
        plain = not pacer.interval and self._motion is None
        skimmer = source if isinstance(source, Skimming) and source.skims and plain else None
        try:
            while not stop.is_set():
                # Only after the first frame, which says "on" at once, and only when nothing
                # more has arrived.
                if skimmer is not None and delivered and not feeds.wanted and not skimmer.arrived():
                    feeds.wait_wanted(UNWATCHED_READ)  # at once when someone comes
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
                if not pacer.due(now):
                    stats.dropped += 1
                    continue
                stats.rate.tick(now)
                image = None
                if feeds.wanted:
                    last_wanted = now
                    image = self._deliver(source, timestamp, now, others)
                elif costly and now - last_wanted > self._idle_close:
                    return "idle"
                elif source.compressed and now - size_seen > SIZE_CHECK:
                    # Unwatched, the record still follows a change of resolution: reading
                    # a JPEG's frame header costs no decode.
                    size_seen = now
                    self._follow_size(jpeg_size(source.jpeg() or b""))
                if self._motion is not None and self._motion.due(now):
                    self._look(source, image)
        finally:
            self._count_rejections(source, counted)  # those that made the source give up too
        return "stopped"

    def _look(self, source: Source, image: np.ndarray | None) -> None:
        """Show the frame just grabbed to the motion watch: the camera's JPEG small and gray
        when it sends JPEG, else the pixels decoded for viewers, else retrieved for it."""
        assert self._motion is not None
        width = self.stats.source_size[0] if self.stats.source_size else 640
        jpeg = (lambda: source.jpeg()) if source.compressed else (lambda: None)
        pixels = (lambda: image) if image is not None else (lambda: self._motion_pixels(source))
        self._motion.look(time.monotonic(), jpeg, pixels, width)

    def _motion_pixels(self, source: Source) -> np.ndarray | None:
        """The frame's pixels for motion alone (not counted as a decode for viewers); None for
        a JPEG camera whose JPEG did not decode."""
        return None if source.compressed else source.retrieve()

    def _deliver(
        self, source: Source, timestamp: float, now: float, others: list[ProfileFeed]
    ) -> np.ndarray | None:
        """Publish the frame just grabbed to every profile that wants it now: decoded at most
        once, encoded once per profile, and the full stream passed through where it can be.
        Returns the pixels when it decoded them (the motion watch may use them)."""
        config, stats = self.config, self.stats
        image: np.ndarray | None = None
        full = self._feeds[FULL]
        if full.wanted:
            if stats.passthrough:
                jpeg = source.jpeg()
                if jpeg is None:
                    raise SourceError("frame could not be read")
                self._follow_size(jpeg_size(jpeg))
            else:
                image = self._pixels(source, None)
                jpeg = self._encode(transform(image, config.width, config.rotate), config.quality, FULL)
            self._publish(FULL, full, jpeg, timestamp, now)
        due = [feed for feed in others if feed.broadcaster.wanted and feed.pacer.due(now)]
        if not due:
            return image
        source_width = stats.source_size[0] if stats.source_size else 0
        widths = [stream_width(config, feed.profile, source_width) for feed in due]
        if image is None:
            # Only smaller streams want this frame: decode no more pixels than they need.
            image = self._pixels(source, None if None in widths else max(w or 0 for w in widths))
        for feed, width in zip(due, widths, strict=True):
            name = feed.profile.name
            small = transform(image, width, config.rotate, stats.source_size)
            jpeg = self._encode(small, feed.profile.quality, name)
            self._publish(name, feed.broadcaster, jpeg, timestamp, now)
        return image

    def _pixels(self, source: Source, widest: int | None) -> np.ndarray:
        """The frame just grabbed as pixels, at least ``widest`` wide (None: full size).

        :raise SourceError: it could not be decoded.
        """
        image: np.ndarray | None = None
        if source.compressed:
            jpeg = source.jpeg()
            size = jpeg_size(jpeg) if jpeg else None
            if jpeg and size:
                self._follow_size(size)
                image = decode(jpeg, size[0], widest)
        else:
            image = source.retrieve()
            if image is not None:
                self._follow_size((image.shape[1], image.shape[0]))
        if image is None:
            raise SourceError("frame could not be read")
        self.stats.decoded += 1
        return image

    def _publish(self, profile: str, broadcaster: Broadcaster, jpeg: bytes, stamp: float, now: float) -> None:
        """Hand one frame of ``profile`` to its viewers, counting it."""
        broadcaster.publish(jpeg, stamp)
        self.stats.profile(profile).rate.tick(now)

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

    def _encode(self, image: np.ndarray, quality: int | None, profile: str) -> bytes:
        """Encode one frame of ``profile`` to JPEG at ``quality``, counting it."""
        jpeg = encode(image, quality)
        if jpeg is None:
            raise SourceError("frame could not be encoded")
        self.stats.encoded += 1
        self.stats.profile(profile).encoded += 1
        return jpeg

    def _show_no_signal(self, delay: float, watched_retry: bool = True) -> None:
        """Wait ``delay`` before the next attempt, showing viewers a placeholder each second."""
        stop, feeds, config = self._stop, self._feeds, self.config
        start = time.monotonic()
        deadline = start + delay
        while not stop.is_set():
            if feeds.wanted:
                if watched_retry:
                    deadline = min(deadline, start + WATCHED_RETRY)
                reason = redact(self._reason)
                for name, broadcaster in feeds.items():
                    if broadcaster.wanted:
                        profile = config.profiles[name]
                        known = (
                            stream_size(config, profile, self.stats.source_size)
                            if self.stats.source_size
                            else None
                        )
                        image = no_signal_image(config, profile, known, reason, self._failing_since)
                        broadcaster.publish(self._encode(image, None, name), time.time(), placeholder=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.wait(min(PLACEHOLDER_INTERVAL, remaining)):
                return
