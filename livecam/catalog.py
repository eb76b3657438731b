"""Cameras added, changed and removed at run time: checked as the configuration is, limited to
sources an operator means, and kept in the state directory across restarts.

The operator's TOML file is never rewritten (its comments stay). What changes at run time is
kept in ``runtime-cameras.json`` beside the switches: the camera tables given (the TOML's own
keys) and the ids of configured cameras removed. At startup it is laid over the
configuration: where both name an id, the run-time table wins, being the later and deliberate
change, and livecam says so in its log.

A control token lets its holder add cameras, so what a run-time camera may read is narrower
than what the operator may configure: V4L2 devices (``/dev/video*``, ``/dev/v4l/``), files
under the media directory (``LIVECAM_MEDIA_DIR``; none by default), URLs of the schemes
livecam reads (http, https, rtsp, rtsps) and the test pattern. Never ``/etc/shadow``, never
``file:`` URLs.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import CameraConfig, ConfigError, Settings, SourceSpec, camera_config, parse_source
from .state import RUNTIME_FILE, read_runtime, write_atomically

log = logging.getLogger(__name__)

URL_SCHEMES = ("http", "https", "rtsp", "rtsps")
DEVICE_RE = re.compile(r"^/dev/video\d{1,4}$")
MAX_CAMERAS = 256  # cameras in all: a run-time add past this is refused


class SourceRefused(ConfigError):
    """A source that a camera added at run time may not read."""


def check_source(spec: SourceSpec, media_dir: str | None, key: str = "source") -> None:
    """Refuse a run-time camera's source that is not a device, a media file, a camera URL or
    the test pattern.

    :raise SourceRefused: with one line saying why.
    """
    if spec.kind == "testsrc" or (spec.kind == "device" and isinstance(spec.target, int)):
        return
    target = str(spec.target)
    if spec.kind in ("url", "file") and target[:5].lower() == "file:":
        # A file is named by its path, checked below; a file: URL is refused whatever it names.
        instead = (
            f"give the file's path under LIVECAM_MEDIA_DIR ({media_dir})"
            if media_dir is not None
            else "files can be played only from LIVECAM_MEDIA_DIR, which is not set"
        )
        raise SourceRefused(f"{key}: file: URLs are not read; {instead}")
    if spec.kind == "url":
        scheme = urlsplit(target).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise SourceRefused(f"{key}: a camera URL must be http, https, rtsp or rtsps, got {scheme}://")
        return
    if spec.kind == "device":
        # The path as the kernel resolves it: /dev/v4l/../../etc/shadow is /etc/shadow.
        real = os.path.realpath(target)
        if DEVICE_RE.match(real) or (real.startswith("/dev/v4l/") and os.path.normpath(target) == target):
            return
        raise SourceRefused(f"{key}: a device must be /dev/videoN or under /dev/v4l/")
    if media_dir is None:
        raise SourceRefused(f"{key}: files can be played only from LIVECAM_MEDIA_DIR, which is not set")
    base, real = os.path.realpath(media_dir), os.path.realpath(target)
    if os.path.commonpath([base, real]) != base:
        raise SourceRefused(f"{key}: a file must be under LIVECAM_MEDIA_DIR ({media_dir})")


def runtime_source(table: dict[str, Any], media_dir: str | None) -> SourceSpec:
    """The source a run-time camera's table names (an add, a probe), parsed and limited.

    :raise ConfigError: none given, a bad one, or one a run-time camera may not read.
    """
    if table.get("source") is None:
        raise ConfigError("source: required (a device, a camera URL, a media file or testsrc)")
    spec = parse_source(table["source"], "source")
    check_source(spec, media_dir, "source")
    return spec


def runtime_camera(cam_id: int, table: dict[str, Any], settings: Settings) -> CameraConfig:
    """A camera table given at run time, checked as the configuration's and its source limited.

    :raise ConfigError: a bad key or value (the configuration's own message), or a source a
        run-time camera may not read.
    """
    if not isinstance(table, dict):
        raise ConfigError("a camera must be a JSON object of the [cameras.ID] table's keys")
    runtime_source(table, settings.media_dir)
    try:
        config = camera_config(cam_id, table, settings, "camera")
    except ConfigError as exc:
        # The key as the request names it: "rotate", not "camera.rotate".
        raise ConfigError(str(exc).removeprefix("camera.")) from None
    return config


@dataclass
class Catalog:
    """What changed at run time: camera tables by id, and configured cameras removed."""

    tables: dict[int, dict[str, Any]] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)

    def to_json(self) -> str:
        """The file's content."""
        tables = {str(cam_id): table for cam_id, table in sorted(self.tables.items())}
        return json.dumps({"cameras": tables, "removed": sorted(self.removed)}, indent=1) + "\n"


def load(directory: Path) -> Catalog:
    """The run-time changes kept in ``directory`` (none when there is no usable file)."""
    try:
        return Catalog(*read_runtime(directory))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        path = directory / RUNTIME_FILE
        log.error("ignoring %s: %s (cameras added at run time are not restored)", path, exc)
        return Catalog()


def save(directory: Path, catalog: Catalog) -> bool:
    """Keep the run-time changes, written atomically; whether it was written."""
    return write_atomically(directory / RUNTIME_FILE, catalog.to_json(), 0o600)


def apply(settings: Settings, catalog: Catalog) -> dict[int, CameraConfig]:
    """The cameras to run: the configuration's, less those removed at run time, with the
    run-time tables laid over them. A kept table that no longer passes (the media directory
    moved, say) is logged and left out, never stopping livecam."""
    cameras = {cam_id: config for cam_id, config in settings.cameras.items() if cam_id not in catalog.removed}
    for cam_id, table in sorted(catalog.tables.items()):
        try:
            config = runtime_camera(cam_id, table, settings)
        except ConfigError as exc:
            log.error("camera %s added at run time is left out: %s", cam_id, exc)
            continue
        if cam_id in cameras:
            log.info(
                "camera %s: the settings changed at run time (%s) win over the configuration's",
                cam_id,
                RUNTIME_FILE,
            )
        cameras[cam_id] = config
    if catalog.tables or catalog.removed:
        # Say where cameras the configuration does not name come from (or where one went).
        kept = ", ".join(str(cam_id) for cam_id in sorted(catalog.tables)) or "none"
        gone = ", ".join(str(cam_id) for cam_id in sorted(catalog.removed)) or "none"
        log.info("cameras added or changed at run time: %s; removed: %s (%s)", kept, gone, RUNTIME_FILE)
    return dict(sorted(cameras.items()))
