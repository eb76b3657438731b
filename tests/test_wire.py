"""The bus wire protocol: every message kind, encoded and decoded, valid and hostile."""

from __future__ import annotations

import json
import logging
from typing import Any

import cv2
import numpy as np
import pytest

from livecam import wire
from livecam.capture import Camera
from livecam.config import CameraConfig, parse_source
from livecam.events import EventLog
from livecam.record import RECORD_FIELDS

MAX = 16 * 2**20


def jpeg_of(width: int = 64, height: int = 48) -> bytes:
    ok, buffer = cv2.imencode(".jpg", np.full((height, width, 3), 90, np.uint8))
    assert ok
    return buffer.tobytes()


def with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG whose frame header claims another size."""
    data = bytearray(jpeg)
    offset = 2
    while data[offset + 1] not in (0xC0, 0xC2):
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    data[offset + 5 : offset + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def a_record(**changes: Any) -> dict[str, Any]:
    """A record as a real camera makes it, with ``changes``."""
    config = CameraConfig(id=3, source=parse_source("testsrc:64x48@10", "source"), name="Bench")
    data = Camera(config).status()
    data["owner"] = "host:1"
    data.update(changes)
    return data


# -- subjects -----------------------------------------------------------------------------


def test_subjects_of_a_camera() -> None:
    subjects = wire.Subjects("site-a.cams")
    assert subjects.frame(3, "preview") == "site-a.cams.camera.3.frame.preview"
    assert subjects.state(3) == "site-a.cams.camera.3.state"
    assert subjects.interest(3) == "site-a.cams.camera.3.interest"
    assert subjects.control(3) == "site-a.cams.camera.3.control"
    assert subjects.latest(3) == "site-a.cams.camera.3.latest"
    assert subjects.owner(3) == "site-a.cams.camera.3.owner"
    assert subjects.manage(3) == "site-a.cams.camera.3.manage"
    assert subjects.add() == "site-a.cams.cameras.add"
    assert subjects.catalog() == "site-a.cams.capture.catalog"


@pytest.mark.parametrize("prefix", ["", "a..b", "a.*", "a.>", "a b", "ä"])
def test_a_prefix_with_wildcards_or_gaps_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        wire.Subjects(prefix)


# -- frames -------------------------------------------------------------------------------


def test_a_frame_round_trips() -> None:
    jpeg = jpeg_of()
    headers = wire.frame_headers(41, 1_700_000_000.25, placeholder=True)
    frame = wire.decode_frame(jpeg, headers, MAX)
    assert frame == wire.FrameMessage(jpeg, 41, 1_700_000_000.25, True)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"<html>hello</html>", "not a JPEG"),
        (b"", "not a JPEG"),
        (jpeg_of()[:-40], "truncated"),
        (with_size(jpeg_of(), 60000, 60000), "8192"),
        (with_size(jpeg_of(), 0, 48), "8192"),
    ],
)
def test_a_frame_that_is_no_sane_jpeg_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(wire.BadMessage, match=reason):
        wire.decode_frame(payload, wire.frame_headers(1, 1.0, False), MAX)


def test_a_frame_over_the_size_limit_is_refused_before_it_is_read() -> None:
    jpeg = jpeg_of(640, 480)
    with pytest.raises(wire.BadMessage, match="exceeds"):
        wire.decode_frame(jpeg, wire.frame_headers(1, 1.0, False), len(jpeg) - 1)


@pytest.mark.parametrize(
    "headers",
    [
        {"ts": "1.0", "ph": "0"},
        {"seq": "-1", "ts": "1.0", "ph": "0"},
        {"seq": "٣", "ts": "1.0", "ph": "0"},
        {"seq": "1" * 40, "ts": "1.0", "ph": "0"},
        {"seq": "1", "ts": "nan", "ph": "0"},
        {"seq": "1", "ts": "inf", "ph": "0"},
        {"seq": "1", "ts": "-5", "ph": "0"},
        {"seq": "1", "ts": "1e300", "ph": "0"},
        {"seq": "1", "ts": "soon", "ph": "0"},
        {"seq": "1", "ts": "1.0", "ph": "yes"},
    ],
)
def test_a_frame_with_bad_headers_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(wire.BadMessage):
        wire.decode_frame(jpeg_of(), headers, MAX)


# -- records ------------------------------------------------------------------------------


def test_a_real_cameras_record_round_trips() -> None:
    record = a_record()
    decoded = wire.decode_record(wire.encode_record(record), 3)
    assert decoded == record


def test_a_record_keeps_only_known_fields() -> None:
    decoded = wire.decode_record(wire.encode_record(a_record(script="<script>", urls={"x": 1})), 3)
    assert "script" not in decoded and "urls" not in decoded
    assert set(decoded) <= {*RECORD_FIELDS, "profiles", "owner"}


@pytest.mark.parametrize(
    "changes",
    [
        {"fps": "fast"},
        {"fps": -1},
        {"fps": 1e308},
        {"width": 0},
        {"width": 60000},
        {"height": 2.5},
        {"viewers": -3},
        {"frames": True},
        {"frames": 2**60},
        {"state": "exploded"},
        {"name": "x" * 10_000},
        {"name": "line\nbreak"},
        {"name": 5},
        {"error": ["list"]},
        {"since": "yesterday"},
        {"passthrough": "yes"},
        {"owner": {"nested": 1}},
        {"id": 4},
        {"profiles": []},
        {"profiles": {"BAD NAME": {}}},
        {"profiles": {"full": {"width": 0}}},
        {"profiles": {"full": {"quality": 101}}},
        {"profiles": {"full": "x"}},
        {"profiles": {f"p{i}": {} for i in range(40)}},
    ],
)
def test_a_hostile_record_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(wire.BadMessage):
        wire.decode_record(json.dumps(a_record(**changes)).encode(), 3)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b"null",
        b'{"id": 3}',
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"state": "on"' + b" " * 70_000,
    ],
)
def test_a_record_that_is_not_one_is_refused(payload: bytes) -> None:
    with pytest.raises(wire.BadMessage):
        wire.decode_record(payload, 3)


# -- interest -----------------------------------------------------------------------------


def test_an_interest_round_trips() -> None:
    interest = wire.Interest("web:12", {"full": 2, "preview": 5})
    decoded = wire.decode_interest(wire.encode_interest(interest))
    assert decoded == interest and decoded.viewers == 7


@pytest.mark.parametrize(
    "body",
    [
        {"viewers": 1, "profiles": {"full": 1}},
        {"worker": "", "profiles": {"full": 1}},
        {"worker": 7, "profiles": {"full": 1}},
        {"worker": "w", "profiles": {"full": -1}},
        {"worker": "w", "profiles": {"full": 10**5}},
        {"worker": "w", "profiles": {"full": "1"}},
        {"worker": "w", "profiles": {"../x": 1}},
        {"worker": "w", "profiles": ["full"]},
        {"worker": "w", "profiles": {f"p{i}": 1 for i in range(40)}},
    ],
)
def test_a_hostile_interest_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(wire.BadMessage):
        wire.decode_interest(json.dumps(body).encode())


# -- requests -----------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["start", "stop", "toggle"])
def test_a_switch_is_one_of_three_words(action: str) -> None:
    assert wire.decode_control(f" {action}\n".encode()) == action


@pytest.mark.parametrize("payload", [b"", b"jump", b"STOP", b"stop; rm", b"\xff" * 10, b"start" * 1000])
def test_any_other_switch_is_refused(payload: bytes) -> None:
    with pytest.raises(wire.BadMessage):
        wire.decode_control(payload)


def test_a_switch_answer_is_a_record_or_the_reason() -> None:
    record = a_record()
    assert wire.decode_control_reply(wire.encode_record(record), 3)["state"] == record["state"]
    with pytest.raises(wire.BadMessage, match="source is busy"):
        wire.decode_control_reply(wire.encode_error("source is busy"), 3)
    with pytest.raises(wire.BadMessage):
        wire.decode_control_reply(b'{"state": "on", "fps": "x"}', 3)


def test_a_latest_request_names_a_profile() -> None:
    assert wire.decode_latest_request(wire.encode_latest_request("preview")) == "preview"
    assert wire.decode_latest_request(b"") == "full"
    for payload in (b"../../etc", b"A", b"x" * 100, b"\xff"):
        with pytest.raises(wire.BadMessage):
            wire.decode_latest_request(payload)


def test_a_latest_answer_round_trips_and_is_checked_like_a_frame() -> None:
    frame = wire.FrameMessage(jpeg_of(), 9, 1_700_000_000.5, False)
    assert wire.decode_latest_reply(wire.encode_latest_reply(frame), MAX) == frame
    assert wire.decode_latest_reply(wire.encode_latest_reply(None), MAX) is None
    hostile = [
        b'{"seq": "1", "ts": "1", "ph": "0"}\n<html>',
        b'{"seq": 1, "ts": "1", "ph": "0"}\n' + jpeg_of(),
        b"no header line",
        b"[]\n" + jpeg_of(),
    ]
    for payload in hostile:
        with pytest.raises(wire.BadMessage):
            wire.decode_latest_reply(payload, MAX)


def test_an_owner_is_a_short_printable_name() -> None:
    assert wire.decode_owner(b"host:123") == "host:123"
    for payload in (b"", b"x" * 1000, b"a\x1b[31mb", b"\xff"):
        with pytest.raises(wire.BadMessage):
            wire.decode_owner(payload)


# -- bad messages -------------------------------------------------------------------------


def test_rejections_are_counted_per_subject_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rejections = wire.Rejections()
    with caplog.at_level(logging.WARNING, logger="livecam.wire"):
        for _ in range(50):
            rejections.reject("livecam.camera.0.state", "record fps: expected a rate")
        rejections.reject("livecam.camera.1.frame.full", "frame: not a JPEG")
    assert rejections.count("livecam.camera.0.") == 50
    assert rejections.count("livecam.camera.1.") == 1
    assert rejections.count() == 51
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "livecam.camera.0.state" in lines[0] and "expected a rate" in lines[0]


def test_the_next_report_says_how_many_were_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    rejections = wire.Rejections(every=0.0)
    with caplog.at_level(logging.WARNING, logger="livecam.wire"):
        rejections.reject("s", "bad")
        rejections.reject("s", "bad")
    assert "more since" not in caplog.records[-1].getMessage()
    quiet = wire.Rejections(every=3600.0)
    with caplog.at_level(logging.WARNING, logger="livecam.wire"):
        for _ in range(5):
            quiet.reject("t", "bad")
    assert sum("on t:" in r.getMessage() for r in caplog.records) == 1


def test_a_checked_handler_passes_good_messages_and_drops_bad_ones() -> None:
    got: list[wire.Interest] = []
    rejections = wire.Rejections()
    handler = wire.checked(lambda payload, _: wire.decode_interest(payload), got.append, rejections, "i")
    handler(wire.encode_interest(wire.Interest("w", {"full": 1})), {})
    handler(b"junk", {})
    assert got == [wire.Interest("w", {"full": 1})]
    assert rejections.count("i") == 1


# -- events -------------------------------------------------------------------------------


def test_an_event_round_trips_with_its_picture() -> None:
    log = EventLog()
    start = log.add("motion.start", 3, "Door", jpeg_of(), score=0.25, box=[0.1, 0.2, 0.3, 0.4])
    state = log.add("camera.state", 3, "Door", state="error", error="camera answered 401", previous="on")
    for event in (start, state):
        decoded = wire.decode_event(wire.encode_event(event), 3, MAX)
        assert decoded == event and decoded.snapshot == event.snapshot


@pytest.mark.parametrize(
    ("body", "jpeg"),
    [
        ({"type": "motion.start", "score": 2.0}, b""),
        ({"type": "motion.start", "box": [0.5, 0, 0.1, 1]}, b""),
        ({"type": "motion.start", "box": "everywhere"}, b""),
        ({"type": "motion.end", "duration": -1}, b""),
        ({"type": "camera.state", "state": "exploded"}, b""),
        ({"type": "camera.state", "error": "x" * 5000}, b""),
        ({"type": "door.open"}, b""),
        ({"type": "motion.start", "camera": 4}, b""),
        ({"type": "motion.start", "id": -1}, b""),
        ({"type": "motion.start", "name": ""}, b""),
        ({"type": "motion.start", "time": "now"}, b""),
        ({"type": "motion.start"}, b"<html>"),
    ],
)
def test_a_hostile_event_is_refused(body: dict[str, Any], jpeg: bytes) -> None:
    event = {"id": 5, "type": "motion.start", "camera": 3, "name": "Door", "time": 1.7e9, **body}
    with pytest.raises(wire.BadMessage):
        wire.decode_event(json.dumps(event).encode() + b"\n" + jpeg, 3, MAX)
    with pytest.raises(wire.BadMessage):
        wire.decode_event(json.dumps(event).encode(), 3, MAX)  # no line at all


# -- cameras added, changed and removed --------------------------------------------------


def test_an_add_request_round_trips() -> None:
    request = wire.AddRequest({"source": "testsrc", "name": "Yard"}, 7, "host:12", frozenset({0, 1}))
    assert wire.decode_add(wire.encode_add(request)) == request
    bare = wire.AddRequest({"source": "testsrc"})
    assert wire.decode_add(wire.encode_add(bare)) == bare
    # The table's own keys are the configuration's, checked where it is applied.
    assert wire.decode_add(b'{"table": {"rotate": "sideways"}}').table == {"rotate": "sideways"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"table": "testsrc"},
        {"table": ["source", "testsrc"]},
        {"table": None},
        {"table": {}, "id": -1},
        {"table": {}, "id": 10**6},
        {"table": {}, "id": True},
        {"table": {}, "id": "3"},
        {"table": {}, "id": 2.5},
        {"table": {}, "capture": ""},
        {"table": {}, "capture": 5},
        {"table": {}, "capture": "x" * 201},
        {"table": {}, "capture": "host\x1b[31m"},
        {"table": {}, "taken": "0,1"},
        {"table": {}, "taken": [0, -1]},
        {"table": {}, "taken": [False]},
        {"table": {}, "taken": list(range(2000))},
    ],
)
def test_a_hostile_add_request_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(wire.BadMessage):
        wire.decode_add(json.dumps(body).encode())


@pytest.mark.parametrize(
    "payload", [b"", b"junk", b"[]", b"\xff", b"[" * 100_000, b'{"table": {"n": "' + b"x" * 70_000 + b'"}}']
)
def test_an_add_request_that_is_not_one_is_refused(payload: bytes) -> None:
    with pytest.raises(wire.BadMessage):
        wire.decode_add(payload)


def test_a_manage_request_is_a_change_or_a_removal() -> None:
    change = wire.ManageRequest("change", {"name": "Garden", "rotate": None})
    assert wire.decode_manage(wire.encode_manage(change)) == change
    remove = wire.ManageRequest("remove", {})
    assert wire.decode_manage(wire.encode_manage(remove)) == remove
    # A removal's stray changes are not carried on.
    assert wire.decode_manage(b'{"action": "remove", "changes": {"x": 1}}') == remove


@pytest.mark.parametrize(
    "payload",
    [
        b"remove",
        b'{"action": "explode"}',
        b'{"action": "REMOVE"}',
        b'{"action": ["remove"]}',
        b'{"action": "change"}',
        b'{"action": "change", "changes": {}}',
        b'{"action": "change", "changes": "name=x"}',
        b'{"action": "remove", "changes": []}',
        b"\xff\xfe",
        b'{"action": "change", "changes": {"name": "' + b"x" * 70_000 + b'"}}',
    ],
)
def test_a_hostile_manage_request_is_refused(payload: bytes) -> None:
    with pytest.raises(wire.BadMessage):
        wire.decode_manage(payload)


def test_a_manage_answer_is_a_status_with_the_record_or_the_reason() -> None:
    record = a_record()
    added = wire.decode_manage_reply(wire.encode_manage_reply(wire.ManageReply(201, record=record)))
    assert added == wire.ManageReply(201, record=record)
    changed = wire.decode_manage_reply(wire.encode_manage_reply(wire.ManageReply(200, record=record)), 3)
    assert changed.record == record
    assert wire.decode_manage_reply(wire.encode_manage_reply(wire.ManageReply(204))) == wire.ManageReply(204)
    refused = wire.ManageReply(409, error="source: device /dev/video0 is already camera 1")
    assert wire.decode_manage_reply(wire.encode_manage_reply(refused)) == refused
    # A record's unknown fields are left out, as on the state subject.
    body = {"status": 200, "record": {**record, "script": "<script>"}}
    assert "script" not in wire.decode_manage_reply(json.dumps(body).encode(), 3).record


@pytest.mark.parametrize(
    "body",
    [
        {"status": 500, "error": "x"},
        {"status": 302, "record": a_record()},
        {"status": "201", "record": a_record()},
        {"status": True, "error": "x"},
        {"status": 201},
        {"status": 200, "record": "ok"},
        {"status": 200, "record": {"id": 4, "state": "on"}},  # another camera's
        {"status": 201, "record": {"state": "on"}},  # whose?
        {"status": 200, "record": {**a_record(), "fps": "fast"}},
        {"status": 200, "record": {**a_record(), "profiles": {"full": {"width": 60000}}}},
        {"status": 400},
        {"status": 400, "error": ["x"]},
        {"status": 409, "error": "x" * 5000},
        {"status": 409, "error": "line\nbreak"},
        {"error": "no status"},
    ],
)
def test_a_hostile_manage_answer_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(wire.BadMessage):
        wire.decode_manage_reply(json.dumps(body).encode(), 3)


def test_a_catalog_round_trips() -> None:
    catalog = wire.Catalog("host:12", frozenset({0, 5}), frozenset({1}))
    assert wire.decode_catalog(wire.encode_catalog(catalog)) == catalog
    empty = wire.Catalog("host:12", frozenset())
    assert wire.decode_catalog(wire.encode_catalog(empty)) == empty


@pytest.mark.parametrize(
    "body",
    [
        {"cameras": [0]},
        {"owner": "", "cameras": [0]},
        {"owner": ["h"], "cameras": [0]},
        {"owner": "h\u0000", "cameras": [0]},
        {"owner": "h"},
        {"owner": "h", "cameras": "0,1"},
        {"owner": "h", "cameras": [-1]},
        {"owner": "h", "cameras": [10**6]},
        {"owner": "h", "cameras": [1.5]},
        {"owner": "h", "cameras": [True]},
        {"owner": "h", "cameras": ["0"]},
        {"owner": "h", "cameras": list(range(2000))},
        {"owner": "h", "cameras": [0], "removed": {"0": 1}},
        {"owner": "h", "cameras": [0], "removed": [0]},  # listed and removed at once
    ],
)
def test_a_hostile_catalog_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(wire.BadMessage):
        wire.decode_catalog(json.dumps(body).encode())
