"""Bus mode's wire protocol: every subject, header and message shape, encoded and checked here.

Everything a process receives from NATS is outside input: anyone who can publish on a subject
can send anything on it. Each message is decoded by one function of this module into a typed
value, checked for types, ranges and sizes on the way; a message that fails raises
BadMessage, and the frame bus drops it, counts it and logs it at most once a minute per
subject (``Rejections``). The rest of livecam never sees raw bus bytes or JSON.

Subjects, under a site's prefix P, for camera N:

- ``P.camera.N.frame.PROFILE``: a frame of a stream profile; the JPEG is the payload, the
  headers ``seq`` (its number), ``ts`` (capture time, Unix seconds) and ``ph`` ("1" for a
  "no signal" placeholder);
- ``P.camera.N.state``: the camera's record (JSON, the fields of record.py, plus ``owner``);
- ``P.camera.N.interest``: a web worker's wish for frames (JSON: worker, viewers, profiles);
- ``P.camera.N.control``: a request, ``start``, ``stop`` or ``toggle``; the answer is the
  record, or ``{"error": ...}``;
- ``P.camera.N.latest``: a request naming a profile (empty: full); the answer is a JSON line
  of the frame's headers, then the JPEG, or empty when there is none;
- ``P.camera.N.owner``: a request; the answer names the process that captures the camera;
- ``P.camera.N.event``: an event the capture process noticed (a JSON line, then its JPEG
  when it has one);
- ``P.camera.N.manage``: a request to change the camera's settings or remove it, answered by
  the process that captures it (``{"status": ..., "record": ...}`` or ``{"status": ...,
  "error": ...}``, the HTTP status the web worker gives);
- ``P.cameras.add``: a request to add a camera (its table, an optional id and the capture
  process it names), answered by one capture process alone, the same way;
- ``P.capture.catalog``: each capture process's cameras (and the configured ones it removed at
  run time), every second and after each change.

A camera table in a request is checked here only as a JSON object: its keys and values are
the configuration's, checked where it is applied (catalog.runtime_camera), with the same
messages as a camera added over HTTP in one process.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .events import Event
from .jpeg import MAX_SIDE, jpeg_check
from .record import PROFILE_FIELDS, RECORD_FIELDS, STATES

log = logging.getLogger(__name__)

MAX_NAME = 200  # characters of a camera's name, an owner's or a worker's
MAX_TEXT = 1000  # characters of an error or a rejection reason
MAX_COUNT = 2**53  # counters stay exact in a JSON number
MAX_RATE = 1000.0  # frames per second
MAX_PROFILES = 32
MAX_WORKER_VIEWERS = 10_000  # viewers of one profile in one web worker
MAX_JSON = 64 * 1024  # bytes of a record, an interest or a control answer
PROFILE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a prefix part: no dot, no wildcard
ACTIONS = ("start", "stop", "toggle")
MAX_ID = 999_999  # the largest camera id
MAX_IDS = 1024  # camera ids in one list of a message
MANAGE_ACTIONS = ("change", "remove")
# The statuses a manage or add answer may give, as the web worker answers them over HTTP.
MANAGE_STATUSES = (200, 201, 204, 400, 404, 409, 503)
LOG_EVERY = 60.0  # seconds between two log lines about bad messages on one subject
CATALOG_EVERY = 1.0  # seconds between two catalogs of a capture process (and after each change)
ALIVE_FOR = 3.0  # seconds a capture process counts as alive after its last catalog

T = TypeVar("T")


class BadMessage(ValueError):
    """A message from the bus that livecam will not use, and why."""


# -- subjects -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Subjects:
    """The subjects of one site, under its prefix."""

    prefix: str = "livecam"

    def __post_init__(self) -> None:
        if not all(TOKEN_RE.match(part) for part in self.prefix.split(".")):
            raise ValueError(f"bus prefix {self.prefix!r}: expected dot-separated letters, digits, - and _")

    def camera(self, cam_id: int, *parts: str) -> str:
        """A subject of one camera: ``camera(3, "frame", "full")``."""
        return ".".join([self.prefix, "camera", str(cam_id), *parts])

    def frame(self, cam_id: int, profile: str) -> str:
        """Where a camera's frames of ``profile`` are published."""
        return self.camera(cam_id, "frame", profile)

    def state(self, cam_id: int) -> str:
        """Where a camera's record is published."""
        return self.camera(cam_id, "state")

    def interest(self, cam_id: int) -> str:
        """Where web workers say which profiles they want."""
        return self.camera(cam_id, "interest")

    def control(self, cam_id: int) -> str:
        """Where a camera's switches are asked for."""
        return self.camera(cam_id, "control")

    def latest(self, cam_id: int) -> str:
        """Where a profile's current frame is asked for."""
        return self.camera(cam_id, "latest")

    def owner(self, cam_id: int) -> str:
        """Where the process that captures a camera answers for it."""
        return self.camera(cam_id, "owner")

    def event(self, cam_id: int) -> str:
        """Where a camera's events are published."""
        return self.camera(cam_id, "event")

    def manage(self, cam_id: int) -> str:
        """Where a camera's change or removal is asked of its capture process."""
        return self.camera(cam_id, "manage")

    def add(self) -> str:
        """Where a new camera is asked of the capture processes."""
        return f"{self.prefix}.cameras.add"

    def catalog(self) -> str:
        """Where each capture process lists its cameras."""
        return f"{self.prefix}.capture.catalog"


# -- checks of decoded JSON values --------------------------------------------------------


def _count(value: object, limit: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise BadMessage(f"expected a whole number from 0 to {limit}, got {_shown(value)}")
    return value


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_RATE:
        raise BadMessage(f"expected a rate from 0 to {MAX_RATE:g}, got {_shown(value)}")
    return float(value)


def _side(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
        raise BadMessage(f"expected a size from 1 to {MAX_SIDE}, got {_shown(value)}")
    return value


def _camera_id(value: object) -> int:
    return _count(value, MAX_ID)


def _camera_ids(value: object, what: str) -> frozenset[int]:
    if not isinstance(value, list) or len(value) > MAX_IDS:
        raise BadMessage(f"{what}: expected a list of at most {MAX_IDS} camera ids, got {_shown(value)}")
    return frozenset(_camera_id(cam_id) for cam_id in value)


def _time(value: object) -> float:
    # Finite and within a few centuries of now: enough to tell a clock from garbage.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**34:
        raise BadMessage(f"expected a time in Unix seconds, got {_shown(value)}")
    return float(value)


def _text(limit: int, optional: bool = False, least: int = 0) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not least <= len(value) <= limit or not value.isprintable():
            raise BadMessage(f"expected printable text of {least} to {limit} characters, got {_shown(value)}")
        return value

    return check


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise BadMessage(f"expected true or false, got {_shown(value)}")
    return value


def _state(value: object) -> str:
    if value not in STATES:
        raise BadMessage(f"expected a state ({', '.join(STATES)}), got {_shown(value)}")
    return str(value)


def _quality(value: object) -> int | None:
    return None if value is None else _count(value, 100)


def _max_fps(value: object) -> float | None:
    return None if value is None else _rate(value)


def _profile_name(value: object) -> str:
    if not isinstance(value, str) or not PROFILE_NAME_RE.match(value):
        raise BadMessage(f"expected a profile name, got {_shown(value)}")
    return value


CHECKS: dict[str, Callable[[object], Any]] = {
    "count": _count,
    "rate": _rate,
    "side": _side,
    "time": _time,
    "name": _text(MAX_NAME, least=1),
    "text": _text(MAX_TEXT),
    "optional text": _text(MAX_TEXT, optional=True),
    "flag": _flag,
    "state": _state,
    "quality": _quality,
    "max fps": _max_fps,
}


def _shown(value: object) -> str:
    """A value in a reason, short whatever its size."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_JSON:
        raise BadMessage(f"{what} of {len(payload)} bytes: at most {MAX_JSON}")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadMessage(f"{what} is not JSON") from exc
    if not isinstance(data, dict):
        raise BadMessage(f"{what} is not a JSON object")
    return data


def _fields(data: Mapping[str, Any], table: Mapping[str, str], what: str) -> dict[str, Any]:
    """The fields of ``table`` that ``data`` has, each checked; other keys are left out (a
    newer sender may say more)."""
    checked = {}
    for key, kind in table.items():
        if key in data:
            try:
                checked[key] = CHECKS[kind](data[key])
            except BadMessage as exc:
                raise BadMessage(f"{what} {key}: {exc}") from None
    return checked


# -- frames -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameMessage:
    """A frame as it crosses the bus."""

    jpeg: bytes
    seq: int
    timestamp: float
    placeholder: bool = False


def frame_headers(seq: int, timestamp: float, placeholder: bool) -> dict[str, str]:
    """The bus headers of a frame."""
    return {"seq": str(seq), "ts": f"{timestamp:.6f}", "ph": "1" if placeholder else "0"}


def _header_int(headers: Mapping[str, str], key: str) -> int:
    value = headers.get(key, "")
    if not (value.isascii() and value.isdigit()) or len(value) > 16:
        raise BadMessage(f"frame header {key}: expected a whole number, got {_shown(value)}")
    return int(value)


def _header_time(headers: Mapping[str, str]) -> float:
    value = headers.get("ts", "")
    try:
        stamp = float(value) if value.isascii() and len(value) <= 32 else math.nan
    except ValueError:
        stamp = math.nan
    return _time(stamp if math.isfinite(stamp) else None)


def decode_frame(payload: bytes, headers: Mapping[str, str], max_bytes: int) -> FrameMessage:
    """A frame from the bus: a whole JPEG of a sane size, within ``max_bytes``, with its headers.

    :raise BadMessage: anything else.
    """
    if len(payload) > max_bytes:
        raise BadMessage(f"frame of {len(payload)} bytes exceeds the {max_bytes} byte limit")
    # A capture process sends the picture alone, ending with its end marker: its markers are
    # checked without a search of its data (a forged one holding another end marker inside
    # reaches viewers whole, and their decoders stop at that marker); a payload ending
    # otherwise is searched and cut as a camera's frame is.
    start, end, problem = jpeg_check(payload)
    if problem:
        raise BadMessage(f"frame: {problem}")
    if start:
        raise BadMessage("frame: bytes before the picture (a capture process sends the picture alone)")
    # The check found a frame header of a size from 1x1 to MAX_SIDE square, or it would have
    # said why (a picture with no size, or an absurd one, is refused there).
    payload = payload[:end]  # what follows the end marker is not the picture's, as from a camera
    placeholder = headers.get("ph", "0")
    if placeholder not in ("0", "1"):
        raise BadMessage(f"frame header ph: expected 0 or 1, got {_shown(placeholder)}")
    return FrameMessage(payload, _header_int(headers, "seq"), _header_time(headers), placeholder == "1")


# -- records ------------------------------------------------------------------------------


def encode_record(record: Mapping[str, Any]) -> bytes:
    """A camera's record (with its ``owner``) as JSON."""
    return json.dumps(record, separators=(",", ":")).encode()


def decode_record(payload: bytes, cam_id: int | None = None) -> dict[str, Any]:
    """A camera's record from the bus, with only the fields livecam knows, each checked.

    :param cam_id: the camera the subject names: a record of another one is refused.
    :raise BadMessage: a field of the wrong type or out of range, or no state.
    """
    return _record(_json_object(payload, "record"), cam_id)


def _record(data: object, cam_id: int | None) -> dict[str, Any]:
    """decode_record's checks, of a decoded JSON object."""
    if not isinstance(data, dict):
        raise BadMessage("record is not a JSON object")
    record = _fields(data, RECORD_FIELDS, "record")
    if "state" not in record:
        raise BadMessage("record without a state")
    if cam_id is not None and record.get("id", cam_id) != cam_id:
        raise BadMessage(f"record of camera {record['id']} on camera {cam_id}'s subject")
    if "owner" in data:
        record["owner"] = CHECKS["name"](data["owner"])
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict) or len(profiles) > MAX_PROFILES:
        raise BadMessage(f"record profiles: expected an object of at most {MAX_PROFILES} profiles")
    record["profiles"] = {}
    for name, figures in profiles.items():
        if not isinstance(figures, dict):
            raise BadMessage(f"record profile {_shown(name)}: expected an object")
        record["profiles"][_profile_name(name)] = _fields(figures, PROFILE_FIELDS, f"record profile {name}")
    return record


# -- interest -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Interest:
    """A web worker's wish for a camera's frames: its viewers of each profile it wants."""

    worker: str
    profiles: dict[str, int]

    @property
    def viewers(self) -> int:
        """The worker's viewers over every profile."""
        return sum(self.profiles.values())


def encode_interest(interest: Interest) -> bytes:
    """An interest as JSON."""
    body = {"worker": interest.worker, "viewers": interest.viewers, "profiles": interest.profiles}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_interest(payload: bytes) -> Interest:
    """An interest from the bus.

    :raise BadMessage: no worker, or profiles that are not names with viewer counts.
    """
    data = _json_object(payload, "interest")
    worker = CHECKS["name"](data.get("worker"))
    profiles = data.get("profiles")
    if not isinstance(profiles, dict) or len(profiles) > MAX_PROFILES:
        raise BadMessage(f"interest profiles: expected an object of at most {MAX_PROFILES} profiles")
    # A worker's viewers are bounded by what one process can serve (the sender's 4096 and the
    # threads): a count past that is no worker's.
    wanted = {_profile_name(name): _count(viewers, MAX_WORKER_VIEWERS) for name, viewers in profiles.items()}
    return Interest(worker, wanted)


# -- requests -----------------------------------------------------------------------------


def decode_control(payload: bytes) -> str:
    """A switch asked for: start, stop or toggle.

    :raise BadMessage: anything else.
    """
    action = payload.strip().decode("ascii", errors="replace")
    if action not in ACTIONS:
        raise BadMessage(f"control: expected start, stop or toggle, got {_shown(payload[:40])}")
    return action


def encode_error(reason: str) -> bytes:
    """A request's answer saying why it could not be done."""
    return json.dumps({"error": reason[:MAX_TEXT]}).encode()


def decode_control_reply(payload: bytes, cam_id: int) -> dict[str, Any]:
    """A switch's answer: the camera's record.

    :raise BadMessage: not a record; its message says why the switch failed when the
        capture process said so.
    """
    data = _json_object(payload, "control answer")
    if "state" not in data and "error" in data:
        raise BadMessage(str(CHECKS["text"](data["error"])))
    return decode_record(payload, cam_id)


def encode_latest_request(profile: str) -> bytes:
    """Ask for a profile's current frame."""
    return profile.encode()


def decode_latest_request(payload: bytes) -> str:
    """The profile whose current frame is asked for (empty: full).

    :raise BadMessage: not a profile name.
    """
    return _profile_name(payload.strip().decode("ascii", errors="replace") or "full")


def encode_latest_reply(frame: FrameMessage | None) -> bytes:
    """The answer to a latest request: the frame's headers as a JSON line, then the JPEG."""
    if frame is None:
        return b""
    headers = frame_headers(frame.seq, frame.timestamp, frame.placeholder)
    return json.dumps(headers).encode() + b"\n" + frame.jpeg


def decode_latest_reply(payload: bytes, max_bytes: int) -> FrameMessage | None:
    """A profile's current frame, or None when the capture process has none.

    :raise BadMessage: a frame that does not pass decode_frame's checks.
    """
    if not payload:
        return None
    head, newline, jpeg = payload.partition(b"\n")
    if not newline:
        raise BadMessage("latest answer without its header line")
    headers = _json_object(head, "latest answer header")
    if not all(isinstance(value, str) for value in headers.values()):
        raise BadMessage("latest answer header: expected text values")
    return decode_frame(jpeg, headers, max_bytes)


def host_of(owner: str) -> str:
    """The host of an owner name (``host:pid``), by which a capture process may be named."""
    return owner.rpartition(":")[0] or owner


def decode_owner(payload: bytes) -> str:
    """Who captures a camera, as its process answered.

    :raise BadMessage: not a short printable name.
    """
    try:
        return str(CHECKS["name"](payload.decode()))
    except UnicodeDecodeError:
        raise BadMessage("owner: not UTF-8") from None


# -- cameras added, changed and removed --------------------------------------------------


@dataclass(frozen=True)
class AddRequest:
    """A camera to add: its table, the id asked for (None: the lowest free one), the capture
    process named (None: the only one), and the ids the asking web worker knows in use."""

    table: dict[str, Any]
    cam_id: int | None = None
    capture: str | None = None
    taken: frozenset[int] = frozenset()


def encode_add(request: AddRequest) -> bytes:
    """An add request as JSON."""
    body = {
        "table": request.table,
        "id": request.cam_id,
        "capture": request.capture,
        "taken": sorted(request.taken),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_add(payload: bytes) -> AddRequest:
    """An add request from the bus.

    :raise BadMessage: no table object, an id out of range, a capture process that is no
        name, taken ids that are not ids.
    """
    data = _json_object(payload, "add request")
    table = data.get("table")
    if not isinstance(table, dict):
        raise BadMessage(f"add request table: expected a JSON object, got {_shown(table)}")
    cam_id = data.get("id")
    capture = data.get("capture")
    try:
        return AddRequest(
            table,
            None if cam_id is None else _camera_id(cam_id),
            None if capture is None else str(CHECKS["name"](capture)),
            _camera_ids(data.get("taken", []), "taken"),
        )
    except BadMessage as exc:
        raise BadMessage(f"add request: {exc}") from None


@dataclass(frozen=True)
class ManageRequest:
    """A camera's change (the keys to change; None removes one) or removal."""

    action: str
    changes: dict[str, Any]


def encode_manage(request: ManageRequest) -> bytes:
    """A manage request as JSON."""
    body: dict[str, Any] = {"action": request.action}
    if request.action == "change":
        body["changes"] = request.changes
    return json.dumps(body, separators=(",", ":")).encode()


def decode_manage(payload: bytes) -> ManageRequest:
    """A change or removal asked of a camera's capture process.

    :raise BadMessage: another action, or a change without an object of changes.
    """
    data = _json_object(payload, "manage request")
    action = data.get("action")
    if action not in MANAGE_ACTIONS:
        raise BadMessage(f"manage request: expected the action change or remove, got {_shown(action)}")
    changes = data.get("changes", {})
    if not isinstance(changes, dict) or (action == "change" and not changes):
        raise BadMessage(f"manage request changes: expected a JSON object of settings, got {_shown(changes)}")
    return ManageRequest(str(action), changes if action == "change" else {})


@dataclass(frozen=True)
class ManageReply:
    """A capture process's answer to an add, a change or a removal: the HTTP status to give,
    with the camera's record (200, 201) or the reason (400, 404, 409, 503)."""

    status: int
    record: dict[str, Any] | None = None
    error: str | None = None


def encode_manage_reply(reply: ManageReply) -> bytes:
    """A manage answer as JSON."""
    body: dict[str, Any] = {"status": reply.status}
    if reply.record is not None:
        body["record"] = reply.record
    if reply.error is not None:
        body["error"] = reply.error[:MAX_TEXT]
    return json.dumps(body, separators=(",", ":")).encode()


def decode_manage_reply(payload: bytes, cam_id: int | None = None) -> ManageReply:
    """A capture process's answer to an add, a change or a removal.

    :param cam_id: the camera asked about: a record of another one is refused.
    :raise BadMessage: a status it may not give, a success without a checked record, a
        refusal without its reason.
    """
    data = _json_object(payload, "manage answer")
    status = data.get("status")
    if isinstance(status, bool) or status not in MANAGE_STATUSES:
        raise BadMessage(f"manage answer status: expected one of {MANAGE_STATUSES}, got {_shown(status)}")
    if status in (200, 201):
        if "record" not in data:
            raise BadMessage(f"manage answer {status} without the camera's record")
        record = _record(data["record"], cam_id)
        if "id" not in record:
            raise BadMessage(f"manage answer {status}: a record without its camera's id")
        return ManageReply(status, record=record)
    if status == 204:
        return ManageReply(status)
    return ManageReply(status, error=str(CHECKS["text"](data.get("error"))) or "refused")


@dataclass(frozen=True)
class Catalog:
    """A capture process's cameras, and the configured ones it removed at run time."""

    owner: str
    cameras: frozenset[int]
    removed: frozenset[int] = frozenset()


def encode_catalog(catalog: Catalog) -> bytes:
    """A catalog as JSON."""
    body = {"owner": catalog.owner, "cameras": sorted(catalog.cameras), "removed": sorted(catalog.removed)}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_catalog(payload: bytes) -> Catalog:
    """A capture process's catalog from the bus.

    :raise BadMessage: no owner name, or lists that are not of camera ids.
    """
    data = _json_object(payload, "catalog")
    try:
        owner = str(CHECKS["name"](data.get("owner")))
        cameras = _camera_ids(data.get("cameras"), "cameras")
        removed = _camera_ids(data.get("removed", []), "removed")
    except BadMessage as exc:
        raise BadMessage(f"catalog: {exc}") from None
    if cameras & removed:
        raise BadMessage(f"catalog: cameras {sorted(cameras & removed)[:5]} both listed and removed")
    return Catalog(owner, cameras, removed)


# -- events -------------------------------------------------------------------------------

EVENT_FIELDS: dict[str, dict[str, str]] = {
    "motion.start": {"score": "fraction", "box": "box"},
    "motion.end": {"score": "fraction", "box": "box", "duration": "seconds"},
    "camera.state": {"state": "state", "error": "optional text", "previous": "state"},
}


def encode_event(event: Event) -> bytes:
    """An event as a JSON line, then its JPEG when it has one."""
    body = {**event.json(), "snapshot": None}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n" + (event.snapshot or b"")


def decode_event(payload: bytes, cam_id: int, max_bytes: int) -> Event:
    """An event from a capture process, for the camera its subject names.

    :raise BadMessage: an unknown type, a field out of range, another camera's, or a JPEG
        that does not pass decode_frame's checks.
    """
    head, newline, jpeg = payload.partition(b"\n")
    if not newline:
        raise BadMessage("event without its JSON line")
    data = _json_object(head, "event")
    kind = data.get("type")
    if kind not in EVENT_FIELDS:
        raise BadMessage(f"event type: expected one of {', '.join(EVENT_FIELDS)}, got {_shown(kind)}")
    if data.get("camera") != cam_id:
        raise BadMessage(f"event of camera {_shown(data.get('camera'))} on camera {cam_id}'s subject")
    event_id = _count(data.get("id"))
    name = str(CHECKS["name"](data.get("name")))
    when = _time(data.get("time"))
    fields = {}
    for key, kind_of in EVENT_FIELDS[kind].items():
        if key in data:
            try:
                fields[key] = _EVENT_CHECKS[kind_of](data[key])
            except BadMessage as exc:
                raise BadMessage(f"event {key}: {exc}") from None
    snapshot = decode_frame(jpeg, {"seq": "0", "ts": "0"}, max_bytes).jpeg if jpeg else None
    return Event(event_id, str(kind), cam_id, name, when, fields, snapshot)


def _fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise BadMessage(f"expected a number from 0 to 1, got {_shown(value)}")
    return float(value)


def _box(value: object) -> list[float]:
    if not isinstance(value, list) or len(value) != 4:
        raise BadMessage(f"expected [x0, y0, x1, y1], got {_shown(value)}")
    box = [_fraction(number) for number in value]
    if not (box[0] <= box[2] and box[1] <= box[3]):
        raise BadMessage(f"expected x0 <= x1 and y0 <= y1, got {_shown(value)}")
    return box


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400 * 366:
        raise BadMessage(f"expected a number of seconds, got {_shown(value)}")
    return float(value)


_EVENT_CHECKS: dict[str, Callable[[object], Any]] = {
    **CHECKS,
    "fraction": _fraction,
    "box": _box,
    "seconds": _seconds,
}


# -- bad messages -------------------------------------------------------------------------


class Rejections:
    """Bad messages dropped: counted per subject, logged at most once a minute per subject."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self._every = every
        self._lock = threading.Lock()  # guards both dicts: the bus thread and request threads report
        self._counts: dict[str, int] = {}
        self._logged: dict[str, tuple[float, int]] = {}  # subject -> (when, count then)

    def reject(self, subject: str, reason: str) -> None:
        """Count a bad message on ``subject``; log it unless that subject was logged lately."""
        now = time.monotonic()
        with self._lock:
            count = self._counts[subject] = self._counts.get(subject, 0) + 1
            when, before = self._logged.get(subject, (-math.inf, 0))
            if now - when < self._every:
                return
            self._logged[subject] = (now, count)
        more = f" ({count - before - 1} more since the last report)" if count - before > 1 else ""
        log.warning("frame bus: dropped a bad message on %s: %s%s", subject, reason[:MAX_TEXT], more)

    def count(self, prefix: str = "") -> int:
        """Bad messages dropped on the subjects that start with ``prefix``."""
        with self._lock:
            return sum(n for subject, n in self._counts.items() if subject.startswith(prefix))


def checked(
    decode: Callable[[bytes, dict[str, str]], T],
    handler: Callable[[T], None],
    rejections: Rejections,
    subject: str,
) -> Callable[[bytes, dict[str, str]], None]:
    """A bus handler that decodes each message and passes it on, or drops it as bad."""

    def deliver(payload: bytes, headers: dict[str, str]) -> None:
        try:
            message = decode(payload, headers)
        except BadMessage as exc:
            rejections.reject(subject, str(exc))
            return
        handler(message)

    return deliver
