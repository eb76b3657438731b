"""Events over HTTP: one camera's and every camera's, newest first, with their pictures; the live
stream of them (Server-Sent Events) as the development server and the test client serve it."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from helpers import ChunkReader, Message, read_messages
from livecam.appstate import get_registry
from livecam.views.events import framer


@pytest.fixture
def events_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(
        {
            "cameras": {
                "0": {"source": "testsrc:160x120@30", "name": "Bench"},
                "1": {"source": "testsrc:160x120@30", "name": "Door"},
            },
            "view_token": "view-secret-1",
        }
    )


VIEW = {"Authorization": "Bearer view-secret-1"}


def test_a_cameras_events_newest_first_with_their_pictures(events_app: Flask) -> None:
    log = get_registry(events_app).events
    start = log.add("motion.start", 0, "Bench", b"\xff\xd8start\xff\xd9", score=0.1, box=[0, 0, 1, 1])
    other = log.add("camera.state", 1, "Door", state="on", error=None, previous="starting")
    end = log.add("motion.end", 0, "Bench", b"\xff\xd8end\xff\xd9", score=0.2, box=[0, 0, 1, 1], duration=3.0)
    client = events_app.test_client()
    listed = client.get("/cameras/0/events", headers=VIEW).get_json()
    assert [e["id"] for e in listed] == [end.id, start.id]
    assert listed[0]["type"] == "motion.end" and listed[0]["duration"] == 3.0
    assert listed[0]["snapshot"] == f"/cameras/0/events/{end.id}.jpg"
    picture = client.get(listed[1]["snapshot"], headers=VIEW)
    assert picture.status_code == 200 and picture.mimetype == "image/jpeg"
    assert picture.data == b"\xff\xd8start\xff\xd9"
    everything = client.get("/events/recent", headers=VIEW).get_json()
    assert [e["id"] for e in everything] == [end.id, other.id, start.id]
    assert everything[1]["snapshot"] is None and everything[1]["state"] == "on"
    assert [e["id"] for e in client.get("/events/recent?limit=1", headers=VIEW).get_json()] == [end.id]
    assert client.get("/cameras/0", headers=VIEW).get_json()["urls"]["events"] == "/cameras/0/events"


def test_events_need_the_view_token(events_app: Flask) -> None:
    log = get_registry(events_app).events
    start = log.add("motion.start", 0, "Bench", b"\xff\xd8x\xff\xd9", score=0.1, box=[0, 0, 1, 1])
    client = events_app.test_client()
    for path in ("/cameras/0/events", "/events/recent", f"/cameras/0/events/{start.id}.jpg"):
        assert client.get(path).status_code == 401


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "²", "1e3", "", "x" * 50])
def test_a_bad_limit_is_a_400(events_app: Flask, limit: str) -> None:
    response = events_app.test_client().get(f"/events/recent?limit={limit}", headers=VIEW)
    assert response.status_code == 400 and "limit" in response.get_json()["error"]


def test_another_cameras_or_a_forgotten_picture_is_a_404(events_app: Flask) -> None:
    log = get_registry(events_app).events
    theirs = log.add("motion.start", 1, "Door", b"\xff\xd8x\xff\xd9", score=0.1, box=[0, 0, 1, 1])
    stateful = log.add("camera.state", 0, "Bench", state="on")
    client = events_app.test_client()
    for path in (
        f"/cameras/0/events/{theirs.id}.jpg",
        f"/cameras/0/events/{stateful.id}.jpg",
        "/cameras/0/events/12345.jpg",
        "/cameras/0/events/99999999999999999999999.jpg",
    ):
        response = client.get(path, headers=VIEW)
        assert response.status_code == 404 and "error" in response.get_json()


def test_a_real_cameras_switches_are_listed(events_app: Flask) -> None:
    client = events_app.test_client()
    control = {**VIEW}
    registry = get_registry(events_app)
    registry.get(0).start()
    registry.get(0).stop()
    states = [e["state"] for e in client.get("/cameras/0/events", headers=control).get_json()]
    assert states[0] == "off" and "starting" in states


def live(response) -> Iterator[Message]:
    """The messages of an event stream answered by the test client (written by its thread)."""
    return read_messages(ChunkReader(response.response))


def test_the_live_stream_replays_after_last_event_id_then_follows(events_app: Flask) -> None:
    log = get_registry(events_app).events
    kept = [log.add("camera.state", 0, "Bench", state=s, error=None) for s in ("starting", "on", "off")]
    client = events_app.test_client()
    # The header a reconnecting EventSource sends wins over the ?since= of the URL it opened.
    response = client.get(f"/events?since={kept[0].id}", headers={**VIEW, "Last-Event-ID": str(kept[1].id)})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"].startswith("no-store")
    assert response.headers["X-Accel-Buffering"] == "no" and response.headers["Connection"] == "close"
    messages = live(response)
    assert next(messages).fields == {"retry": "2000"}
    replayed = next(messages)
    assert replayed.fields["event"] == "camera.state" and replayed.fields["id"] == str(kept[2].id)
    assert replayed.json == {**kept[2].json(), "snapshot": None}
    picture = log.add("motion.start", 1, "Door", b"\xff\xd8x\xff\xd9", score=0.2, box=[0.1, 0.2, 0.3, 0.4])
    assert next(messages).json["snapshot"] == f"/cameras/1/events/{picture.id}.jpg"
    response.close()
    assert client.get("/healthz").get_json()["event_streams"] == 0


def test_without_an_id_only_new_events_come_and_a_filter_keeps_to_its_cameras(events_app: Flask) -> None:
    log = get_registry(events_app).events
    log.add("camera.state", 1, "Door", state="on")  # before: not for this subscriber
    response = events_app.test_client().get("/events?cameras=1", headers=VIEW)
    messages = live(response)
    next(messages)
    log.add("camera.state", 0, "Bench", state="on")  # another camera's
    door = log.add("camera.state", 1, "Door", state="off")
    assert next(messages).json["id"] == door.id
    response.close()


def test_picture_urls_are_built_under_the_sub_path(make_app: Callable[..., Flask]) -> None:
    app = make_app({"proxy_hops": 1, "cameras": {"2": {"source": "testsrc"}}})
    log = get_registry(app).events
    event = log.add("motion.start", 2, "Yard", b"\xff\xd8x\xff\xd9", score=0.1, box=[0, 0, 1, 1])
    response = app.test_client().get("/events?since=0", headers={"X-Forwarded-Prefix": "/livecam"})
    messages = live(response)
    next(messages)
    assert next(messages).json["snapshot"] == f"/livecam/cameras/2/events/{event.id}.jpg"
    response.close()
    # The sender frames events in its own thread, outside any request: the URL is the same.
    with app.test_request_context("/events", base_url="http://127.0.0.1/livecam/"):
        frame = framer(log, {2})
    framed: list[bytes | None] = []
    sender_like = threading.Thread(target=lambda: framed.append(frame(event)))
    sender_like.start()
    sender_like.join(5)
    (message,) = read_messages(io.BytesIO(framed[0]))
    assert message.json["snapshot"] == f"/livecam/cameras/2/events/{event.id}.jpg"


@pytest.mark.parametrize(
    ("query", "headers", "status", "word"),
    [
        ("cameras=x", {}, 400, "cameras"),
        ("cameras=0,,1", {}, 400, "cameras"),
        ("cameras=%C2%B2", {}, 400, "cameras"),
        ("cameras=7", {}, 404, "camera 7"),
        ("since=-1", {}, 400, "since"),
        ("since=1e3", {}, 400, "since"),
        ("since=" + "9" * 19, {}, 400, "since"),
        ("", {"Last-Event-ID": "abc"}, 400, "Last-Event-ID"),
        ("since=5", {"Last-Event-ID": "٣"}, 400, "Last-Event-ID"),
    ],
)
def test_bad_input_to_the_live_stream_is_a_400_or_404(
    events_app: Flask, query: str, headers: dict[str, str], status: int, word: str
) -> None:
    response = events_app.test_client().get(f"/events?{query}", headers={**VIEW, **headers})
    assert response.status_code == status and word in response.get_json()["error"]
    assert events_app.test_client().get("/healthz").get_json()["event_streams"] == 0


def test_the_live_stream_needs_the_view_token_and_head_holds_nothing(events_app: Flask) -> None:
    client = events_app.test_client()
    assert client.get("/events").status_code == 401
    head = client.head("/events", headers=VIEW)
    assert head.status_code == 200 and head.mimetype == "text/event-stream" and head.data == b""
    assert client.get("/healthz").get_json()["event_streams"] == 0
