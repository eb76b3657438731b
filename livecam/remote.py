"""The web role of bus mode: a camera captured by another process, seen through the frame bus.

A RemoteCamera stands where a Camera stands in a web worker (views, metrics, the registry)
but never opens a device. Its record is the capture process's (``P.camera.N.state``), so
every worker shows the same state, and viewers summed over the workers. Its broadcaster is
local: while this worker has viewers or snapshot waiters, it subscribes to the camera's
frames (one copy per worker, whatever its number of viewers), tells the capture process so
every second (an interest that expires), and asks for the latest frame so that a new viewer
sees one at once. When the capture process or NATS is gone, its viewers get the "no signal"
placeholder once a second on the same connection, and live frames again when it is back.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .broadcast import Broadcaster, Frame
from .bus import FrameBus
from .capture import CameraBusy, fresh_frame
from .config import CameraConfig
from .frames import encode, placeholder_size
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
        self._bus = bus
        self._worker = worker or worker_name()
        self._subject: Callable[..., str] = lambda *parts: bus.subject("camera", config.id, *parts)
        self._lock = threading.Lock()  # guards _record, _seen and _broadcaster swaps
        self._record: dict[str, Any] | None = None
        self._seen = 0.0  # when the last state message came (monotonic)
        self._started = time.time()
        self._broadcaster = Broadcaster(f"camera {config.id} ({config.name})")
        self._stop = threading.Event()
        self._cancel_state = bus.subscribe(self._subject("state"), self._on_state, pending_bytes=2**20)
        self._cancel_frames: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._follow, name=f"livecam-remote-{config.id}", daemon=True)
        self._thread.start()

    @property
    def id(self) -> int:
        """The camera's id."""
        return self.config.id

    @property
    def broadcaster(self) -> Broadcaster:
        """This worker's broadcaster of the camera's frames (closed while the camera is off)."""
        return self._broadcaster

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
            "encoded": 0,
            "dropped": 0,
            "errors": 0,
            "rejected": 0,
            "last_rejection": None,
            "passthrough": False,
            "idle": False,
        }
        record = {**defaults, **record, "state": self.state, "error": self.error}
        if self._offline():
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

    def snapshot(self, timeout: float = 3.0) -> Frame | None:
        """A fresh live frame, waiting up to ``timeout`` for one; None if none comes."""
        return fresh_frame(self._broadcaster, timeout)

    def _on_state(self, payload: bytes, _headers: dict[str, str]) -> None:
        """A record from the capture process (in the bus thread): keep it; follow on and off."""
        try:
            record = json.loads(payload)
            state = record["state"]
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            self._record, self._seen = record, time.monotonic()
            if state == "off" and not self._broadcaster.closed:
                self._broadcaster.close()  # every stream of the camera ends, as in one process
            elif state != "off" and self._broadcaster.closed:
                self._broadcaster = Broadcaster(f"camera {self.id} ({self.config.name})")

    def _on_frame(self, payload: bytes, headers: dict[str, str]) -> None:
        """A frame from the capture process (in the bus thread): this worker's viewers get it."""
        try:
            timestamp = float(headers.get("ts", "0")) or time.time()
        except ValueError:
            timestamp = time.time()
        self._broadcaster.publish(payload, timestamp, placeholder=headers.get("ph") == "1")

    def _fetch_latest(self) -> None:
        """Ask for the camera's current frame, so that a new viewer sees one at once."""
        reply = self._bus.request(self._subject("latest"), b"", timeout=1.0)
        if reply:
            head, _, jpeg = reply.partition(b"\n")
            try:
                self._on_frame(jpeg, json.loads(head))
            except ValueError:
                pass

    def _follow(self) -> None:
        """While this worker has viewers: frames subscribed, interest renewed, placeholders
        while the capture process cannot be heard."""
        announced = placeholder_at = wanted_at = 0.0
        while not self._stop.is_set():
            broadcaster = self._broadcaster
            if broadcaster.closed:  # the camera is off: a state message reopens it
                self._stop.wait(0.25)
                continue
            if not broadcaster.wait_wanted(1.0):
                if self._cancel_frames is not None and time.monotonic() - wanted_at > UNSUBSCRIBE_AFTER:
                    self._cancel_frames()
                    self._cancel_frames = None
                continue
            now = wanted_at = time.monotonic()
            if self._cancel_frames is None:
                self._cancel_frames = self._bus.subscribe(self._subject("frame"), self._on_frame)
                announced = 0.0
                self._announce(broadcaster)
                self._fetch_latest()
            elif now - announced >= ANNOUNCE_EVERY:
                announced = now
                self._announce(broadcaster)
            reason = self._offline()
            if reason and now - placeholder_at >= 1.0:
                placeholder_at = now
                self._placeholder(broadcaster, reason)
            self._stop.wait(0.25)

    def _announce(self, broadcaster: Broadcaster) -> None:
        interest = {"worker": self._worker, "viewers": broadcaster.viewers}
        self._bus.publish(self._subject("interest"), json.dumps(interest).encode())

    def _placeholder(self, broadcaster: Broadcaster, reason: str) -> None:
        record = self._record or {}
        width, height = record.get("width"), record.get("height")
        if not (isinstance(width, int) and isinstance(height, int)):
            width, height = placeholder_size(self.config.width)
        # Since when: the last word from the capture process (or this worker's start).
        since = time.time() - (time.monotonic() - self._seen) if self._seen else self._started
        jpeg = encode(no_signal(width, height, self.config.name, reason, since), 80)
        if jpeg is not None:
            broadcaster.publish(jpeg, time.time(), placeholder=True)

    def close(self, timeout: float = 2.0) -> None:
        """Stop following the camera (this worker is stopping; the camera stays as it is)."""
        self._stop.set()
        self._cancel_state()
        if self._cancel_frames is not None:
            self._cancel_frames()
        self._broadcaster.close()
        self._thread.join(timeout)
