"""Plain stream requests opened from the worker's event loop, under real gunicorn: the same
answer as the Flask route, byte for byte but the date, and every other request still Flask's."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import BinaryIO

import pytest

from helpers import Server, read_parts, wait_for

CAMERAS = "0=testsrc:160x120@20,1=testsrc:64x48@10"
STREAM = "/cameras/0/stream.mjpg"
# A browser's picture request: it says what it is for, so Flask decides who may embed it.
FROM_A_PAGE = b"Sec-Fetch-Dest: image\r\n"
TOKEN = "v" * 32


@pytest.fixture(scope="module")
def livecam(serve_module: Callable[..., Server]) -> Server:
    server = serve_module({"LIVECAM_CAMERAS": CAMERAS})
    assert server.send_json("POST", "/cameras/0/start")[0] == 200
    return server


def ask(server: Server, head: bytes) -> tuple[socket.socket, BinaryIO, str, list[tuple[str, str]]]:
    """Send a raw request head; the socket, its reader past the answer's head, the status
    line and the headers."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head)
    reader = sock.makefile("rb")
    status = reader.readline().decode("latin-1").rstrip("\r\n")
    headers = []
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").rstrip("\r\n").partition(": ")
        headers.append((name, value))
    return sock, reader, status, headers


def plain(server: Server, target: str = STREAM, version: str = "1.1") -> bytes:
    return f"GET {target} HTTP/{version}\r\nHost: 127.0.0.1:{server.port}\r\n".encode()


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_plain_stream_answer_is_the_flask_routes_answer(livecam: Server, version: str) -> None:
    fast, fast_reader, fast_status, fast_headers = ask(livecam, plain(livecam, version=version) + b"\r\n")
    slow, slow_reader, slow_status, slow_headers = ask(
        livecam, plain(livecam, version=version) + FROM_A_PAGE + b"\r\n"
    )
    with fast, slow, fast_reader, slow_reader:
        assert fast_status == slow_status == f"HTTP/{version} 200 OK"
        assert [name for name, _ in fast_headers].count("Date") == 1
        dated = [(name, value) for name, value in fast_headers if name != "Date"]
        assert dated == [(name, value) for name, value in slow_headers if name != "Date"]
        assert ("Transfer-Encoding", "chunked") in fast_headers if version == "1.1" else True


def test_an_http_1_0_stream_is_plain_parts_until_the_viewer_leaves(livecam: Server) -> None:
    sock, reader, status, _ = ask(livecam, plain(livecam, version="1.0") + b"User-Agent: VLC/3.0.24\r\n\r\n")
    with sock, reader:
        assert status == "HTTP/1.0 200 OK"
        parts = read_parts(reader)
        assert all(next(parts).body[:2] == b"\xff\xd8" for _ in range(3))
        assert livecam.record(0)["viewers"] == 1
    assert wait_for(lambda: livecam.record(0)["viewers"] == 0)


def test_an_http_1_1_stream_is_chunked_parts(livecam: Server) -> None:
    conn, response = livecam.open_stream(STREAM + "?profile=full")
    try:
        assert response.getheader("Transfer-Encoding") == "chunked"
        parts = read_parts(response)
        assert all(next(parts).body[:2] == b"\xff\xd8" for _ in range(3))
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/cameras/1/stream.mjpg", "HTTP/1.1 503 SERVICE UNAVAILABLE"),  # off
        ("/cameras/9/stream.mjpg", "HTTP/1.1 404 NOT FOUND"),
        (STREAM + "?profile=nope", "HTTP/1.1 400 BAD REQUEST"),
    ],
)
def test_what_a_plain_request_cannot_have_is_refused_by_flask(
    livecam: Server, target: str, status: str
) -> None:
    sock, reader, answered, headers = ask(livecam, plain(livecam, target) + b"\r\n")
    with sock, reader:
        assert answered == status
        assert ("Content-Type", "application/json") in headers


def test_an_untrusted_host_is_refused_as_before(livecam: Server) -> None:
    head = f"GET {STREAM} HTTP/1.1\r\nHost: rebind.example\r\n\r\n".encode()
    sock, reader, status, _ = ask(livecam, head)
    with sock, reader:
        assert status == "HTTP/1.1 400 BAD REQUEST"
    assert b"refused host 'rebind.example'" in livecam.output().encode()


def test_a_protected_stream_still_asks_for_its_token(serve_module: Callable[..., Server]) -> None:
    server = serve_module({"LIVECAM_CAMERAS": CAMERAS, "LIVECAM_VIEW_TOKEN": TOKEN})
    assert server.send_json("POST", "/cameras/0/start", token=TOKEN)[0] == 200
    sock, reader, status, headers = ask(server, plain(server) + b"\r\n")
    with sock, reader:
        assert status == "HTTP/1.1 401 UNAUTHORIZED"
        assert ("WWW-Authenticate", 'Basic realm="livecam"') in headers
    bearer = plain(server) + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    sock, reader, status, _ = ask(server, bearer)
    with sock, reader:
        assert status == "HTTP/1.1 200 OK"


def test_with_an_access_log_every_stream_request_is_in_it(serve_module: Callable[..., Server]) -> None:
    server = serve_module({"LIVECAM_CAMERAS": CAMERAS}, "--access-logfile", "-")
    assert server.send_json("POST", "/cameras/0/start")[0] == 200
    sock, reader, status, _ = ask(server, plain(server, STREAM + "?profile=full") + b"\r\n")
    with sock, reader:
        assert status == "HTTP/1.1 200 OK"
    assert wait_for(lambda: '"GET /cameras/0/stream.mjpg?profile=full HTTP/1.1" 200' in server.output())
