"""Cameras added, changed and removed at run time through the API: checked, kept across
restarts, served by their own Blueprint at once, and leaking nothing."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from helpers import decode, wait_for
from livecam import create_app
from livecam.appstate import get_registry

CONTROL = {"Authorization": "Bearer control-secret-1"}
SMALL = "testsrc:64x48@10"


@pytest.fixture
def managed(make_app: Callable[..., Flask]) -> Flask:
    return make_app(
        {
            "cameras": {"0": {"source": SMALL, "name": "Bench", "autostart": True}},
            "control_token": "control-secret-1",
        }
    )


def test_a_camera_added_is_served_by_its_own_blueprint_at_once(managed: Flask) -> None:
    client = managed.test_client()
    answer = client.post("/cameras", json={"source": SMALL, "name": "Yard"}, headers=CONTROL)
    assert answer.status_code == 201
    added = answer.get_json()
    assert added["id"] == 1 and added["name"] == "Yard" and answer.headers["Location"] == "/cameras/1"
    assert added["urls"]["stream"] == "/cameras/1/stream.mjpg"
    assert added["state"] in ("starting", "on")  # switched on: no autostart = false given
    assert wait_for(lambda: client.get("/cameras/1").get_json()["state"] == "on")
    snapshot = client.get("/cameras/1/snapshot.jpg")
    assert snapshot.status_code == 200 and decode(snapshot.data).shape == (48, 64, 3)
    assert [c["id"] for c in client.get("/cameras").get_json()] == [0, 1]
    page = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "Yard" in page and "/cameras/1/toggle" in page
    off = client.post("/cameras", json={"id": 7, "source": SMALL, "autostart": False}, headers=CONTROL)
    assert off.status_code == 201 and off.get_json()["state"] == "off"


def test_a_name_changes_at_once_and_other_keys_reopen_only_that_camera(managed: Flask) -> None:
    client = managed.test_client()
    client.post("/cameras", json={"source": SMALL, "name": "Yard"}, headers=CONTROL)
    registry = get_registry(managed)
    bench, yard = registry.get(0), registry.get(1)
    renamed = client.patch("/cameras/1", json={"name": "Garden"}, headers=CONTROL).get_json()
    assert renamed["name"] == "Garden" and registry.get(1) is yard  # the same camera, not reopened
    resized = client.patch("/cameras/1", json={"rotate": 90}, headers=CONTROL)
    assert resized.status_code == 200 and resized.get_json()["name"] == "Garden"
    assert registry.get(1) is not yard and registry.get(0) is bench  # only camera 1 reopened
    assert wait_for(lambda: client.get("/cameras/1").get_json()["height"] == 64)  # 64x48 turned
    changed = client.patch("/cameras/0", json={"name": "Workbench"}, headers=CONTROL)  # a configured one
    assert changed.get_json()["name"] == "Workbench" and registry.get(0).is_on


def test_a_camera_removed_ends_its_streams_and_is_forgotten(managed: Flask) -> None:
    client = managed.test_client()
    client.post("/cameras", json={"source": SMALL}, headers=CONTROL)
    registry = get_registry(managed)
    camera = registry.get(1)
    assert wait_for(lambda: camera.state == "on")
    assert client.delete("/cameras/1", headers=CONTROL).status_code == 204
    assert camera.feeds.closed and not camera.is_on  # its viewers' streams ended
    assert client.get("/cameras/1").status_code == 404
    assert client.delete("/cameras/0", headers=CONTROL).status_code == 204
    assert client.get("/cameras").get_json() == []


def test_changes_are_kept_across_a_restart_without_touching_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "livecam.toml"
    toml.write_text("# the operator's comment\n[cameras.0]\nsource = 'testsrc:64x48@10'\nname = 'Bench'\n")
    before = toml.read_text()
    config = {"TESTING": True, "state_dir": str(tmp_path / "state"), "control_token": "control-secret-1"}
    os.environ["LIVECAM_CONFIG"] = str(toml)
    try:
        first = create_app(config)
        client = first.test_client()
        client.post("/cameras", json={"source": SMALL, "name": "Yard"}, headers=CONTROL)
        client.post("/cameras", json={"source": SMALL, "name": "Shed", "autostart": False}, headers=CONTROL)
        client.patch("/cameras/0", json={"name": "Workbench"}, headers=CONTROL)
        client.post("/cameras/2/start", headers=CONTROL)
        client.delete("/cameras/1", headers=CONTROL)
        get_registry(first).shutdown()
        second = create_app(config)
        try:
            cameras = {c["id"]: c for c in second.test_client().get("/cameras").get_json()}
            assert {i: c["name"] for i, c in cameras.items()} == {0: "Workbench", 2: "Shed"}
            assert cameras[2]["state"] in ("starting", "on")  # its switch came back with it
        finally:
            get_registry(second).shutdown()
    finally:
        del os.environ["LIVECAM_CONFIG"]
    assert toml.read_text() == before


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"source": "/etc/shadow"}, 400, "LIVECAM_MEDIA_DIR"),
        ({"source": "file:///etc/shadow"}, 400, "^source: file: URLs are not read; files can be played only"),
        ({"source": "gopher://cam/x"}, 400, "^source: a camera URL must be http, https, rtsp or rtsps"),
        ({"source": "/dev/v4l/../../etc/shadow"}, 400, "a device must be"),
        ({"source": SMALL, "rotate": 45}, 400, "^rotate: must be one of"),
        ({"source": SMALL, "colour": "red"}, 400, "^colour: unknown key"),
        ({"name": "no source"}, 400, "^source: required"),
        ({"source": None}, 400, "^source: required"),
        (
            {"source": SMALL, "id": -1},
            400,
            r"^id: expected a JSON number \(a whole number from 0 to 999999\), got -1$",
        ),
        ({"source": SMALL, "id": "7"}, 400, r"^id: expected a JSON number .*, got the string '7'$"),
        ({"source": SMALL, "id": "٣"}, 400, "^id: expected a JSON number .*, got the string '٣'$"),
        ({"source": SMALL, "id": True}, 400, "^id: expected a JSON number .*, got true$"),
        ({"source": SMALL, "id": 1.5}, 400, r"^id: expected a JSON number .*, got 1\.5$"),
        ({"source": SMALL, "id": 0}, 409, "camera 0 exists already"),
        ({"source": SMALL, "name": "x" * 65}, 400, "^name: must be"),
        ({"source": SMALL, "name": "a\n[INFO] forged"}, 400, "^name: must be .* printable"),
        ({"source": SMALL, "name": "x\x1b[31mred"}, 400, "^name: must be .* printable"),
        ({"source": SMALL, "name": "abc\u202edef"}, 400, "^name: must be .* printable"),
        ({"source": SMALL, "capture": "cams1"}, 400, "^capture: names a capture process of bus mode"),
        ({"source": SMALL, "capture": ["cams1"]}, 400, "^capture: expected the name"),
    ],
)
def test_a_bad_camera_is_refused_naming_the_key(
    managed: Flask, body: dict, status: int, message: str
) -> None:
    answer = managed.test_client().post("/cameras", json=body, headers=CONTROL)
    assert answer.status_code == status
    assert re.search(message, answer.get_json()["error"])


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("not json", "application/json"),
        ("[1, 2]", "application/json"),
        ("source=x", "application/x-www-form-urlencoded"),
    ],
)
def test_a_body_that_is_no_json_object_is_a_400(managed: Flask, data: str, content_type: str) -> None:
    answer = managed.test_client().post("/cameras", data=data, content_type=content_type, headers=CONTROL)
    assert answer.status_code == 400 and "JSON object" in answer.get_json()["error"]


def test_a_name_of_any_script_is_kept_and_escaped(managed: Flask) -> None:
    client = managed.test_client()
    name = "<script>alert(1)</script> 摄像头 كاميرا"
    assert client.post("/cameras", json={"source": SMALL, "name": name}, headers=CONTROL).status_code == 201
    assert client.get("/cameras/1").get_json()["name"] == name
    page = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "摄像头" in page


def test_an_unknown_camera_is_a_json_404_naming_it(managed: Flask) -> None:
    client = managed.test_client()
    for method, path in [
        ("DELETE", "/cameras/99"),
        ("PATCH", "/cameras/99"),
        ("GET", "/cameras/99"),
        ("POST", "/cameras/99/toggle"),
        ("GET", "/cameras/99/snapshot.jpg"),
    ]:
        answer = client.open(path, method=method, json={"name": "x"}, headers=CONTROL)
        assert (answer.status_code, answer.get_json()) == (404, {"error": "no camera 99"}), (method, path)
    client.post("/cameras", json={"id": 99, "source": SMALL, "autostart": False}, headers=CONTROL)
    assert client.delete("/cameras/99", headers=CONTROL).status_code == 204
    gone = client.delete("/cameras/99", headers=CONTROL)  # removed: its routes went with it
    assert (gone.status_code, gone.get_json()) == (404, {"error": "no camera 99"})
    # A camera that exists, with no such route: not said to be missing.
    assert "no camera" not in client.get("/cameras/0/nothing").get_json()["error"]
    assert "no camera" not in client.get("/cameras/099").get_json()["error"]


def test_changes_need_the_control_token(managed: Flask) -> None:
    client = managed.test_client()
    assert client.post("/cameras", json={"source": SMALL}).status_code == 401
    assert client.patch("/cameras/0", json={"name": "x"}).status_code == 401
    assert client.delete("/cameras/0").status_code == 401
    assert client.post("/cameras/probe", json={"source": SMALL}).status_code == 401


def test_a_probe_says_what_a_source_is_or_why_not(managed: Flask) -> None:
    client = managed.test_client()
    found = client.post("/cameras/probe", json={"source": "testsrc:320x240@20"}, headers=CONTROL).get_json()
    assert found["ok"] and (found["width"], found["height"]) == (320, 240) and found["kind"] == "video"
    assert found["snapshot"].startswith("data:image/jpeg;base64,")
    refused = client.post("/cameras/probe", json={"source": "http://127.0.0.1:9/x.mjpg"}, headers=CONTROL)
    assert refused.status_code == 200 and not refused.get_json()["ok"]
    assert "refused" in refused.get_json()["error"].lower()
    assert client.post("/cameras/probe", json={"source": "/etc/shadow"}, headers=CONTROL).status_code == 400
    for body in ({}, {"source": None}):  # as an add says it: the same check
        answer = client.post("/cameras/probe", json=body, headers=CONTROL)
        assert answer.status_code == 400 and answer.get_json()["error"].startswith("source: required (")
    assert [c["id"] for c in client.get("/cameras").get_json()] == [0]  # nothing added


def test_adds_and_removes_leak_no_thread_or_descriptor(managed: Flask) -> None:
    """A hundred in a row here; tests/e2e/test_runtime_cameras.py makes a thousand requests."""
    client = managed.test_client()
    for _ in range(5):  # warm up: the first generations import and cache what they need
        client.post("/cameras", json={"id": 9, "source": SMALL, "autostart": False}, headers=CONTROL)
        client.delete("/cameras/9", headers=CONTROL)
    threads, descriptors = threading.active_count(), len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        added = client.post("/cameras", json={"id": 9, "source": SMALL, "autostart": False}, headers=CONTROL)
        assert added.status_code == 201
        assert client.delete("/cameras/9", headers=CONTROL).status_code == 204
    assert threading.active_count() == threads
    assert len(os.listdir("/proc/self/fd")) <= descriptors + 2
    assert client.get("/cameras/0").status_code == 200
