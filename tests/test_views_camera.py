"""The camera Blueprint through Flask's test client, on real test-pattern cameras."""

from __future__ import annotations

import threading

import pytest

from helpers import ChunkReader, decode, read_parts
from livecam.appstate import get_registry


def test_status_record(client) -> None:
    response = client.get("/cameras/0")
    assert response.status_code == 200
    record = response.json
    assert {"id", "name", "source", "state", "fps", "width", "height", "viewers", "frames", "error"} <= set(
        record
    )
    assert record["id"] == 0 and record["name"] == "Bench"
    assert record["urls"]["stream"] == "/cameras/0/stream.mjpg"


def test_blueprint_registered_once_per_camera(app) -> None:
    assert {"camera0", "camera1"} <= set(app.blueprints)
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/cameras/1/toggle", "/cameras/1/stream.mjpg", "/cameras/1/snapshot.jpg"} <= rules


def test_start_and_stop_are_idempotent(client) -> None:
    for _ in range(2):
        record = client.post("/cameras/1/start").json
        assert record["state"] in ("starting", "on")
    for _ in range(2):
        record = client.post("/cameras/1/stop").json
        assert record["state"] == "off"


def test_toggle_answers_a_browser_form_with_a_redirect(client) -> None:
    response = client.post(
        "/cameras/1/toggle", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/#camera-1"
    assert client.get("/cameras/1").json["state"] in ("starting", "on")


def test_toggle_answers_an_api_client_with_json(client) -> None:
    response = client.post("/cameras/0/toggle", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response.json["state"] == "off"
    assert client.post("/cameras/0/toggle").json["state"] in ("starting", "on")  # curl's */*


def test_stream_is_mjpeg_of_new_frames(client, app) -> None:
    response = client.get("/cameras/0/stream.mjpg")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
    assert response.headers["Cache-Control"].startswith("no-store")
    assert response.headers["X-Accel-Buffering"] == "no"
    parts = read_parts(ChunkReader(response.response))
    received = [next(parts) for _ in range(5)]
    response.close()
    for part in received:
        assert part.headers["content-type"] == "image/jpeg"
        assert int(part.headers["content-length"]) == len(part.body)
        assert decode(part.body).shape == (120, 160, 3)
    stamps = [float(part.headers["x-timestamp"]) for part in received]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5  # new frames, never the same twice
    assert get_registry(app).get(0).broadcaster.viewers == 0


def test_stream_of_a_camera_that_is_off_is_503(client) -> None:
    response = client.get("/cameras/1/stream.mjpg")
    assert response.status_code == 503
    assert response.json == {"error": "camera 1 is off"}


def test_stream_ends_when_the_camera_is_switched_off(client) -> None:
    response = client.get("/cameras/0/stream.mjpg")
    parts = read_parts(ChunkReader(response.response))
    next(parts)
    rest: list = []
    drain = threading.Thread(target=lambda: rest.extend(parts))
    drain.start()
    client.post("/cameras/0/stop")
    drain.join(5)
    assert not drain.is_alive(), "the stream kept going after the camera stopped"
    response.close()


def test_snapshot(client) -> None:
    response = client.get("/cameras/0/snapshot.jpg")
    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    assert response.headers["Cache-Control"] == "no-store"
    assert decode(response.data).shape == (120, 160, 3)
    off = client.get("/cameras/1/snapshot.jpg")
    assert off.status_code == 503 and "off" in off.json["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/cameras/9",
        "/cameras/-1",
        "/cameras/abc",
        "/cameras/0x1",
        "/cameras/99999999999999999999",
        "/cameras/9/stream.mjpg",
        "/cameras/0/nothing",
    ],
)
def test_unknown_camera_is_a_json_404(client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.is_json and "error" in response.json


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/cameras/0/toggle"),
        ("PUT", "/cameras/0"),
        ("DELETE", "/cameras/0/toggle"),
        ("POST", "/cameras/0/stream.mjpg"),
        ("PUT", "/"),
    ],
)
def test_wrong_method_is_a_json_405(client, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.is_json and "error" in response.json
    assert "Allow" in response.headers


def test_head_of_a_stream_holds_nothing(client, app) -> None:
    response = client.head("/cameras/0/stream.mjpg")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
    assert response.data == b"" and "Content-Length" not in response.headers  # no length for an endless body
    assert get_registry(app).viewer_slots.taken == 0
    assert get_registry(app).get(0).broadcaster.viewers == 0


def test_a_stream_whose_response_fails_after_the_view_holds_no_slot(make_app) -> None:
    cameras = {"0": {"source": "testsrc:32x24@10", "autostart": True}}
    app = make_app({"PROPAGATE_EXCEPTIONS": False, "cameras": cameras})

    @app.after_request
    def broken(response):  # any failure between the view and the server
        raise RuntimeError("a hook failed")

    client = app.test_client()
    for _ in range(20):
        response = client.get("/cameras/0/stream.mjpg")
        assert response.status_code == 500
        response.close()
    assert get_registry(app).viewer_slots.taken == 0


def test_a_stream_holds_its_slot_while_it_plays(app, client) -> None:
    slots = get_registry(app).viewer_slots
    response = client.get("/cameras/0/stream.mjpg")
    parts = read_parts(ChunkReader(response.response))
    next(parts)
    assert slots.taken == 1
    response.close()
    assert slots.taken == 0


@pytest.fixture
def wide(make_app):
    """One 640x480 test-pattern camera, on at boot."""
    return make_app({"cameras": {"0": {"source": "testsrc:640x480@30", "autostart": True}}}).test_client()


@pytest.mark.parametrize("route", ["stream.mjpg", "snapshot.jpg"])
def test_an_unknown_profile_is_a_400_naming_the_valid_ones(wide, route: str) -> None:
    response = wide.get(f"/cameras/0/{route}?profile=nope")
    assert response.status_code == 400
    assert response.json == {"error": "camera 0 has no stream profile 'nope': expected one of full, preview"}
    assert wide.head(f"/cameras/0/{route}?profile=nope").status_code == 400


def test_a_preview_stream_and_snapshot_have_the_preview_s_size(wide) -> None:
    snapshot = wide.get("/cameras/0/snapshot.jpg?profile=preview")
    assert snapshot.status_code == 200 and decode(snapshot.data).shape == (240, 320, 3)
    assert decode(wide.get("/cameras/0/snapshot.jpg").data).shape == (480, 640, 3)
    response = wide.get("/cameras/0/stream.mjpg?profile=preview")
    parts = read_parts(ChunkReader(response.response))
    received = [next(parts) for _ in range(4)]
    record = wide.get("/cameras/0").json
    response.close()
    assert all(decode(part.body).shape == (240, 320, 3) for part in received)
    stamps = [float(part.headers["x-timestamp"]) for part in received]
    assert (len(stamps) - 1) / (stamps[-1] - stamps[0]) <= 6.5  # the preview's 5 fps, not 30
    assert record["viewers"] == 1 and record["profiles"]["preview"]["viewers"] == 1
    after = wide.get("/cameras/0").json["profiles"]["preview"]
    assert after["viewers"] == 0 and after["bytes"] >= sum(len(part.body) for part in received[1:])
