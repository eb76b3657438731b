"""Stream profiles in the capture thread, on real sources: one decode per frame, one encode per
profile's frame, each profile at its own width and fps cap, nothing for a profile unwatched."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack

from camera_server import MjpegCamera
from helpers import decode, free_port, wait_for
from livecam.broadcast import BroadcastClosed, Broadcaster, Frame
from livecam.capture import Camera
from livecam.config import Profile
from livecam.session import Pacer


class Watcher:
    """A viewer of one broadcaster in a thread of its own, keeping every frame it sees."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.frames: list[Frame] = []
        self._broadcaster = broadcaster
        self._stop = threading.Event()
        self._watching = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        assert self._watching.wait(5)

    def _run(self) -> None:
        with self._broadcaster.watching():
            self._watching.set()
            seq = 0
            while not self._stop.is_set():
                try:
                    frame = self._broadcaster.wait_next(seq, 0.2)
                except BroadcastClosed:  # the camera stopped
                    return
                if frame is not None:
                    self.frames.append(frame)
                    seq = frame.seq

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def watching(stack: ExitStack, broadcaster: Broadcaster) -> Watcher:
    """A Watcher stopped when ``stack`` closes."""
    watcher = Watcher(broadcaster)
    stack.callback(watcher.stop)
    return watcher


def rate(frames: list[Frame]) -> float:
    """Frames per second between the first and last of ``frames``."""
    return (len(frames) - 1) / (frames[-1].timestamp - frames[0].timestamp)


def test_two_preview_viewers_and_one_full_cost_one_decode_and_one_preview_encode_per_frame(
    make_camera: Callable[..., Camera],
) -> None:
    camera = make_camera("testsrc:640x480@30", quality=80)
    camera.start()
    with ExitStack() as stack:
        full = watching(stack, camera.feeds["full"])
        previews = [watching(stack, camera.feeds["preview"]) for _ in range(2)]
        assert wait_for(lambda: len(previews[0].frames) >= 8)
        assert camera.status()["profiles"]["preview"]["viewers"] == 2
        for preview in previews:
            preview.stop()  # the previews leave first: from here on only full is wanted
        camera.stop()  # joins the capture thread: the counters are final
    stats = camera.stats
    published_previews = camera.feeds["preview"].latest.seq
    # Full wanted every kept frame: each was decoded once and encoded once for full, and the
    # preview frames were made from those same pixels.
    assert stats.decoded == stats.profiles["full"].encoded == camera.feeds["full"].latest.seq
    # One preview encode per preview frame, shared by both viewers.
    assert stats.profiles["preview"].encoded == published_previews
    assert stats.encoded == stats.decoded + published_previews
    # Each profile at its own width and rate.
    assert decode(full.frames[-1].jpeg).shape == (480, 640, 3)
    assert decode(previews[0].frames[-1].jpeg).shape == (240, 320, 3)
    assert rate(full.frames) > 20
    assert 3.5 <= rate(previews[0].frames) <= 6.5  # the 5 fps cap, over a short window


def test_an_unwatched_profile_costs_nothing(make_camera: Callable[..., Camera]) -> None:
    camera = make_camera("testsrc:640x480@30", quality=80)
    camera.start()
    with ExitStack() as stack:
        watching(stack, camera.feeds["full"])
        assert wait_for(lambda: camera.stats.profiles["full"].encoded >= 10)
    assert camera.stats.profiles["preview"].encoded == 0
    assert camera.feeds["preview"].latest is None


def test_a_jpeg_camera_passes_full_through_and_decodes_once_for_the_preview(
    make_camera: Callable[..., Camera], mjpeg_camera: MjpegCamera
) -> None:
    camera = make_camera(mjpeg_camera.url)
    camera.start()
    with ExitStack() as stack:
        full = watching(stack, camera.feeds["full"])
        preview = watching(stack, camera.feeds["preview"])
        assert wait_for(lambda: len(preview.frames) >= 6)
        assert wait_for(lambda: len(full.frames) >= 20)
        camera.stop()
    stats = camera.stats
    assert camera.status()["passthrough"] is False  # off now; it was passing through:
    assert stats.passthrough and stats.profiles["full"].encoded == 0
    assert stats.decoded == stats.profiles["preview"].encoded == camera.feeds["preview"].latest.seq
    assert full.frames[-1].jpeg in mjpeg_camera.frames  # the camera's own bytes
    # The camera is 320 wide: the preview is never wider than the full stream, so no resize.
    assert decode(preview.frames[-1].jpeg).shape == (240, 320, 3)


def test_a_configured_profile_runs_at_its_own_size_and_rate(make_camera: Callable[..., Camera]) -> None:
    thumb = Profile("thumb", width=80, fps=2, quality=50)
    camera = make_camera("testsrc:640x480@30", profiles={"thumb": thumb})
    camera.start()
    with ExitStack() as stack:
        watcher = watching(stack, camera.feeds["thumb"])
        assert wait_for(lambda: len(watcher.frames) >= 4)
    assert decode(watcher.frames[-1].jpeg).shape == (60, 80, 3)
    assert 1.5 <= rate(watcher.frames) <= 2.5
    assert camera.stats.profiles["full"].encoded == 0 and camera.feeds["full"].latest is None


def test_a_failing_source_shows_each_profile_a_placeholder_of_its_size(
    make_camera: Callable[..., Camera],
) -> None:
    camera = make_camera(f"http://127.0.0.1:{free_port()}/cam.mjpg")
    camera.start()
    with ExitStack() as stack:
        full = watching(stack, camera.feeds["full"])
        preview = watching(stack, camera.feeds["preview"])
        assert wait_for(lambda: full.frames and preview.frames)
    assert full.frames[0].placeholder and preview.frames[0].placeholder
    assert decode(full.frames[0].jpeg).shape == (480, 640, 3)
    assert decode(preview.frames[0].jpeg).shape == (240, 320, 3)


def test_profile_figures_are_in_the_record(make_camera: Callable[..., Camera]) -> None:
    camera = make_camera("testsrc:640x480@30", quality=80)
    camera.start()
    with ExitStack() as stack:
        watching(stack, camera.feeds["preview"])
        assert wait_for(lambda: camera.status()["profiles"]["preview"]["fps"] > 3)
        record = camera.status()
    preview = record["profiles"]["preview"]
    assert (preview["width"], preview["height"], preview["max_fps"], preview["quality"]) == (
        320,
        240,
        5.0,
        60,
    )
    assert preview["viewers"] == 1 and preview["encoded"] >= 2
    assert record["profiles"]["full"]["viewers"] == 0 and record["viewers"] == 1


def test_the_pacer_keeps_the_cap_on_average_and_never_two_frames_at_once() -> None:
    for source_fps, cap, expected in ((30, 20, 20), (30, 5, 5), (30, 2, 2), (10, 20, 10)):
        pacer = Pacer(cap)
        kept = [i / source_fps for i in range(source_fps * 10) if pacer.due(100 + i / source_fps)]
        assert expected * 10 - 1 <= len(kept) <= expected * 10 + 1, (source_fps, cap, len(kept))
        # Never two frames much closer than the cap's interval, from the first frame on.
        assert min(b - a for a, b in zip(kept, kept[1:], strict=False)) >= 0.75 / cap - 1 / source_fps
