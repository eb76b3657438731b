"""Server-Sent Events framing: one message per event, its data on one line whatever it holds."""

from __future__ import annotations

import io

import pytest

from helpers import read_messages
from livecam import sse


def test_an_event_is_one_message_of_type_id_and_json_data() -> None:
    data = {"id": 7, "type": "motion.start", "camera": 3, "box": [0.1, 0.2, 0.5, 0.75]}
    framed = sse.message("motion.start", 7, data)
    assert framed == (
        b'event: motion.start\nid: 7\ndata: {"id":7,"type":"motion.start","camera":3,'
        b'"box":[0.1,0.2,0.5,0.75]}\n\n'
    )
    (message,) = read_messages(io.BytesIO(framed))
    assert message.fields["event"] == "motion.start" and message.fields["id"] == "7"
    assert message.json == data


@pytest.mark.parametrize(
    "name",
    ["Front\ndoor", "Front\r\ndoor", "Front\rdoor", "data: forged\n\nevent: x", "Gar\u2028age", "Küche ☃"],
)
def test_nothing_in_an_event_can_end_its_data_line_or_message(name: str) -> None:
    framed = sse.message("camera.state", 1, {"name": name, "error": "line one\nline two"})
    assert framed.isascii()  # every line break and non-ASCII character escaped
    assert framed.count(b"\n") == 4  # three field lines and the blank line
    message, after = read_messages(io.BytesIO(framed + sse.KEEPALIVE))
    assert message.json == {"name": name, "error": "line one\nline two"}
    assert after.comments == ["keepalive"]  # the next block is still read as the next block


@pytest.mark.parametrize("kind", ["", "motion.start\ndata: x", "a\rb"])
def test_a_type_that_would_break_the_framing_is_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="SSE event name"):
        sse.message(kind, 1, {})


def test_the_opening_is_a_retry_hint_and_the_keepalive_a_comment() -> None:
    retry, keepalive = read_messages(io.BytesIO(sse.OPENING + sse.KEEPALIVE))
    assert retry.fields == {"retry": str(sse.RETRY_MS)} and retry.comments == []
    assert keepalive.fields == {} and keepalive.comments == ["keepalive"]
