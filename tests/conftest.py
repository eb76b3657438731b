"""Fixtures: apps whose cameras are all stopped and joined at teardown, real sources."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask

from camera_server import MjpegCamera
from helpers import capture_threads
from livecam import create_app
from livecam.appstate import get_registry
from livecam.capture import Camera
from livecam.config import CameraConfig, parse_source
from livecam.session import IDLE_CLOSE
from livecam.sources import Source, open_source


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own LIVECAM_* settings out of the tests."""
    for name in list(os.environ):
        if name.startswith("LIVECAM_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build apps; at teardown stop every camera and check no capture thread is left."""
    apps: list[Flask] = []

    def factory(config: dict[str, Any]) -> Flask:
        app = create_app({"TESTING": True, "state_dir": str(tmp_path / "state"), **config})
        apps.append(app)
        return app

    yield factory
    for app in apps:
        get_registry(app).shutdown()
    assert capture_threads() == []


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    """Two small test-pattern cameras: 0 on at boot, 1 off."""
    return make_app(
        {
            "cameras": {
                "0": {"source": "testsrc:160x120@30", "name": "Bench", "autostart": True},
                "1": {"source": "testsrc:160x120@30", "name": "Door"},
            }
        }
    )


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def mjpeg_camera() -> Iterator[MjpegCamera]:
    """A real HTTP MJPEG camera on loopback, 320x240 at 30 fps."""
    camera = MjpegCamera(320, 240, 30).start()
    yield camera
    camera.stop()


@pytest.fixture(scope="session")
def video_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 24-frame 160x120 video file at 50 fps, each frame distinct."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (160, 120))
    assert writer.isOpened()
    for number in range(24):
        image = np.full((120, 160, 3), number * 10, np.uint8)
        writer.write(image)
    writer.release()
    return path


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (read-only: shared by every test)."""
    directory = tmp_path_factory.mktemp("certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def make_camera() -> Iterator[Callable[..., Camera]]:
    """Cameras that are stopped and joined at teardown."""
    cameras: list[Camera] = []

    def factory(
        source: object,
        opener: Callable[..., Source] = open_source,
        idle_close: float = IDLE_CLOSE,
        **settings: object,
    ) -> Camera:
        settings.setdefault("name", "Test")
        config = CameraConfig(id=len(cameras), source=parse_source(source, "source"), **settings)
        cameras.append(Camera(config, opener, idle_close=idle_close))
        return cameras[-1]

    yield factory
    for camera in cameras:
        camera.stop()
    assert capture_threads() == []
