"""The registry: cameras by id, autostart, shutdown."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from helpers import capture_threads, wait_for
from livecam.config import load_settings
from livecam.registry import SHUTDOWN_BUDGET, Registry


def test_registry_by_id_autostart_and_shutdown(tmp_path: Path) -> None:
    settings = load_settings(
        environ={},
        overrides={
            "state_dir": str(tmp_path),
            "cameras": {
                "3": {"source": "testsrc:32x24@30", "autostart": True},
                "7": {"source": "testsrc:32x24@30"},
            },
        },
    )
    registry = Registry(settings)
    try:
        assert [camera.id for camera in registry] == [3, 7] and len(registry) == 2
        assert registry.get(5) is None
        registry.restore()
        assert registry.get(3).is_on and not registry.get(7).is_on
        assert [t.name for t in capture_threads()] == ["livecam-capture-3"]
    finally:
        registry.shutdown()
    assert capture_threads() == []
    assert all(camera.state == "off" for camera in registry)


def test_two_registries_never_share_a_camera() -> None:
    settings = load_settings(environ={}, overrides={"cameras": {"0": {"source": "testsrc"}}})
    first, second = Registry(settings), Registry(settings)
    assert first.get(0) is not second.get(0)


def test_shutdown_stops_hung_cameras_in_parallel_within_its_budget(tmp_path: Path) -> None:
    # A network camera that accepts the connection and never answers: each capture thread
    # sits in its open timeout, which nothing can interrupt (and OpenCV runs FFmpeg's opens
    # one at a time: the second camera waits for the first's).
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        port = silent.getsockname()[1]
        cameras = {str(i): {"source": f"rtsp://127.0.0.1:{port}/s{i}", "autostart": True} for i in range(2)}
        registry = Registry(
            load_settings(environ={}, overrides={"state_dir": str(tmp_path), "cameras": cameras})
        )
        registry.restore()
        assert wait_for(lambda: len(capture_threads()) == 2)
        started = time.monotonic()
        registry.shutdown()
        elapsed = time.monotonic() - started
        # One budget for every camera, not a stop timeout for each in turn (2 x 5 s).
        assert elapsed < SHUTDOWN_BUDGET + 1.0, elapsed
        assert all(camera.state == "off" for camera in registry)
        assert wait_for(lambda: capture_threads() == [], timeout=20)  # they let go as opens time out
