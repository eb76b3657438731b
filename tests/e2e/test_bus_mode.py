"""Bus mode end to end: one capture process, nats-server, two gunicorn "hosts" of two workers."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers import Part, Server, decode, free_port, read_each_for, read_parts, wait_for
from livecam.wire import Subjects
from nats_server import NatsServer

CAMERAS = "0=testsrc:160x120@20,1=testsrc:64x48@10"


def web(serve: Callable[..., Server], url: str) -> Server:
    """A gunicorn of two workers serving the cameras from the frame bus."""
    return serve({"LIVECAM_BUS": url, "LIVECAM_CAMERAS": CAMERAS}, "--workers", "2")


@pytest.fixture
def monitored_nats() -> Iterator[tuple[NatsServer, Callable[[str], int]]]:
    """A nats-server, and how many web workers it holds a subscription to a subject for."""
    monitor = free_port()
    server = NatsServer(None, "-m", str(monitor)).start()

    def subscribers(subject: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/connz?subs=1", timeout=5) as answer:
            connections = json.load(answer)["connections"]
        web = (c for c in connections if c.get("name") == "livecam-web")
        return sum(subject in c.get("subscriptions_list", []) for c in web)

    yield server, subscribers
    server.stop()


def is_placeholder(part: Part) -> bool:
    """The "no signal" image is mostly a flat dark grey; the test pattern is colourful."""
    return float(np.median(decode(part.body)[..., 2])) < 60


def test_viewers_on_two_hosts_get_every_frame_once(
    serve: Callable[..., Server], start_capture: Callable[..., subprocess.Popen], nats_server: NatsServer
) -> None:
    start_capture()
    first, second = web(serve, nats_server.url), web(serve, nats_server.url)
    assert wait_for(lambda: first.record(0)["state"] == "off", timeout=15)
    status, body = first.request("POST", "/cameras/0/start")
    assert status == 200, body
    assert wait_for(lambda: second.record(0)["state"] == "on")  # a switch on one, seen on the other
    before = first.record(0)
    streams = [server.open_stream("/cameras/0/stream.mjpg") for server in (first, second) for _ in range(3)]
    try:
        readings = read_each_for((response for _, response in streams), 2.0)
        assert wait_for(lambda: first.record(0)["viewers"] == 6)  # summed over every worker
    finally:
        for conn, _ in streams:
            conn.close()
    after = first.record(0)
    for parts in readings:
        stamps = [part.headers["x-timestamp"] for part in parts]
        assert len(stamps) >= 25 and len(set(stamps)) == len(stamps)  # ~20 fps, no duplicate
        assert decode(parts[-1].body).shape == (120, 160, 3)
    # One encode per frame in all, whatever the number of viewers, workers and hosts.
    assert after["encoded"] - before["encoded"] <= after["frames"] - before["frames"] + 5


def test_the_capture_process_killed_then_back(
    serve: Callable[..., Server], start_capture: Callable[..., subprocess.Popen], nats_server: NatsServer
) -> None:
    capture = start_capture(state="capture")
    livecam = web(serve, nats_server.url)
    assert wait_for(lambda: livecam.record(1)["state"] == "off", timeout=15)
    livecam.request("POST", "/cameras/1/start")
    conn, response = livecam.open_stream("/cameras/1/stream.mjpg")
    try:
        parts = read_parts(response)
        assert not is_placeholder(next(parts))
        capture.kill()  # kill -9
        capture.wait(10)
        assert next(part for part in parts if is_placeholder(part))  # on the same connection
        assert livecam.record(1)["error"] == "capture offline"
        start_capture(state="capture")  # back, with the switches it remembered
        assert next(part for part in parts if not is_placeholder(part))
        assert wait_for(lambda: livecam.record(1)["state"] == "on")  # on every worker
    finally:
        conn.close()


def test_a_web_worker_starts_without_nats_and_recovers(
    serve: Callable[..., Server], start_capture: Callable[..., subprocess.Popen]
) -> None:
    nats = NatsServer()  # not running yet
    livecam = web(serve, nats.url)
    try:
        record = livecam.record(0)
        assert (record["state"], record["error"]) == ("error", "frame bus unreachable")
        nats.start()
        start_capture(url=nats.url)
        assert wait_for(lambda: livecam.record(0)["state"] == "off", timeout=20)
    finally:
        nats.stop()


def test_a_restarted_nats_server_is_rejoined_by_everyone(
    serve: Callable[..., Server], start_capture: Callable[..., subprocess.Popen], nats_server: NatsServer
) -> None:
    start_capture()
    livecam = serve({"LIVECAM_BUS": nats_server.url, "LIVECAM_CAMERAS": CAMERAS})
    assert wait_for(lambda: livecam.record(1)["state"] == "off", timeout=15)
    livecam.request("POST", "/cameras/1/start")
    conn, response = livecam.open_stream("/cameras/1/stream.mjpg")
    try:
        parts = read_parts(response)
        assert not is_placeholder(next(parts))
        nats_server.stop()
        assert next(part for part in parts if is_placeholder(part))  # frame bus unreachable
        assert livecam.record(1)["error"] == "frame bus unreachable"
        nats_server.start()  # the same port: no restart of livecam, capture or web
        back = time.monotonic()
        assert next(part for part in parts if not is_placeholder(part))
        assert time.monotonic() - back < 5
        assert wait_for(lambda: livecam.record(1)["state"] == "on")
    finally:
        conn.close()


def test_preview_viewers_on_two_hosts_get_the_preview_encoded_once_per_frame(
    serve: Callable[..., Server], start_capture: Callable[..., subprocess.Popen], nats_server: NatsServer
) -> None:
    start_capture("0=testsrc:640x480@20")
    env = {"LIVECAM_BUS": nats_server.url, "LIVECAM_CAMERAS": "0=testsrc:640x480@20"}
    first, second = (serve(env, "--workers", "2") for _ in range(2))
    assert wait_for(lambda: first.record(0)["state"] == "off", timeout=15)
    first.request("POST", "/cameras/0/start")
    assert wait_for(lambda: second.record(0)["state"] == "on")
    path = "/cameras/0/stream.mjpg?profile=preview"
    streams = [server.open_stream(path) for server in (first, second) for _ in range(2)]
    try:
        # Summed over every worker as their interests arrive (each renewed every second).
        assert wait_for(lambda: first.record(0)["profiles"]["preview"]["viewers"] == 4)
        record = first.record(0)
        readings = read_each_for((response for _, response in streams), 3.0)
    finally:
        for conn, _ in streams:
            conn.close()
    assert record["viewers"] == 4 and record["profiles"]["full"]["viewers"] == 0
    for parts in readings:
        stamps = [float(part.headers["x-timestamp"]) for part in parts]
        assert len(set(stamps)) == len(stamps) >= 8  # the 5 fps preview, each frame once
        assert (len(stamps) - 1) / (stamps[-1] - stamps[0]) <= 6.5
        assert decode(parts[-1].body).shape == (240, 320, 3)
    after = first.record(0)
    # One preview encode per frame in all, whatever the number of viewers, workers and hosts;
    # and no full frame encoded, as nobody watched it.
    published = {part.headers["x-timestamp"] for parts in readings for part in parts}
    encoded = after["profiles"]["preview"]["encoded"] - record["profiles"]["preview"]["encoded"]
    # (a few more were encoded just before the first read and after the last, at 5 fps)
    assert encoded <= len(published) + 5 < 2 * len(published)
    assert after["profiles"]["full"]["encoded"] == 0


def test_motion_seen_by_the_capture_process_is_listed_by_every_web_worker(
    serve: Callable[..., Server],
    monitored_nats: tuple[NatsServer, Callable[[str], int]],
    start_capture: Callable[..., subprocess.Popen],  # set up after, so stopped before, the server
    tmp_path: Path,
) -> None:
    nats, subscribers = monitored_nats
    config = tmp_path / "capture.toml"
    config.write_text(
        "[cameras.0]\nsource = 'testsrc:320x240@20'\nautostart = true\n"
        "[cameras.0.motion]\nenabled = true\narea = 0.002\nduration = 0.2\nignore = [[0, 0, 1, 0.6]]\n"
    )
    livecam = serve({"LIVECAM_BUS": nats.url, "LIVECAM_CAMERAS": "0=testsrc"}, "--workers", "2")
    # A web worker keeps the events sent while it follows the bus, and the camera switches on
    # as the capture process starts: so both workers follow first (one answering /healthz
    # says nothing of the other, nor of its subscriptions).
    assert wait_for(lambda: subscribers(Subjects("livecam").event(0)) == 2, timeout=20)
    start_capture("", url=nats.url, config=str(config))
    seen: list[dict] = []

    def motion() -> bool:
        answer = livecam.request("GET", "/cameras/0/events")[1]
        seen[:] = [e for e in answer if e["type"] == "motion.start"]
        return bool(seen)

    assert wait_for(motion, timeout=20)  # whichever worker answers has it
    event = seen[0]
    assert event["camera"] == 0 and event["box"][1] >= 0.6 and event["snapshot"]
    status, picture = livecam.request("GET", event["snapshot"])
    assert status == 200 and decode(picture).shape == (240, 320, 3)
    states = [
        e["state"] for e in livecam.request("GET", "/cameras/0/events")[1] if e["type"] == "camera.state"
    ]
    assert "on" in states
    assert livecam.record(0)["motion"] is True
