"""Sources opened for real: the test pattern, a video file, an HTTP MJPEG camera."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from camera_server import MjpegCamera, numbered_frames
from fake_v4l2 import HD_WEBCAM, FakeCamera, FakeDev
from livecam.config import parse_source
from livecam.sources import SourceError, _device_mode, open_source
from livecam.v4l2 import CaptureMode


def frames(source, count: int) -> list[np.ndarray]:
    """Grab and decode ``count`` frames."""
    result = []
    for _ in range(count):
        assert source.grab()
        result.append(source.retrieve())
    return result


def test_test_pattern_moves_and_is_paced() -> None:
    stop = threading.Event()
    source = open_source(parse_source("testsrc:64x48@50", "s"), "Pattern", stop)
    start = time.monotonic()
    assert not source.compressed and source.jpeg() is None
    first, second = frames(source, 2)[:2]
    for _ in range(8):
        assert source.grab()  # grabbing alone draws nothing
    elapsed = time.monotonic() - start
    assert first.shape == (48, 64, 3)
    assert not np.array_equal(first, second)
    assert elapsed >= 9 / 50 * 0.9  # ten frames at 50 fps cannot come faster than the clock
    source.release()


def test_test_pattern_grab_returns_when_stopped() -> None:
    stop = threading.Event()
    source = open_source(parse_source("testsrc:64x48@1", "s"), "Pattern", stop)
    assert source.grab()
    stop.set()
    assert not source.grab()  # no waiting out the one-second interval


def test_video_file_plays_at_its_rate_and_loops(video_file: Path) -> None:
    stop = threading.Event()
    source = open_source(parse_source(str(video_file), "s"), "Clip", stop, loop=True)
    assert (source.width, source.height) == (160, 120)
    assert source.compressed  # an MJPG AVI file is forwarded like an MJPEG camera
    images = frames(source, 30)  # more than the 24 frames in the file
    levels = [int(image.mean()) for image in images]
    assert levels[24] < levels[23]  # wrapped around to the dark first frame
    source.release()


def test_video_file_without_loop_ends(video_file: Path) -> None:
    source = open_source(parse_source(str(video_file), "s"), "Clip", threading.Event(), loop=False)
    grabbed = 0
    while source.grab() and grabbed < 100:
        grabbed += 1
    assert grabbed == 24
    source.release()


def multipart_file(path: Path, parts: list[bytes]) -> Path:
    """A file of multipart JPEG parts, which FFmpeg reads with its mpjpeg demuxer."""
    with path.open("wb") as out:
        for part in parts:
            out.write(
                b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(part), part)
            )
    return path


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return numbered_frames(160, 120, 4)


@pytest.mark.parametrize("first", [b"garbage" * 20, b" " * 1024], ids=["garbage", "long-lead"])
def test_a_bad_first_packet_does_not_turn_jpegs_into_pixels(
    tmp_path: Path, jpegs: list[bytes], first: bytes
) -> None:
    clip = multipart_file(tmp_path / "cam.mjpg", [first + (jpegs[0] if first.isspace() else b""), *jpegs])
    source = open_source(parse_source(str(clip), "s"), "Clip", threading.Event(), loop=False)
    try:
        assert source.compressed is True  # FFmpeg's raw mode, decided by the stream's FOURCC
        assert (source.width, source.height) == (160, 120)  # not a 1xN strip
        handed = []
        while source.grab():
            handed.append(source.jpeg())
            assert source.retrieve().shape == (120, 160, 3)
        assert handed == jpegs
        assert (source.rejected, source.last_rejection) == (1, "not a JPEG")
    finally:
        source.release()


def test_bad_packets_are_skipped_and_counted_one_by_one(tmp_path: Path, jpegs: list[bytes]) -> None:
    parts = [jpegs[0], b"junk" * 30, jpegs[1], jpegs[2][:300], jpegs[2], b" " * 1024 + jpegs[3], jpegs[3]]
    clip = multipart_file(tmp_path / "cam.mjpg", parts)
    source = open_source(parse_source(str(clip), "s"), "Clip", threading.Event(), loop=False)
    try:
        handed = []
        reasons = []
        while source.grab():
            handed.append(source.jpeg())
            reasons.append(source.last_rejection)
        assert handed == jpegs
        assert reasons == [None, "not a JPEG", "truncated JPEG", "not a JPEG"]
        assert type(source.rejected) is int and source.rejected == 3
    finally:
        source.release()


def test_a_stray_crlf_before_every_packet_is_cut(tmp_path: Path, jpegs: list[bytes]) -> None:
    # FFmpeg's mpjpeg demuxer hands over a part as its Content-Length counts it, CRLF and all.
    clip = multipart_file(tmp_path / "cam.mjpg", [b"\r\n" + jpeg for jpeg in jpegs])
    source = open_source(parse_source(str(clip), "s"), "Clip", threading.Event(), loop=False)
    try:
        handed = []
        while source.grab():
            handed.append(source.jpeg())
            assert source.retrieve().shape == (120, 160, 3)
        assert handed == jpegs and source.rejected == 0
    finally:
        source.release()


def test_packets_above_the_cap_are_skipped(tmp_path: Path, jpegs: list[bytes]) -> None:
    big = b"\xff\xd8" + bytes(3 * 2**20) + b"\xff\xd9"
    clip = multipart_file(tmp_path / "cam.mjpg", [jpegs[0], big, jpegs[1]])
    source = open_source(parse_source(str(clip), "s"), "Clip", threading.Event(), loop=False, max_frame=2**20)
    try:
        assert source.grab() and source.grab()
        assert source.jpeg() == jpegs[1]
        assert source.last_rejection == "frame of 3 MB exceeds the 1 MB limit"
    finally:
        source.release()


def test_a_file_of_nothing_but_bad_packets_fails_clearly(tmp_path: Path) -> None:
    clip = multipart_file(tmp_path / "cam.mjpg", [b"junk" * 30] * 60)
    with pytest.raises(SourceError, match="^camera sends no valid JPEG: not a JPEG") as caught:
        open_source(parse_source(str(clip), "s"), "Clip", threading.Event())
    assert (caught.value.rejected, caught.value.last_rejection) == (50, "not a JPEG")


def test_pattern_source_never_rejects() -> None:
    source = open_source(parse_source("testsrc:64x48@50", "s"), "Pattern", threading.Event())
    assert (source.rejected, source.last_rejection) == (0, None)


def test_source_error_says_whether_the_camera_refused() -> None:
    assert SourceError("x").refused is False
    assert SourceError("x", refused=True).refused is True


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(parse_source(str(tmp_path / "nope.mp4"), "s"), "Clip", threading.Event())


def test_http_mjpeg_camera_hands_over_its_own_jpegs(mjpeg_camera: MjpegCamera) -> None:
    source = open_source(parse_source(mjpeg_camera.url, "s"), "Net", threading.Event())
    assert mjpeg_camera.wait_connections(1)
    assert source.compressed is True
    assert (source.width, source.height) == (320, 240)
    for _ in range(5):
        assert source.grab()
        assert source.jpeg() in mjpeg_camera.frames  # byte for byte, nothing decoded
    assert source.retrieve().shape == (240, 320, 3)  # pixels on request
    source.release()
    assert mjpeg_camera.wait_connections(0)


def test_dead_camera_fails_fast(mjpeg_camera: MjpegCamera) -> None:
    url = mjpeg_camera.url
    mjpeg_camera.stop()
    with pytest.raises(SourceError, match="cannot open"):
        open_source(parse_source(url, "s"), "Net", threading.Event())


def test_absent_device_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="cannot open V4L2 device 63"):
        open_source(parse_source(63, "s"), "Cam", threading.Event(), width=320, size=(1280, 720), fps=15)


def test_a_device_is_asked_for_the_mode_chosen_from_its_own_list(tmp_path: Path) -> None:
    dev = FakeDev(tmp_path)
    dev.add("video2", FakeCamera(formats=HD_WEBCAM))
    largest = _device_mode(2, "Cam", None, None, str(tmp_path), dev.ioctl)
    assert largest == CaptureMode("MJPG", 1920, 1080, 30.0)  # not OpenCV's 640x480
    configured = _device_mode(2, "Cam", (1280, 720), 25.0, str(tmp_path), dev.ioctl)
    assert configured == CaptureMode("MJPG", 1280, 720, 15.0)


def test_a_device_whose_modes_cannot_be_listed_is_still_asked_for_its_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dev = FakeDev(tmp_path)
    dev.add("video0")  # refuses the ioctls
    caplog.set_level(logging.INFO, logger="livecam.sources")
    assert _device_mode(0, "Cam", None, None, str(tmp_path), dev.ioctl) is None  # MJPG at OpenCV's size
    # Width and height both, or OpenCV's V4L2 backend would keep 640x480.
    assert _device_mode(0, "Cam", (1280, 720), None, str(tmp_path), dev.ioctl) == CaptureMode(
        "MJPG", 1280, 720, None
    )
    assert "Cam: cannot list the modes of" in caplog.text
