"""The motion detector on real pictures drawn with OpenCV, fed with explicit times."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from livecam.config import MotionConfig
from livecam.motion import ANALYSIS_WIDTH, MotionDetector, gray_of_image, gray_of_jpeg, reduced_flag

WIDTH, HEIGHT = 160, 120
STEP = 0.2  # seconds between analyses: 5 a second


def scene(obj: tuple[int, int] | None = None, light: int = 0, stamp: int = 0, size: int = 24) -> np.ndarray:
    """A textured gray room, an optional dark object at ``obj`` (x, y), a clock in the corner."""
    rng = np.random.default_rng(7)  # the same room in every picture
    room = (rng.integers(90, 130, (HEIGHT, WIDTH), dtype=np.int16) + light).clip(0, 255).astype(np.uint8)
    room = cv2.GaussianBlur(room, (3, 3), 0)
    if obj is not None:
        x, y = obj
        room[y : y + size, x : x + size] = 20
    cv2.putText(room, f"{stamp:06d}", (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
    return room


def feed(detector: MotionDetector, pictures: list[np.ndarray], start: float = 0.0) -> list:
    """Analyse ``pictures`` STEP seconds apart; every analysis."""
    return [detector.analyse(picture, start + i * STEP) for i, picture in enumerate(pictures)]


def changes(analyses: list) -> list:
    return [a.change for a in analyses if a.change is not None]


def settled(detector: MotionDetector, count: int = 10) -> float:
    """Show the empty room until the background has it; the time reached."""
    feed(detector, [scene(stamp=i) for i in range(count)])
    return count * STEP


def walking(start_x: int, count: int, stamp: int = 100) -> list[np.ndarray]:
    return [scene(obj=(start_x + 6 * i, 60), stamp=stamp + i) for i in range(count)]


def test_an_empty_room_is_no_motion() -> None:
    detector = MotionDetector(MotionConfig(enabled=True, area=0.01))
    analyses = feed(detector, [scene(stamp=i) for i in range(30)])
    assert changes(analyses) == [] and not detector.active


def test_something_moving_starts_an_event_after_duration_and_ends_after_end_after() -> None:
    detector = MotionDetector(MotionConfig(enabled=True, area=0.01, duration=0.4, end_after=1.0))
    now = settled(detector)
    moving = feed(detector, walking(10, 10), now)
    starts = changes(moving)
    assert [c.kind for c in starts] == ["start"]
    first_moving = next(i for i, a in enumerate(moving) if a.moving)
    started_at = next(i for i, a in enumerate(moving) if a.change is not None)
    assert (started_at - first_moving) * STEP >= 0.4 - 1e-9  # it went on for duration first
    start = starts[0]
    x0, y0, x1, y1 = start.box
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert 0.45 <= y0 <= 0.55 and 0.65 <= y1 <= 0.75  # the object's rows: 60 to 84 of 120
    assert 0.01 <= start.score <= 0.2
    now += 10 * STEP
    quiet = feed(detector, [scene(stamp=200 + i) for i in range(10)], now)
    ends = changes(quiet)
    assert [c.kind for c in ends] == ["end"]
    ended_at = next(i for i, a in enumerate(quiet) if a.change is not None)
    last_moving = max([-1, *(i for i, a in enumerate(quiet[:ended_at]) if a.moving)])
    assert (ended_at - last_moving) * STEP >= 1.0 - 1e-9  # end_after without motion
    assert (ended_at - last_moving - 1) * STEP < 1.0  # and not later
    end = ends[0]
    assert end.score >= start.score and end.duration > 0
    assert end.box[0] <= x0 and end.box[2] >= x1  # everywhere it moved
    assert not detector.active


def test_a_blip_shorter_than_duration_is_no_event() -> None:
    detector = MotionDetector(MotionConfig(enabled=True, area=0.01, duration=1.0))
    now = settled(detector)
    analyses = feed(detector, [*walking(10, 3), *[scene(stamp=300 + i) for i in range(10)]], now)
    assert any(a.moving for a in analyses) and changes(analyses) == []


def test_the_lights_going_on_recalibrate_instead_of_firing() -> None:
    detector = MotionDetector(MotionConfig(enabled=True, area=0.01, duration=0.0))
    now = settled(detector)
    analyses = feed(detector, [scene(light=90, stamp=400 + i) for i in range(20)], now)
    assert analyses[0].recalibrated
    assert changes(analyses) == [] and not any(a.moving for a in analyses)


def test_a_clock_overlay_is_below_the_area_threshold() -> None:
    detector = MotionDetector(MotionConfig(enabled=True, area=0.02, duration=0.0))
    analyses = feed(detector, [scene(stamp=i * 111_111 % 999_999) for i in range(40)])
    assert changes(analyses) == []


def test_an_ignored_area_is_never_motion_however_small_the_threshold() -> None:
    clock = (0.0, 0.0, 0.4, 0.15)  # the overlay's corner
    watched = MotionDetector(MotionConfig(enabled=True, area=0.001, duration=0.0))
    masked = MotionDetector(MotionConfig(enabled=True, area=0.001, duration=0.0, ignore=(clock,)))
    pictures = [scene(stamp=i * 111_111 % 999_999) for i in range(40)]
    assert changes(feed(watched, pictures))  # the clock alone is motion at this threshold
    assert changes(feed(masked, pictures)) == []


def test_motion_inside_an_ignored_area_is_ignored_but_outside_it_counts() -> None:
    left_half = (0.0, 0.0, 0.5, 1.0)
    detector = MotionDetector(MotionConfig(enabled=True, area=0.01, duration=0.0, ignore=(left_half,)))
    now = settled(detector)
    inside = [scene(obj=(5 + 3 * i, 60), stamp=500 + i) for i in range(8)]  # x < 80 throughout
    assert changes(feed(detector, inside, now)) == []
    outside = [scene(obj=(100 + 3 * i, 60), stamp=600 + i) for i in range(8)]
    assert [c.kind for c in changes(feed(detector, outside, now + 2))] == ["start"]


def test_an_interrupted_event_ends_at_once() -> None:
    detector = MotionDetector(MotionConfig(enabled=True, area=0.01, duration=0.0))
    now = settled(detector)
    feed(detector, walking(10, 5), now)
    assert detector.active
    change = detector.interrupt()
    assert change is not None and change.kind == "end" and not detector.active
    assert detector.interrupt() is None


@pytest.mark.parametrize(
    ("width", "expected"), [(1920, 240), (1280, 160), (640, 160), (320, 160), (160, 160)]
)
def test_a_jpeg_is_decoded_gray_at_the_smallest_scale_still_wide_enough(width: int, expected: int) -> None:
    height = width * 3 // 4
    image = np.full((height, width, 3), 128, np.uint8)
    ok, buffer = cv2.imencode(".jpg", image)
    assert ok
    gray = gray_of_jpeg(buffer.tobytes(), width)
    assert gray is not None and gray.ndim == 2 and gray.shape[1] == expected
    assert reduced_flag(width) in (
        cv2.IMREAD_REDUCED_GRAYSCALE_8,
        cv2.IMREAD_REDUCED_GRAYSCALE_4,
        cv2.IMREAD_REDUCED_GRAYSCALE_2,
        cv2.IMREAD_GRAYSCALE,
    )


def test_a_decoded_frame_is_shrunk_to_gray() -> None:
    gray = gray_of_image(np.zeros((720, 1280, 3), np.uint8))
    assert gray.shape == (90, ANALYSIS_WIDTH)
    assert gray_of_image(np.zeros((120, 160, 3), np.uint8)).shape == (120, 160)


def test_garbage_is_no_picture() -> None:
    assert gray_of_jpeg(b"not a jpeg at all", 640) is None
