"""What livecam keeps across restarts, in small JSON files written atomically: which cameras
are on, and which camera id each discovered device has."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .integers import parse_int

log = logging.getLogger(__name__)

FILENAME = "cameras.json"
DEVICE_IDS_FILE = "devices.json"  # discovered devices' camera ids by stable path
RUNTIME_FILE = "runtime-cameras.json"  # cameras added, changed and removed at run time (catalog.py)
# A temporary file left by a write that a crash or power cut interrupted: after a minute no
# write can still be under way, so it is removed when livecam starts.
LEFTOVER_AGE = 60.0


def load(directory: Path) -> dict[int, bool] | None:
    """The saved on/off switch of each camera, or None when there is no usable state file.

    A corrupt or unreadable file is logged and ignored: it never stops livecam.
    """
    path = directory / FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        switches = data["on"]
        if not isinstance(switches, dict):
            raise ValueError("'on' is not an object")
        result = {}
        for key, value in switches.items():
            cam_id = parse_int(key, 6)
            if cam_id is None:
                raise ValueError(f"camera id {key[:20]!r} is not a number")
            result[cam_id] = bool(value)
        return result
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("ignoring state file %s: %s", path, exc)
        return None


def write_atomically(path: Path, text: str, mode: int = 0o644) -> bool:
    """Replace ``path`` with ``text`` all at once; see write_atomically_bytes."""
    return write_atomically_bytes(path, text.encode("utf-8"), mode)


def write_atomically_bytes(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Replace ``path`` with ``data`` all at once: a temporary file, fsync, then rename.

    :return: whether it was written (a failure is logged, never raised).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
        # Make the rename itself durable.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    except OSError as exc:
        log.error("cannot write %s: %s", path, exc)
        return False


def remove_leftovers(directory: Path) -> int:
    """Delete temporary files that interrupted atomic writes left behind; return how many."""
    removed = 0
    try:
        candidates = list(directory.glob(".*-*.tmp"))
    except OSError:
        return 0
    for path in candidates:
        try:
            if time.time() - path.stat().st_mtime > LEFTOVER_AGE:
                path.unlink()
                removed += 1
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc)
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes in %s", removed, directory)
    return removed


def save(directory: Path, switches: dict[int, bool]) -> bool:
    """Save which cameras are on, atomically; a failure is logged, never raised."""
    payload = json.dumps({"version": 1, "on": {str(k): v for k, v in sorted(switches.items())}})
    return write_atomically(directory / FILENAME, payload + "\n")


def read_runtime(directory: Path) -> tuple[dict[int, dict[str, Any]], set[int]]:
    """The camera tables kept by run-time changes, by id, and the ids removed at run time;
    nothing of either when there is no file.

    :raise OSError, ValueError, TypeError, AttributeError: the file is unreadable or not one of
        livecam's (the caller says so: the catalog logs it).
    """
    try:
        data = json.loads((directory / RUNTIME_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, set()
    tables = {int(cam_id): dict(table) for cam_id, table in data.get("cameras", {}).items()}
    return tables, {int(cam_id) for cam_id in data.get("removed", [])}


def load_device_ids(directory: Path) -> dict[str, int]:
    """The remembered stable device path -> camera id map; a missing or corrupt file is empty."""
    path = directory / DEVICE_IDS_FILE
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))["ids"]
        if not all(isinstance(k, str) and type(v) is int and 0 <= v <= 999999 for k, v in ids.items()):
            raise ValueError("ids must map paths to camera ids")
        if len(set(ids.values())) != len(ids):
            raise ValueError("a camera id is given twice")
        return ids
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.error("ignoring device id file %s: %s", path, exc)
        return {}


def save_device_ids(directory: Path, ids: dict[str, int]) -> bool:
    """Remember the camera id of each device by its stable path; a failure is logged, never raised."""
    payload = {"version": 1, "ids": dict(sorted(ids.items()))}
    return write_atomically(directory / DEVICE_IDS_FILE, json.dumps(payload, indent=1) + "\n")
