"""Cameras changed at run time: their sources limited, their tables kept and laid over the
configuration at startup."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from livecam import catalog
from livecam.catalog import Catalog, SourceRefused, check_source, runtime_camera
from livecam.config import ConfigError, load_settings, parse_source


@pytest.mark.parametrize(
    "source",
    [
        "testsrc",
        "testsrc:320x240@10",
        "0",
        "/dev/video3",
        "/dev/v4l/by-id/usb-Cam-video-index0",
        "http://cam.local/mjpg",
        "https://user:pw@cam.local/mjpg",
        "rtsp://cam.local/s",
        "rtsps://cam.local/s",
    ],
)
def test_what_an_operator_means_is_allowed(source: str) -> None:
    check_source(parse_source(source, "source"), None)


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("/etc/shadow", "LIVECAM_MEDIA_DIR, which is not set"),
        ("file:///etc/shadow", "^source: file: URLs are not read; files can be played only from LIVECAM"),
        ("file:/etc/shadow", "^source: file: URLs are not read"),
        ("ftp://cam.local/x", "must be http, https, rtsp or rtsps"),
        ("gopher://cam.local/x", "must be http, https, rtsp or rtsps"),
        ("/dev/v4l/../../etc/shadow", "a device must be /dev/videoN or under /dev/v4l/"),
        ("/dev/v4l/by-id/../../../etc/passwd", "a device must be"),
    ],
)
def test_anything_else_is_refused_saying_why(source: str, why: str) -> None:
    with pytest.raises(SourceRefused, match=why):
        check_source(parse_source(source, "source"), None)


def test_files_only_under_the_media_directory(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "clip.mp4").write_bytes(b"")
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", media / "link")
    check_source(parse_source(str(media / "clip.mp4"), "source"), str(media))
    for outside in (tmp_path / "secret", media / ".." / "secret", media / "link"):
        with pytest.raises(SourceRefused, match="must be under LIVECAM_MEDIA_DIR"):
            check_source(parse_source(str(outside), "source"), str(media))
    # A file: URL is refused even naming a file there, saying how to name it instead.
    for url in (f"file:{media}/clip.mp4", f"FILE://{media}/clip.mp4"):
        wanted = f"source: file: URLs are not read; give the file's path under LIVECAM_MEDIA_DIR ({media})"
        with pytest.raises(SourceRefused, match=f"^{re.escape(wanted)}$"):
            check_source(parse_source(url, "source"), str(media))


def test_a_run_time_table_is_checked_as_the_configurations() -> None:
    settings = load_settings(environ={}, overrides={"cameras": "0=testsrc"})
    config = runtime_camera(4, {"source": "testsrc:64x48@5", "name": "Yard", "rotate": 90}, settings)
    assert (config.id, config.name, config.rotate) == (4, "Yard", 90)
    for table, message in [
        ({"source": "testsrc", "rotate": 45}, "^rotate: must be one of 0, 90, 180, 270"),
        ({"source": "testsrc", "colour": "red"}, "^colour: unknown key"),
        ({"name": "no source"}, "^source: required"),
        ({"source": "testsrc", "name": "x" * 65}, "^name: must be a non-empty string of at most 64"),
        ({"source": "testsrc", "motion": {"area": 3}}, "^motion.area: must be a number from 0 to 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            runtime_camera(4, table, settings)


def test_kept_changes_are_laid_over_the_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "livecam")
    settings = load_settings(environ={}, overrides={"cameras": "0=testsrc,1=testsrc,2=testsrc"})
    kept = Catalog({1: {"source": "testsrc", "name": "Changed"}, 7: {"source": "testsrc:64x48@5"}}, {2})
    assert catalog.save(tmp_path, kept)
    loaded = catalog.load(tmp_path)
    assert loaded == kept
    cameras = catalog.apply(settings, loaded)
    assert list(cameras) == [0, 1, 7]
    assert cameras[1].name == "Changed" and cameras[7].source.width == 64
    assert "cameras added or changed at run time: 1, 7; removed: 2 (runtime-cameras.json)" in caplog.text


def test_a_kept_table_that_no_longer_passes_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(environ={}, overrides={"cameras": "0=testsrc"})
    cameras = catalog.apply(settings, Catalog({5: {"source": "/media/gone.mp4"}}))
    assert list(cameras) == [0]
    assert "camera 5 added at run time is left out" in caplog.text


@pytest.mark.parametrize("content", ["not json", '{"cameras": {"x": {}}}', '{"cameras": []}', "[]"])
def test_a_corrupt_file_is_ignored(tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / catalog.RUNTIME_FILE).write_text(content)
    assert catalog.load(tmp_path) == Catalog()
    assert "ignoring" in caplog.text
