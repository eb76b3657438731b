"""Which cameras are on, kept across restarts in a small JSON file written atomically."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

FILENAME = "cameras.json"


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
        return {int(cam_id): bool(value) for cam_id, value in switches.items()}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("ignoring state file %s: %s", path, exc)
        return None


def save(directory: Path, switches: dict[int, bool]) -> bool:
    """Write the switches atomically: a temporary file, fsync, then rename over the old one.

    :return: whether the state was saved (a failure is logged, never raised).
    """
    payload = json.dumps({"version": 1, "on": {str(k): v for k, v in sorted(switches.items())}})
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".cameras-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, directory / FILENAME)
        except BaseException:
            os.unlink(temp)
            raise
        # Make the rename itself durable.
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    except OSError as exc:
        log.error("cannot save camera state in %s: %s", directory, exc)
        return False
