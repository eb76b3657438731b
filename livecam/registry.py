"""The cameras of one app, by id."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Protocol

from . import catalog, state, wire
from .bus import FrameBus
from .capture import Camera
from .config import CameraConfig, ConfigError, Settings, state_directory
from .events import EventLog
from .mqtt import MqttOutput
from .record import CameraBusy, CameraLike
from .remote import RemoteCamera, SiteCameras, config_from_record
from .sender import Sender
from .v4l2 import device_path
from .webhooks import WebhookOutput

log = logging.getLogger(__name__)


class CameraConflict(Exception):
    """A camera added or changed at run time clashes with another: same id, same device."""


# Seconds a capture process may take to add, change or remove a camera (bus mode), and to
# wait for NATS before that.
MANAGE_TIMEOUT = 5.0
CONNECT_WAIT = 3.0

# The whole shutdown fits in gunicorn's graceful timeout (5 s), or the arbiter kills the
# worker before the sources are released.
SHUTDOWN_BUDGET = 4.0
# Of what is left of it once the cameras have stopped, the most the outputs get to deliver
# their last events (the cameras' "off" among them) before they are dropped.
OUTPUTS_BUDGET = 2.0


class Output(Protocol):
    """An output of the events (webhooks, MQTT...): following the event log once started."""

    def close(self, timeout: float) -> None:
        """Stop following, deliver what is queued until ``timeout``, drop the rest."""


class Watcher(Protocol):
    """A thread that changes the cameras on its own (hotplug.py's device watcher)."""

    def close(self, timeout: float) -> None:
        """Stop changing them and end, within ``timeout``."""


class Slots:
    """A fixed number of places, taken without waiting and given back exactly once each."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.taken = 0
        self.subscribers = 0  # of the places taken, those event streams hold (counted apart)
        self._lock = threading.Lock()

    def take(self, subscriber: bool = False) -> bool:
        """Take a place if one is free (with ``subscriber``, for an event stream)."""
        with self._lock:
            if self.taken >= self.capacity:
                return False
            self.taken += 1
            self.subscribers += subscriber
            return True

    def give_back(self, subscriber: bool = False) -> None:
        """Return a place taken earlier, as it was taken."""
        with self._lock:
            self.taken -= 1
            self.subscribers -= subscriber

    def census(self) -> tuple[int, int]:
        """The places taken by other streams and by event streams, read together."""
        with self._lock:
            return self.taken - self.subscribers, self.subscribers


def viewer_capacity(threads: int) -> int:
    """How many streams may hold a gunicorn thread, keeping some threads for everything else."""
    return threads - max(2, min(16, threads // 4))


class Registry:
    """Every configured camera by id, with the settings they came from."""

    def __init__(self, settings: Settings, remote: bool = False) -> None:
        """:param remote: bus mode's web role: the cameras are captured by another process."""
        self.settings = settings
        self.state_dir = state_directory(settings)
        self.bus: FrameBus | None = None
        # What livecam noticed, for /events and the outputs (in the web role: what the capture
        # processes noticed, as the bus brings it).
        self.events = EventLog()
        self._cameras: dict[int, CameraLike]
        self._local: dict[int, Camera] = {}  # the cameras this process captures (none in the web role)
        self._remote: dict[int, RemoteCamera] = {}  # the cameras it follows through the bus
        self._catalog = catalog.Catalog()
        # Cameras device discovery added at run time (a webcam plugged in), with their tables:
        # discovery's, never kept in the catalog, since discovery finds them again at startup.
        self._found: dict[int, dict[str, Any]] = {}
        # Stopped first at shutdown, so no camera is added while the others stop.
        self.watcher: Watcher | None = None
        self.site: SiteCameras | None = None  # the capture processes' catalogs (web role)
        self._change_lock = threading.Lock()  # one run-time change at a time
        # Told after each camera added or removed; those that asked, after a change too.
        self._listeners: list[tuple[Callable[[], None], bool]] = []
        # Told when the ids that need routes change: before a camera added is seen, after a
        # camera removed is gone, so no request finds a camera without its routes.
        self._route_listeners: list[Callable[[], None]] = []
        self._coming: frozenset[int] = frozenset()  # ids being added: routes first
        if remote:
            assert settings.bus, "remote cameras need a frame bus"
            self.bus = FrameBus(
                settings.bus, settings.bus_prefix, name="livecam-web", creds=settings.bus_creds
            ).start()
            max_frame = settings.max_frame_mb * 2**20
            self._remote = {
                cam_id: RemoteCamera(config, self.bus, max_frame=max_frame, events=self.events)
                for cam_id, config in settings.cameras.items()
            }
            self._cameras = dict(self._remote)
        else:
            # The configuration's cameras with what was changed at run time laid over them.
            self._catalog = catalog.load(self.state_dir)
            self._local = {
                cam_id: self._new_camera(config)
                for cam_id, config in catalog.apply(settings, self._catalog).items()
            }
            self._cameras = dict(self._local)
        self._save_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._shutdown_deadline: float | None = None  # one budget, however many callers
        # Each viewer holds a gunicorn thread; past this many, new viewers get a 503 rather
        # than waiting in gunicorn's queue with every button of the dashboard behind them.
        self.viewer_slots = Slots(viewer_capacity(settings.threads))
        # One thread writes every stream under gunicorn (see sender.py).
        self.sender = Sender(settings.send_timeout)
        # The events' outputs run where the cameras are captured, so each event leaves once:
        # never in bus mode's web workers, which only follow the capture processes' events.
        self.outputs: list[Output] = []
        if self.bus is None and settings.webhook_url:
            self.outputs.append(WebhookOutput(settings, self.events).start())
        if self.bus is None and settings.mqtt_url:
            self.outputs.append(MqttOutput(settings, self).start())

    def _new_camera(self, config: CameraConfig) -> Camera:
        return Camera(config, max_frame=self.settings.max_frame_mb * 2**20, events=self.events)

    # -- run-time changes ----------------------------------------------------------------

    def listen_routes(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` when the ids with routes change (the app builds its routes anew):
        before a camera added can be found, after a camera removed can no longer be."""
        self._route_listeners.append(listener)

    def routed(self) -> list[int]:
        """The ids the app must have routes for: every camera's, and those being added."""
        return sorted(self._cameras.keys() | self._coming)

    def listen(self, listener: Callable[[], None], changes: bool = False) -> None:
        """Call ``listener()`` after each camera added or removed, and if ``changes`` after a
        camera's settings changed too (a rename, a reopen: MQTT's discovery)."""
        self._listeners.append((listener, changes))

    def current_table(self, cam_id: int) -> dict[str, Any]:
        """A camera's settings as a table: as changed at run time, else as configured."""
        table = (
            self._catalog.tables.get(cam_id) or self.settings.tables.get(cam_id) or self._found.get(cam_id)
        )
        if table is None:
            camera = self._cameras[cam_id]
            table = {"source": str(camera.config.source), "name": camera.config.name}
        return dict(table)

    def free_id(self) -> int:
        """The lowest camera id not in use."""
        return next(cam_id for cam_id in range(len(self._cameras) + 1) if cam_id not in self._cameras)

    @property
    def removed(self) -> frozenset[int]:
        """The ids of the cameras removed at run time (discovery does not bring them back)."""
        return frozenset(self._catalog.removed)

    def create(
        self, table: dict[str, Any], cam_id: int | None = None, capture: str | None = None
    ) -> CameraLike:
        """Add a camera from its table (the keys of a ``[cameras.ID]`` table), with ``cam_id``
        or the lowest free id, switched on unless ``autostart`` is false.

        :param capture: in bus mode, the capture process that is to capture it (its owner
            name or its host); None: the only one.
        :raise ConfigError: a bad key or value, or a source a run-time camera may not read.
        :raise CameraConflict: its id or its device is another camera's.
        :raise CameraBusy: in bus mode, no capture process answered.
        """
        if self.bus is not None:
            return self._create_remote(table, cam_id, capture)
        if capture is not None:
            raise ConfigError(
                "capture: names a capture process of bus mode; this livecam captures its cameras"
            )
        config = catalog.runtime_camera(self.free_id() if cam_id is None else cam_id, table, self.settings)
        return self.add(config, table, start=table.get("autostart", True))

    def edit(self, cam_id: int, changes: dict[str, Any]) -> CameraLike:
        """Change some of a camera's settings (None removes a key), laid over its current table.

        :raise ConfigError: a bad key or value, or an id. :raise CameraConflict: its device is
            another camera's. :raise KeyError: no such camera. :raise CameraBusy: in bus mode,
            its capture process did not answer.
        """
        if "id" in changes:
            raise ConfigError("id: a camera's id cannot change (add a new one, then remove this one)")
        if self.bus is not None:
            return self._edit_remote(cam_id, changes)
        if cam_id not in self._local:
            raise KeyError(cam_id)
        table = {**self.current_table(cam_id), **changes}
        table = {key: value for key, value in table.items() if value is not None}  # None removes a key
        return self.change(catalog.runtime_camera(cam_id, table, self.settings), table)

    def delete(self, cam_id: int) -> None:
        """Remove a camera (see remove()).

        :raise KeyError: no such camera. :raise CameraBusy: in bus mode, its capture process
            did not answer.
        """
        if self.bus is not None:
            self._delete_remote(cam_id)
        else:
            self.remove(cam_id)

    # -- run-time changes in bus mode's web role: asked of the capture processes -------------

    def _create_remote(self, table: dict[str, Any], cam_id: int | None, capture: str | None) -> CameraLike:
        assert self.bus is not None
        if cam_id is not None and cam_id in self._cameras:
            raise CameraConflict(f"camera {cam_id} exists already")
        owners = self.site.owners() if self.site is not None else None
        if capture is not None and owners is not None:
            if not any(capture in (owner, wire.host_of(owner)) for owner in owners):
                heard = ", ".join(owners) or "none"
                raise ConfigError(f"capture: no capture process {capture} is heard (heard: {heard})")
        taken = frozenset(sorted(self._cameras)[: wire.MAX_IDS])
        payload = wire.encode_add(wire.AddRequest(table, cam_id, capture, taken))
        if len(payload) > wire.MAX_JSON:
            raise ConfigError(f"a camera table of at most {wire.MAX_JSON // 1024} KB, please")
        told = self._ask(self.bus.subjects.add(), payload, cam_id).record
        assert told is not None
        if "owner" in told and self.site is not None:
            self.site.note(told["owner"], told["id"])
        return self._appear(told["id"], told)

    def _edit_remote(self, cam_id: int, changes: dict[str, Any]) -> CameraLike:
        assert self.bus is not None
        if cam_id not in self._cameras:
            raise KeyError(cam_id)
        payload = wire.encode_manage(wire.ManageRequest("change", changes))
        told = self._ask(self.bus.subjects.manage(cam_id), payload, cam_id).record
        assert told is not None
        return self._appear(cam_id, told)

    def _delete_remote(self, cam_id: int) -> None:
        assert self.bus is not None
        if cam_id not in self._cameras:
            raise KeyError(cam_id)
        payload = wire.encode_manage(wire.ManageRequest("remove", {}))
        self._ask(self.bus.subjects.manage(cam_id), payload, cam_id)
        self._vanish(cam_id)

    def _ask(self, subject: str, payload: bytes, cam_id: int | None) -> wire.ManageReply:
        """Ask the capture side and wait for its answer; a refusal raises what one process would.

        :raise ConfigError: 400. :raise CameraConflict: 409. :raise KeyError: 404.
        :raise CameraBusy: no answer, or one that is no answer (503).
        """
        assert self.bus is not None
        if not self.bus.wait_connected(CONNECT_WAIT):
            raise CameraBusy("the frame bus is unreachable")
        reply = self.bus.request(subject, payload, timeout=MANAGE_TIMEOUT)
        if reply is None:
            which = "no capture process" if cam_id is None else f"camera {cam_id}: no capture process"
            raise CameraBusy(f"{which} answered: try again shortly")
        try:
            answer = wire.decode_manage_reply(reply, cam_id)
        except wire.BadMessage as exc:
            self.bus.rejections.reject(subject, str(exc))
            raise CameraBusy(f"the capture process's answer was refused: {exc}") from None
        refusals = {400: ConfigError, 409: CameraConflict, 404: KeyError, 503: CameraBusy}
        if answer.status in refusals:
            raise refusals[answer.status](answer.error)
        return answer

    def _appear(self, cam_id: int, told: dict[str, Any]) -> CameraLike:
        """A camera of the capture processes, as its record says: added here unless known."""
        with self._change_lock:
            camera = self._remote.get(cam_id)
            if camera is not None:
                camera.take_record(told)
                return camera
            assert self.bus is not None
            config = config_from_record(cam_id, told)
            camera = RemoteCamera(
                config, self.bus, max_frame=self.settings.max_frame_mb * 2**20, events=self.events
            )
            camera.take_record(told)
            try:
                self._route(cam_id)
                self._put_remote(cam_id, camera)
            finally:
                self._coming = frozenset()
        log.info("camera %s (%s) added by %s", cam_id, config.name, told.get("owner", "a capture process"))
        self._changed()
        return camera

    def _vanish(self, cam_id: int) -> None:
        """A camera its capture process removed: its streams here end, and it is forgotten."""
        with self._change_lock:
            camera = self._remote.get(cam_id)
            if camera is None:
                return
            self._put_remote(cam_id, None)
        camera.close()
        log.info("camera %s removed by its capture process", cam_id)
        self._routes_changed()
        self._changed()

    def _put_remote(self, cam_id: int, camera: RemoteCamera | None) -> None:
        """Swap the camera maps of the web role (copy on write, as _put)."""
        remote = dict(self._remote)
        if camera is None:
            remote.pop(cam_id, None)
        else:
            remote[cam_id] = camera
        self._remote = dict(sorted(remote.items()))
        self._cameras = dict(self._remote)

    def add(self, config: CameraConfig, table: dict[str, Any], start: bool, keep: bool = True) -> CameraLike:
        """Add a camera at run time, kept across restarts unless ``keep`` is false (a device
        discovery found: found again at startup); start it if ``start``.

        :raise CameraConflict: its id or its device is another camera's.
        """
        with self._change_lock:
            if config.id in self._cameras:
                raise CameraConflict(f"camera {config.id} exists already")
            if len(self._cameras) >= catalog.MAX_CAMERAS:
                raise CameraConflict(f"livecam runs at most {catalog.MAX_CAMERAS} cameras")
            self._check_device(config)
            camera = self._new_camera(config)
            if keep:
                self._catalog.tables[config.id] = table
            else:
                self._found[config.id] = table
            self._catalog.removed.discard(config.id)
            try:
                self._route(config.id)
                self._put(config.id, camera)
            finally:
                self._coming = frozenset()
            if start:
                self.switch(camera.start)
        log.info("camera %s (%s) added at run time", config.id, config.name)
        self._changed()
        return camera

    def change(self, config: CameraConfig, table: dict[str, Any]) -> CameraLike:
        """Give a camera new settings: a new name at once, anything else by reopening only it
        (switched on again if it was on).

        :raise CameraConflict: its device is another camera's. :raise KeyError: no such camera.
        """
        with self._change_lock:
            old = self._local[config.id]
            self._check_device(config)
            self._catalog.tables[config.id] = table
            renamed = replace(old.config, name=config.name) == config
            if renamed:
                old.rename(config.name)
                self._save_catalog()
                camera: CameraLike = old
            else:
                was_on = old.is_on
                old.stop()
                camera = self._new_camera(config)
                self._put(config.id, camera)
                if was_on:
                    self.switch(camera.start)
        if renamed:
            log.info("camera %s renamed %s", config.id, config.name)
        else:
            log.info("camera %s (%s) changed at run time", config.id, config.name)
        self._changed(came_or_went=False)
        return camera

    def remove(self, cam_id: int) -> None:
        """Remove a camera: its streams end, its source is released, and it stays removed.

        :raise KeyError: no such camera.
        """
        with self._change_lock:
            camera = self._local[cam_id]
            camera.stop()  # its streams end and its source is released (joined)
            self._catalog.tables.pop(cam_id, None)
            found = self._found.pop(cam_id, None) is not None
            if cam_id in self.settings.cameras or found:
                self._catalog.removed.add(cam_id)  # discovery finds it again: it stays removed
            self._put(cam_id, None)
            self.switch(lambda: None)  # the switches file forgets it
        log.info("camera %s removed at run time", cam_id)
        self._routes_changed()
        self._changed()

    def _check_device(self, config: CameraConfig) -> None:
        """Refuse a device that another camera captures (one device is one camera)."""
        if config.source.kind != "device":
            return
        real = device_path(config.source.target)
        for other in self._local.values():
            if other.id != config.id and other.config.source.kind == "device":
                if device_path(other.config.source.target) == real:
                    raise CameraConflict(
                        f"source: device {config.source.target} is already camera {other.id}"
                    )

    def _put(self, cam_id: int, camera: Camera | None) -> None:
        """Swap the camera maps (copy on write: a request iterating the old one is unharmed)."""
        local = dict(self._local)
        if camera is None:
            local.pop(cam_id, None)
        else:
            local[cam_id] = camera
        self._local = dict(sorted(local.items()))
        self._cameras = dict(self._local)
        self._save_catalog()

    def _save_catalog(self) -> None:
        catalog.save(self.state_dir, self._catalog)

    def _route(self, cam_id: int) -> None:
        """Have the routes of a camera about to be added built before anyone can find it."""
        self._coming = frozenset({cam_id})
        self._routes_changed()

    def _routes_changed(self) -> None:
        for listener in self._route_listeners:
            listener()

    def _changed(self, came_or_went: bool = True) -> None:
        """Tell the listeners that a camera came or went, or (``came_or_went`` false) changed."""
        for listener, changes in self._listeners:
            if came_or_went or changes:
                listener()

    def get(self, cam_id: int) -> CameraLike | None:
        """The camera with this id, or None."""
        return self._cameras.get(cam_id)

    def __iter__(self) -> Iterator[CameraLike]:
        return iter(self._cameras.values())

    @property
    def local(self) -> list[Camera]:
        """The cameras this process captures itself (none in bus mode's web role)."""
        return list(self._local.values())

    def __len__(self) -> int:
        return len(self._cameras)

    def restore(self) -> None:
        """Switch on the cameras that were on before a restart, else those set to autostart.

        In the web role, their capture process does, with its own state; the worker starts
        following the capture processes' catalogs (its listeners now being in place).
        """
        if self.bus is not None:
            if self.site is None:
                self.site = SiteCameras(
                    self.bus, lambda: self._cameras.keys(), self._appear, self._vanish, catalog.MAX_CAMERAS
                )
            return
        state.remove_leftovers(self.state_dir)
        saved = state.load(self.state_dir) or {}
        for camera in self:
            if saved.get(camera.id, camera.config.autostart):
                camera.start()

    def switch(self, change: Callable[[], None]) -> None:
        """Apply ``change`` (a camera's start, stop or toggle) and remember every camera's switch."""
        change()
        if self.bus is not None:
            return  # the capture process remembers its cameras' switches
        with self._save_lock:
            # Read the switches under the lock: the last writer always saves the latest state.
            state.save(self.state_dir, {c.id: c.is_on for c in self})

    def shutdown(self, budget: float = SHUTDOWN_BUDGET) -> None:
        """Stop every camera at once, then wait for their sources' release, all within ``budget``."""
        # A second caller (gunicorn's exit hook after the SIGTERM one) waits for the first,
        # within what is left of the first one's budget, not a budget of its own.
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + budget
        deadline = self._shutdown_deadline
        if not self._shutdown_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return
        try:
            if self.watcher is not None:
                self.watcher.close(max(0.1, min(1.0, deadline - time.monotonic())))
            if self.bus is not None:
                if self.bus.closed:
                    return
                # A web worker stopping leaves the cameras as they are: they are not its own.
                if self.site is not None:
                    self.site.close(max(0.0, deadline - time.monotonic()))
                for remote in self._remote.values():
                    remote.close(max(0.0, deadline - time.monotonic()))
                self.sender.stop(max(0.1, deadline - time.monotonic()))
                self.bus.close(max(0.1, deadline - time.monotonic()))
                return
            running = [camera for camera in self._local.values() if camera.is_on]
            for camera in running:
                camera.stop(wait=False)  # every thread is told at once, so they stop in parallel
            busy = [
                camera.id
                for camera in self._local.values()
                if not camera.join(max(0.0, deadline - time.monotonic()))
            ]
            self.sender.stop(max(0.1, deadline - time.monotonic()))
            for output in self.outputs:
                output.close(max(0.1, min(OUTPUTS_BUDGET, deadline - time.monotonic())))
            if busy:
                # Threads stuck in a device or a network open; the process's exit releases them.
                log.warning("camera(s) %s still releasing their source after %.0f s", busy, budget)
            if running:
                log.info("stopped %d camera(s)", len(running))
        finally:
            self.events.close()  # every event stream ends with the cameras
            self._shutdown_lock.release()
