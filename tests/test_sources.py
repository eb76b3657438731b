"""Sources opened for real: the test pattern, a video file, an HTTP MJPEG camera."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from camera_server import MjpegCamera, numbered_frames
from livecam.config import parse_source
from livecam.sources import (
    V4L2_CAP_DEVICE_CAPS,
    V4L2_CAP_VIDEO_CAPTURE,
    SourceError,
    can_capture,
    card_name,
    discover_devices,
    open_source,
    redact,
)


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


@pytest.mark.parametrize("first", [b"garbage" * 20, b"\r\n"], ids=["garbage", "crlf"])
def test_a_bad_first_packet_does_not_turn_jpegs_into_pixels(
    tmp_path: Path, jpegs: list[bytes], first: bytes
) -> None:
    clip = multipart_file(tmp_path / "cam.mjpg", [first + (jpegs[0] if first == b"\r\n" else b""), *jpegs])
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
    parts = [jpegs[0], b"junk" * 30, jpegs[1], jpegs[2][:300], jpegs[2], b"\r\n" + jpegs[3], jpegs[3]]
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
    with pytest.raises(SourceError, match="^camera sends no valid JPEG: not a JPEG"):
        open_source(parse_source(str(clip), "s"), "Clip", threading.Event())


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
        open_source(parse_source(63, "s"), "Cam", threading.Event())


def capability(caps: int, device_caps: int = 0, card: bytes = b"") -> bytes:
    """A v4l2_capability struct as the kernel fills it."""
    return struct.pack("<16s32s32sIII12x", b"uvcvideo", card, b"usb-1", 0, caps, device_caps)


def test_capability_parsing() -> None:
    assert can_capture(capability(V4L2_CAP_VIDEO_CAPTURE))
    # A webcam's metadata node: the physical device captures, this node does not.
    metadata = capability(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_DEVICE_CAPS, 0x00800000)
    assert not can_capture(metadata)
    assert card_name(capability(1, card=b"HD Webcam")) == "HD Webcam"


def test_discover_devices_keeps_capture_nodes_only(tmp_path: Path) -> None:
    for name in ("video0", "video1", "video2", "video10", "vbi0", "videox"):
        (tmp_path / name).touch()
    answers = {
        "video0": capability(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_DEVICE_CAPS, V4L2_CAP_VIDEO_CAPTURE),
        "video1": capability(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_DEVICE_CAPS, 0x00800000),
        "video10": capability(V4L2_CAP_VIDEO_CAPTURE),
    }

    def querycap(path: str) -> bytes:
        name = Path(path).name
        if name not in answers:
            raise PermissionError(13, "Permission denied")
        return answers[name]

    assert discover_devices(tmp_path, querycap) == [0, 10]


def test_discover_devices_on_this_machine_does_not_fail() -> None:
    assert all(isinstance(index, int) for index in discover_devices())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s", "rtsp://admin:***@10.0.0.5:554/s"),
        ("http://host/cam.mjpg", "http://host/cam.mjpg"),
        ("/videos/a.mp4", "/videos/a.mp4"),
    ],
)
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown
