"""The capture thread on real sources: states, control, encode-on-demand, caps, faults."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from camera_server import MjpegCamera
from helpers import blocked_reading, capture_threads, decode, wait_for
from hostile_camera import HostileCamera
from livecam import session
from livecam.broadcast import BroadcastClosed, Broadcaster, Frame
from livecam.capture import Camera
from livecam.sources import Source, open_source


def next_frames(camera: Camera, count: int) -> list[Frame]:
    """Watch ``count`` new frames as a viewer would."""
    broadcaster = camera.broadcaster
    result: list[Frame] = []
    with broadcaster.watching():
        seq = broadcaster.latest.seq if broadcaster.latest else 0
        while len(result) < count:
            frame = broadcaster.wait_next(seq, 5)
            assert frame is not None, "no frame within 5 s"
            result.append(frame)
            seq = frame.seq
    return result


def test_start_stop_toggle_are_idempotent(make_camera: Callable[..., Camera]) -> None:
    camera = make_camera("testsrc:64x48@30")
    assert camera.state == "off"
    camera.start()
    camera.start()
    assert [t.name for t in capture_threads()] == ["livecam-capture-0"]
    assert wait_for(lambda: camera.state == "on")
    camera.stop()
    camera.stop()
    assert camera.state == "off"
    assert capture_threads() == []  # stop returns after the thread has ended
    camera.toggle()
    assert camera.is_on
    camera.toggle()
    assert not camera.is_on and capture_threads() == []


def test_frames_are_encoded_only_while_watched(make_camera: Callable[..., Camera]) -> None:
    camera = make_camera("testsrc:64x48@60")
    camera.start()
    assert wait_for(lambda: camera.frames >= 10)
    assert camera.encoded == 0  # nobody watching: frames are counted, never drawn or encoded
    frames = next_frames(camera, 5)
    assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + 5))
    assert camera.encoded >= 5
    assert decode(frames[-1].jpeg).shape == (48, 64, 3)
    assert frames[-1].timestamp <= time.time()


def test_status_record(make_camera: Callable[..., Camera]) -> None:
    camera = make_camera("testsrc:64x48@30", width=32, rotate=90)
    record = camera.status()
    assert record["state"] == "off" and record["width"] is None and record["viewers"] == 0
    camera.start()
    assert wait_for(lambda: camera.state == "on" and camera.fps > 0)
    record = camera.status()
    assert (record["width"], record["height"]) == (24, 32)
    assert record["kind"] == "testsrc" and record["test_pattern"]
    assert record["frames"] > 0 and record["error"] is None


def test_resize_and_rotation(make_camera: Callable[..., Camera]) -> None:
    camera = make_camera("testsrc:160x120@30", width=80, rotate=90, quality=50)
    camera.start()
    image = decode(next_frames(camera, 1)[0].jpeg)
    assert image.shape == (80, 60, 3)  # 160x120 -> 80x60 -> rotated to 60 wide, 80 high
    assert (camera.size) == (60, 80)


def test_fps_cap_drops_frames(make_camera: Callable[..., Camera]) -> None:
    camera = make_camera("testsrc:64x48@60", fps=15)
    camera.start()
    frames = next_frames(camera, 8)
    assert camera.dropped > 0
    span = frames[-1].timestamp - frames[0].timestamp
    # Seven intervals of the 15 fps cap, never the source's 60 fps.
    assert span >= 7 / 15 * 0.7


def test_snapshot_is_fresh_and_none_while_off(make_camera: Callable[..., Camera]) -> None:
    camera = make_camera("testsrc:64x48@30")
    assert camera.snapshot(timeout=0.2) is None
    camera.start()
    frame = camera.snapshot()
    assert frame is not None and not frame.placeholder
    assert frame.age < 1
    assert camera.broadcaster.wanted is False  # the snapshot no longer asks for frames


def test_video_file_source(make_camera: Callable[..., Camera], video_file: Path) -> None:
    camera = make_camera(str(video_file))
    camera.start()
    frames = next_frames(camera, 3)
    assert decode(frames[0].jpeg).shape == (120, 160, 3)


def test_stop_releases_an_http_camera_and_start_reopens_it(
    make_camera: Callable[..., Camera], mjpeg_camera: MjpegCamera
) -> None:
    camera = make_camera(mjpeg_camera.url)
    camera.start()
    assert mjpeg_camera.wait_connections(1)
    assert wait_for(lambda: camera.state == "on")
    camera.stop()
    assert mjpeg_camera.connections == 0 or mjpeg_camera.wait_connections(0)
    camera.start()
    assert mjpeg_camera.wait_connections(1)
    assert decode(next_frames(camera, 1)[0].jpeg).shape == (240, 320, 3)


def next_where(broadcaster: Broadcaster, after: int, placeholder: bool, timeout: float = 15) -> Frame | None:
    """The first frame after ``after`` that is (or is not) a placeholder, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = broadcaster.wait_next(after, 2)
        if frame is not None:
            if frame.placeholder == placeholder:
                return frame
            after = frame.seq
    return None


def test_lost_source_shows_no_signal_then_recovers(
    make_camera: Callable[..., Camera], mjpeg_camera: MjpegCamera
) -> None:
    camera = make_camera(mjpeg_camera.url, name="Yard")
    camera.start()
    broadcaster = camera.broadcaster
    with broadcaster.watching():
        first = next_where(broadcaster, 0, placeholder=False)
        assert first is not None
        mjpeg_camera.stop()  # the camera loses power
        placeholder = next_where(broadcaster, first.seq, placeholder=True)
        assert placeholder is not None, "no placeholder while the source was down"
        assert camera.state == "error" and camera.error
        assert decode(placeholder.jpeg).shape == (240, 320, 3)  # the camera's own size
        mjpeg_camera.start()  # back on the same port
        assert next_where(broadcaster, placeholder.seq, placeholder=False) is not None, "no live frames"
    assert camera.state == "on" and camera.errors >= 1


def test_concurrent_control_never_opens_twice(
    make_camera: Callable[..., Camera], mjpeg_camera: MjpegCamera
) -> None:
    lock = threading.Lock()
    open_now = peak = opened = 0

    def counting_opener(*args: object, **kwargs: object) -> Source:
        """The real opener, counting sources open at the same time."""
        nonlocal open_now, peak, opened
        source = open_source(*args, **kwargs)
        release = source.release
        with lock:
            open_now += 1
            opened += 1
            peak = max(peak, open_now)

        def counted_release() -> None:
            nonlocal open_now
            with lock:
                open_now -= 1
            release()

        source.release = counted_release
        return source

    camera = make_camera(mjpeg_camera.url, opener=counting_opener)
    workers = [
        threading.Thread(target=getattr(camera, ("toggle", "start", "stop")[i % 3])) for i in range(60)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    if camera.is_on:
        # A source opened while the next switch came is let go at once, so only the camera
        # left on must have opened one.
        assert wait_for(lambda: camera.state == "on") and opened >= 1
    assert peak <= 1
    assert len(capture_threads()) == (1 if camera.is_on else 0)
    assert camera.state in (("starting", "on") if camera.is_on else ("off",))


def test_mjpeg_camera_is_forwarded_unless_settings_need_pixels(
    make_camera: Callable[..., Camera], mjpeg_camera: MjpegCamera
) -> None:
    forwarded = make_camera(mjpeg_camera.url)
    forwarded.start()
    frames = next_frames(forwarded, 3)
    assert all(frame.jpeg in mjpeg_camera.frames for frame in frames)
    assert forwarded.status()["passthrough"] and forwarded.encoded == 0
    reencoded = make_camera(mjpeg_camera.url, quality=60)
    reencoded.start()
    frame = next_frames(reencoded, 1)[0]
    assert frame.jpeg not in mjpeg_camera.frames
    assert not reencoded.status()["passthrough"] and reencoded.encoded >= 1
    assert decode(frame.jpeg).shape == (240, 320, 3)


def test_unwatched_passthrough_camera_publishes_nothing(
    make_camera: Callable[..., Camera], mjpeg_camera: MjpegCamera
) -> None:
    camera = make_camera(mjpeg_camera.url)
    camera.start()
    assert wait_for(lambda: camera.frames >= 10)
    assert camera.broadcaster.latest is None  # frames were drained, none prepared for nobody


def test_a_source_that_delivered_earns_a_fresh_backoff(
    make_camera: Callable[..., Camera], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A first backoff of 0.1 s rather than 0.5 s: the same doubling, five retries in a second.
    monkeypatch.setattr(session, "BACKOFF_MIN", 0.1)
    opens: list[float] = []

    def dropping(spec, name, stop, **options) -> Source:
        """The test pattern, lost after five frames each time it is opened."""
        opens.append(time.monotonic())
        source = open_source(spec, name, stop, **options)
        grab, count = source.grab, iter(range(5))
        source.grab = lambda: next(count, None) is not None and grab()
        return source

    camera = make_camera("testsrc:32x24@50", opener=dropping)
    camera.start()
    assert wait_for(lambda: len(opens) >= 6, timeout=20)
    gaps = [later - earlier for earlier, later in zip(opens, opens[1:], strict=False)]
    # Each drop after frames waits the first backoff again (0.1 s), never 0.2, 0.4, 0.8, 1.6 s.
    assert max(gaps) < session.BACKOFF_MIN + 0.7, gaps
    assert camera.errors >= 5


def test_a_file_that_does_not_loop_ends_switched_off(
    make_camera: Callable[..., Camera], video_file: Path
) -> None:
    camera = make_camera(str(video_file), loop=False)
    camera.start()
    broadcaster = camera.broadcaster
    with broadcaster.watching():
        seq = 0
        with pytest.raises(BroadcastClosed):  # the viewer's stream ends with the file
            while True:
                frame = broadcaster.wait_next(seq, 5)
                assert frame is not None and not frame.placeholder
                seq = frame.seq
    assert (camera.state, camera.is_on, camera.error, camera.errors) == ("off", False, None, 0)
    assert wait_for(lambda: capture_threads() == [])
    camera.start()  # and plays again when switched on
    assert decode(next_frames(camera, 1)[0].jpeg).shape == (120, 160, 3)


@pytest.fixture(scope="module")
def mpeg4_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MPEG-4 part 2 file: FFmpeg decodes every frame it grabs."""
    path = tmp_path_factory.mktemp("mpeg4") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (160, 120))
    assert writer.isOpened()
    for number in range(60):
        writer.write(np.full((120, 160, 3), number * 4, np.uint8))
    writer.release()
    return path


def test_an_unwatched_decoding_source_is_closed_and_reopened_for_a_viewer(
    make_camera: Callable[..., Camera], mpeg4_file: Path
) -> None:
    camera = make_camera(str(mpeg4_file), idle_close=0.3)
    camera.start()
    assert wait_for(lambda: camera.idle)  # nobody watching: closed
    record = camera.status()
    assert (record["state"], record["idle"]) == ("on", True)
    frames = camera.frames
    assert not camera.broadcaster.wait_wanted(0.3)
    assert camera.frames == frames  # no grab, so no decode, while idle
    assert decode(next_frames(camera, 3)[0].jpeg).shape == (120, 160, 3)  # opened again on demand
    assert camera.status()["idle"] is False


def test_a_passthrough_source_stays_open_unwatched(
    make_camera: Callable[..., Camera], mjpeg_camera: MjpegCamera
) -> None:
    camera = make_camera(mjpeg_camera.url, idle_close=0.1)
    camera.start()
    assert wait_for(lambda: camera.frames > 20)  # well past the idle time: it never decodes
    assert not camera.idle and mjpeg_camera.connections == 1


@pytest.fixture
def hostile() -> Iterator[HostileCamera]:
    camera = HostileCamera().start()
    yield camera
    camera.stop()


def test_a_camera_refusing_the_credentials_is_not_retried_every_second(
    make_camera: Callable[..., Camera], hostile: HostileCamera, monkeypatch: pytest.MonkeyPatch
) -> None:
    # livecam's backoff (from 0.5 s) and retry of a watched camera (1.5 s), both halved.
    monkeypatch.setattr(session, "BACKOFF_MIN", session.BACKOFF_MIN / 2)
    monkeypatch.setattr(session, "WATCHED_RETRY", session.WATCHED_RETRY / 2)
    camera = make_camera(hostile.url("/digest.mjpg", "admin", "wrong"))

    def opens() -> list[float]:
        """When each attempt began (its first request, the one without credentials)."""
        pairs = zip(hostile.arrivals, hostile.requests, strict=True)
        return [when for when, (_, headers) in pairs if "Authorization" not in headers]

    camera.start()
    with camera.broadcaster.watching():  # watched: a lost camera would be retried every 0.75 s
        assert wait_for(lambda: len(opens()) >= 4, timeout=15)
    assert "401" in camera.error and camera.state == "error"
    times = opens()
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # The backoff doubles (0.25, 0.5, 1 s...) past the 0.75 s a watched camera gets otherwise.
    assert gaps[2] > 1.2 * session.WATCHED_RETRY, gaps


@pytest.mark.parametrize(
    "path", ["/garbage-first.mjpg", "/long-lead-first.mjpg", "/garbage-payloads.mjpg", "/truncated.mjpg"]
)
def test_bad_frames_are_dropped_counted_and_never_shown(
    make_camera: Callable[..., Camera], hostile: HostileCamera, path: str
) -> None:
    camera = make_camera(hostile.url(path))
    camera.start()
    for frame in next_frames(camera, 8):
        assert frame.jpeg in hostile.frames  # the camera's own good JPEGs, byte for byte
    record = camera.status()
    assert record["rejected"] >= 1 and record["last_rejection"] in ("not a JPEG", "truncated JPEG")
    assert record["passthrough"] is True and record["state"] == "on"
    assert json.loads(json.dumps(record)) == record  # plain JSON types only


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_switching_off_during_a_stalled_read_returns_at_once(
    make_camera: Callable[..., Camera], request: pytest.FixtureRequest, tls: bool
) -> None:
    server = HostileCamera(certificate=request.getfixturevalue("certificate") if tls else None).start()
    request.addfinalizer(server.stop)
    camera = make_camera(server.url("/stall.mjpg"))  # three frames, then silence
    camera.start()
    assert server.stalled.wait(10) and wait_for(lambda: camera.state == "on")
    [thread] = capture_threads()
    # The capture thread now waits on a camera that sends nothing: a read that would only
    # end with the 3 s read timeout (a switch-off took 1.1-2.7 s before it could wake it).
    assert wait_for(lambda: blocked_reading(thread))
    started = time.monotonic()
    camera.stop()
    elapsed = time.monotonic() - started
    assert not thread.is_alive()
    assert elapsed < 0.5, f"stop took {elapsed:.2f} s"
    assert server.left.wait(5)  # the connection was closed, not left behind
    assert (camera.state, camera.error, camera.errors) == ("off", None, 0)


def test_frames_dropped_by_an_open_that_fails_are_counted(
    make_camera: Callable[..., Camera], request: pytest.FixtureRequest
) -> None:
    hostile = HostileCamera(fps=120).start()  # 50 garbage parts in under half a second
    request.addfinalizer(hostile.stop)
    camera = make_camera(hostile.url("/only-garbage.mjpg"))  # the camera never comes "on"
    camera.start()
    assert wait_for(lambda: camera.errors >= 2, timeout=15)
    record = camera.status()
    assert record["state"] == "error"
    assert record["error"].startswith("camera sends no valid JPEG: not a JPEG")
    # 50 per open (fewer only if a loaded machine took 3 s over them); none counted before.
    assert record["rejected"] >= 50 and record["last_rejection"] == "not a JPEG"


def test_a_frame_claiming_a_huge_size_sizes_nothing(
    make_camera: Callable[..., Camera], hostile: HostileCamera
) -> None:
    camera = make_camera(hostile.url("/claims-60000.mjpg"), width=80)  # every other part
    camera.start()
    for frame in next_frames(camera, 4):
        assert decode(frame.jpeg).shape == (60, 80, 3)
    record = camera.status()
    assert (record["width"], record["height"]) == (80, 60)
    assert record["rejected"] >= 4
    assert record["last_rejection"] == "picture size 60000x60000 is not from 1x1 to 8192x8192"


def test_the_record_follows_a_change_of_resolution_unwatched(
    make_camera: Callable[..., Camera], hostile: HostileCamera
) -> None:
    camera = make_camera(hostile.url("/resize.mjpg"))  # 160x120 for a second, then 320x240
    camera.start()
    assert wait_for(lambda: camera.status()["width"] == 160)
    assert wait_for(lambda: camera.status()["width"] == 320, timeout=5)  # nobody watching
    assert camera.status()["height"] == 240


def test_an_unwatched_http_camera_is_read_in_batches_at_its_own_rate(
    make_camera: Callable[..., Camera], mjpeg_camera: MjpegCamera
) -> None:
    camera = make_camera(mjpeg_camera.url)
    camera.start()
    assert wait_for(lambda: camera.state == "on" and camera.status()["frames"] >= 30)
    assert wait_for(lambda: camera.status()["fps"] >= 20)  # the camera's 30, not the read rate


def test_a_viewer_of_an_unwatched_http_camera_gets_the_newest_frame_not_those_that_gathered(
    make_camera: Callable[..., Camera], mjpeg_camera: MjpegCamera, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "UNWATCHED_READ", 30.0)  # frames gather until someone watches
    camera = make_camera(mjpeg_camera.url)
    camera.start()
    assert wait_for(lambda: camera.state == "on")
    assert mjpeg_camera.wait_sent(mjpeg_camera.sent + 10)  # caught up by then, and waiting
    read = camera.status()["frames"]
    assert mjpeg_camera.wait_sent(mjpeg_camera.sent + 10)
    assert camera.status()["frames"] == read  # nothing read while they gathered
    with camera.broadcaster.watching():
        frame = camera.broadcaster.wait_next(0, 5)
        assert frame is not None
        newest = mjpeg_camera.sent
        assert newest - 3 <= mjpeg_frame_number(mjpeg_camera, frame.jpeg) < newest
    assert camera.status()["frames"] >= read + 10  # every one that came is counted


def mjpeg_frame_number(camera: MjpegCamera, jpeg: bytes) -> int:
    """Which of the camera's frames ``jpeg`` is (frames repeat every 60)."""
    matches = [n for n in range(camera.sent - 60, camera.sent) if camera.frame(n) == jpeg]
    assert matches, "not one of the camera's recent frames"
    return matches[-1]
