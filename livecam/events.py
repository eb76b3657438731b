"""What livecam noticed: one event model, the events kept in memory, and their fan-out.

Every event (motion starts and ends, a camera's state changes) is an Event with an increasing
id, appended to the EventLog. The log keeps the last events (MAX_EVENTS in all, and at least
PER_CAMERA of each camera, so a busy camera never pushes a quiet one's out) and the JPEG of
each motion event within a byte budget. Outputs (the SSE stream, webhooks, MQTT, the frame
bus) follow it the way viewers follow a broadcaster: one Condition and the last id; each
asks for what came after the id it has seen, and never makes anyone else wait.

Ids are microseconds since the epoch, kept increasing within a process: an id a browser saw
before livecam restarted still resumes at the right place, and in bus mode the ids of events
from several capture processes still order them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_EVENTS = 1000  # events kept in all
PER_CAMERA = 20  # events kept of each camera, however busy the others
SNAPSHOT_BUDGET = 64 * 2**20  # bytes of event JPEGs kept; older ones are let go first
TYPES = ("motion.start", "motion.end", "camera.state")


@dataclass(frozen=True)
class Event:
    """Something livecam noticed about a camera."""

    id: int
    type: str  # one of TYPES
    camera: int
    name: str  # the camera's name
    time: float  # Unix seconds
    data: dict[str, Any] = field(default_factory=dict)  # motion: score, box; state: state, error
    snapshot: bytes | None = field(default=None, repr=False, compare=False)  # motion: its JPEG

    def json(self) -> dict[str, Any]:
        """The event as JSON: id, type, camera, name, time, then its own fields."""
        body = {"id": self.id, "type": self.type, "camera": self.camera, "name": self.name, "time": self.time}
        return {**body, **self.data, "snapshot": self.snapshot is not None}


class EventLog:
    """The last events, kept in memory, and a wait for the next ones."""

    def __init__(
        self, max_events: int = MAX_EVENTS, per_camera: int = PER_CAMERA, budget: int = SNAPSHOT_BUDGET
    ) -> None:
        # One Condition guards everything below and wakes every waiter at each new event.
        self._changed = threading.Condition()
        self._recent: deque[Event] = deque(maxlen=max_events)
        self._by_camera: dict[int, deque[Event]] = {}
        self._per_camera = per_camera
        self._budget = budget
        self._snapshots: dict[int, bytes] = {}  # event id -> JPEG, oldest first
        self._snapshot_bytes = 0
        self._last_id = 0
        self._closed = False
        self._listeners: list[Callable[[Event], None]] = []

    @property
    def kept_bytes(self) -> int:
        """Bytes of event pictures kept."""
        return self._snapshot_bytes

    @property
    def last_id(self) -> int:
        """The id of the newest event (0 before the first)."""
        return self._last_id

    def add(self, kind: str, camera: int, name: str, snapshot: bytes | None = None, **data: Any) -> Event:
        """Note a new event now, give it the next id, and wake whoever waits for one."""
        with self._changed:
            event_id = max(self._last_id + 1, time.time_ns() // 1000)
            event = Event(event_id, kind, camera, name, round(time.time(), 6), data, snapshot)
            self._keep(event)
        return event

    def take(self, event: Event) -> bool:
        """Keep an event made elsewhere (bus mode: by a capture process); False if it was kept
        already. Its id is its own; later local ids go on from the highest seen."""
        with self._changed:
            if any(kept.id == event.id for kept in self._by_camera.get(event.camera, ())):
                return False
            self._keep(event)
        return True

    def _keep(self, event: Event) -> None:
        """Store, wake, tell the listeners (under the Condition: listeners must be quick)."""
        self._last_id = max(self._last_id, event.id)
        own = self._by_camera.setdefault(event.camera, deque(maxlen=self._per_camera))
        # What falls out of both lists is forgotten, its picture with it.
        leaving = [q[0] for q in (self._recent, own) if len(q) == q.maxlen]
        self._recent.append(event)
        own.append(event)
        for gone in leaving:
            if gone not in self._recent and gone not in self._by_camera.get(gone.camera, ()):
                self._snapshot_bytes -= len(self._snapshots.pop(gone.id, b""))
        if event.snapshot is not None:
            self._snapshots[event.id] = event.snapshot
            self._snapshot_bytes += len(event.snapshot)
            while self._snapshot_bytes > self._budget and self._snapshots:
                oldest = next(iter(self._snapshots))
                self._snapshot_bytes -= len(self._snapshots.pop(oldest))
        self._changed.notify_all()
        for listener in self._listeners:
            listener(event)

    def listen(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``listener(event)`` for each new event (quick and never blocking: it runs in
        the thread that noticed the event); return a function that stops it."""
        with self._changed:
            self._listeners.append(listener)

        def stop() -> None:
            with self._changed:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return stop

    def _kept(self) -> list[Event]:
        """Every event kept, oldest first (under the Condition)."""
        seen = {event.id: event for event in self._recent}
        for events in self._by_camera.values():
            seen.update((event.id, event) for event in events)
        return sorted(seen.values(), key=lambda event: event.id)

    def after(self, event_id: int, camera: int | None = None) -> list[Event]:
        """The kept events newer than ``event_id`` (of one camera, or all), oldest first."""
        with self._changed:
            events = self._by_camera.get(camera, ()) if camera is not None else self._kept()
            return [event for event in events if event.id > event_id]

    def newest(self, camera: int | None = None, limit: int = 100) -> list[Event]:
        """The newest kept events (of one camera, or all), newest first."""
        with self._changed:
            events: Iterable[Event] = self._by_camera.get(camera, ()) if camera is not None else self._kept()
            return list(reversed(list(events)))[:limit]

    def snapshot(self, event_id: int) -> bytes | None:
        """The JPEG of a kept motion event, unless the budget let it go."""
        with self._changed:
            return self._snapshots.get(event_id)

    def get(self, event_id: int) -> Event | None:
        """A kept event by id."""
        with self._changed:
            return next((event for event in self._kept() if event.id == event_id), None)

    def wait_after(self, event_id: int, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` for events newer than ``event_id``; [] when none came or the
        log closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._last_id > event_id or self._closed, timeout)
            return [event for event in self._kept() if event.id > event_id] if not self._closed else []

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    def close(self) -> None:
        """Wake every waiter for good (the app is stopping)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
