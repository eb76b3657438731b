"""Events over HTTP: one camera's and every camera's, newest first, with their pictures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from livecam.appstate import get_registry


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
