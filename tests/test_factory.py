"""create_app itself: settings in layers, one Blueprint per camera, state kept per app."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from livecam import create_app
from livecam.appstate import get_registry
from livecam.config import ConfigError


def test_upper_case_keys_are_flask_settings_lower_case_ones_livecam_settings(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app({"SERVER_NAME": "cams.test", "cameras": "0=testsrc", "threads": 8})
    assert app.config["SERVER_NAME"] == "cams.test" and app.testing
    assert get_registry(app).settings.threads == 8


def test_the_environment_and_a_file_come_before_test_overrides(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "livecam.toml"
    config.write_text('[cameras.3]\nname = "Porch"\nsource = "testsrc"\n')
    monkeypatch.setenv("LIVECAM_CONFIG", str(config))
    monkeypatch.setenv("LIVECAM_SEND_TIMEOUT", "7")
    app = make_app({"send_timeout": 9})
    registry = get_registry(app)
    assert [camera.config.name for camera in registry] == ["Porch"]
    assert registry.settings.send_timeout == 9


def test_one_blueprint_per_camera_every_route_declared(make_app: Callable[..., Flask]) -> None:
    app = make_app({"cameras": "2=testsrc,5=testsrc"})
    assert {name for name in app.blueprints if name.startswith("camera")} == {"camera2", "camera5"}
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/cameras/2/stream.mjpg", "/cameras/5/toggle", "/", "/healthz", "/metrics"} <= rules


def test_two_apps_share_nothing(make_app: Callable[..., Flask]) -> None:
    first, second = make_app({"cameras": "0=testsrc"}), make_app({"cameras": "0=testsrc"})
    assert get_registry(first) is not get_registry(second)
    assert get_registry(first).get(0) is not get_registry(second).get(0)


def test_a_bad_setting_stops_the_factory_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cameras\.0\.rotate: must be one of 0, 90, 180, 270, got 45$"):
        create_app({"state_dir": str(tmp_path), "cameras": {"0": {"rotate": 45}}})


def test_cameras_set_to_autostart_are_on_after_the_factory(make_app: Callable[..., Flask]) -> None:
    app = make_app({"cameras": {"0": {"source": "testsrc", "autostart": True}, "1": {"source": "testsrc"}}})
    registry = get_registry(app)
    assert registry.get(0).is_on and not registry.get(1).is_on


def test_a_listing_during_adds_and_removals_always_has_every_cameras_urls(tmp_path: Path) -> None:
    """A camera is listed only once the app has its routes: never a 500 building its URLs."""
    app = create_app(
        {"cameras": "0=testsrc:32x24@5", "state_dir": str(tmp_path), "control_token": "control-secret-1"}
    )
    registry = get_registry(app)
    done = threading.Event()

    def churn() -> None:
        try:
            for _ in range(15):
                registry.create({"source": "testsrc:32x24@5", "autostart": False}, 7)
                registry.delete(7)
        finally:
            done.set()

    worker = threading.Thread(target=churn)
    worker.start()
    client = app.test_client()
    listings = 0
    try:
        while not done.is_set() or listings == 0:
            response = client.get("/cameras")
            assert response.status_code == 200, response.get_data(as_text=True)
            assert all(record["urls"]["stream"].endswith("/stream.mjpg") for record in response.json)
            listings += 1
    finally:
        worker.join(30)
        registry.shutdown()
    assert not worker.is_alive()
