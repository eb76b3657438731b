"""Motion watched by the capture thread on real sources: an HTTP camera whose room changes on
demand, and the test pattern; events into the log with their pictures."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from camera_server import SceneCamera
from helpers import decode, wait_for
from livecam.capture import Camera
from livecam.config import CameraConfig, MotionConfig, parse_source
from livecam.events import Event, EventLog

QUICK = MotionConfig(enabled=True, fps=10.0, duration=0.2, end_after=1.0)


def wait_event(log: EventLog, kind: str, after: int, timeout: float = 10.0) -> Event | None:
    """The first event of ``kind`` after id ``after``, waiting up to ``timeout`` for it."""
    deadline = time.monotonic() + timeout
    seen = after
    while (left := deadline - time.monotonic()) > 0:
        for event in log.wait_after(seen, left):
            seen = max(seen, event.id)
            if event.type == kind:
                return event
    return None


@pytest.fixture
def room() -> Iterator[SceneCamera]:
    camera = SceneCamera(320, 240, 15).start()
    yield camera
    camera.stop()


def watched(source: str, motion: MotionConfig = QUICK, cam_id: int = 0) -> tuple[Camera, EventLog]:
    log = EventLog()
    config = CameraConfig(id=cam_id, source=parse_source(source, "source"), name="Room", motion=motion)
    return Camera(config, events=log), log


def test_an_object_in_the_room_is_an_event_with_its_box_and_picture(room: SceneCamera) -> None:
    camera, log = watched(room.url)
    camera.start()
    try:
        on = wait_event(log, "camera.state", 0)
        assert on is not None
        assert wait_for(lambda: camera.motion.analysed >= 15)  # a still room, a clock: 1.5 s of it
        assert "motion.start" not in {e.type for e in log.wait_after(on.id, 0.0)}
        assert camera.status()["motion"] and not camera.status()["motion_active"]
        mark = log.last_id
        room.show(0.5, 0.5)
        start = wait_event(log, "motion.start", mark)
        assert start is not None
        assert camera.status()["motion_active"]
        x0, y0, x1, y1 = start.data["box"]
        assert 0.4 <= x0 <= 0.55 and 0.4 <= y0 <= 0.55 and x1 <= 0.8 and y1 <= 0.85
        assert 0.01 <= start.data["score"] <= 0.2
        picture = decode(log.snapshot(start.id))
        assert picture.shape == (240, 320, 3)
        assert picture[150, 180].max() < 60  # the dark object is in it
        room.clear()
        end = wait_event(log, "motion.end", start.id)
        assert end is not None and end.data["score"] >= start.data["score"]
        assert not camera.status()["motion_active"]
        # Nobody watched: motion cost no decode and no encode for viewers.
        assert camera.status()["decoded"] == 0 and camera.status()["encoded"] == 0
    finally:
        camera.stop()


def test_the_lights_going_up_are_no_event(room: SceneCamera) -> None:
    camera, log = watched(room.url)
    camera.start()
    try:
        assert wait_for(lambda: camera.motion.analysed >= 10)  # the background has the room
        mark, analysed = log.last_id, camera.motion.analysed
        room.lights(90)
        # Two seconds of pictures analysed after the change (however slow the machine): no event.
        assert wait_for(lambda: camera.motion.analysed >= analysed + 20)
        assert "motion.start" not in {e.type for e in log.wait_after(mark, 0.0)}
    finally:
        camera.stop()


def test_switching_off_during_motion_ends_the_event(room: SceneCamera) -> None:
    camera, log = watched(room.url, MotionConfig(enabled=True, fps=10.0, duration=0.0, end_after=60.0))
    camera.start()
    try:
        assert wait_for(lambda: camera.motion.analysed >= 10)  # the background has the room
        room.show(0.2, 0.2)
        start = wait_event(log, "motion.start", 0)
        assert start is not None
    finally:
        camera.stop()
    end = wait_event(log, "motion.end", start.id, timeout=1.0)
    assert end is not None


def test_state_changes_are_events() -> None:
    camera, log = watched("testsrc:64x48@10", MotionConfig())
    camera.start()
    on = wait_event(log, "camera.state", 0)
    while on is not None and on.data["state"] != "on":
        on = wait_event(log, "camera.state", on.id)
    camera.stop()
    off = wait_event(log, "camera.state", on.id if on else 0)
    assert on is not None and off is not None
    assert off.data == {"state": "off", "error": None, "previous": "on"}
    assert not camera.status()["motion"]


def test_the_test_patterns_moving_block_is_seen_in_decoded_frames() -> None:
    text = (0.0, 0.0, 1.0, 0.6)  # its name, clock and counter
    motion = MotionConfig(enabled=True, fps=10.0, duration=0.2, area=0.002, ignore=(text,))
    camera, log = watched("testsrc:320x240@20", motion)
    camera.start()
    try:
        start = wait_event(log, "motion.start", 0)
        assert start is not None
        assert start.data["box"][1] >= 0.6  # the block sweeps the lower part
        assert log.snapshot(start.id) is not None
        picture = decode(log.snapshot(start.id))
        assert picture.shape == (240, 320, 3) and np.any(picture == 255)
    finally:
        camera.stop()
