"""Plain stream requests opened without Flask: taken only when no decision is needed, handed to
the same sender; anything else left to Flask."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from helpers import read_parts, wait_for
from livecam.appstate import get_registry
from livecam.fastpath import PlainStreams

STREAM = "/cameras/0/stream.mjpg"
HOST = {"host": "127.0.0.1:8000"}


def test_a_plain_stream_request_is_handed_to_the_sender_and_watched(app: Flask) -> None:
    camera = get_registry(app).get(0)
    assert camera is not None
    opened = PlainStreams(app).open(STREAM, HOST | {"user-agent": "VLC/3.0"}, chunked=False)
    assert opened is not None
    assert b"Content-Type: multipart/x-mixed-replace; boundary=frame\r\n" in opened.headers
    assert b"Cross-Origin-Resource-Policy: same-origin\r\n" in opened.headers
    ours, theirs = socket.socketpair()
    with theirs, theirs.makefile("rb") as received:
        ours.sendall(b"--frame\r\n")  # the opening, which the worker writes with the head
        opened.start(ours)
        assert camera.status()["viewers"] == 1
        assert next(read_parts(received)).body[:2] == b"\xff\xd8"
    assert wait_for(lambda: camera.status()["viewers"] == 0)  # the viewer left: let go


def test_a_profile_named_in_the_query_is_the_one_streamed(make_app: Callable[..., Flask]) -> None:
    app = make_app(
        {
            "cameras": {
                "0": {"source": "testsrc:160x120@30", "autostart": True, "profiles": {"low": {"width": 80}}}
            }
        }
    )
    streams = PlainStreams(app)
    assert streams.open(STREAM + "?profile=low", HOST, chunked=True) is not None
    assert streams.open(STREAM + "?profile=tiny", HOST, chunked=True) is None  # Flask's 400
    assert streams.open(STREAM + "?profile=low&t=1", HOST, chunked=True) is None


def test_an_abandoned_stream_gives_its_place_and_watching_back(app: Flask) -> None:
    registry = get_registry(app)
    camera = registry.get(0)
    assert camera is not None
    opened = PlainStreams(app).open(STREAM, HOST, chunked=True)
    assert opened is not None
    assert registry.sender.census() == (1, 0) and camera.status()["viewers"] == 1
    opened.abandon()
    assert registry.sender.census() == (0, 0) and camera.status()["viewers"] == 0


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/cameras/1/stream.mjpg", HOST),  # off: Flask's 503
        ("/cameras/7/stream.mjpg", HOST),  # no such camera: Flask's 404
        ("/cameras/0/snapshot.jpg", HOST),
        ("/cameras/0/stream.mjpg/", HOST),
        (STREAM + "?profile=", HOST),  # Flask: no such profile
        (STREAM, {}),  # no Host
        (STREAM, {"host": "evil.example"}),  # untrusted: Flask's 400, logged
        (STREAM, HOST | {"authorization": "Bearer x"}),
        (STREAM, HOST | {"origin": "http://127.0.0.1:8000"}),
        (STREAM, HOST | {"referer": "http://127.0.0.1:8000/"}),  # a page: which may embed it
        (STREAM, HOST | {"sec-fetch-dest": "image"}),
        (STREAM, HOST | {"content-length": "0"}),
        (STREAM, HOST | {"transfer-encoding": "chunked"}),
        (STREAM, HOST | {"upgrade": "h2c"}),
        (STREAM, HOST | {"x-forwarded-proto": "https"}),  # gunicorn reads it from a trusted proxy
        (STREAM, HOST | {"x-forwarded-ssl": "off"}),
    ],
)
def test_a_request_needing_a_decision_is_left_to_flask(
    app: Flask, target: str, headers: dict[str, str]
) -> None:
    assert PlainStreams(app).open(target, headers, chunked=True) is None
    assert get_registry(app).sender.census() == (0, 0)  # no place taken


@pytest.mark.parametrize(
    "config",
    [
        {"view_token": "v" * 32},
        {"control_token": "c" * 32, "view_token": "v" * 32},
        {"proxy_hops": 1},
    ],
)
def test_tokens_and_a_proxys_host_are_decided_in_flask(
    make_app: Callable[..., Flask], config: dict[str, Any]
) -> None:
    app = make_app({"cameras": {"0": {"source": "testsrc:160x120@30", "autostart": True}}, **config})
    headers = HOST | {"x-forwarded-host": "127.0.0.1"}
    assert PlainStreams(app).open(STREAM, headers, chunked=True) is None
    # Behind a proxy, its port joins the host that Flask checks.
    assert PlainStreams(app).open(STREAM, HOST | {"x-forwarded-port": "1:2"}, chunked=True) is None


def test_a_camera_added_at_run_time_is_opened_once_its_routes_are_built(app: Flask) -> None:
    registry = get_registry(app)
    streams = PlainStreams(app)
    assert streams.open("/cameras/5/stream.mjpg", HOST, chunked=True) is None
    registry.create({"source": "testsrc:64x48@10"}, cam_id=5)
    assert wait_for(lambda: registry.get(5) is not None and registry.get(5).is_on)
    opened = streams.open("/cameras/5/stream.mjpg", HOST, chunked=True)
    assert opened is not None
    opened.abandon()
    registry.delete(5)
    assert streams.open("/cameras/5/stream.mjpg", HOST, chunked=True) is None


def test_no_place_left_in_the_sender_is_left_to_flask(app: Flask) -> None:
    sender = get_registry(app).sender
    sender.capacity = 0
    assert PlainStreams(app).open(STREAM, HOST, chunked=True) is None
