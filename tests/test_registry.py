"""The registry: cameras by id, autostart, shutdown."""

from __future__ import annotations

from pathlib import Path

from helpers import capture_threads
from livecam.config import load_settings
from livecam.registry import Registry


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
