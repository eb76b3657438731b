"""The registry: cameras by id, autostart, shutdown."""

from __future__ import annotations

from pathlib import Path

from helpers import capture_threads
from livecam import catalog
from livecam.config import camera_config, load_settings
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


def test_a_camera_discovery_adds_is_not_kept_but_its_removal_is(tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={"state_dir": str(tmp_path)}, discover=lambda: [])
    registry = Registry(settings)
    try:
        table = {"source": "testsrc:32x24@5", "autostart": True}
        registry.add(camera_config(3, table, settings, "cameras.3"), table, start=False, keep=False)
        assert registry.current_table(3) == table  # discovery's table, for a change at run time
        assert catalog.load(tmp_path).tables == {}  # discovery finds it again: not a run-time camera
        registry.remove(3)
        assert registry.removed == {3} == catalog.load(tmp_path).removed  # and stays removed
    finally:
        registry.shutdown()


def test_routes_come_before_a_camera_added_and_go_after_one_removed(tmp_path: Path) -> None:
    """What the app builds its routes from: a request never finds a camera without them."""
    settings = load_settings(
        environ={}, overrides={"state_dir": str(tmp_path), "cameras": "0=testsrc:32x24@5"}
    )
    registry = Registry(settings)
    told: list[tuple[list[int], bool]] = []  # the ids to route, and whether camera 4 is found
    registry.listen_routes(lambda: told.append((registry.routed(), registry.get(4) is not None)))
    try:
        assert registry.routed() == [0]
        table = {"source": "testsrc:32x24@5"}
        registry.add(camera_config(4, table, settings, "cameras.4"), table, start=False)
        assert told == [([0, 4], False)]  # routed while nobody can find it yet
        assert registry.routed() == [0, 4] and registry.get(4) is not None
        registry.remove(4)
        assert told[1:] == [([0], False)]  # unrouted once nobody can find it
    finally:
        registry.shutdown()
