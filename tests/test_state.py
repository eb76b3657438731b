"""The state file: atomic writes, restore after a restart, corrupt files ignored."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from livecam import state
from livecam.config import load_settings
from livecam.registry import Registry


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    assert state.load(tmp_path) is None
    assert state.save(tmp_path / "new", {3: True, 1: False})
    assert state.load(tmp_path / "new") == {1: False, 3: True}
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["cameras.json"]  # no temp file left


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"on": [1, 2]}', '{"off": {}}', '{"on": {"x": true}}', "", '{"on": {"\u00b2": true}}'],
)
def test_corrupt_file_is_logged_ignored_and_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    path = tmp_path / "cameras.json"
    path.write_text(content)
    with caplog.at_level(logging.ERROR):
        assert state.load(tmp_path) is None
    assert "ignoring state file" in caplog.text
    assert path.read_text() == content


def test_unwritable_directory_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert not state.save(blocker / "sub", {0: True})
    assert "cannot write" in caplog.text


def registry(tmp_path: Path, autostart: bool = False) -> Registry:
    cameras = {str(i): {"source": "testsrc:32x24@10", "autostart": autostart} for i in (0, 1)}
    return Registry(load_settings(environ={}, overrides={"state_dir": str(tmp_path), "cameras": cameras}))


def test_switches_survive_a_restart(tmp_path: Path) -> None:
    first = registry(tmp_path)
    try:
        first.restore()
        first.switch(first.get(1).toggle)
        assert json.loads((tmp_path / "cameras.json").read_text())["on"] == {"0": False, "1": True}
    finally:
        first.shutdown()  # stopping for shutdown is not a switch: the state stays "on"
    second = registry(tmp_path)
    try:
        second.restore()
        assert [c.is_on for c in second] == [False, True]
    finally:
        second.shutdown()


def test_saved_off_beats_autostart_and_corrupt_state_falls_back(tmp_path: Path) -> None:
    state.save(tmp_path, {0: False})
    cameras = registry(tmp_path, autostart=True)
    try:
        cameras.restore()
        assert [c.is_on for c in cameras] == [False, True]  # camera 1 was never switched: autostart
    finally:
        cameras.shutdown()
    (tmp_path / "cameras.json").write_text("garbage")
    cameras = registry(tmp_path, autostart=True)
    try:
        cameras.restore()
        assert [c.is_on for c in cameras] == [True, True]
    finally:
        cameras.shutdown()


def test_leftovers_of_interrupted_writes_are_removed(tmp_path: Path) -> None:
    assert state.save(tmp_path, {0: True})
    old = tmp_path / ".cameras.json-x1y2.tmp"
    old.write_text('{"version": 1, "on": {"0": tr')  # a crash mid-write
    stamp = time.time() - state.LEFTOVER_AGE - 10
    os.utime(old, (stamp, stamp))
    fresh = tmp_path / ".secret_key-a1b2.tmp"  # a write that may be under way right now
    fresh.write_text("")
    assert state.remove_leftovers(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".secret_key-a1b2.tmp", "cameras.json"]
    assert state.load(tmp_path) == {0: True}
