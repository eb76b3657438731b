"""Cameras added, changed and removed at run time in bus mode: through any web worker, done by
a capture process and kept there, served by every worker of every host within seconds."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from helpers import Part, Server, StreamConnection, decode, read_parts, wait_for
from livecam import wire
from livecam.bus import FrameBus
from nats_server import NatsServer

CAMERAS = "0=testsrc:160x120@20"


def send(server: Server, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One JSON request; the status and the parsed body."""
    return server.send_json(method, path, body)


def everywhere(
    servers: list[Server], path: str, check: Callable[[int, Any], bool], timeout: float = 6
) -> bool:
    """Whether ``check`` holds soon for the answer of every worker of every server (each
    asked a few times: gunicorn hands a connection to either worker)."""
    return wait_for(
        lambda: all(check(*server.request("GET", path)) for server in servers for _ in range(4)), timeout
    )


def open_served(server: Server, path: str, timeout: float = 10.0) -> tuple[StreamConnection, Any]:
    """Open a stream on whichever worker takes it, asking again while one answers 404: the
    four asks of ``everywhere`` may all have reached the other worker, and this one follows
    the capture process's catalog within seconds."""
    deadline = time.monotonic() + timeout
    while True:
        conn = StreamConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", path)
        conn.stream_socket = conn.sock
        response = conn.response = conn.getresponse()
        if response.status == 200:
            return conn, response
        body = response.read()
        conn.close()
        assert response.status == 404 and time.monotonic() < deadline, body
        time.sleep(0.1)


def live(part: Part) -> bool:
    """A picture of the camera, not the dark grey "no signal" placeholder."""
    return float(np.median(decode(part.body)[..., 2])) >= 60


def next_live(parts: Iterator[Part], shape: tuple[int, int, int], within: float = 8.0) -> bool:
    """Whether a live part of ``shape`` comes within ``within`` seconds (parts come at least
    once a second: the camera's frames, or a heartbeat or placeholder)."""
    deadline = time.monotonic() + within
    for part in parts:
        if live(part) and decode(part.body).shape == shape:
            return True
        if time.monotonic() > deadline:
            return False
    return False


def ends_within(parts: Iterator[Part], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    return all(time.monotonic() < deadline for _ in parts)


def test_a_camera_added_on_one_host_is_served_on_every_host_kept_changed_and_removed(
    serve: Callable[..., Server],
    start_capture: Callable[..., subprocess.Popen],
    nats_server: NatsServer,
    attacker: FrameBus,
    tmp_path: Path,
) -> None:
    capture = start_capture(CAMERAS, state="capture")
    env = {"LIVECAM_BUS": nats_server.url, "LIVECAM_CAMERAS": CAMERAS}
    first, second = (serve(env, "--workers", "2") for _ in range(2))
    hosts = [first, second]
    assert wait_for(lambda: first.record(0)["state"] == "off", timeout=15)

    # Added through the first host (no id, no capture process named: the only one adds it).
    status, added = send(first, "POST", "/cameras", {"source": "testsrc:64x48@10", "name": "Yard"})
    assert status == 201, added
    assert (added["id"], added["name"], added["state"]) in ((1, "Yard", "starting"), (1, "Yard", "on"))
    assert added["urls"]["stream"] == "/cameras/1/stream.mjpg"
    kept = tmp_path / "capture" / "runtime-cameras.json"
    assert json.loads(kept.read_text())["cameras"] == {"1": {"source": "testsrc:64x48@10", "name": "Yard"}}
    # Every worker of the other host serves it within seconds, live.
    started = time.monotonic()
    assert everywhere([second], "/cameras/1", lambda status, body: status == 200 and body["state"] == "on")
    print(f"served by every worker of the other host after {time.monotonic() - started:.1f} s")
    conn, response = open_served(second, "/cameras/1/stream.mjpg")
    try:
        parts = read_parts(response)
        assert next_live(parts, (48, 64, 3))

        # A name changed through the second host, seen on both.
        status, changed = send(second, "PATCH", "/cameras/1", {"name": "Garden"})
        assert (status, changed["name"]) == (200, "Garden"), changed
        assert everywhere(
            hosts, "/cameras/1", lambda status, body: status == 200 and body["name"] == "Garden"
        )
        # Another key reopens the camera in its capture process: the first host asks, the
        # second host's viewer sees it turned on the same connection.
        status, turned = send(first, "PATCH", "/cameras/1", {"rotate": 90})
        assert status == 200 and turned["name"] == "Garden", turned
        assert next_live(parts, (64, 48, 3))
        # The same refusals as one process, said by the capture process.
        status, body = send(second, "PATCH", "/cameras/1", {"rotate": 45})
        assert (status, body["error"]) == (400, "rotate: must be one of 0, 90, 180, 270, got 45")
        status, body = send(first, "POST", "/cameras", {"source": "/etc/shadow"})
        assert status == 400 and "LIVECAM_MEDIA_DIR" in body["error"]
        assert send(first, "POST", "/cameras", {"source": "testsrc", "id": 1})[0] == 409

        # The capture process restarted keeps the camera, as changed; the viewer sees it again.
        capture.send_signal(signal.SIGTERM)
        assert capture.wait(10) == 0
        assert next(part for part in parts if not live(part))  # "no signal", same connection
        assert first.record(1)["error"] == "capture offline"  # still there, offline
        capture = start_capture(CAMERAS, state="capture")
        assert next_live(parts, (64, 48, 3), within=15)
        assert everywhere(
            hosts,
            "/cameras/1",
            lambda status, body: status == 200 and (body["name"], body["state"]) == ("Garden", "on"),
        )

        # Removed through the first host: gone from every worker of both hosts, the viewer's
        # stream ends, and the capture process has let it go.
        assert send(first, "DELETE", "/cameras/1")[0] == 204
        assert everywhere(hosts, "/cameras/1", lambda status, body: status == 404)
        assert ends_within(parts, 5)
    finally:
        conn.close()
    assert json.loads(kept.read_text())["cameras"] == {}
    assert attacker.request(attacker.subjects.owner(1), b"", timeout=1) is None  # nobody captures it
    assert [c["id"] for c in second.request("GET", "/cameras")[1]] == [0]
    capture.send_signal(signal.SIGTERM)
    assert capture.wait(10) == 0
    said = capture.stdout.read().decode()
    assert "camera 1 removed at run time" in said and "Traceback" not in said


def test_forged_catalogs_and_manage_requests_are_dropped_and_counted(
    serve: Callable[..., Server],
    start_capture: Callable[..., subprocess.Popen],
    nats_server: NatsServer,
    attacker: FrameBus,
) -> None:
    start_capture(CAMERAS)
    web = serve({"LIVECAM_BUS": nats_server.url, "LIVECAM_CAMERAS": CAMERAS})
    assert wait_for(lambda: web.record(0)["state"] == "off", timeout=15)
    subjects = attacker.subjects

    # A bad add request is answered by the capture process that answers unnamed ones.
    answer = wire.decode_manage_reply(attacker.request(subjects.add(), b"[]", timeout=5))
    assert answer.status == 400 and "not a JSON object" in answer.error, answer
    for catalog in (
        b"junk",
        b'{"owner": "intruder:1", "cameras": [-1]}',
        b'{"owner": "intruder:1", "cameras": ["0"]}',
        b'{"owner": "intruder:1", "cameras": [5], "removed": [5]}',
        b'{"cameras": [5]}',
    ):
        attacker.publish(subjects.catalog(), catalog)
        attacker.flush(1.0)
    # A well-formed catalog, but it cannot remove a camera that its capture process lists.
    attacker.publish(
        subjects.catalog(), wire.encode_catalog(wire.Catalog("intruder:1", frozenset(), frozenset({0})))
    )
    attacker.flush(1.0)
    before = web.record(0)["bus_rejected"]
    for payload, reason in (
        (b"junk", "manage request is not JSON"),
        (b'{"action": "explode"}', "expected the action change or remove"),
        (b'{"action": "change", "changes": "name=x"}', "expected a JSON object of settings"),
    ):
        answer = wire.decode_manage_reply(attacker.request(subjects.manage(0), payload, timeout=5), 0)
        assert answer.status == 400 and reason in answer.error, answer
    # Counted in the camera's record by its capture process.
    assert wait_for(lambda: web.record(0)["bus_rejected"] >= before + 3)
    time.sleep(2 * wire.CATALOG_EVERY)  # the real catalogs keep coming: camera 0 stays
    assert web.request("GET", "/cameras/0")[0] == 200
    assert [c["id"] for c in web.request("GET", "/cameras")[1]] == [0]
    said = web.output()
    assert f"dropped a bad message on {subjects.catalog()}" in said and "Traceback" not in said
    assert "camera 0 removed" not in said and "camera 5" not in said
