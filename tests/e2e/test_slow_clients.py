"""livecam's gunicorn worker against real clients: slow, pipelined, half-closed, oversized."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import FIN_WAIT1, Server, proc_status, read_parts, response_head, server_socket, wait_for
from livecam.sender import MIN_SEND_BUFFER
from livecam.worker import LINGER, REQUEST_TIMEOUT

ENV = {"LIVECAM_CAMERAS": "0=testsrc:160x120@30", "LIVECAM_THREADS": "16"}  # 12 threads for viewers
# The shared server closes a request not whole after this long rather than livecam's 10 s
# (tests/shortened.py): the same code, waited for in fewer seconds. Longer than the 3 s the
# slow clients below take to send their bytes, with room for a loaded machine.
SHORT_REQUEST_TIMEOUT = 6.0


@pytest.fixture(scope="module")
def shared_livecam(serve_module: Callable[..., Server]) -> Server:
    """One gunicorn for the tests that leave it serving."""
    return serve_module(ENV, shortened={"livecam.worker.REQUEST_TIMEOUT": SHORT_REQUEST_TIMEOUT})


@pytest.fixture
def livecam(shared_livecam: Server) -> Server:
    """A small pool: 16 threads, 12 of them for viewers; camera 0 on, no viewer left from before."""
    assert shared_livecam.request("POST", "/cameras/0/start")[0] == 200
    assert wait_for(lambda: shared_livecam.record(0)["state"] == "on")
    assert wait_for(lambda: shared_livecam.request("GET", "/healthz")[1]["streams"] == 0)
    return shared_livecam


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (bounded by the socket's timeout)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.fixture
def slow_clients(livecam: Server) -> Iterator[list[socket.socket]]:
    clients: list[socket.socket] = []
    yield clients
    for sock in clients:
        sock.close()


def test_slow_clients_take_no_thread_from_viewers_or_buttons(livecam: Server, slow_clients) -> None:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for _ in range(300):  # against a pool of 16 threads
        sock = connect(livecam)
        sock.sendall(request[:1])
        slow_clients.append(sock)
    started = time.monotonic()
    for sent in range(1, 4):  # one more header byte each, every second or so
        for sock in slow_clients:
            sock.sendall(request[sent : sent + 1])
        # Meanwhile the page, a switch and a viewer are answered at once.
        assert livecam.request("GET", "/", {"Accept": "text/html"})[0] == 200
        assert livecam.request("POST", "/cameras/0/start")[0] == 200
        conn, response = livecam.open_stream("/cameras/0/stream.mjpg")
        assert next(read_parts(response)).body
        conn.close()
        time.sleep(max(0.0, started + sent - time.monotonic()))
    # A request still not whole after the request timeout is closed, having held no thread.
    assert REQUEST_TIMEOUT == 10.0  # what docs/reliability.md says
    deadline = time.monotonic() + SHORT_REQUEST_TIMEOUT + 5
    for sock in slow_clients:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        assert read_all(sock).startswith(b"HTTP/1.1 408 ")
    assert wait_for(lambda: livecam.request("GET", "/healthz")[1]["streams"] == 0)


def test_a_request_behind_a_stream_gets_a_closed_connection_not_silence(livecam: Server) -> None:
    sock = connect(livecam)
    sock.sendall(
        b"GET /cameras/0/stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    head = response_head(sock)
    assert head.startswith(b"HTTP/1.1 200") and b"\r\nConnection: close\r\n" in head
    assert wait_for(lambda: livecam.record(0)["viewers"] == 1)
    livecam.request("POST", "/cameras/0/stop")  # the stream ends...
    rest = b""
    while chunk := sock.recv(65536):  # ...and the connection with it (bounded by the timeout)
        rest += chunk
    assert rest.endswith(b"0\r\n\r\n")  # the last chunk: the stream ended cleanly
    assert b"/healthz" not in rest and b'"status"' not in rest
    sock.close()


def test_a_half_closed_client_keeps_streaming(livecam: Server) -> None:
    sock = connect(livecam)
    sock.sendall(b"GET /cameras/0/stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    sock.shutdown(socket.SHUT_WR)  # as some clients do once their request is sent
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"HTTP/1.0 200")
    while reader.readline() != b"\r\n":
        pass
    stamps = [part.headers["x-timestamp"] for _, part in zip(range(10), read_parts(reader), strict=False)]
    assert len(set(stamps)) == 10  # ten frames, not one and an end
    reader.close()
    sock.close()


def test_a_huge_body_is_refused_unread(livecam: Server) -> None:
    memory_before = proc_status(livecam.worker_pid())["rss_kb"]
    sock = connect(livecam)
    sock.sendall(
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100000000\r\n\r\ntoken=" + b"x" * 1_000_000
    )
    head = response_head(sock)
    assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head
    sock.close()
    assert proc_status(livecam.worker_pid())["rss_kb"] - memory_before < 16 * 1024


def test_a_chunked_body_is_refused(livecam: Server) -> None:
    sock = connect(livecam)
    sock.sendall(
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    head = response_head(sock)
    assert head.startswith(b"HTTP/1.1 411"), head
    sock.close()


def test_hostile_origins_leave_no_stream_slot_taken(livecam: Server) -> None:
    for number in range(300):
        header = ("Origin", "Referer")[number % 2]
        path, method = (("/cameras/0/stream.mjpg", "GET"), ("/cameras/0/toggle", "POST"))[number % 3 == 0]
        sock = connect(livecam)
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}: http://[\r\n\r\n".encode())
        head = response_head(sock)
        # 403 for a switch from a mangled origin, 200 or "too many viewers" for a stream.
        assert head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 403", b"HTTP/1.1 503")), head
        sock.close()
    assert wait_for(lambda: livecam.request("GET", "/healthz")[1]["streams"] == 0)
    conn, response = livecam.open_stream("/cameras/0/stream.mjpg")  # every slot is free again
    conn.close()


def test_a_slow_request_behind_a_whole_one_waits_in_the_event_loop(livecam: Server, slow_clients) -> None:
    request = b"GET /cameras/0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for _ in range(40):  # against a pool of 16 threads
        sock = connect(livecam)
        sock.sendall(request + request[:10])  # one whole request, and the start of the next
        slow_clients.append(sock)
    for sock in slow_clients:
        assert response_head(sock).startswith(b"HTTP/1.1 200")
    for _ in range(3):  # the rest of the second request trickles
        for sock in slow_clients:
            sock.sendall(request[10:11])
        assert livecam.request("GET", "/", {"Accept": "text/html"})[0] == 200
        assert livecam.request("POST", "/cameras/0/start")[0] == 200


def test_a_huge_request_head_is_refused_from_the_event_loop(livecam: Server) -> None:
    sock = connect(livecam)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"a" * 70_000)
    assert read_all(sock).startswith(b"HTTP/1.1 431 ")
    sock.close()


def test_expect_100_continue_is_answered(livecam: Server) -> None:
    sock = connect(livecam)
    sock.sendall(
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 16\r\nExpect: 100-continue\r\n\r\n"
    )
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client may go on
    sock.sendall(b"token=wrong-gues")
    answer = b""
    while b"HTTP/1.1 403 " not in answer:  # after one more interim 100, the answer (timeout-bounded)
        answer += sock.recv(65536)
    sock.close()


def test_a_request_on_a_kept_alive_connection_is_served_while_stopping(serve: Callable[..., Server]) -> None:
    livecam = serve(ENV)  # its own: the worker is stopped
    sock = connect(livecam)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock.sendall(request)
    assert response_head(sock).startswith(b"HTTP/1.1 200")
    os.kill(livecam.worker_pid(), signal.SIGTERM)
    time.sleep(0.3)  # the worker is stopping: a request on its way is still answered
    sock.sendall(request)
    answer = read_all(sock)  # the rest of the first answer's body, then the second answer
    assert b"HTTP/1.1 200 OK" in answer and b"Connection: close" in answer, answer[:300]
    sock.close()


@pytest.mark.parametrize("tls", [False, True], ids=["sender", "tls-thread"])
def test_a_viewer_that_never_reads_costs_a_bounded_buffer_and_is_reset_when_cut(
    serve: Callable[..., Server], certificate: tuple[Path, Path], tls: bool
) -> None:
    # Plain HTTP: the sender writes the stream. TLS straight to gunicorn: the request's thread.
    # The shortest send timeout: no other viewer here whom a busy machine could get cut off.
    env = {"LIVECAM_CAMERAS": "0=testsrc:1280x720@30", "LIVECAM_SEND_TIMEOUT": "1"}
    cert, key = certificate
    context = ssl.create_default_context(cafile=str(cert)) if tls else None
    livecam = serve(env, *(["--certfile", str(cert), "--keyfile", str(key)] if tls else []), ready=False)

    def request(method: str, path: str) -> tuple[int, Any]:
        if context is None:
            return livecam.request(method, path)
        conn = http.client.HTTPSConnection("127.0.0.1", livecam.port, timeout=10, context=context)
        try:
            conn.request(method, path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def answers() -> bool:
        try:
            return request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    assert wait_for(answers, timeout=20), livecam.output()
    assert request("POST", "/cameras/0/start")[0] == 200
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, as a hostile client keeps
    sock.settimeout(10)
    sock.connect(("127.0.0.1", livecam.port))
    peer_port = sock.getsockname()[1]
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.sendall(b"GET /cameras/0/stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    # The client reads nothing; the server's socket fills until the send timeout cuts it off.
    most, finishing_since = 0, None

    def gone() -> bool:
        nonlocal most, finishing_since
        seen = server_socket(livecam.port, peer_port)
        if seen is None:
            return True
        most = max(most, seen[1])
        if seen[0] == FIN_WAIT1 and finishing_since is None:
            finishing_since = time.monotonic()
        # A connection being closed may pass FIN-WAIT-1 on its way to the reset; one kept
        # there with what it sent would stay until the client reads it, or minutes.
        return finishing_since is not None and time.monotonic() - finishing_since > 2 * LINGER

    assert wait_for(gone, timeout=30, every=0.02), livecam.output()
    assert most > 64 * 1024, most  # it did fill: a frame or more is waiting for the client
    assert most <= 2 * MIN_SEND_BUFFER, f"{most} bytes queued for one idle viewer"
    # Cut off, the connection was reset: nothing is left waiting in FIN-WAIT-1.
    assert server_socket(livecam.port, peer_port) is None, "kept in FIN-WAIT-1 after the cut"
    try:
        while sock.recv(65536):  # what was delivered before the reset, then the reset
            pass
        reset = False
    except ConnectionResetError:
        reset = True
    assert reset or tls  # Python's TLS reads a reset as the stream's end (suppress_ragged_eofs)
    sock.close()
    assert wait_for(lambda: request("GET", "/healthz")[1]["streams"] == 0)
