"""USB hotplug under zero configuration: a webcam plugged in while livecam runs becomes a camera.

With no camera configured, livecam captures what discovery found at startup. This thread
(``livecam-hotplug``) adds what it finds later: a V4L2 capture device that no camera captures
gets the id ``devices.json`` remembers for its stable path, else the next free id (remembered),
and starts as discovered cameras do. A device unplugged is left alone: its camera stays, shows
"no signal" while its capture thread retries, and resumes when the device comes back (by its
stable path, the same camera). The test pattern served when no device was found stays too.

How it notices: a look at the names, device numbers and permissions under ``/dev`` every
``interval`` (a directory read, no device opened), and a scan of the devices with their ioctls
(``v4l2.list_devices``) only once the tree has changed and then stayed still for one interval,
so udev has made the by-id links and set the permissions. A rescan that opened every node
every 2 s would wake idle webcams from USB autosuspend each time; inotify would need ctypes or
a new dependency and watches for directories udev creates later, for no gain at this scale.

One process only: bus mode's web role captures nothing, and a camera added in ``livecam
capture`` would need its own publisher, and web workers that learn of it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

from . import state
from .config import ConfigError, camera_config, discovered_table
from .registry import CameraConflict, Registry
from .v4l2 import Device, Ioctl, assign_ids, device_path, list_devices

log = logging.getLogger(__name__)

INTERVAL = 2.0  # seconds between two looks at /dev
THREAD_NAME = "livecam-hotplug"

Tree = tuple[tuple[object, ...], ...]


def tree(dev: str | os.PathLike[str]) -> Tree:
    """What udev changes when a video device comes or goes, read without opening a device: the
    video nodes with their device numbers, owners, modes and change times, and the v4l links."""
    entries: list[tuple[object, ...]] = []
    for node in sorted(Path(dev).glob("video*")):
        try:
            st = node.stat()
        except OSError:
            continue  # gone between the listing and the stat
        entries.append((node.name, st.st_rdev, st.st_uid, st.st_gid, st.st_mode, st.st_ctime_ns))
    for kind in ("by-id", "by-path"):
        for link in sorted(Path(dev, "v4l", kind).glob("*")):
            try:
                entries.append((f"{kind}/{link.name}", os.readlink(link)))
            except OSError:
                continue
    return tuple(entries)


class DeviceWatcher:
    """Adds a camera for each V4L2 capture device that appears; never removes one."""

    def __init__(
        self,
        registry: Registry,
        dev: str | os.PathLike[str] = "/dev",
        ioctl: Ioctl = fcntl.ioctl,
        interval: float = INTERVAL,
    ) -> None:
        self.registry = registry
        self.dev = dev
        self.ioctl = ioctl
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self.scans = 0  # device scans made (the ioctls), for tests and curiosity

    def start(self) -> DeviceWatcher:
        """Start watching; the registry stops it first at shutdown."""
        self.registry.watcher = self
        self._thread.start()
        log.info("watching %s for webcams plugged in (every %g s)", self.dev, self.interval)
        return self

    def close(self, timeout: float = 1.0) -> None:
        """Stop watching and wait for the thread, within ``timeout``."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the hotplug watcher is still busy after %g s", timeout)

    def _run(self) -> None:
        seen: Tree | None = None  # the tree at the last look
        scanned: Tree | None = None  # the tree the last scan was made on
        while not self._stop.wait(self.interval):
            try:
                now = tree(self.dev)
                if now != seen:
                    seen = now  # still changing, perhaps: udev may not be done yet
                elif now != scanned:
                    scanned = now
                    self.scan()
            except Exception:  # a thread that dies silently would stop hotplug for good
                log.exception("hotplug: scanning %s failed", self.dev)

    def scan(self) -> list[int]:
        """Add a camera for each capture device no camera captures; the ids added."""
        self.scans += 1
        known = self._known()
        new = [
            device
            for device in list_devices(self.dev, self.ioctl)
            if device.stable not in known and os.path.realpath(device.path) not in known
        ]
        if not new:
            return []
        state_dir = self.registry.state_dir
        remembered = state.load_device_ids(state_dir)
        removed = self.registry.removed
        for device in list(new):
            # A device whose camera was removed at run time stays removed, as at startup: by
            # the id remembered for its stable path, else (no udev links) by its index.
            cam_id = remembered.get(device.stable) if device.stable else device.index
            if cam_id in removed:
                log.info("%s is camera %s, removed at run time: not added", _label(device), cam_id)
                new.remove(device)
        # The others never take a removed camera's id: it is not theirs.
        ids = assign_ids(new, remembered, taken={camera.id for camera in self.registry} | removed)
        learned = {**remembered, **{d.stable: cam_id for cam_id, d in ids.items() if d.stable}}
        if learned != remembered:
            state.save_device_ids(state_dir, learned)
        switches = state.load(state_dir) or {}
        added = []
        for cam_id, device in ids.items():
            table = discovered_table(device)
            try:
                config = camera_config(cam_id, table, self.registry.settings, f"cameras.{cam_id}")
                # Started as at startup: its remembered switch, else autostart.
                self.registry.add(config, table, start=switches.get(cam_id, True), keep=False)
            except (ConfigError, CameraConflict) as exc:
                log.warning("%s plugged in, not added: %s", _label(device), exc)
                continue
            log.info("%s plugged in: camera %s", _label(device), cam_id)
            added.append(cam_id)
        return added

    def _known(self) -> set[str]:
        """Every device path the registry's cameras capture: as configured and as resolved now."""
        paths = set()
        for camera in self.registry.local:
            source = camera.config.source
            if source.kind in ("device", "file"):  # a device outside /dev (tests) reads as a file
                if isinstance(source.target, str):
                    paths.add(source.target)
                paths.add(device_path(source.target, self.dev))
        return paths


def _label(device: Device) -> str:
    return f"{device.name or 'a webcam'} ({device.stable or device.path})"


def start(
    registry: Registry,
    dev: str | os.PathLike[str] = "/dev",
    ioctl: Ioctl = fcntl.ioctl,
    interval: float = INTERVAL,
) -> DeviceWatcher | None:
    """Watch for webcams plugged in, where discovery chose the cameras and this process captures
    them (one process; not bus mode); else None."""
    settings = registry.settings
    if not settings.discovered or settings.bus is not None or registry.bus is not None:
        return None
    return DeviceWatcher(registry, dev, ioctl, interval).start()
