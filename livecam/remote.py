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

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from .broadcast import Broadcaster, Feeds, Frame
from .bus import FrameBus
from .capture import CameraBusy, fresh_frame
from .config import FULL, CameraConfig
from .frames import encode, placeholder_size, stream_width
from .pattern import no_signal
from .redaction import redact
from .stats import SendStats

log = logging.getLogger(__name__)

OFFLINE_AFTER = 2.5  # seconds without a state message: the capture process is gone
ANNOUNCE_EVERY = 1.0  # how often a worker with viewers renews its interest
UNSUBSCRIBE_AFTER = 5.0  # frames stay subscribed this long after the last viewer left
CONTROL_TIMEOUT = 3.0


def worker_name() -> str:
    """This web worker, in interests: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RemoteCamera:
    """A camera of another process, with a local broadcaster fed from the frame bus."""

    def __init__(self, config: CameraConfig, bus: FrameBus, worker: str | None = None) -> None:
        self.config = config
        self.sends = SendStats()
        self.profile_sends = {name: SendStats(total=self.sends) for name in config.profiles}
        self._bus = bus
        self._worker = worker or worker_name()
        self._subject: Callable[..., str] = lambda *parts: bus.subject("camera", config.id, *parts)
        self._lock = threading.Lock()  # guards _record, _seen and _feeds swaps
        self._record: dict[str, Any] | None = None
        self._seen = 0.0  # when the last state message came (monotonic)
        self._started = time.time()
        self._feeds = self._new_feeds()
        self._stop = threading.Event()
        self._cancel_state = bus.subscribe(self._subject("state"), self._on_state, pending_bytes=2**20)
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
        """The camera's JSON record, as its capture process last told it."""
        record = dict(self._record or {})
        record.pop("owner", None)
        defaults = {
            "id": self.id,
            "name": self.config.name,
            "source": redact(str(self.config.source)),
            "kind": self.config.source.kind,
            "test_pattern": self.config.source.kind == "testsrc",
            "since": round(time.time(), 3),
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
        }
        record = {**defaults, **record, "state": self.state, "error": self.error}
        told = record.get("profiles") if isinstance(record.get("profiles"), dict) else {}
        offline = self._offline()
        profiles = {}
        for name, sends in self.profile_sends.items():
            # A copy: the record kept from the capture process is never changed here.
            kept = told.get(name)
            profile = dict(kept) if isinstance(kept, dict) else {"viewers": 0, "fps": 0.0, "encoded": 0}
            profile["bytes"] = sends.snapshot()[0]  # this worker's own
            if offline:
                profile["fps"] = 0.0
            profiles[name] = profile
        record["profiles"] = profiles
        if offline:
            record["fps"] = 0.0
        return record

    # -- control ------------------------------------------------------------------------

    def _switch(self, action: bytes) -> None:
        self._bus.wait_connected(CONTROL_TIMEOUT)  # a worker just started may still be connecting
        reply = self._bus.request(self._subject("control"), action, timeout=CONTROL_TIMEOUT)
        if not reply:
            raise CameraBusy(f"camera {self.id}: its capture process does not answer")
        record = json.loads(reply)
        if "state" not in record:  # not a record: why the capture process could not switch
            raise CameraBusy(f"camera {self.id}: {record.get('error')}")
        self._on_state(reply, {})

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

    def _on_state(self, payload: bytes, _headers: dict[str, str]) -> None:
        """A record from the capture process (in the bus thread): keep it; follow on and off."""
        try:
            record = json.loads(payload)
            state = record["state"]
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            self._record, self._seen = record, time.monotonic()
            if state == "off" and not self._feeds.closed:
                self._feeds.close()  # every stream of the camera ends, as in one process
            elif state != "off" and self._feeds.closed:
                self._feeds = self._new_feeds()

    def _on_frame(self, profile: str, payload: bytes, headers: dict[str, str]) -> None:
        """A frame of ``profile`` from the capture process (in the bus thread): this worker's
        viewers of it get it."""
        try:
            timestamp = float(headers.get("ts", "0")) or time.time()
        except ValueError:
            timestamp = time.time()
        self._feeds[profile].publish(payload, timestamp, placeholder=headers.get("ph") == "1")

    def _fetch_latest(self, profile: str) -> None:
        """Ask for a profile's current frame, so that a new viewer sees one at once."""
        reply = self._bus.request(self._subject("latest"), profile.encode(), timeout=1.0)
        if reply:
            head, _, jpeg = reply.partition(b"\n")
            try:
                self._on_frame(profile, jpeg, json.loads(head))
            except ValueError:
                pass

    def _follow(self) -> None:
        """While this worker has viewers: each wanted profile's frames subscribed, interest
        renewed, placeholders while the capture process cannot be heard."""
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
                        handler = partial(self._on_frame, name)
                        self._cancel_frames[name] = self._bus.subscribe(self._subject("frame", name), handler)
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
        interest = {"worker": self._worker, "viewers": feeds.viewers, "profiles": profiles}
        self._bus.publish(self._subject("interest"), json.dumps(interest).encode())

    def _placeholder(self, feeds: Feeds, reason: str) -> None:
        sizes = (self._record or {}).get("profiles")
        # Since when: the last word from the capture process (or this worker's start).
        since = time.time() - (time.monotonic() - self._seen) if self._seen else self._started
        for name, broadcaster in feeds.items():
            if not broadcaster.wanted:
                continue
            # The profile's size as the capture process last told it, else a 4:3 guess.
            told = sizes.get(name) if isinstance(sizes, dict) else None
            width, height = (told.get("width"), told.get("height")) if isinstance(told, dict) else (0, 0)
            if not (isinstance(width, int) and isinstance(height, int)):
                width, height = placeholder_size(stream_width(self.config, self.config.profiles[name], 640))
            jpeg = encode(no_signal(width, height, self.config.name, reason, since), 80)
            if jpeg is not None:
                broadcaster.publish(jpeg, time.time(), placeholder=True)

    def close(self, timeout: float = 2.0) -> None:
        """Stop following the camera (this worker is stopping; the camera stays as it is)."""
        self._stop.set()
        self._cancel_state()  # no state message reopens the feeds after this
        self._feeds.close()  # wakes the follow thread
        self._thread.join(timeout)
        for cancel in self._cancel_frames.values():
            cancel()
