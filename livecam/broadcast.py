"""Fan one camera's frames out to any number of viewers: publish, wait for the next, close.

One producer (the capture thread) publishes each frame once; viewers wait on a single
``Condition`` for a sequence number newer than the one they saw last. There is no queue per
viewer: a slow viewer simply gets the newest frame when it asks again. This interface is
the seam where a frame bus shared by several processes could plug in later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .mjpeg import make_part

log = logging.getLogger(__name__)

MILESTONES = (1, 10, 100, 1000)  # viewer counts worth a log line on the way up


class BroadcastClosed(Exception):
    """The broadcaster was closed: its camera stopped."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One published frame: its JPEG bytes and the stream part built from them, once."""

    seq: int
    timestamp: float  # capture time, Unix seconds
    jpeg: bytes
    part: bytes
    placeholder: bool = False

    @property
    def age(self) -> float:
        """Seconds since the frame was captured."""
        return time.time() - self.timestamp


class Broadcaster:
    """Latest-frame fan-out for one capture session of one camera.

    One ``Condition`` guards the sequence number, the latest frame, the closed flag and the
    viewer and waiter counts. It is notified on every publish, at close, and when the first
    viewer or waiter arrives (for a capture thread waiting in ``wait_wanted``).
    """

    def __init__(self, name: str = "broadcaster", on_wanted: Callable[[], None] | None = None) -> None:
        self.name = name  # for log lines
        self._on_wanted = on_wanted  # called (outside the lock) when the first viewer or waiter comes
        self._cond = threading.Condition()
        self._seq = 0
        self._latest: Frame | None = None
        self._closed = False
        self._viewers = 0
        self._waiters = 0  # snapshot requests waiting for a fresh frame
        self._listeners: list[Callable[[], None]] = []

    @property
    def latest(self) -> Frame | None:
        """The newest frame, or None before the first."""
        return self._latest

    @property
    def viewers(self) -> int:
        """How many stream viewers are connected."""
        return self._viewers

    @property
    def wanted(self) -> bool:
        """Whether anyone (a viewer or a snapshot) will look at the next frame."""
        return self._viewers > 0 or self._waiters > 0

    @property
    def closed(self) -> bool:
        """Whether the camera's capture session has ended."""
        return self._closed

    def publish(self, jpeg: bytes, timestamp: float, placeholder: bool = False) -> Frame:
        """Make ``jpeg`` the newest frame, framed once for every stream, and wake every viewer.

        Only one thread, the camera's capture thread, may publish.
        """
        # Framed here, outside the lock, once for all viewers.
        frame = Frame(self._seq + 1, timestamp, jpeg, make_part(jpeg, timestamp), placeholder)
        with self._cond:
            self._seq = frame.seq
            self._latest = frame
            self._cond.notify_all()
        for listener in self._listeners:
            listener()
        return frame

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (quick, never blocking) after every publish and at close."""
        with self._cond:
            self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener`` (added by add_listener); a no-op if it is not there."""
        with self._cond:
            self._listeners = [each for each in self._listeners if each != listener]

    def wait_next(self, after_seq: int, timeout: float) -> Frame | None:
        """Return the newest frame if newer than ``after_seq``, waiting up to ``timeout``.

        :return: None when no newer frame came in time.
        :raise BroadcastClosed: the camera stopped.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after_seq or self._closed, timeout)
            if self._closed:
                raise BroadcastClosed
            return self._latest if self._seq > after_seq else None

    def wait_wanted(self, timeout: float | None = None) -> bool:
        """Wait until someone wants frames or the session ends; return whether someone does."""
        with self._cond:
            self._cond.wait_for(lambda: self.wanted or self._closed, timeout)
            return self.wanted and not self._closed

    def close(self) -> None:
        """End the session: every waiting and future ``wait_next`` raises BroadcastClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for listener in self._listeners:
            listener()

    @contextmanager
    def watching(self, snapshot: bool = False) -> Iterator[None]:
        """Count the caller as a viewer (or a snapshot waiter) for the duration of the block."""
        with self._cond:
            first = not self.wanted
            if first:
                self._cond.notify_all()  # a capture thread may be waiting in wait_wanted
            if snapshot:
                self._waiters += 1
            else:
                self._viewers += 1
                if self._viewers in MILESTONES:
                    log.info("%s: %d viewer%s", self.name, self._viewers, "s" * (self._viewers > 1))
        if first and self._on_wanted is not None:
            self._on_wanted()
        try:
            yield
        finally:
            with self._cond:
                if snapshot:
                    self._waiters -= 1
                else:
                    self._viewers -= 1
                    if self._viewers == 0:
                        log.info("%s: no viewers", self.name)


class Feeds:
    """One camera's broadcasters for one capture session, one per stream profile.

    Each profile fans its own frames out on its own ``Condition``, so a viewer of one
    profile never wakes for another's frames. The feeds' own ``Condition`` serves only the
    capture side: it is notified when a profile gets its first viewer or waiter, and at close.
    """

    def __init__(self, profiles: Iterable[str], label: str = "camera") -> None:
        self._demand = threading.Condition()
        names = list(profiles)
        self._by_name = {
            name: Broadcaster(label if i == 0 else f"{label}, {name}", self._wake)
            for i, name in enumerate(names)
        }
        self.names = tuple(names)

    def __getitem__(self, profile: str) -> Broadcaster:
        return self._by_name[profile]

    def __contains__(self, profile: object) -> bool:
        return profile in self._by_name

    def items(self) -> Iterator[tuple[str, Broadcaster]]:
        """Every profile's name and broadcaster, the first (full) first."""
        return iter(self._by_name.items())

    @property
    def main(self) -> Broadcaster:
        """The first profile's broadcaster (``full``)."""
        return self._by_name[self.names[0]]

    @property
    def wanted(self) -> bool:
        """Whether any profile has a viewer or a snapshot waiter."""
        return any(b.wanted for b in self._by_name.values())

    @property
    def viewers(self) -> int:
        """Stream viewers over every profile."""
        return sum(b.viewers for b in self._by_name.values())

    @property
    def closed(self) -> bool:
        """Whether the session has ended."""
        return self.main.closed

    def _wake(self) -> None:
        with self._demand:
            self._demand.notify_all()

    def wait_wanted(self, timeout: float | None = None) -> bool:
        """Wait until some profile is wanted or the session ends; return whether one is."""
        with self._demand:
            self._demand.wait_for(lambda: self.wanted or self.closed, timeout)
            return self.wanted and not self.closed

    def close(self) -> None:
        """End the session: every stream of every profile ends."""
        for broadcaster in self._by_name.values():
            broadcaster.close()
        self._wake()
