"""USB hotplug under zero configuration: webcams plugged into a fake /dev tree while livecam runs."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

import livecam.config
from fake_v4l2 import FakeCamera, FakeDev, capability
from helpers import wait_for
from livecam import hotplug, state
from livecam.appstate import get_registry
from livecam.config import load_settings
from livecam.registry import Registry
from livecam.v4l2 import list_devices

INTERVAL = 0.05  # seconds between looks at the fake /dev (2 s in service)


def hotplug_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == hotplug.THREAD_NAME]


class Usb:
    """Webcams plugged into and out of a fake /dev tree, each with its metadata node, as udev does."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.dev = FakeDev(root)
        self.links = root / "v4l" / "by-id"

    def plug(self, node: str, serial: str | None = None) -> FakeCamera:
        driver = FakeCamera()
        self.dev.add(node, driver, f"usb-{serial}-video-index0" if serial else None)
        metadata = f"video{int(node[5:]) + 1}"  # a UVC webcam's second node carries metadata only
        self.dev.add(metadata, FakeCamera(capability(0x80000001, 0x00800000)))
        return driver

    def unplug(self, node: str, serial: str | None = None) -> None:
        for name in (node, f"video{int(node[5:]) + 1}"):
            (self.dev.root / name).unlink()
            self.dev.drivers.pop(name)
        if serial:
            (self.links / f"usb-{serial}-video-index0").unlink()

    def stable(self, serial: str) -> str:
        return str(self.links / f"usb-{serial}-video-index0")

    def scan(self) -> list:
        return list_devices(self.dev.root, self.dev.ioctl)


@pytest.fixture
def usb(tmp_path: Path) -> Usb:
    return Usb(tmp_path / "dev")


@pytest.fixture
def discovered(usb: Usb, tmp_path: Path) -> Iterator[Callable[[], Registry]]:
    """Registries whose cameras discovery found in the fake /dev, watched for hotplug;
    shut down at teardown, which must end the watcher."""
    registries: list[Registry] = []

    def factory() -> Registry:
        settings = load_settings(
            environ={}, overrides={"state_dir": str(tmp_path / "state")}, discover=usb.scan
        )
        registry = Registry(settings)
        registries.append(registry)
        registry.restore()
        assert hotplug.start(registry, usb.dev.root, usb.dev.ioctl, INTERVAL) is not None
        return registry

    yield factory
    for registry in registries:
        registry.shutdown()
    assert hotplug_threads() == []


def sources(registry: Registry) -> dict[int, str]:
    return {camera.id: str(camera.config.source) for camera in registry}


def test_a_webcam_plugged_in_becomes_a_camera_under_its_stable_id(
    usb: Usb, discovered: Callable[[], Registry], tmp_path: Path
) -> None:
    usb.plug("video0", "Desk")
    registry = discovered()
    assert sources(registry) == {0: usb.stable("Desk")}
    usb.plug("video2", "Door")
    assert wait_for(lambda: registry.get(2) is not None, timeout=5)
    door = registry.get(2)
    assert str(door.config.source) == usb.stable("Door")  # its stable path, not /dev/video2
    assert door.config.autostart and door.is_on  # started as discovered cameras are
    state_dir = tmp_path / "state"
    assert state.load_device_ids(state_dir) == {usb.stable("Desk"): 0, usb.stable("Door"): 2}
    # Discovery's camera, not one added at run time: nothing kept in runtime-cameras.json.
    kept = json.loads((state_dir / "runtime-cameras.json").read_text())
    assert kept == {"cameras": {}, "removed": []}
    assert registry.current_table(2) == {"source": usb.stable("Door"), "autostart": True}


def test_a_webcam_unplugged_stays_and_keeps_its_id_when_plugged_back(
    usb: Usb, discovered: Callable[[], Registry]
) -> None:
    registry = discovered()
    assert [c.config.source.kind for c in registry] == ["testsrc"]  # nothing found at startup
    watcher = registry.watcher
    assert isinstance(watcher, hotplug.DeviceWatcher)
    usb.plug("video0", "Desk")
    # Its index 0 is the test pattern's, which stays: the webcam takes the next free id.
    assert wait_for(lambda: len(registry) == 2, timeout=5)
    assert sources(registry) == {0: "testsrc:640x480@15", 1: usb.stable("Desk")}
    usb.unplug("video0", "Desk")
    scans = watcher.scans
    assert wait_for(lambda: watcher.scans > scans, timeout=5)
    assert sources(registry) == {0: "testsrc:640x480@15", 1: usb.stable("Desk")}  # not forgotten
    # Back in another port, as another node: the same camera, nothing added.
    usb.plug("video4", "Desk")
    scans = watcher.scans
    assert wait_for(lambda: watcher.scans > scans, timeout=5)
    assert sources(registry) == {0: "testsrc:640x480@15", 1: usb.stable("Desk")}


def test_a_webcam_gets_the_id_remembered_for_it(
    usb: Usb, discovered: Callable[[], Registry], tmp_path: Path
) -> None:
    state.save_device_ids(tmp_path / "state", {usb.stable("Yard"): 7})
    usb.plug("video0", "Desk")
    registry = discovered()
    usb.plug("video2", "Yard")
    assert wait_for(lambda: registry.get(7) is not None, timeout=5)
    assert sources(registry) == {0: usb.stable("Desk"), 7: usb.stable("Yard")}


def test_a_webcam_without_udev_links_is_its_index_and_keeps_its_switch(
    usb: Usb, discovered: Callable[[], Registry], tmp_path: Path
) -> None:
    registry = discovered()
    state.save(tmp_path / "state", {0: True, 4: False})  # switched off before a restart
    usb.plug("video4")
    assert wait_for(lambda: registry.get(4) is not None, timeout=5)
    assert registry.get(4).config.source.target == 4 and not registry.get(4).is_on
    assert state.load_device_ids(tmp_path / "state") == {}  # nothing stable to remember it by


def test_a_discovered_camera_removed_at_run_time_stays_removed(
    usb: Usb, discovered: Callable[[], Registry], tmp_path: Path
) -> None:
    registry = discovered()
    usb.plug("video0", "Desk")
    assert wait_for(lambda: registry.get(1) is not None, timeout=5)
    registry.remove(1)
    registry.remove(0)  # the test pattern too
    assert registry.removed == {0, 1}
    usb.unplug("video0", "Desk")
    usb.plug("video4", "Desk")  # plugged again: still the camera that was removed
    usb.plug("video0", "Door")  # a new webcam: never a removed camera's id, though 0 is its index
    assert wait_for(lambda: registry.get(2) is not None, timeout=5)
    registry.watcher.close()  # its scan under way ends first
    assert sources(registry) == {2: usb.stable("Door")}
    kept = json.loads((tmp_path / "state" / "runtime-cameras.json").read_text())
    assert kept["removed"] == [0, 1]  # and after a restart too, when discovery finds them at startup


def test_no_device_is_opened_while_dev_does_not_change(usb: Usb, discovered: Callable[[], Registry]) -> None:
    desk = usb.plug("video0", "Desk")
    registry = discovered()
    watcher = registry.watcher
    assert isinstance(watcher, hotplug.DeviceWatcher)
    assert wait_for(lambda: watcher.scans == 1, timeout=5)  # the first look, then nothing
    asked = len(desk.asked)
    threading.Event().wait(20 * INTERVAL)
    assert watcher.scans == 1 and len(desk.asked) == asked  # no webcam woken every interval


def test_shutdown_stops_and_joins_the_watcher(usb: Usb, tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={"state_dir": str(tmp_path)}, discover=usb.scan)
    registry = Registry(settings)
    watcher = hotplug.start(registry, usb.dev.root, usb.dev.ioctl, INTERVAL)
    assert watcher is not None and registry.watcher is watcher
    assert [t.name for t in hotplug_threads()] == ["livecam-hotplug"]
    registry.shutdown()
    assert hotplug_threads() == []
    usb.plug("video0", "Desk")
    threading.Event().wait(4 * INTERVAL)
    assert sources(registry) == {0: "testsrc:640x480@15"}  # nothing added once stopped


@pytest.mark.parametrize(
    "overrides",
    [
        {"cameras": {"0": {"source": "testsrc:32x24@5"}}},  # configured: the operator's cameras only
        {"bus": "nats://127.0.0.1:4222"},  # bus mode's capture role: web workers would never know
    ],
)
def test_no_watcher_unless_discovery_chose_the_cameras_of_one_process(
    usb: Usb, tmp_path: Path, overrides: dict
) -> None:
    settings = load_settings(
        environ={}, overrides={"state_dir": str(tmp_path), **overrides}, discover=usb.scan
    )
    registry = Registry(settings)
    try:
        assert hotplug.start(registry, usb.dev.root, usb.dev.ioctl, INTERVAL) is None
        assert registry.watcher is None and hotplug_threads() == []
    finally:
        registry.shutdown()


def test_no_watcher_in_an_app_with_cameras_configured(make_app: Callable[..., Flask]) -> None:
    app = make_app({"cameras": {"0": {"source": "testsrc:32x24@5"}}})
    assert get_registry(app).watcher is None and hotplug_threads() == []


def test_a_webcam_plugged_in_is_served_by_the_app_at_once(
    usb: Usb, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app's discovery and watcher look at the fake /dev.
    monkeypatch.setattr(livecam.config, "list_devices", usb.scan)
    fake = functools.partial(hotplug.start, dev=usb.dev.root, ioctl=usb.dev.ioctl, interval=INTERVAL)
    monkeypatch.setattr(hotplug, "start", fake)
    usb.plug("video0", "Desk")
    app = make_app({})
    client = app.test_client()
    assert [camera["id"] for camera in client.get("/cameras").get_json()] == [0]
    usb.plug("video2", "Door")
    assert wait_for(lambda: len(client.get("/cameras").get_json()) == 2, timeout=5)
    answer = client.get("/cameras/2")  # its own Blueprint, in the app's next generation
    assert answer.status_code == 200
    assert answer.get_json()["urls"]["stream"] == "/cameras/2/stream.mjpg"
    usb.unplug("video2", "Door")
    assert wait_for(lambda: get_registry(app).watcher.scans >= 2, timeout=5)
    assert [camera["id"] for camera in client.get("/cameras").get_json()] == [0, 2]
