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

Who the camera is (its name, its source as shown, its stream profiles) is its capture
process's word too: the record's, where cameras are changed at run time. A worker's own
configuration only says it until the first record comes.

A SiteCameras follows the capture processes' catalogs, so that every worker serves the
cameras added and removed at run time through any other one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from . import wire
from .broadcast import Broadcaster, Feeds, Frame
from .bus import FrameBus
from .capture import fresh_frame
from .config import FULL, CameraConfig, ConfigError, Profile, SourceSpec, parse_source
from .events import Event, EventLog
from .frames import encode, no_signal_image
from .record import CameraBusy, profile_record, record
from .redaction import redact
from .stats import SendStats

log = logging.getLogger(__name__)

OFFLINE_AFTER = 2.5  # seconds without a state message: the capture process is gone
ANNOUNCE_EVERY = 1.0  # how often a worker with viewers renews its interest
UNSUBSCRIBE_AFTER = 5.0  # frames stay subscribed this long after the last viewer left
CONTROL_TIMEOUT = 3.0
EVENT_RATE, EVENT_BURST = 20.0, 100  # events a second a camera may bring, and in one burst
FORGET_AFTER = 10.0  # seconds after which a silent capture process's catalog is forgotten
WARM_UP = 2.5  # seconds of listening before a worker takes the capture processes it heard for all
SOURCE_KINDS = ("device", "url", "file", "testsrc")
INBOX = 1024  # catalogs a worker keeps unread (a few minutes of a site's)


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


def config_from_record(
    cam_id: int, told: Mapping[str, Any], base: CameraConfig | None = None
) -> CameraConfig:
    """The camera as its capture process's record (checked by wire.py) describes it: its
    name, its source as shown (redacted: a worker never opens it), its stream profiles with
    their caps and qualities. What the record does not say is ``base``'s."""
    shown = told.get("name") or (base.name if base is not None else f"Camera {cam_id}")
    source = _shown_source(told) or (base.source if base is not None else SourceSpec("url", "unknown"))
    profiles = dict(base.profiles) if base is not None else {}
    if told.get("profiles"):
        profiles = {
            profile: Profile(
                profile,
                figures.get("width") or getattr(profiles.get(profile), "width", None),
                figures.get("max_fps"),
                figures.get("quality"),
            )
            for profile, figures in told["profiles"].items()
        }
    full = profiles.pop(FULL, Profile(FULL))
    fields = {"name": shown, "source": source, "width": full.width, "fps": full.fps, "quality": full.quality}
    if base is None:
        return CameraConfig(id=cam_id, profiles=profiles, **fields)
    return replace(base, profiles=profiles, **fields)


def _shown_source(told: Mapping[str, Any]) -> SourceSpec | None:
    kind, shown = told.get("kind"), told.get("source")
    if kind not in SOURCE_KINDS or not isinstance(shown, str):
        return None
    if kind == "testsrc":
        try:
            return parse_source(shown, "source")
        except ConfigError:
            return SourceSpec("testsrc", "")
    return SourceSpec(str(kind), shown)


def _identity(config: CameraConfig) -> tuple[Any, ...]:
    """What a record may change of a camera: its name, source and profiles (not their sizes,
    which follow the picture)."""
    profiles = tuple((name, p.fps, p.quality) for name, p in config.profiles.items())
    return config.name, redact(str(config.source)), config.source.kind, profiles


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
        self._event_tokens, self._event_at = float(EVENT_BURST), time.monotonic()  # the bus thread's
        if events is not None:
            subject = self._subjects.event(config.id)
            decode_event = partial(_decode_event, cam_id=config.id, max_bytes=max_frame)
            keep = wire.checked(
                decode_event, partial(self._take_event, events, subject), bus.rejections, subject
            )
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

    def take_record(self, told: dict[str, Any]) -> None:
        """A record of the camera its capture process gave otherwise (a change's answer)."""
        self._on_state(told)

    def _on_state(self, told: dict[str, Any]) -> None:
        """A record from the capture process, checked by wire.py: keep it; follow on and off,
        and who the camera is."""
        with self._lock:
            self._follow_config(told)
            self._record, self._seen = told, time.monotonic()
            if told["state"] == "off" and not self._feeds.closed:
                self._feeds.close()  # every stream of the camera ends, as in one process
            elif told["state"] != "off" and self._feeds.closed:
                self._feeds = self._new_feeds()

    def _take_event(self, events: EventLog, subject: str, event: Event) -> None:
        """Keep an event from the capture process, at most EVENT_RATE a second (a burst of
        EVENT_BURST): a flood, even from a capture process, never swamps this worker."""
        now = time.monotonic()
        self._event_tokens = min(EVENT_BURST, self._event_tokens + (now - self._event_at) * EVENT_RATE)
        self._event_at = now
        if self._event_tokens < 1:
            self._bus.rejections.reject(subject, f"more than {EVENT_RATE:g} events a second")
            return
        self._event_tokens -= 1
        events.take(event)

    def _follow_config(self, told: dict[str, Any]) -> None:
        """Take the name, source and profiles the record says (under _lock). A change of the
        profiles ends this worker's streams of the camera, as a camera reopened does."""
        config = config_from_record(self.id, told, self.config)
        if _identity(config) == _identity(self.config):
            return
        before, self.config = self.config, config
        log.info("camera %s: %s, as its capture process says", self.id, config.name)
        if list(config.profiles) == list(before.profiles):
            return
        sends = self.profile_sends
        self.profile_sends = {
            name: sends.get(name) or SendStats(total=self.sends) for name in config.profiles
        }
        old, self._feeds = self._feeds, self._new_feeds()
        if old.closed:
            self._feeds.close()
        old.close()

    def _on_frame(self, profile: str, frame: wire.FrameMessage) -> None:
        """A frame of ``profile`` from the capture process (in the frame link's reader thread,
        or the follow thread for the latest): this worker's viewers of it get it."""
        feeds = self._feeds
        if profile not in feeds:
            return  # a profile the camera no longer has
        broadcaster = feeds[profile]
        latest = broadcaster.latest
        if latest is not None and frame.timestamp and latest.timestamp == frame.timestamp:
            # The frame a new viewer asked for (latest) may also come by the subscription, or
            # the other way round: a viewer never gets it twice.
            return
        broadcaster.publish(frame.jpeg, frame.timestamp or time.time(), placeholder=frame.placeholder)

    def _subscribe_frames(self, profile: str) -> Callable[[], None]:
        """Receive ``profile``'s frames, each checked by wire.py first."""
        subject = self._subjects.frame(self.id, profile)
        decode = partial(wire.decode_frame, max_bytes=self._max_frame)
        handler = wire.checked(decode, partial(self._on_frame, profile), self._bus.rejections, subject)
        return self._bus.subscribe_frames(subject, handler)

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


class SiteCameras:
    """Bus mode's web role: the cameras the site's capture processes say they have.

    Each capture process lists its cameras, and the configured ones it removed at run time,
    every second and after each change (``P.capture.catalog``). A camera listed that this
    worker lacks is added (``appear``) once its first record comes, which says its name and
    profiles; one that its capture process stops listing, or lists as removed, is dropped
    (``vanish``) unless another process lists it. A capture process that goes silent changes
    nothing: its cameras stay, "capture offline", until it is back.
    """

    def __init__(
        self,
        bus: FrameBus,
        have: Callable[[], Collection[int]],
        appear: Callable[[int, dict[str, Any]], None],
        vanish: Callable[[int], None],
        limit: int,
    ) -> None:
        """:param have: the worker's cameras now. :param limit: the most cameras it keeps.
        ``appear`` and ``vanish`` run in this object's own thread."""
        self._bus = bus
        self._have, self._appear, self._vanish, self._limit = have, appear, vanish, limit
        self._subjects = bus.subjects
        self._lock = threading.Condition()  # guards _inbox, _records and _listed; notified when one comes
        # Catalogs not yet read, in order (each one's news matters: a camera gone since the last);
        # at most a few minutes' worth of a site's catalogs.
        self._inbox: deque[wire.Catalog] = deque(maxlen=INBOX)
        self._records: dict[int, dict[str, Any]] = {}  # first records of cameras awaited
        self._listed: dict[str, tuple[frozenset[int], float]] = {}  # owner -> (its cameras, when heard)
        self._awaited: dict[int, Callable[[], None]] = {}  # the thread's own: id -> end its subscription
        self._full = False  # the thread's own: whether it said it keeps no more cameras
        self._started = time.monotonic()
        self._stop = threading.Event()
        subject = self._subjects.catalog()
        decode = lambda payload, _: wire.decode_catalog(payload)  # noqa: E731
        handler = wire.checked(decode, self._on_catalog, bus.rejections, subject)
        self._cancel = bus.subscribe(subject, handler, pending_bytes=2**20)
        self._thread = threading.Thread(target=self._run, name="livecam-site", daemon=True)
        self._thread.start()

    def owners(self) -> list[str] | None:
        """The capture processes heard lately, or None while this worker has not listened long
        enough to know them all."""
        now = time.monotonic()
        if now - self._started < WARM_UP or not self._bus.connected:
            return None
        with self._lock:
            return sorted(owner for owner, (_, heard) in self._listed.items() if now - heard < wire.ALIVE_FOR)

    def note(self, owner: str, cam_id: int) -> None:
        """A camera ``owner`` added for this worker: listed by it from now on, as its next
        catalog will say (so that a removal through another worker is noticed even before)."""
        with self._lock:
            cameras, heard = self._listed.get(owner, (frozenset(), time.monotonic()))
            self._listed[owner] = (cameras | {cam_id}, heard)

    def close(self, timeout: float = 2.0) -> None:
        """Stop following the catalogs."""
        self._stop.set()
        self._cancel()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout)
        for cancel in self._awaited.values():
            cancel()

    # -- in the bus thread ------------------------------------------------------------------

    def _on_catalog(self, catalog: wire.Catalog) -> None:
        with self._lock:
            self._inbox.append(catalog)
            self._lock.notify_all()

    def _on_record(self, cam_id: int, told: dict[str, Any]) -> None:
        with self._lock:
            self._records[cam_id] = told
            self._lock.notify_all()

    # -- in its own thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except Exception:  # noqa: BLE001 - the next catalog comes within a second
                log.exception("following the capture processes' catalogs failed; going on")
                self._stop.wait(1.0)

    def _round(self) -> None:
        """Read the catalogs and records that came: drop, await and add cameras."""
        with self._lock:
            self._lock.wait_for(lambda: self._inbox or self._records or self._stop.is_set(), 1.0)
            inbox = list(self._inbox)
            self._inbox.clear()
            records, self._records = self._records, {}
            now = time.monotonic()
            dropped: set[int] = set()
            for catalog in inbox:
                before = self._listed.get(catalog.owner, (frozenset(), now))[0]
                self._listed[catalog.owner] = (catalog.cameras, now)
                dropped |= (before - catalog.cameras) | catalog.removed
            self._listed = {o: entry for o, entry in self._listed.items() if now - entry[1] < FORGET_AFTER}
            alive = [cameras for cameras, heard in self._listed.values() if now - heard < wire.ALIVE_FOR]
        if self._stop.is_set():
            return
        listed = set().union(*alive)
        for cam_id in sorted(dropped - listed):
            if cam_id in self._have():
                self._vanish(cam_id)
        for cam_id, told in sorted(records.items()):
            if cam_id in self._awaited and cam_id in listed and cam_id not in self._have():
                self._appear(cam_id, told)
        have = set(self._have())
        for cam_id in [c for c in self._awaited if c not in listed or c in have]:
            self._awaited.pop(cam_id)()
        for cam_id in sorted(listed - have - set(self._awaited)):
            if len(have) + len(self._awaited) >= self._limit:
                if not self._full:
                    self._full = True
                    log.warning(
                        "the capture processes list more than %d cameras: the rest left out", self._limit
                    )
                break
            self._awaited[cam_id] = self._await(cam_id)

    def _await(self, cam_id: int) -> Callable[[], None]:
        """Follow a listed camera's records until the first one comes."""
        subject = self._subjects.state(cam_id)
        decode = lambda payload, _: wire.decode_record(payload, cam_id)  # noqa: E731
        handler = wire.checked(decode, partial(self._on_record, cam_id), self._bus.rejections, subject)
        return self._bus.subscribe(subject, handler, pending_bytes=2**20)
