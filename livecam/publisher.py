"""The capture role of bus mode: a process's cameras onto the frame bus, their control from it.

``livecam capture`` runs the cameras a process owns (its LIVECAM_CAMERAS or TOML, as the
single-process mode does) with no HTTP server. For each camera, under the bus prefix P:

- ``P.camera.N.frame.PROFILE``: each frame of a stream profile (``full``, ``preview``...),
  published once, while some web worker wants that profile (headers: ``seq``, ``ts``
  capture time, ``ph`` "1" for a "no signal" placeholder);
- ``P.camera.N.state``: the camera's record as JSON, every second and after each switch
  (it also tells web workers that the capture process is alive, and who owns the camera);
- ``P.camera.N.interest``: web workers say which profiles they want frames of (JSON:
  worker, viewers, profiles: {name: viewers}), again at least every second; a profile is
  encoded only while an interest in it is younger than INTEREST_TTL, and the record's
  ``viewers`` (and each profile's) is the sum over the workers;
- ``P.camera.N.control`` (request: ``start``, ``stop`` or ``toggle``; answer: the record),
  ``P.camera.N.latest`` (request: a profile's name, none for full; answer: a JSON line with
  seq, ts, ph, then the JPEG) and
  ``P.camera.N.owner`` (request; answer: who captures the camera).

A second process claiming a camera that another one captures refuses it with a clear error.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from .broadcast import BroadcastClosed, Frame
from .bus import FrameBus
from .capture import Camera
from .config import FULL
from .redaction import redact
from .registry import Registry

log = logging.getLogger(__name__)

INTEREST_TTL = 3.0  # seconds an interest keeps a camera encoding without being renewed
STATE_EVERY = 1.0  # seconds between two state messages of a camera
OWNER_ASK = 0.5  # seconds to wait for another process that already captures a camera


class CameraClaimed(Exception):
    """Another capture process already captures this camera."""


def frame_headers(frame: Frame) -> dict[str, str]:
    """The bus headers of a frame."""
    return {"seq": str(frame.seq), "ts": f"{frame.timestamp:.6f}", "ph": "1" if frame.placeholder else "0"}


class CameraPublisher:
    """One camera of the capture role: its frames out while wanted, its switches in."""

    def __init__(self, camera: Camera, registry: Registry, bus: FrameBus, owner: str) -> None:
        self.camera = camera
        self._registry = registry
        self._bus = bus
        self.owner = owner
        self._subject = lambda *parts: bus.subject("camera", camera.id, *parts)
        self._lock = threading.Condition()  # guards _interest; notified when an interest comes
        # worker -> ({profile: viewers}, when the interest expires)
        self._interest: dict[str, tuple[dict[str, int], float]] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cancels: list[Callable[[], None]] = []
        self._claims: set[str] = set()  # other owners seen claiming this camera

    # -- interest -----------------------------------------------------------------------

    def _on_interest(self, payload: bytes, _headers: dict[str, str]) -> None:
        try:
            interest = json.loads(payload)
            worker, viewers = str(interest["worker"]), max(0, int(interest.get("viewers", 0)))
            named = interest.get("profiles", {FULL: viewers})
            profiles = {
                str(name): max(0, int(count))
                for name, count in named.items()
                if name in self.camera.config.profiles
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # not ours to trust: a malformed interest is no interest
        now = time.monotonic()
        with self._lock:
            # Workers come and go (each restart is a new one): forget the expired ones.
            self._interest = {w: entry for w, entry in self._interest.items() if entry[1] > now}
            self._interest[worker] = (profiles, now + INTEREST_TTL)
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
        data["owner"] = self.owner
        return data

    def publish_state(self) -> None:
        """Tell every web worker the camera's state (and that this process is alive)."""
        self._bus.publish(self._subject("state"), json.dumps(self.record()).encode())

    def _on_state(self, payload: bytes, _headers: dict[str, str]) -> None:
        try:
            owner = json.loads(payload).get("owner")
        except (ValueError, AttributeError):
            return
        if owner and owner != self.owner and owner not in self._claims:
            self._claims.add(owner)
            log.error(
                "camera %s is captured by two processes (%s and %s): stop one of them",
                self.camera.id,
                self.owner,
                owner,
            )

    # -- requests ---------------------------------------------------------------------

    def _control(self, payload: bytes) -> bytes:
        actions = {b"start": self.camera.start, b"stop": self.camera.stop, b"toggle": self.camera.toggle}
        change = actions.get(payload.strip())
        if change is None:
            return json.dumps({"error": "expected start, stop or toggle"}).encode()
        try:
            self._registry.switch(change)
        except Exception as exc:  # noqa: BLE001 - the asker gets the reason, the process goes on
            return json.dumps({"error": str(exc)}).encode()
        self.publish_state()
        return json.dumps(self.record()).encode()

    def _latest(self, payload: bytes) -> bytes:
        profile = payload.decode(errors="replace").strip() or FULL
        if profile not in self.camera.config.profiles:
            return b""
        frame = self.camera.feeds[profile].latest
        if frame is None or not self.camera.is_on:
            return b""
        return json.dumps(frame_headers(frame)).encode() + b"\n" + frame.jpeg

    # -- life -----------------------------------------------------------------------------

    def claim(self) -> None:
        """Make sure no other process captures this camera, then answer for it.

        :raise CameraClaimed: another one does.
        """
        other = self._bus.request(self._subject("owner"), b"", timeout=OWNER_ASK)
        if other:
            by = other.decode(errors="replace")
            raise CameraClaimed(f"camera {self.camera.id} is already captured by {by}")
        self._cancels.append(self._bus.serve(self._subject("owner"), lambda _: self.owner.encode()))

    def start(self) -> None:
        """Answer requests, follow interest, and start the thread that publishes frames."""
        bus = self._bus
        self._cancels += [
            bus.subscribe(self._subject("interest"), self._on_interest, pending_bytes=2**20),
            bus.subscribe(self._subject("state"), self._on_state, pending_bytes=2**20),
            bus.serve(self._subject("control"), self._control),
            bus.serve(self._subject("latest"), self._latest),
        ]
        for profile in self.camera.config.profiles:
            name = f"livecam-publish-{self.camera.id}-{profile}"
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
        subject = self._subject("frame", profile)
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
                        self._bus.publish(subject, frame.jpeg, frame_headers(frame))


def owner_name() -> str:
    """Who this capture process is, for the record and for a claim refused: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class CaptureRole:
    """Every camera of the configuration, published on the bus until stopped."""

    def __init__(self, registry: Registry, bus: FrameBus) -> None:
        self.registry = registry
        self.bus = bus
        self.owner = owner_name()
        self.publishers = [CameraPublisher(camera, registry, bus, self.owner) for camera in registry]
        self._stop = threading.Event()

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

    def close(self) -> None:
        """Stop publishing and answering, then stop every camera."""
        for publisher in self.publishers:
            publisher.stop()
        self.registry.shutdown()
