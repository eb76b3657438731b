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

Cameras are added, changed and removed over the bus as in one process, with the registry's
own checks, and kept in this process's state directory (runtime-cameras.json). A change or a
removal is asked of the process that captures the camera (``P.camera.N.manage``). An add
(``P.cameras.add``) reaches every capture process, and exactly one answers: the one the
request names (its owner name, or its host when only one runs there), else the only one
alive; with several alive and none named, the lowest owner name answers that one must be
named. Each process knows the others from their catalogs (``P.capture.catalog``: its
cameras, every second and after each change), which also tell web workers which cameras the
site has.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection
from typing import TypeVar

from . import catalog, wire
from .broadcast import Broadcaster, Frame
from .bus import FrameBus
from .capture import Camera
from .config import ConfigError
from .events import Event
from .record import CameraBusy
from .redaction import redact
from .registry import CameraConflict, Registry

log = logging.getLogger(__name__)

INTEREST_TTL = 3.0  # seconds an interest keeps a camera encoding without being renewed
STATE_EVERY = 1.0  # seconds between two state messages of a camera
OWNER_ASK = 0.5  # seconds to wait for another process that already captures a camera
MAX_WORKERS = 1024  # web workers whose interest a camera follows at once
CLAIM_LOG_EVERY = 60.0  # seconds between two log lines about a second owner of a camera
FORGET_AFTER = 60.0  # seconds after which a silent capture process's catalog is forgotten
WARM_UP = 2.5  # seconds of listening to the others' catalogs before answering for the site

T = TypeVar("T")


class CameraClaimed(Exception):
    """Another capture process already captures this camera."""


class CameraPublisher:
    """One camera of the capture role: its frames out while wanted, its switches in."""

    def __init__(
        self,
        camera: Camera,
        registry: Registry,
        bus: FrameBus,
        owner: str,
        manage: Callable[[int, wire.ManageRequest], wire.ManageReply] | None = None,
    ) -> None:
        """:param manage: answers the camera's change or removal (the capture role's)."""
        self.camera = camera
        self._manage = manage
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
        self._claimed_said = 0.0  # when a second owner of this camera was last logged (monotonic)
        self._pruned = 0.0  # when expired interests were last forgotten (monotonic)

    # -- interest -----------------------------------------------------------------------

    def _on_interest(self, interest: wire.Interest) -> None:
        profiles = {
            name: count for name, count in interest.profiles.items() if name in self.camera.config.profiles
        }
        now = time.monotonic()
        with self._lock:
            if now >= self._pruned + 1.0:
                # Workers come and go (each restart is a new one): forget the expired ones,
                # once a second rather than at every message (a flood stays cheap).
                self._pruned = now
                self._interest = {w: entry for w, entry in self._interest.items() if entry[1] > now}
            if interest.worker not in self._interest and len(self._interest) >= MAX_WORKERS:
                self._bus.rejections.reject(self._subjects.interest(self.camera.id), "too many web workers")
                return
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
        if self._stop.is_set():
            return  # removed or replaced: its record is no longer this process's to say
        self._bus.publish(self._subjects.state(self.camera.id), wire.encode_record(self.record()))

    def _on_state(self, record: dict[str, object]) -> None:
        owner = record.get("owner")
        now = time.monotonic()
        if owner and owner != self.owner and now - self._claimed_said >= CLAIM_LOG_EVERY:
            # Said once a minute, whoever claims it: a flood of forged owners is one line.
            self._claimed_said = now
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

    def _on_manage(self, request: wire.ManageRequest) -> bytes:
        assert self._manage is not None
        return wire.encode_manage_reply(self._manage(self.camera.id, request))

    def _serve(
        self,
        subject: str,
        decode: Callable[[bytes], T],
        answer: Callable[[T], bytes],
        refusal: Callable[[str], bytes] = wire.encode_error,
    ) -> Callable[[], None]:
        """Answer requests on ``subject``: each decoded first; a bad one is counted and told
        why (in ``refusal``'s shape)."""
        return self._bus.serve(subject, checked_request(self._bus, subject, decode, answer, refusal))

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
        by = captured_by(self._bus, self.camera.id)
        if by is not None:
            raise CameraClaimed(f"camera {self.camera.id} is already captured by {by}")
        self.answer_owner()

    def answer_owner(self) -> None:
        """Answer "who captures this camera?" (claimed already)."""
        subject = self._subjects.owner(self.camera.id)
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
        if self._manage is not None:
            self._cancels.append(
                self._serve(self._subjects.manage(cam_id), wire.decode_manage, self._on_manage, refused)
            )
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
        """While someone wants ``profile``, watch it like a viewer (which makes the capture
        thread decode and encode it) and have each of its frames published once, by the
        capture thread that makes it: this thread wakes for a change of interest, not per frame."""
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
            send = self._sender(subject, broadcaster)
            broadcaster.add_listener(send)
            try:
                with broadcaster.watching():
                    while not self._stop.is_set() and self._wanted(profile) and not broadcaster.closed:
                        with self._lock:
                            if not broadcaster.closed:  # under the lock: a close notifies under it
                                self._lock.wait(1.0)  # notified by interest, stop and a close
            finally:
                broadcaster.remove_listener(send)

    def _sender(self, subject: str, broadcaster: Broadcaster) -> Callable[[], None]:
        """A listener that publishes each new frame of ``broadcaster`` on ``subject``, run by
        the capture thread right after it publishes the frame (quick: the bus never blocks)."""
        latest = broadcaster.latest
        sent = [latest.seq if latest is not None else 0]  # a frame already there is not sent again

        def send() -> None:
            if broadcaster.closed:  # the camera stopped: the watching thread moves on at once
                with self._lock:
                    self._lock.notify_all()
                return
            frame = broadcaster.latest
            if frame is None or frame.seq <= sent[0]:
                return
            sent[0] = frame.seq
            headers = wire.frame_headers(frame.seq, frame.timestamp, frame.placeholder)
            self._bus.publish_frame(subject, frame.jpeg, headers)

        return send


def checked_request(
    bus: FrameBus,
    subject: str,
    decode: Callable[[bytes], T],
    answer: Callable[[T], bytes | None],
    refusal: Callable[[str], bytes | None],
) -> Callable[[bytes], bytes | None]:
    """A responder that decodes each request first; a bad one is counted, and answered
    ``refusal(reason)``."""

    def respond(payload: bytes) -> bytes | None:
        try:
            request = decode(payload)
        except wire.BadMessage as exc:
            bus.rejections.reject(subject, str(exc))
            return refusal(str(exc))
        return answer(request)

    return respond


def refused(reason: str) -> bytes:
    """A manage or add request's answer for a request that is no request: a 400."""
    return wire.encode_manage_reply(wire.ManageReply(400, error=reason))


def captured_by(bus: FrameBus, cam_id: int) -> str | None:
    """The capture process that answers for ``cam_id``, if one does."""
    subject = bus.subjects.owner(cam_id)
    other = bus.request(subject, b"", timeout=OWNER_ASK)
    if not other:
        return None
    try:
        return wire.decode_owner(other)
    except wire.BadMessage as exc:
        # Something answers for the camera, but not a capture process: not a claim.
        bus.rejections.reject(subject, str(exc))
        return None


def chosen(me: str, others: Collection[str], named: str | None, warm: bool) -> list[str] | None:
    """Whether the capture process ``me`` answers an add request naming ``named`` (an owner
    name, a host, or None), ``others`` being the other capture processes it hears: the
    candidates when it answers (``[me]``: it adds the camera; more: it says to name one),
    None when it stays silent.

    One process answers as long as they hear each other: the one named exactly, else the
    lowest name among those that match, and only once it has listened long enough
    (``warm``) to have heard the others. While they do not (one just started, or cut off),
    fewer answer, never more: none, and the asker says so.
    """
    if named == me:
        return [me]
    everyone = {me, *others}
    candidates = sorted(o for o in everyone if named is None or named in (o, wire.host_of(o)))
    if not warm or not candidates or candidates[0] != me:
        return None
    return candidates


def _message(frame: Frame) -> wire.FrameMessage:
    """A broadcast frame as it crosses the bus."""
    return wire.FrameMessage(frame.jpeg, frame.seq, frame.timestamp, frame.placeholder)


def owner_name() -> str:
    """Who this capture process is, for the record and for a claim refused: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class CaptureRole:
    """Every camera of the configuration, published on the bus until stopped; cameras added,
    changed and removed over the bus."""

    def __init__(self, registry: Registry, bus: FrameBus) -> None:
        self.registry = registry
        self.bus = bus
        self.owner = owner_name()
        self.publishers = {camera.id: self._publisher(camera) for camera in registry.local}
        self._stop = threading.Event()
        self._stop_events: Callable[[], None] | None = None
        self._cancels: list[Callable[[], None]] = []  # the site's subscriptions: catalogs and adds
        # One add, change or removal at a time; guards swaps of ``publishers`` (a copy on write).
        self._manage_lock = threading.Lock()
        self._heard_lock = threading.Lock()  # guards _heard (the bus thread writes it)
        self._heard: dict[str, tuple[wire.Catalog, float]] = {}  # other owners' catalogs, when heard
        self._listening_since: float | None = None  # since when the others' catalogs are heard

    def _publisher(self, camera: Camera) -> CameraPublisher:
        return CameraPublisher(camera, self.registry, self.bus, self.owner, manage=self._manage)

    def run(self, connect_timeout: float = 10.0) -> int:
        """Claim the cameras, start them as remembered, publish until ``stop()``; the exit code."""
        if not self.bus.wait_connected(connect_timeout):
            shown = redact(self.bus.url)
            log.warning("frame bus %s not reachable yet: capturing anyway, publishing once it is", shown)
        try:
            for publisher in self.publishers.values():
                publisher.claim()
        except CameraClaimed as exc:
            log.error("livecam capture: %s", exc)
            return 2
        # Every event once, to every web worker: before the cameras start, so none is missed.
        self._stop_events = self.registry.events.listen(self._forward)
        subjects = self.bus.subjects
        hear = wire.checked(
            lambda payload, _: wire.decode_catalog(payload),
            self._on_catalog,
            self.bus.rejections,
            subjects.catalog(),
        )
        self._cancels.append(self.bus.subscribe(subjects.catalog(), hear, pending_bytes=2**20))
        self._cancels.append(
            self.bus.serve(
                subjects.add(),
                checked_request(self.bus, subjects.add(), wire.decode_add, self._on_add, self._refused_add),
            )
        )
        self.registry.restore()
        for publisher in self.publishers.values():
            publisher.start()
        log.info("capturing %d camera(s) for the frame bus as %s", len(self.publishers), self.owner)
        while True:  # at once, then every second: web workers know the process is back
            self._listening()
            for publisher in list(self.publishers.values()):
                publisher.publish_state()
            self.publish_catalog()
            if self._stop.wait(min(STATE_EVERY, wire.CATALOG_EVERY)):
                return 0

    def stop(self) -> None:
        """Make run() return (safe from a signal handler)."""
        self._stop.set()

    def _forward(self, event: Event) -> None:
        """An event noticed here, on its camera's event subject (in the noticing thread: quick)."""
        self.bus.send(self.bus.subjects.event(event.camera), wire.encode_event(event))

    def close(self) -> None:
        """Stop publishing and answering, then stop every camera (their last events still go)."""
        for cancel in self._cancels:
            cancel()  # no add is answered any more
        with self._manage_lock:
            for publisher in self.publishers.values():
                publisher.stop()
        self.registry.shutdown()
        if self._stop_events is not None:
            self._stop_events()

    # -- the site's capture processes ---------------------------------------------------

    def publish_catalog(self) -> None:
        """Tell web workers and the other capture processes which cameras this one has."""
        listed = wire.Catalog(self.owner, frozenset(self.publishers), frozenset(self.registry.removed))
        self.bus.publish(self.bus.subjects.catalog(), wire.encode_catalog(listed))

    def _on_catalog(self, heard: wire.Catalog) -> None:
        """Another capture process's catalog (in the bus thread)."""
        if heard.owner == self.owner:
            return  # this process's own, or one that claims to be
        with self._heard_lock:
            self._heard[heard.owner] = (heard, time.monotonic())

    def _listening(self) -> None:
        """Note since when the others' catalogs have been heard without a break."""
        if not self.bus.connected:
            self._listening_since = None
        elif self._listening_since is None:
            self._listening_since = time.monotonic()

    def _others(self) -> dict[str, wire.Catalog]:
        """The other capture processes alive: heard within wire.ALIVE_FOR."""
        now = time.monotonic()
        with self._heard_lock:
            self._heard = {o: entry for o, entry in self._heard.items() if now - entry[1] < FORGET_AFTER}
            return {o: listed for o, (listed, heard) in self._heard.items() if now - heard < wire.ALIVE_FOR}

    @property
    def _warm(self) -> bool:
        since = self._listening_since
        return since is not None and time.monotonic() - since >= WARM_UP

    def _warmed(self, named: str | None) -> bool:
        """Whether this process has heard the others long enough to answer for the site,
        waiting for it (at most WARM_UP: the asker waits longer) just after a start."""
        deadline = time.monotonic() + WARM_UP
        while named != self.owner and not self._warm and time.monotonic() < deadline:
            if self._stop.wait(0.1):
                break
        return self._warm

    # -- cameras added, changed and removed -----------------------------------------------

    def _refused_add(self, reason: str) -> bytes | None:
        """A bad add request: answered by the process that answers unnamed requests."""
        return refused(reason) if chosen(self.owner, self._others(), None, self._warmed(None)) else None

    def _on_add(self, request: wire.AddRequest) -> bytes | None:
        """Add the camera if the request is this process's to answer; else stay silent."""
        warm = self._warmed(request.capture)
        others = self._others()
        candidates = chosen(self.owner, others, request.capture, warm)
        if candidates is None:
            return None
        if len(candidates) > 1:
            where = "run" if request.capture is None else f"run on {request.capture}"
            reason = (
                f"capture: {len(candidates)} capture processes {where}: name one of {', '.join(candidates)}"
            )
            return wire.encode_manage_reply(wire.ManageReply(400, error=reason))
        return wire.encode_manage_reply(self._add(request, others))

    def _add(self, request: wire.AddRequest, others: dict[str, wire.Catalog]) -> wire.ManageReply:
        elsewhere = {cam_id: owner for owner, listed in others.items() for cam_id in listed.cameras}
        with self._manage_lock:
            taken = {*self.publishers, *elsewhere, *request.taken}
            cam_id = request.cam_id
            if cam_id is None:
                cam_id = next(n for n in range(len(taken) + 1) if n not in taken)
            elif cam_id in elsewhere:
                return wire.ManageReply(
                    409, error=f"camera {cam_id} exists already (captured by {elsewhere[cam_id]})"
                )
            try:
                config = catalog.runtime_camera(cam_id, request.table, self.registry.settings)
                if cam_id not in self.publishers and (by := captured_by(self.bus, cam_id)) is not None:
                    raise CameraConflict(f"camera {cam_id} exists already (captured by {by})")
                self.registry.add(config, request.table, start=request.table.get("autostart", True))
            except Exception as exc:  # noqa: BLE001 - every refusal is an answer
                return self._refusal(exc, "add a camera")
            publisher = self._follow_registry()[cam_id]
        log.info("camera %s (%s) added over the frame bus", cam_id, config.name)
        return wire.ManageReply(201, record=publisher.record())

    def _manage(self, cam_id: int, request: wire.ManageRequest) -> wire.ManageReply:
        """Change or remove one of this process's cameras, as a web worker asked."""
        with self._manage_lock:
            try:
                if request.action == "remove":
                    self.registry.delete(cam_id)
                else:
                    self.registry.edit(cam_id, request.changes)
            except Exception as exc:  # noqa: BLE001 - every refusal is an answer
                return self._refusal(exc, f"{request.action} camera {cam_id}")
            publishers = self._follow_registry()
        if request.action == "remove":
            return wire.ManageReply(204)
        return wire.ManageReply(200, record=publishers[cam_id].record())

    def _refusal(self, exc: Exception, what: str) -> wire.ManageReply:
        """The answer that says why a change was refused, with the status one process gives."""
        if isinstance(exc, ConfigError):
            return wire.ManageReply(400, error=str(exc))
        if isinstance(exc, CameraConflict):
            return wire.ManageReply(409, error=str(exc))
        if isinstance(exc, KeyError):
            return wire.ManageReply(404, error=f"no camera {exc.args[0] if exc.args else ''} here")
        if isinstance(exc, CameraBusy):
            return wire.ManageReply(503, error=str(exc))
        log.exception("livecam capture: could not %s", what)
        return wire.ManageReply(503, error=f"the capture process could not {what}: {type(exc).__name__}")

    def _follow_registry(self) -> dict[int, CameraPublisher]:
        """Publish what the registry now has (under _manage_lock): a publisher for each camera
        added or reopened, none for a camera removed; then say so at once."""
        cameras = {camera.id: camera for camera in self.registry.local}
        publishers = dict(self.publishers)
        for cam_id, publisher in list(publishers.items()):
            if cameras.get(cam_id) is not publisher.camera:
                publisher.stop()
                del publishers[cam_id]
        for cam_id, camera in cameras.items():
            if cam_id not in publishers:
                publisher = publishers[cam_id] = self._publisher(camera)
                publisher.answer_owner()  # claimed before it was added
                publisher.start()
        self.publishers = publishers
        self.publish_catalog()
        for publisher in publishers.values():
            publisher.publish_state()
        return publishers
