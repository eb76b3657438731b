"""What every camera answers, captured here or seen through the frame bus: the interface the
registry, views and metrics use, and the camera's JSON record, whose fields are named once here."""

from __future__ import annotations

from typing import Any, Protocol

from .broadcast import Broadcaster, Feeds, Frame
from .config import CameraConfig
from .redaction import redact
from .stats import SendStats

STATES = ("off", "starting", "on", "error")

# The record's fields and the kind of value each holds (wire.py checks a record from the bus
# against this table; Camera and RemoteCamera build theirs with record() below).
RECORD_FIELDS: dict[str, str] = {
    "id": "count",
    "name": "name",
    "source": "text",
    "kind": "name",
    "test_pattern": "flag",
    "state": "state",
    "since": "time",
    "error": "optional text",
    "fps": "rate",
    "width": "side",
    "height": "side",
    "viewers": "count",
    "frames": "count",
    "decoded": "count",
    "encoded": "count",
    "dropped": "count",
    "errors": "count",
    "rejected": "count",
    "last_rejection": "optional text",
    "passthrough": "flag",
    "idle": "flag",
    "bus_rejected": "count",
    "bus_dropped": "count",
    "motion": "flag",
    "motion_active": "flag",
}
# Each stream profile's figures in the record's ``profiles``.
PROFILE_FIELDS: dict[str, str] = {
    "width": "side",
    "height": "side",
    "max_fps": "max fps",
    "quality": "quality",
    "viewers": "count",
    "fps": "rate",
    "encoded": "count",
    "bytes": "count",
}


class CameraBusy(Exception):
    """The camera cannot switch now: its source is still being released, or its capture
    process does not answer."""


class CameraLike(Protocol):
    """A camera as the registry, the views and the metrics see it, wherever it is captured."""

    config: CameraConfig
    sends: SendStats
    profile_sends: dict[str, SendStats]

    @property
    def id(self) -> int:
        """The camera's id."""

    @property
    def feeds(self) -> Feeds:
        """This process's broadcasters of the camera's profiles (closed while it is off)."""

    @property
    def broadcaster(self) -> Broadcaster:
        """This process's broadcaster of the full stream."""

    @property
    def is_on(self) -> bool:
        """Whether the camera is switched on."""

    @property
    def state(self) -> str:
        """off, starting, on or error."""

    @property
    def error(self) -> str | None:
        """Why the camera fails, if it does."""

    def status(self) -> dict[str, Any]:
        """The camera's JSON record."""

    def start(self) -> None:
        """Switch on."""

    def stop(self) -> None:
        """Switch off."""

    def toggle(self) -> None:
        """Flip between on and off."""

    def snapshot(self, timeout: float = ..., profile: str = ...) -> Frame | None:
        """A fresh live frame of ``profile``, or None."""


def record(config: CameraConfig, **fields: Any) -> dict[str, Any]:
    """A camera's JSON record: what the camera's config says, then ``fields``, every one of
    RECORD_FIELDS and ``profiles`` (a record missing one is a bug, so it raises)."""
    data: dict[str, Any] = {
        "id": config.id,
        "name": config.name,
        "source": redact(str(config.source)),
        "kind": config.source.kind,
        "test_pattern": config.source.kind == "testsrc",
        **fields,
    }
    missing = [key for key in [*RECORD_FIELDS, "profiles"] if key not in data]
    if missing:
        raise TypeError(f"a camera record without {', '.join(missing)}")
    return data


def profile_record(**fields: Any) -> dict[str, Any]:
    """One stream profile's figures in a record, every one of PROFILE_FIELDS."""
    missing = [key for key in PROFILE_FIELDS if key not in fields]
    if missing:
        raise TypeError(f"a profile record without {', '.join(missing)}")
    return dict(fields)
