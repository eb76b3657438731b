"""The live events (Server-Sent Events) over real gunicorn, read by plain HTTP clients: in order,
resumed across a reconnect, kept alive, and costing no thread; hostile subscribers cut off."""

from __future__ import annotations

import http.client
import json
import select
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    FIN_WAIT1,
    Message,
    Server,
    StreamConnection,
    proc_status,
    read_messages,
    response_head,
    server_socket,
    wait_for,
)
from livecam.sender import EVENTS_SEND_BUFFER
from livecam.sse import KEEPALIVE_INTERVAL, RETRY_MS

LONG_NAME = "A camera whose name is as long as livecam allows, sixty-four chr"  # bigger events


def start_livecam(serve: Callable[..., Server], directory: Path, **options: Any) -> Server:
    """Two test-pattern cameras, both off, and a small pool: 16 threads, 12 for streams."""
    config = directory / "livecam.toml"
    config.write_text(f'[cameras.0]\nname = "{LONG_NAME}"\n[cameras.1]\nname = "Yard"\n')
    cameras = "0=testsrc:64x48@10,1=testsrc:64x48@10"
    return serve(
        {"LIVECAM_CAMERAS": cameras, "LIVECAM_CONFIG": str(config), "LIVECAM_THREADS": "16"}, **options
    )


@pytest.fixture
def livecam(serve: Callable[..., Server], tmp_path: Path) -> Server:
    """Two test-pattern cameras, both off, and a small pool."""
    return start_livecam(serve, tmp_path)


def subscribe(
    server: Server, path: str = "/events", timeout: float = 10, **headers: str
) -> tuple[StreamConnection, Iterator[Message]]:
    """Open an event stream, check its answer, and read past the retry hint."""
    conn = StreamConnection("127.0.0.1", server.port, timeout=timeout)
    conn.request("GET", path, headers=headers)
    response = conn.response = conn.getresponse()
    assert response.status == 200, response.read()
    assert response.getheader("Content-Type") == "text/event-stream"
    assert response.getheader("Cache-Control").startswith("no-store")
    assert response.getheader("X-Accel-Buffering") == "no"
    assert response.getheader("Connection") == "close"
    messages = read_messages(response)
    assert next(messages).fields == {"retry": str(RETRY_MS)}
    return conn, messages


def until(messages: Iterator[Message], done: Callable[[dict], bool]) -> list[dict]:
    """The events read up to the first that ``done`` says ends the wait (socket-timeout bounded);
    each one's fields checked against its JSON."""
    events = []
    for message in messages:
        event = message.json
        assert message.fields["event"] == event["type"] and message.fields["id"] == str(event["id"])
        events.append(event)
        if done(event):
            return events
    raise AssertionError(f"the stream ended after {events}")


def state(camera: int, name: str) -> Callable[[dict], bool]:
    return lambda event: event["camera"] == camera and event.get("state") == name


def health(server: Server) -> dict:
    return server.request("GET", "/healthz")[1]


def test_events_in_order_and_a_reconnect_gets_exactly_the_missed_ones(livecam: Server) -> None:
    conn, messages = subscribe(livecam)
    assert health(livecam)["event_streams"] == 1 and health(livecam)["streams"] == 0
    livecam.request("POST", "/cameras/0/start")
    seen = until(messages, state(0, "on"))
    assert [e["state"] for e in seen] == ["starting", "on"] and seen[0]["name"] == LONG_NAME
    assert seen[0]["id"] < seen[1]["id"] and seen[1]["previous"] == "starting"
    conn.close()
    assert wait_for(lambda: health(livecam)["event_streams"] == 0)

    # While away: camera 0 stops, camera 1 starts.
    livecam.request("POST", "/cameras/0/stop")
    livecam.request("POST", "/cameras/1/start")
    assert wait_for(lambda: livecam.record(1)["state"] == "on")
    missed = [
        e["id"] for e in reversed(livecam.request("GET", "/events/recent")[1]) if e["id"] > seen[-1]["id"]
    ]
    assert len(missed) == 3  # off; starting, on

    # Back, as an EventSource comes back: the missed ones, oldest first, then what is new.
    conn, messages = subscribe(livecam, **{"Last-Event-ID": str(seen[-1]["id"])})
    assert [e["id"] for e in until(messages, lambda e: e["id"] == missed[-1])] == missed
    livecam.request("POST", "/cameras/1/stop")
    (new,) = until(messages, state(1, "off"))  # the next message is new: nothing sent twice
    assert new["id"] > missed[-1]

    # A filtered stream from the start (?since=0) gets only its camera's kept events.
    filtered, only_yard = subscribe(livecam, "/events?cameras=1&since=0")
    yard = until(only_yard, lambda e: e["id"] == new["id"])
    assert {e["camera"] for e in yard} == {1} and [e["state"] for e in yard] == ["starting", "on", "off"]

    # livecam stopping ends every event stream cleanly (the chunked body's last chunk).
    livecam.process.send_signal(signal.SIGTERM)
    assert list(messages) == [] and list(only_yard) == []  # http.client would raise on a cut body
    assert livecam.process.wait(15) == 0
    for stream in (conn, filtered):
        stream.close()


# The next test's server sends its keepalives after this long rather than livecam's 15 s
# (tests/shortened.py): the same code, waited for in seconds.
KEEPALIVE = 2.0


def test_a_quiet_stream_gets_a_keepalive_comment(serve: Callable[..., Server], tmp_path: Path) -> None:
    assert KEEPALIVE_INTERVAL == 15.0  # what docs/events.md says
    livecam = start_livecam(serve, tmp_path, shortened={"livecam.sse.KEEPALIVE_INTERVAL": KEEPALIVE})
    conn, messages = subscribe(livecam, timeout=KEEPALIVE + 5)
    opened = time.monotonic()
    assert next(messages).comments == ["keepalive"]
    assert KEEPALIVE - 1 < time.monotonic() - opened < KEEPALIVE + 2
    conn.close()


def test_two_hundred_subscribers_hold_no_thread(livecam: Server) -> None:
    count = 200  # against a pool of 16 threads, 12 of them for streams that hold one
    request = b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    clients = []
    try:
        for number in range(count):
            if number == 20:
                # The sender runs and gunicorn's pool has made the threads it makes by itself
                # (one per request that overlaps another, up to 16).
                before = proc_status(livecam.worker_pid())
            sock = socket.create_connection(("127.0.0.1", livecam.port), timeout=10)
            clients.append(sock)
            sock.sendall(request)
            assert response_head(sock).startswith(b"HTTP/1.1 200 ")
        after = proc_status(livecam.worker_pid())
        # Flat: none parked. A thread per subscriber would be 180 more; the pool may still grow
        # by a thread or two when requests overlap, but never past its 16 (with main and sender).
        assert after["threads"] <= min(before["threads"] + 4, 16 + 2), (before, after)
        print(
            f"\n20 -> {count} subscribers: threads {before['threads']} -> {after['threads']}, "
            f"RSS {before['rss_kb']} -> {after['rss_kb']} kB"
        )
        assert health(livecam)["event_streams"] == count and health(livecam)["streams"] == 0
        # A button still answers at once, and its event reaches every subscriber.
        started = time.monotonic()
        assert livecam.request("POST", "/cameras/1/start")[0] == 200
        waiting = {sock: b"" for sock in clients}
        while waiting and time.monotonic() - started < 10:
            readable, _, _ = select.select(list(waiting), [], [], 1.0)
            for sock in readable:
                waiting[sock] += sock.recv(65536)
                if b'"state":"starting"' in waiting[sock]:
                    del waiting[sock]
        assert not waiting, f"{len(waiting)} subscribers got no event"
    finally:
        for sock in clients:
            sock.close()
    # Each noticed as it closed, not at a keepalive's failed write.
    assert wait_for(lambda: health(livecam)["event_streams"] == 0, timeout=KEEPALIVE_INTERVAL / 3)


def test_subscribers_that_close_are_let_go_as_they_close(livecam: Server) -> None:
    count = 12  # as many as the pool's threads for streams: none is refused, whichever way it goes
    clients = [socket.create_connection(("127.0.0.1", livecam.port), timeout=10) for _ in range(count)]
    for sock in clients:  # at once, on a fresh server: their requests meet the sender's start
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    for sock in clients:
        assert response_head(sock).startswith(b"HTTP/1.1 200 ")
    assert health(livecam)["event_streams"] == count
    clients[0].sendall(b"GET /healthz HTTP/1.1\r\n\r\n")  # said after its answer: heard by nobody
    for sock in clients:
        sock.close()
    # Let go as each closes, not at a keepalive's failed write (15 s on, 30 s for a client that
    # left cleanly: the first write after its FIN still goes out): the places are free at once.
    assert wait_for(lambda: health(livecam)["event_streams"] == 0, timeout=KEEPALIVE_INTERVAL / 5)


def test_a_subscriber_that_never_reads_is_cut_off_and_its_socket_reset(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    config = tmp_path / "livecam.toml"
    config.write_text(f'[cameras.0]\nname = "{LONG_NAME}"\n')
    livecam = serve(
        {"LIVECAM_CAMERAS": "0=testsrc:32x24@5", "LIVECAM_CONFIG": str(config), "LIVECAM_SEND_TIMEOUT": "3"}
    )
    # A subscriber that reads every event, beside one that reads none.
    conn, messages = subscribe(livecam)
    received: list[int] = []
    enough = threading.Event()

    def read() -> None:
        for message in messages:
            received.append(message.json["id"])
            if enough.is_set():
                return

    reader = threading.Thread(target=read)
    reader.start()
    hostile = socket.socket()
    hostile.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, never read
    hostile.settimeout(10)
    hostile.connect(("127.0.0.1", livecam.port))
    peer_port = hostile.getsockname()[1]
    hostile.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert wait_for(lambda: health(livecam)["event_streams"] == 2)
    switches = http.client.HTTPConnection("127.0.0.1", livecam.port, timeout=10)  # kept alive
    most, switched, finishing_since = 0, 0, None
    deadline = time.monotonic() + 60
    # Events until the hostile one is gone: each switch is one or two events of ~300 bytes.
    while (seen := server_socket(livecam.port, peer_port)) is not None and time.monotonic() < deadline:
        most = max(most, seen[1])
        if seen[0] == FIN_WAIT1:
            finishing_since = finishing_since or time.monotonic()
            assert time.monotonic() - finishing_since < 4, "kept in FIN-WAIT-1 with what it was sent"
        switches.request("POST", "/cameras/0/toggle", headers={"Accept": "application/json"})
        assert switches.getresponse().read() and switched < 5000
        switched += 1
    switches.close()
    assert server_socket(livecam.port, peer_port) is None, "the subscriber that never reads is still served"
    assert most > 64 * 1024, most  # it did fill: a send buffer of events waited for the client
    assert most <= 2 * EVENTS_SEND_BUFFER, f"{most} bytes queued for one subscriber"
    with pytest.raises(ConnectionResetError):
        while hostile.recv(65536):  # what was delivered before the reset, then the reset
            pass
    hostile.close()
    assert wait_for(lambda: health(livecam)["event_streams"] == 1)
    # The reader got every event, none skipped: the kept ones end what it received.
    enough.set()
    livecam.request("POST", "/cameras/0/toggle")  # one more, to end the reading
    reader.join(10)
    kept = [e["id"] for e in reversed(livecam.request("GET", "/events/recent?limit=1000")[1])]
    kept = kept[: kept.index(received[-1]) + 1]  # (the last switch's "on" may come after)
    assert len(kept) > 500 and received[-len(kept) :] == kept and received == sorted(set(received))
    print(f"\n{switched} switches, {len(received)} events for the reader")
    conn.close()


def test_a_half_closed_subscriber_is_let_go_at_once(livecam: Server) -> None:
    sock = socket.create_connection(("127.0.0.1", livecam.port), timeout=10)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert response_head(sock).startswith(b"HTTP/1.1 200 ")
    assert health(livecam)["event_streams"] == 1
    sock.shutdown(socket.SHUT_WR)  # said all it will say
    assert wait_for(lambda: health(livecam)["event_streams"] == 0, timeout=2)  # no keepalive needed
    rest = b""
    while chunk := sock.recv(65536):  # the server's side closes too (bounded by the timeout)
        rest += chunk
    assert rest.endswith(b"0\r\n\r\n")  # between messages: the body ended cleanly
    sock.close()


def test_over_tls_the_request_thread_writes_the_events(
    serve: Callable[..., Server], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    tls = ["--certfile", str(cert), "--keyfile", str(key)]
    livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:32x24@5"}, *tls, ready=False)
    context = ssl.create_default_context(cafile=str(cert))

    def request(method: str, path: str) -> tuple[int, Any]:
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
    conn = http.client.HTTPSConnection("127.0.0.1", livecam.port, timeout=10, context=context)
    conn.request("GET", "/events")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    messages = read_messages(response)
    assert next(messages).fields == {"retry": str(RETRY_MS)}
    # Written by the request's thread, which holds one of the threads' places meanwhile.
    counted = request("GET", "/healthz")[1]
    assert (counted["streams"], counted["event_streams"]) == (0, 1)
    request("POST", "/cameras/0/start")
    assert [e["state"] for e in until(messages, state(0, "on"))] == ["starting", "on"]
    response.close()
    conn.close()
    for _ in range(3):  # the next writes fail: the thread lets the stream go
        request("POST", "/cameras/0/toggle")
    assert wait_for(lambda: request("GET", "/healthz")[1]["event_streams"] == 0)
