"""Bus mode's web role without NATS: a camera as its record describes it, and the cameras the
capture processes' catalogs list (SiteCameras), over a bus that delivers what the test says."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import wait_for
from livecam import wire
from livecam.config import CameraConfig, Profile, parse_source
from livecam.remote import RemoteCamera, SiteCameras, config_from_record


class FakeBus:
    """The part of a FrameBus the web role uses; the test delivers each message."""

    def __init__(self) -> None:
        self.subjects = wire.Subjects("livecam")
        self.rejections = wire.Rejections()
        self.connected = True
        self._lock = threading.Lock()
        self._handlers: dict[str, Callable[[bytes, dict[str, str]], None]] = {}

    def subscribe(self, subject: str, handler: Any, pending_bytes: int = 0) -> Callable[[], None]:
        with self._lock:
            self._handlers[subject] = handler
        return lambda: self._drop(subject, handler)

    subscribe_frames = subscribe  # one way in for the test: frames and the rest alike

    def _drop(self, subject: str, handler: Any) -> None:
        with self._lock:
            if self._handlers.get(subject) is handler:
                del self._handlers[subject]

    def subscribed(self, subject: str) -> bool:
        with self._lock:
            return subject in self._handlers

    def deliver(self, subject: str, payload: bytes) -> None:
        with self._lock:
            handler = self._handlers.get(subject)
        if handler is not None:
            handler(payload, {})

    def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> bool:
        return True

    def request(self, subject: str, payload: bytes, timeout: float) -> bytes | None:
        return None

    def wait_connected(self, timeout: float) -> bool:
        return True


def a_record(cam_id: int = 4, **changes: Any) -> dict[str, Any]:
    """A record as a capture process sends it, checked as a web worker receives it."""
    profiles = {
        "full": {"width": 64, "height": 48, "max_fps": None, "quality": None},
        "preview": {"width": 64, "height": 48, "max_fps": 5.0, "quality": 60},
    }
    record = {"id": cam_id, "name": "Yard", "source": "testsrc:64x48@10", "kind": "testsrc"}
    record |= {"state": "on", "owner": "cams1:7", "profiles": profiles, **changes}
    return wire.decode_record(wire.encode_record(record), cam_id)


def test_a_camera_is_built_from_its_record() -> None:
    config = config_from_record(4, a_record())
    assert (config.id, config.name, str(config.source), config.source.kind) == (
        4,
        "Yard",
        "testsrc:64x48@10",
        "testsrc",
    )
    assert list(config.profiles) == ["full", "preview"]
    assert (config.profiles["preview"].fps, config.profiles["preview"].quality) == (5.0, 60)
    url = config_from_record(4, a_record(kind="url", source="http://admin:***@192.0.2.7/video.mjpg"))
    assert (url.source.kind, str(url.source)) == ("url", "http://admin:***@192.0.2.7/video.mjpg")
    # What a record does not say is this worker's configuration's.
    base = CameraConfig(id=4, source=parse_source("testsrc", "source"), name="Bench")
    bare = config_from_record(4, wire.decode_record(b'{"state": "off"}', 4), base)
    assert (bare.name, bare.source, list(bare.profiles)) == ("Bench", base.source, ["full", "preview"])
    odd = config_from_record(4, a_record(kind="teleport"), base)
    assert odd.source == base.source


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def camera(bus: FakeBus) -> Iterator[RemoteCamera]:
    config = CameraConfig(id=4, source=parse_source("testsrc", "source"), name="Bench")
    camera = RemoteCamera(config, bus)  # type: ignore[arg-type]
    yield camera
    camera.close()


def test_a_rename_in_the_record_is_followed_without_ending_a_stream(
    camera: RemoteCamera, bus: FakeBus
) -> None:
    camera.take_record(a_record(name="Bench"))
    feeds = camera.feeds
    bus.deliver(bus.subjects.state(4), wire.encode_record(a_record(name="Garden")))
    assert camera.config.name == "Garden" and camera.status()["name"] == "Garden"
    assert camera.feeds is feeds and not feeds.closed


def test_new_profiles_in_the_record_end_the_streams_as_a_reopened_camera_does(camera: RemoteCamera) -> None:
    camera.take_record(a_record())
    feeds = camera.feeds
    thumb = {"width": 32, "height": 24, "max_fps": 1.0, "quality": 50}
    camera.take_record(a_record(profiles={**a_record()["profiles"], "thumb": thumb}))
    assert feeds.closed and "thumb" in camera.feeds and not camera.feeds.closed
    assert camera.config.profiles["thumb"] == Profile("thumb", 32, 1.0, 50)
    assert camera.status()["profiles"]["thumb"]["max_fps"] == 1.0
    camera.take_record(a_record(state="off", profiles={**a_record()["profiles"], "tiny": thumb}))
    assert camera.feeds.closed and "tiny" in camera.feeds  # off: its streams stay ended


class Site:
    """A SiteCameras and what it did: the worker's cameras, added and dropped."""

    def __init__(self, bus: FakeBus, have: set[int]) -> None:
        self.bus = bus
        self.have = set(have)
        self.added: list[tuple[int, str]] = []
        self.dropped: list[int] = []
        self.cameras = SiteCameras(bus, lambda: set(self.have), self.appear, self.vanish, limit=8)  # type: ignore[arg-type]

    def appear(self, cam_id: int, told: dict[str, Any]) -> None:
        self.have.add(cam_id)
        self.added.append((cam_id, told["name"]))

    def vanish(self, cam_id: int) -> None:
        self.have.discard(cam_id)
        self.dropped.append(cam_id)

    def catalog(self, owner: str, cameras: set[int], removed: frozenset[int] = frozenset()) -> None:
        listed = wire.Catalog(owner, frozenset(cameras), removed)
        self.bus.deliver(self.bus.subjects.catalog(), wire.encode_catalog(listed))

    def record(self, cam_id: int, **changes: Any) -> None:
        self.bus.deliver(self.bus.subjects.state(cam_id), wire.encode_record(a_record(cam_id, **changes)))


@pytest.fixture
def site(bus: FakeBus) -> Iterator[Site]:
    site = Site(bus, {0})
    yield site
    site.cameras.close()


def test_a_camera_listed_is_added_once_its_record_comes(site: Site, bus: FakeBus) -> None:
    site.catalog("cams1:7", {0, 4})
    assert wait_for(lambda: bus.subscribed(bus.subjects.state(4)))  # awaiting its record
    assert site.added == []
    site.record(4, name="Yard")
    assert wait_for(lambda: site.added == [(4, "Yard")])
    assert wait_for(lambda: not bus.subscribed(bus.subjects.state(4)))  # the camera's own follows it
    # A record of a camera nobody lists adds nothing.
    site.record(9)
    site.catalog("cams1:7", {0, 4})
    assert not wait_for(lambda: len(site.added) > 1, timeout=0.5)


def test_a_camera_its_process_stops_listing_or_removes_is_dropped_unless_another_lists_it(
    site: Site,
) -> None:
    site.have |= {4, 5}
    site.catalog("cams1:7", {0, 4, 5})
    site.catalog("cams2:9", {5})
    site.catalog("cams1:7", {0})  # 4 and 5 gone from cams1; cams2 still lists 5
    assert wait_for(lambda: site.dropped == [4])
    site.catalog("cams2:9", set(), frozenset({0}))  # a configured camera removed, but cams1 lists it
    site.catalog("cams2:9", set(), frozenset({5}))
    assert wait_for(lambda: site.dropped == [4, 5])
    assert 0 in site.have


def test_a_silent_capture_process_changes_nothing_and_a_removal_elsewhere_is_noticed(
    site: Site, bus: FakeBus
) -> None:
    site.have.add(4)
    site.catalog("cams1:7", {0, 4})
    assert not wait_for(lambda: site.dropped, timeout=1.5)  # then nothing more from cams1
    # A camera added through this worker (noted from the answer) before its owner's next
    # catalog, then removed through another: its owner's catalog without it drops it.
    site.have.add(6)
    site.cameras.note("cams1:7", 6)
    site.catalog("cams1:7", {0, 4})
    assert wait_for(lambda: site.dropped == [6])


def test_the_capture_processes_heard_are_known_after_a_while(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert site.cameras.owners() is None  # just started: it may not have heard them all
    monkeypatch.setattr("livecam.remote.WARM_UP", 0.0)
    site.catalog("cams1:7", {0})
    assert wait_for(lambda: site.cameras.owners() == ["cams1:7"])
    site.bus.connected = False
    assert site.cameras.owners() is None


def test_a_bad_catalog_is_dropped_and_counted(site: Site, bus: FakeBus) -> None:
    site.have.add(4)
    for payload in (
        b"junk",
        b'{"owner": "x", "cameras": [-1]}',
        b'{"owner": "x", "cameras": [4], "removed": [4]}',
    ):
        bus.deliver(bus.subjects.catalog(), payload)
    assert bus.rejections.count(bus.subjects.catalog()) == 3
    assert not wait_for(lambda: site.dropped, timeout=0.5)
