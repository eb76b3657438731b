"""The capture role of bus mode: a process's cameras onto the frame bus, their control from it.

``livecam capture`` runs the cameras a process owns (its LIVECAM_CAMERAS or TOML, as the
single-process mode does) with no HTTP server. For each camera it publishes each frame of a
stream profile once while some web worker wants that profile, its record every second and
after each switch (which also tells web workers that the capture process is alive and who
owns the camera), and answers switches, latest-frame and owner requests. The subjects and
message shapes are wire.py's; every message received is checked there first.

A web worker says which profiles it wants (an interest) at least every second; a profile is
encoded only while an interest in it is younger than INTEREST_TTL, and the record's
``viewers`` (and each profile's) is the sum over the workers.

A second process claiming a camera that another one captures refuses it with a clear error.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from . import wire
from .broadcast import BroadcastClosed, Frame
from .bus import FrameBus
from .capture import Camera
from .events import Event
from .redaction import redact
from .registry import Registry

log = logging.getLogger(__name__)

INTEREST_TTL = 3.0  # seconds an interest keeps a camera encoding without being renewed
STATE_EVERY = 1.0  # seconds between two state messages of a camera
OWNER_ASK = 0.5  # seconds to wait for another process that already captures a camera

T = TypeVar("T")


class CameraClaimed(Exception):
    """Another capture process already captures this camera."""


class CameraPublisher:
    """One camera of the capture role: its frames out while wanted, its switches in."""

    def __init__(self, camera: Camera, registry: Registry, bus: FrameBus, owner: str) -> None:
        self.camera = camera
        self._registry = registry
        self._bus = bus
        self.owner = owner
        self._subjects = bus.subjects
        self._lock = threading.Condition()  # guards _interest; notified when an interest comes
        # worker -> ({profile: viewers}, when the interest expires)
        self._interest: dict[str, tuple[dict[str, int], float]] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cancels: list[Callable[[], None]] = []
        self._claims: set[str] = set()  # other owners seen claiming this camera

    # -- interest -----------------------------------------------------------------------

    def _on_interest(self, interest: wire.Interest) -> None:
        profiles = {
            name: count for name, count in interest.profiles.items() if name in self.camera.config.profiles
        }
        now = time.monotonic()
        with self._lock:
            # Workers come and go (each restart is a new one): forget the expired ones.
            self._interest = {w: entry for w, entry in self._interest.items() if entry[1] > now}
            self._interest[interest.worker] = (profiles, now + INTEREST_TTL)
            self._lock.notify_all()

    def _wanted(self, profile: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(profile in wanted and expires > now for wanted, expires in self._interest.values())

    def viewers_of(self, profile: str | None = None) -> int:
        """Viewers of ``profile`` (None: of every profile) over every worker whose interest is fresh."""
        now = time.monotonic()
        with self._lock:
            return sum(
                count
                for wanted, expires in self._interest.values()
                if expires > now
                for name, count in wanted.items()
                if profile is None or name == profile
            )

    @property
    def viewers(self) -> int:
        """Viewers over every web worker whose interest is fresh."""
        return self.viewers_of()

    # -- the record -----------------------------------------------------------------------

    def record(self) -> dict[str, object]:
        """The camera's record as the web workers see it."""
        data = self.camera.status()
        data["viewers"] = self.viewers
        for name, profile in data["profiles"].items():
            profile["viewers"] = self.viewers_of(name)
            profile["bytes"] = 0  # sent by the web workers, each of which counts its own
        data["bus_rejected"] = self._bus.rejections.count(self._subjects.camera(self.camera.id) + ".")
        # Frames (and records) replaced by newer ones while NATS was too slow to take them.
        data["bus_dropped"] = self._bus.dropped_on(self._subjects.camera(self.camera.id) + ".")
        data["owner"] = self.owner
        return data

    def publish_state(self) -> None:
        """Tell every web worker the camera's state (and that this process is alive)."""
        self._bus.publish(self._subjects.state(self.camera.id), wire.encode_record(self.record()))

    def _on_state(self, record: dict[str, object]) -> None:
        owner = record.get("owner")
        if owner and owner != self.owner and owner not in self._claims:
            self._claims.add(str(owner))
            log.error(
                "camera %s is captured by two processes (%s and %s): stop one of them",
                self.camera.id,
                self.owner,
                owner,
            )

    # -- requests ---------------------------------------------------------------------

    def _control(self, action: str) -> bytes:
        change = {"start": self.camera.start, "stop": self.camera.stop, "toggle": self.camera.toggle}[action]
        try:
            self._registry.switch(change)
        except Exception as exc:  # noqa: BLE001 - the asker gets the reason, the process goes on
            return wire.encode_error(str(exc))
        self.publish_state()
        return wire.encode_record(self.record())

    def _latest(self, profile: str) -> bytes:
        if profile not in self.camera.config.profiles:
            return b""
        frame = self.camera.feeds[profile].latest
        if frame is None or not self.camera.is_on:
            return b""
        return wire.encode_latest_reply(_message(frame))

    def _serve(
        self, subject: str, decode: Callable[[bytes], T], answer: Callable[[T], bytes]
    ) -> Callable[[], None]:
        """Answer requests on ``subject``: each decoded first; a bad one is counted and told why."""

        def respond(payload: bytes) -> bytes:
            try:
                request = decode(payload)
            except wire.BadMessage as exc:
                self._bus.rejections.reject(subject, str(exc))
                return wire.encode_error(str(exc))
            return answer(request)

        return self._bus.serve(subject, respond)

    def _subscribe(
        self, subject: str, decode: Callable[[bytes, dict[str, str]], T], handler: Callable[[T], None]
    ) -> Callable[[], None]:
        """Follow ``subject``, each message decoded first; a bad one is counted and dropped."""
        deliver = wire.checked(decode, handler, self._bus.rejections, subject)
        return self._bus.subscribe(subject, deliver, pending_bytes=2**20)

    # -- life -----------------------------------------------------------------------------

    def claim(self) -> None:
        """Make sure no other process captures this camera, then answer for it.

        :raise CameraClaimed: another one does.
        """
        subject = self._subjects.owner(self.camera.id)
        other = self._bus.request(subject, b"", timeout=OWNER_ASK)
        if other:
            try:
                by = wire.decode_owner(other)
            except wire.BadMessage as exc:
                # Something answers for the camera, but not a capture process: not a claim.
                self._bus.rejections.reject(subject, str(exc))
            else:
                raise CameraClaimed(f"camera {self.camera.id} is already captured by {by}")
        self._cancels.append(self._bus.serve(subject, lambda _: self.owner.encode()))

    def start(self) -> None:
        """Answer requests, follow interest, and start the thread that publishes frames."""
        cam_id = self.camera.id
        self._cancels += [
            self._subscribe(
                self._subjects.interest(cam_id),
                lambda payload, _: wire.decode_interest(payload),
                self._on_interest,
            ),
            self._subscribe(
                self._subjects.state(cam_id),
                lambda payload, _: wire.decode_record(payload, cam_id),
                self._on_state,
            ),
            self._serve(self._subjects.control(cam_id), wire.decode_control, self._control),
            self._serve(self._subjects.latest(cam_id), wire.decode_latest_request, self._latest),
        ]
        for profile in self.camera.config.profiles:
            name = f"livecam-publish-{cam_id}-{profile}"
            thread = threading.Thread(target=self._frames, args=(profile,), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop publishing and answering."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for cancel in self._cancels:
            cancel()
        for thread in self._threads:
            thread.join(timeout)

    def _frames(self, profile: str) -> None:
        """While someone wants ``profile``, watch it like a viewer and publish each frame once."""
        subject = self._subjects.frame(self.camera.id, profile)
        while not self._stop.is_set():
            if not self._wanted(profile):
                with self._lock:
                    self._lock.wait(1.0)  # an interest notifies; the timeout notices a stop
                continue
            broadcaster = self.camera.feeds[profile]
            if broadcaster.closed:
                self._stop.wait(0.2)  # the camera is off; a switch-on makes a new broadcaster
                continue
            # Watching is what makes the capture thread decode and encode: only while wanted.
            with broadcaster.watching():
                seq = broadcaster.latest.seq if broadcaster.latest else 0
                while not self._stop.is_set() and self._wanted(profile):
                    try:
                        frame = broadcaster.wait_next(seq, 1.0)
                    except BroadcastClosed:
                        break
                    if frame is not None:
                        seq = frame.seq
                        headers = wire.frame_headers(frame.seq, frame.timestamp, frame.placeholder)
                        self._bus.publish(subject, frame.jpeg, headers)


def _message(frame: Frame) -> wire.FrameMessage:
    """A broadcast frame as it crosses the bus."""
    return wire.FrameMessage(frame.jpeg, frame.seq, frame.timestamp, frame.placeholder)


def owner_name() -> str:
    """Who this capture process is, for the record and for a claim refused: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class CaptureRole:
    """Every camera of the configuration, published on the bus until stopped."""

    def __init__(self, registry: Registry, bus: FrameBus) -> None:
        self.registry = registry
        self.bus = bus
        self.owner = owner_name()
        self.publishers = [CameraPublisher(camera, registry, bus, self.owner) for camera in registry.local]
        self._stop = threading.Event()
        self._stop_events: Callable[[], None] | None = None

    def run(self, connect_timeout: float = 10.0) -> int:
        """Claim the cameras, start them as remembered, publish until ``stop()``; the exit code."""
        if not self.bus.wait_connected(connect_timeout):
            shown = redact(self.bus.url)
            log.warning("frame bus %s not reachable yet: capturing anyway, publishing once it is", shown)
        try:
            for publisher in self.publishers:
                publisher.claim()
        except CameraClaimed as exc:
            log.error("livecam capture: %s", exc)
            return 2
        # Every event once, to every web worker: before the cameras start, so none is missed.
        self._stop_events = self.registry.events.listen(self._forward)
        self.registry.restore()
        for publisher in self.publishers:
            publisher.start()
        log.info("capturing %d camera(s) for the frame bus as %s", len(self.publishers), self.owner)
        while True:  # at once, then every second: web workers know the process is back
            for publisher in self.publishers:
                publisher.publish_state()
            if self._stop.wait(STATE_EVERY):
                return 0

    def stop(self) -> None:
        """Make run() return (safe from a signal handler)."""
        self._stop.set()

    def _forward(self, event: Event) -> None:
        """An event noticed here, on its camera's event subject (in the noticing thread: quick)."""
        self.bus.send(self.bus.subjects.event(event.camera), wire.encode_event(event))

    def close(self) -> None:
        """Stop publishing and answering, then stop every camera (their last events still go)."""
        for publisher in self.publishers:
            publisher.stop()
        self.registry.shutdown()
        if self._stop_events is not None:
            self._stop_events()
