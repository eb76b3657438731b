"""The web role of bus mode: a camera captured by another process, seen through the frame bus.

A RemoteCamera stands where a Camera stands in a web worker (views, metrics, the registry)
but never opens a device. Its record is the capture process's (``P.camera.N.state``), so
every worker shows the same state, and viewers summed over the workers. Its feeds (a
broadcaster per stream profile) are local: while this worker has viewers or snapshot waiters
of a profile, it subscribes to that profile's frames (one copy per worker, whatever its
number of viewers), tells the capture process so every second (an interest that expires),
and asks for the profile's latest frame so that a new viewer sees one at once. When the
capture process or NATS is gone, its viewers get the "no signal" placeholder once a second
on the same connection, and live frames again when it is back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from . import wire
from .broadcast import Broadcaster, Feeds, Frame
from .bus import FrameBus
from .capture import fresh_frame
from .config import FULL, CameraConfig
from .events import Event, EventLog
from .frames import encode, no_signal_image
from .record import CameraBusy, profile_record, record
from .stats import SendStats

log = logging.getLogger(__name__)

OFFLINE_AFTER = 2.5  # seconds without a state message: the capture process is gone
ANNOUNCE_EVERY = 1.0  # how often a worker with viewers renews its interest
UNSUBSCRIBE_AFTER = 5.0  # frames stay subscribed this long after the last viewer left
CONTROL_TIMEOUT = 3.0


# A record's figures before the capture process has said anything.
_QUIET: dict[str, Any] = {
    "fps": 0.0,
    "width": None,
    "height": None,
    "viewers": 0,
    "frames": 0,
    "decoded": 0,
    "encoded": 0,
    "dropped": 0,
    "errors": 0,
    "rejected": 0,
    "last_rejection": None,
    "passthrough": False,
    "idle": False,
    "bus_rejected": 0,
    "bus_dropped": 0,
    "motion": False,
    "motion_active": False,
}
_QUIET_PROFILE: dict[str, Any] = {
    "width": None,
    "height": None,
    "max_fps": None,
    "quality": None,
    "viewers": 0,
    "fps": 0.0,
    "encoded": 0,
    "bytes": 0,
}


def _decode_event(payload: bytes, _headers: dict[str, str], cam_id: int, max_bytes: int) -> Event:
    return wire.decode_event(payload, cam_id, max_bytes)


def worker_name() -> str:
    """This web worker, in interests: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RemoteCamera:
    """A camera of another process, with a local broadcaster fed from the frame bus."""

    def __init__(
        self,
        config: CameraConfig,
        bus: FrameBus,
        worker: str | None = None,
        max_frame: int = 16 * 2**20,
        events: EventLog | None = None,
    ) -> None:
        """:param max_frame: bytes; a frame from the bus larger than this is dropped.
        :param events: where the camera's events from its capture process are kept."""
        self.config = config
        self._max_frame = max_frame
        self.sends = SendStats()
        self.profile_sends = {name: SendStats(total=self.sends) for name in config.profiles}
        self._bus = bus
        self._worker = worker or worker_name()
        self._subjects = bus.subjects
        self._prefix = self._subjects.camera(config.id) + "."  # every subject of the camera
        self._lock = threading.Lock()  # guards _record, _seen and _feeds swaps
        self._record: dict[str, Any] | None = None
        self._seen = 0.0  # when the last state message came (monotonic)
        self._started = time.time()
        self._feeds = self._new_feeds()
        self._stop = threading.Event()
        state = self._subjects.state(config.id)
        decode_state = lambda payload, _: wire.decode_record(payload, config.id)  # noqa: E731
        handler = wire.checked(decode_state, self._on_state, bus.rejections, state)
        self._cancel_state = bus.subscribe(state, handler, pending_bytes=2**20)
        self._cancel_events: Callable[[], None] = lambda: None
        if events is not None:
            subject = self._subjects.event(config.id)
            decode_event = partial(_decode_event, cam_id=config.id, max_bytes=max_frame)
            keep = wire.checked(decode_event, events.take, bus.rejections, subject)
            self._cancel_events = bus.subscribe(subject, keep, pending_bytes=8 * 2**20)
        # The profiles whose frames this worker is subscribed to, and when each was last wanted;
        # both belong to the follow thread.
        self._cancel_frames: dict[str, Callable[[], None]] = {}
        self._wanted_at: dict[str, float] = {}
        self._thread = threading.Thread(target=self._follow, name=f"livecam-remote-{config.id}", daemon=True)
        self._thread.start()

    @property
    def id(self) -> int:
        """The camera's id."""
        return self.config.id

    @property
    def broadcaster(self) -> Broadcaster:
        """This worker's broadcaster of the full stream (closed while the camera is off)."""
        return self._feeds[FULL]

    @property
    def feeds(self) -> Feeds:
        """This worker's broadcasters of the camera's profiles (closed while it is off)."""
        return self._feeds

    def _new_feeds(self) -> Feeds:
        return Feeds(self.config.profiles, f"camera {self.id} ({self.config.name})")

    # -- the record ---------------------------------------------------------------------

    def _offline(self) -> str | None:
        """Why the capture process cannot be heard, or None when it can."""
        if not self._bus.connected:
            return "frame bus unreachable"
        if self._record is None or time.monotonic() - self._seen > OFFLINE_AFTER:
            return "capture offline"
        return None

    @property
    def is_on(self) -> bool:
        """Switched on, as far as this worker knows (unknown counts as on: viewers then see why)."""
        record = self._record
        return record is None or record.get("state") != "off"

    @property
    def state(self) -> str:
        """off, starting, on or error; error while the capture process cannot be heard."""
        if self._offline() and self.is_on:
            return "error"
        return str((self._record or {}).get("state", "off"))

    @property
    def error(self) -> str | None:
        """Why the camera fails, if it does."""
        reason = self._offline()
        if reason and self.is_on:
            return reason
        return (self._record or {}).get("error")

    def status(self) -> dict[str, Any]:
        """The camera's JSON record, as its capture process last told it (checked by wire.py)."""
        told = self._record or {}
        offline = self._offline()
        profiles = {}
        for name, sends in self.profile_sends.items():
            # A copy: the record kept from the capture process is never changed here.
            kept = {**_QUIET_PROFILE, **told.get("profiles", {}).get(name, {})}
            kept["bytes"] = sends.snapshot()[0]  # this worker's own
            if offline:
                kept["fps"] = 0.0
            profiles[name] = profile_record(**kept)
        fields = {**_QUIET, "since": round(self._started, 3), **told}
        for key in ("id", "name", "source", "kind", "test_pattern", "owner"):
            fields.pop(key, None)  # who the camera is: this worker's own configuration says
        fields["bus_rejected"] = told.get("bus_rejected", 0) + self._bus.rejections.count(self._prefix)
        fields.update(state=self.state, error=self.error, profiles=profiles)
        if offline:
            fields["fps"] = 0.0
        return record(self.config, **fields)

    # -- control ------------------------------------------------------------------------

    def _switch(self, action: bytes) -> None:
        self._bus.wait_connected(CONTROL_TIMEOUT)  # a worker just started may still be connecting
        subject = self._subjects.control(self.id)
        reply = self._bus.request(subject, action, timeout=CONTROL_TIMEOUT)
        if not reply:
            raise CameraBusy(f"camera {self.id}: its capture process does not answer")
        try:
            self._on_state(wire.decode_control_reply(reply, self.id))
        except wire.BadMessage as exc:  # why the capture process could not switch, or garbage
            raise CameraBusy(f"camera {self.id}: {exc}") from None

    def start(self) -> None:
        """Ask the capture process to switch the camera on."""
        self._switch(b"start")

    def stop(self) -> None:
        """Ask the capture process to switch the camera off."""
        self._switch(b"stop")

    def toggle(self) -> None:
        """Ask the capture process to flip the camera."""
        self._switch(b"toggle")

    # -- frames -------------------------------------------------------------------------

    def snapshot(self, timeout: float = 3.0, profile: str = FULL) -> Frame | None:
        """A fresh live frame of ``profile``, waiting up to ``timeout`` for one; None if none comes."""
        return fresh_frame(self._feeds[profile], timeout)

    def _on_state(self, told: dict[str, Any]) -> None:
        """A record from the capture process, checked by wire.py: keep it; follow on and off."""
        with self._lock:
            self._record, self._seen = told, time.monotonic()
            if told["state"] == "off" and not self._feeds.closed:
                self._feeds.close()  # every stream of the camera ends, as in one process
            elif told["state"] != "off" and self._feeds.closed:
                self._feeds = self._new_feeds()

    def _on_frame(self, profile: str, frame: wire.FrameMessage) -> None:
        """A frame of ``profile`` from the capture process (in the bus thread): this worker's
        viewers of it get it."""
        self._feeds[profile].publish(
            frame.jpeg, frame.timestamp or time.time(), placeholder=frame.placeholder
        )

    def _subscribe_frames(self, profile: str) -> Callable[[], None]:
        """Receive ``profile``'s frames, each checked by wire.py first."""
        subject = self._subjects.frame(self.id, profile)
        decode = partial(wire.decode_frame, max_bytes=self._max_frame)
        handler = wire.checked(decode, partial(self._on_frame, profile), self._bus.rejections, subject)
        return self._bus.subscribe(subject, handler)

    def _fetch_latest(self, profile: str) -> None:
        """Ask for a profile's current frame, so that a new viewer sees one at once."""
        subject = self._subjects.latest(self.id)
        reply = self._bus.request(subject, wire.encode_latest_request(profile), timeout=1.0)
        if reply:
            try:
                frame = wire.decode_latest_reply(reply, self._max_frame)
            except wire.BadMessage as exc:
                self._bus.rejections.reject(subject, str(exc))
                return
            if frame is not None:
                self._on_frame(profile, frame)

    def _follow(self) -> None:
        """While this worker has viewers: each wanted profile's frames subscribed, interest
        renewed, placeholders while the capture process cannot be heard. Nothing a message
        or a timing brings ends it: a failed round is logged and the next one comes."""
        while not self._stop.is_set():
            try:
                self._follow_round()
            except Exception:  # noqa: BLE001 - the camera must not die on this worker until restart
                log.exception("camera %s: following the frame bus failed; going on", self.id)
                self._stop.wait(1.0)

    def _follow_round(self) -> None:
        """The follow loop itself, until it stops or fails."""
        announced = placeholder_at = 0.0
        while not self._stop.is_set():
            feeds = self._feeds
            if feeds.closed:  # the camera is off: a state message reopens it
                self._stop.wait(0.25)
                continue
            if not feeds.wait_wanted(1.0):
                self._unsubscribe_unwanted()
                continue
            now = time.monotonic()
            new = []
            for name, broadcaster in feeds.items():
                if broadcaster.wanted:
                    self._wanted_at[name] = now
                    if name not in self._cancel_frames:
                        self._cancel_frames[name] = self._subscribe_frames(name)
                        new.append(name)
            self._unsubscribe_unwanted()
            if new or now - announced >= ANNOUNCE_EVERY:
                announced = now
                self._announce(feeds)
            for name in new:
                self._fetch_latest(name)
            reason = self._offline()
            if reason and now - placeholder_at >= 1.0:
                placeholder_at = now
                self._placeholder(feeds, reason)
            self._stop.wait(0.25)

    def _unsubscribe_unwanted(self) -> None:
        """End the frame subscriptions of profiles nobody here has wanted for a while."""
        now = time.monotonic()
        for name in list(self._cancel_frames):
            if now - self._wanted_at.get(name, 0.0) > UNSUBSCRIBE_AFTER:
                self._cancel_frames.pop(name)()

    def _announce(self, feeds: Feeds) -> None:
        profiles = {name: broadcaster.viewers for name, broadcaster in feeds.items() if broadcaster.wanted}
        interest = wire.Interest(self._worker, profiles)
        self._bus.publish(self._subjects.interest(self.id), wire.encode_interest(interest))

    def _placeholder(self, feeds: Feeds, reason: str) -> None:
        told = (self._record or {}).get("profiles", {})
        # Since when: the last word from the capture process (or this worker's start).
        since = time.time() - (time.monotonic() - self._seen) if self._seen else self._started
        for name, broadcaster in feeds.items():
            if not broadcaster.wanted:
                continue
            # The profile's size as the capture process last told it (checked), else a guess.
            width, height = told.get(name, {}).get("width"), told.get(name, {}).get("height")
            size = (width, height) if width and height else None
            image = no_signal_image(self.config, self.config.profiles[name], size, reason, since)
            jpeg = encode(image, 80)
            if jpeg is not None:
                broadcaster.publish(jpeg, time.time(), placeholder=True)

    def close(self, timeout: float = 2.0) -> None:
        """Stop following the camera (this worker is stopping; the camera stays as it is)."""
        self._stop.set()
        self._cancel_state()  # no state message reopens the feeds after this
        self._cancel_events()
        self._feeds.close()  # wakes the follow thread
        self._thread.join(timeout)
        for cancel in self._cancel_frames.values():
            cancel()
