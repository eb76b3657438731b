"""Small thread-safe measurements for the capture and stream paths: counts, rates, latencies."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field

# Capture-to-send latency buckets in seconds, fine where MJPEG over a LAN lives.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RateMeter:
    """Frames per second over a sliding window, fed by one thread and read by any."""

    def __init__(self, window: float = 2.0) -> None:
        self._window = window
        self._ticks: deque[float] = deque(maxlen=512)

    def tick(self, now: float) -> None:
        """Count one frame at monotonic time ``now``."""
        self._ticks.append(now)

    def rate(self, now: float | None = None) -> float:
        """Frames per second over the last window; 0 when frames stopped."""
        now = time.monotonic() if now is None else now
        recent = [t for t in list(self._ticks) if now - t <= self._window]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])


class SendStats:
    """What the viewers of one camera were sent: bytes, and each new frame's latency."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS, total: SendStats | None = None) -> None:
        self.buckets = buckets
        self._total = total  # a camera's stats over every profile, told of each send too
        self._lock = threading.Lock()
        self.bytes = 0
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.latency_sum = 0.0

    def sent(self, size: int, latency: float | None, count: int = 1) -> None:
        """Record a part written to ``count`` viewers; ``latency`` is None for a heartbeat."""
        if self._total is not None:
            self._total.sent(size, latency, count)
        with self._lock:
            self.bytes += size * count
            if latency is None:
                return
            self.latency_sum += latency * count
            self.counts[bisect_left(self.buckets, latency)] += count

    def snapshot(self) -> tuple[int, list[int], float]:
        """Bytes sent, latency counts per bucket, and their sum, read consistently."""
        with self._lock:
            return self.bytes, list(self.counts), self.latency_sum


@dataclass
class ProfileStats:
    """One stream profile's share of the capture thread's work."""

    encoded: int = 0  # frames encoded to JPEG for this profile
    rate: RateMeter = field(default_factory=RateMeter)  # frames per second published to it


@dataclass
class CaptureStats:
    """What a camera's capture thread counts and learns; it alone writes, the record reads."""

    frames: int = 0  # frames captured from the source
    decoded: int = 0  # frames turned into pixels (once per frame, whatever the profiles)
    encoded: int = 0  # frames encoded to JPEG, over every profile
    dropped: int = 0  # frames dropped by the fps cap
    errors: int = 0  # source failures
    rejected: int = 0  # frames the source dropped: not whole JPEGs, or beyond the size cap
    last_rejection: str | None = None  # why the last one was dropped
    source_size: tuple[int, int] | None = None  # the source's frame size, once known
    passthrough: bool = False  # forwarding the camera's own JPEGs, no decode or encode
    idle: bool = False  # its costly source is closed until someone watches
    rate: RateMeter = field(default_factory=RateMeter)  # frames per second after the fps cap
    profiles: dict[str, ProfileStats] = field(default_factory=dict)  # made by the capture thread

    def profile(self, name: str) -> ProfileStats:
        """The stats of the profile ``name``, made on first use."""
        stats = self.profiles.get(name)
        if stats is None:
            stats = self.profiles[name] = ProfileStats()
        return stats
