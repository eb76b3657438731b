"""Bus mode against hostile messages: a plain NATS client publishing junk on livecam's subjects.

What NATS permissions cannot stop (a role's own subjects, test_bus_permissions.py) livecam
checks itself: every bad message is dropped and counted, and the cameras' viewers, records,
dashboard and metrics go on as if it had never come.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

import forked
from helpers import ROOT, Server, decode, end_process, read_for, read_parts, wait_for
from livecam import wire
from livecam.bus import FrameBus
from nats_server import NatsServer

CAMERAS = "0=testsrc:160x120@20"


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    """One nats-server for the module (the attacker of each test connects to it)."""
    server = NatsServer().start()
    yield server
    server.stop()


class Site:
    """A capture process and a web host of one worker on the module's nats-server."""

    def __init__(self, serve: Callable[..., Server], nats: NatsServer, state_dir: Path) -> None:
        self.nats, self.state_dir = nats, state_dir
        self.capture = self.start_capture()
        self.web = serve({"LIVECAM_BUS": nats.url, "LIVECAM_CAMERAS": CAMERAS})

    def start_capture(self) -> forked.Forked:
        """A capture process with the state directory of the one before (its switches kept)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
        env |= {
            "LIVECAM_BUS": self.nats.url,
            "LIVECAM_CAMERAS": CAMERAS,
            "LIVECAM_STATE_DIR": str(self.state_dir),
        }
        return forked.livecam_process(["capture"], env, ROOT, Path(os.devnull))

    def stop(self) -> None:
        """SIGTERM the capture process, then SIGKILL if it does not exit in time."""
        end_process(self.capture, 10)


@pytest.fixture(scope="module")
def shared_site(
    serve_module: Callable[..., Server], nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """The module's capture process and web host; a test may kill the capture process."""
    site = Site(serve_module, nats_server, tmp_path_factory.mktemp("capture"))
    try:
        yield site
    finally:
        site.stop()


@pytest.fixture
def site(shared_site: Site) -> tuple[Server, forked.Forked]:
    """A capture process and a web host of one worker, camera 0 on (a capture process killed
    by an earlier test replaced)."""
    if shared_site.capture.poll() is not None:
        shared_site.capture = shared_site.start_capture()
    web = shared_site.web
    assert wait_for(lambda: web.record(0)["state"] in ("off", "starting", "on"), timeout=15)
    status, body = web.request("POST", "/cameras/0/start")
    assert status == 200, body
    assert wait_for(lambda: web.record(0)["state"] == "on")
    return web, shared_site.capture


def huge_jpeg() -> bytes:
    """A real JPEG whose frame header claims 60000x60000."""
    ok, buffer = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))
    assert ok
    data = bytearray(buffer.tobytes())
    offset = 2
    while data[offset + 1] != 0xC0:
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    data[offset + 5 : offset + 9] = (60000).to_bytes(2, "big") * 2
    return bytes(data)


def test_junk_on_the_frame_and_state_subjects_never_reaches_a_viewer(
    site: tuple[Server, forked.Forked], attacker: FrameBus
) -> None:
    web, _ = site
    subjects = attacker.subjects
    conn, response = web.open_stream("/cameras/0/stream.mjpg")
    try:
        parts = read_parts(response)
        next(parts)
        headers = wire.frame_headers(10**6, 1.0, False)
        records = [
            {"id": 0, "name": "spoofed", "state": "on", "fps": "fast"},
            {"id": 0, "name": "spoofed", "state": "on", "width": 0, "height": 0},
            {"id": 0, "state": "on", "profiles": {"full": {"width": 60000, "height": 60000}}},
            {"id": 0, "state": "<script>"},
        ]

        rejected = web.record(0)["bus_rejected"]

        def attack() -> bool:
            """One round of junk on every subject (the bus sends the newest per subject)."""
            attacker.publish(subjects.frame(0, "full"), b"<html>not a picture</html>", headers)
            attacker.publish(subjects.frame(0, "preview"), huge_jpeg(), headers)
            for record in records:
                attacker.publish(subjects.state(0), json.dumps(record).encode())
                attacker.flush(1.0)
            return web.record(0)["bus_rejected"] >= rejected + 20

        assert wait_for(attack, timeout=20)
        seen = read_for(parts, 2.0)
        assert attack()
    finally:
        conn.close()
    assert len(seen) >= 25  # the camera's 20 fps went on
    for part in seen:
        assert decode(part.body).shape == (120, 160, 3)  # every part a picture of the camera
    record = web.record(0)
    assert record["name"] != "spoofed" and record["state"] == "on" and isinstance(record["fps"], float)
    for path in ("/", "/metrics", "/cameras"):
        status, _ = web.request("GET", path, {"Accept": "text/html"})
        assert status == 200, path
    _, metrics = web.request("GET", "/metrics")
    assert b"livecam_bus_messages_rejected_total" in metrics


def test_junk_requests_to_the_capture_process_are_refused_and_counted(
    site: tuple[Server, forked.Forked], attacker: FrameBus
) -> None:
    web, capture = site
    subjects = attacker.subjects
    rejected = web.record(0)["bus_rejected"]
    for payload in (b"jump", b"\xff" * 100, b"start" * 1000):
        answer = json.loads(attacker.request(subjects.control(0), payload, timeout=5))
        assert "expected start, stop or toggle" in answer["error"]
    for payload in (b"../../etc/passwd", b"\xff"):
        assert b"expected a profile name" in attacker.request(subjects.latest(0), payload, timeout=5)
    for interest in (b"junk", b'{"worker": "w", "profiles": {"full": -5}}', b'{"worker": 1}'):
        attacker.publish(subjects.interest(0), interest)
        attacker.flush(1.0)
    assert wait_for(lambda: web.record(0)["bus_rejected"] >= rejected + 8)
    assert capture.poll() is None and web.record(0)["state"] == "on"
    status, _ = web.request("POST", "/cameras/0/stop")  # switches still work
    assert status == 200 and wait_for(lambda: web.record(0)["state"] == "off")


def test_a_record_that_would_size_the_placeholder_absurdly_is_ignored(
    site: tuple[Server, forked.Forked], attacker: FrameBus
) -> None:
    """The capture process gone, a forged record sizes nothing: the placeholder keeps the
    size the real record said, and the web worker's follow thread goes on."""
    web, capture = site
    conn, response = web.open_stream("/cameras/0/stream.mjpg")
    try:
        parts = read_parts(response)
        next(parts)
        capture.kill()
        capture.wait(10)
        forged = {"id": 0, "state": "on", "profiles": {"full": {"width": 60000, "height": 1}}}
        attacker.publish(attacker.subjects.state(0), json.dumps(forged).encode())
        placeholder = next(part for part in parts if float(np.median(decode(part.body)[..., 2])) < 60)
        assert decode(placeholder.body).shape == (120, 160, 3)
        # Still following: later placeholders come once a second on the same connection.
        assert len(read_for(parts, 2.5)) >= 2
    finally:
        conn.close()


def test_forged_events_are_never_listed(site: tuple[Server, forked.Forked], attacker: FrameBus) -> None:
    web, _ = site
    subject = attacker.subjects.event(0)
    event = {"id": 5, "type": "motion.start", "camera": 0, "name": "x", "time": 1.7e9, "box": [0, 0, 1, 1]}
    forged = [
        json.dumps({**event, "score": 5}).encode() + b"\n",
        json.dumps({**event, "score": 0.5}).encode() + b"\n<html>not a picture</html>",
        json.dumps({**event, "camera": 1, "score": 0.5}).encode() + b"\n",
        json.dumps({**event, "type": "door.open"}).encode() + b"\n",
        b"junk",
    ]
    before = web.record(0)["bus_rejected"]
    for payload in forged:
        attacker.send(subject, payload)
    attacker.flush(2.0)
    assert wait_for(lambda: web.record(0)["bus_rejected"] >= before + len(forged))
    listed = web.request("GET", "/cameras/0/events")[1]
    assert all(e["type"] == "camera.state" for e in listed)


def test_a_switch_published_without_a_reply_subject_is_never_acted_on(
    site: tuple[Server, forked.Forked], attacker: FrameBus
) -> None:
    web, capture = site
    before = web.record(0)["bus_rejected"]
    for _ in range(50):
        attacker.send(attacker.subjects.control(0), b"toggle")  # no reply subject: no request
    attacker.flush(2.0)
    assert wait_for(lambda: web.record(0)["bus_rejected"] >= before + 50)
    assert web.record(0)["state"] == "on"  # never toggled
    assert capture.poll() is None


def test_a_flood_of_interests_from_made_up_workers_stays_cheap_and_bounded(
    site: tuple[Server, forked.Forked], attacker: FrameBus
) -> None:
    web, _ = site
    subject = attacker.subjects.interest(0)
    before = web.record(0)["bus_rejected"]
    for n in range(3000):
        attacker.send(subject, wire.encode_interest(wire.Interest(f"fake-{n}", {"full": 10_000})))
        if n % 500 == 499:
            attacker.flush(5.0)  # the bus keeps at most 1,000 messages waiting: none dropped here
    # The capture process keeps up: its records still come every second, and the viewers it
    # sums are those of at most MAX_WORKERS workers.
    assert wait_for(lambda: web.record(0)["bus_rejected"] >= before + 3000 - 1024)
    record = web.record(0)
    assert record["state"] == "on" and record["error"] is None
    assert record["viewers"] <= 1024 * 10_000
