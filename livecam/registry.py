"""The cameras of one app, by id."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from . import state
from .bus import FrameBus
from .capture import Camera
from .config import Settings, state_directory
from .events import EventLog
from .record import CameraLike
from .remote import RemoteCamera
from .sender import Sender

log = logging.getLogger(__name__)

# The whole shutdown fits in gunicorn's graceful timeout (5 s), or the arbiter kills the
# worker before the sources are released.
SHUTDOWN_BUDGET = 4.0


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
            max_frame = settings.max_frame_mb * 2**20
            self._local = {
                cam_id: Camera(config, max_frame=max_frame, events=self.events)
                for cam_id, config in settings.cameras.items()
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
        """Switch on the cameras that were on before a restart, else those set to autostart."""
        if self.bus is not None:
            return  # their capture process does, with its own state
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
            if self.bus is not None:
                if self.bus.closed:
                    return
                # A web worker stopping leaves the cameras as they are: they are not its own.
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
            if busy:
                # Threads stuck in a device or a network open; the process's exit releases them.
                log.warning("camera(s) %s still releasing their source after %.0f s", busy, budget)
            if running:
                log.info("stopped %d camera(s)", len(running))
        finally:
            self.events.close()  # every event stream ends with the cameras
            self._shutdown_lock.release()
