"""The frame bus against a real nats-server: frames, requests, and NATS coming and going."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import free_port, wait_for
from livecam.bus import FrameBus
from nats_server import Inbox, NatsServer


@pytest.fixture
def make_bus() -> Iterator[Callable[[str], FrameBus]]:
    """Buses that are closed, and their threads joined, at teardown."""
    buses: list[FrameBus] = []

    def factory(url: str) -> FrameBus:
        buses.append(FrameBus(url, prefix="site1").start())
        return buses[-1]

    yield factory
    for bus in buses:
        bus.close()
    assert not [t for t in threading.enumerate() if t.name in ("livecam-bus", "livecam-frames")]


def test_frames_cross_the_bus_with_their_headers(nats_server: NatsServer, make_bus) -> None:
    capture, web = make_bus(nats_server.url), make_bus(nats_server.url)
    assert capture.wait_connected(5) and web.wait_connected(5)
    inbox = Inbox()
    web.subscribe(web.subject("camera", 3, "frame"), inbox)
    subject = capture.subject("camera", 3, "frame")
    assert subject == "site1.camera.3.frame"
    # A subscription takes effect with the server's next round trip: publish until one lands.
    assert wait_for(lambda: capture.publish(subject, b"\xff\xd8jpeg", {"seq": "1"}) and inbox.wait(1, 0.1))
    payload, headers = inbox.messages[0]
    assert payload == b"\xff\xd8jpeg" and headers["seq"] == "1"


def test_requests_are_answered_off_the_bus_thread(
    nats_server: NatsServer, make_bus, caplog: pytest.LogCaptureFixture
) -> None:
    capture, web = make_bus(nats_server.url), make_bus(nats_server.url)
    assert capture.wait_connected(5) and web.wait_connected(5)
    threads: list[str] = []

    def status(payload: bytes) -> bytes:
        threads.append(threading.current_thread().name)
        return b"status of " + payload

    capture.serve(capture.subject("camera", 3, "status"), status)
    ask = lambda: web.request(web.subject("camera", 3, "status"), b"3", timeout=0.5)  # noqa: E731
    assert wait_for(lambda: ask() == b"status of 3")
    assert "livecam-bus" not in threads
    assert web.request(web.subject("camera", 9, "status"), b"9", timeout=0.2) is None  # nobody answers
    # A responder that returns None stays silent: the asker hears the one that answers.
    capture.serve(capture.subject("pick"), lambda payload: None)
    capture.serve(capture.subject("pick"), lambda payload: b"mine")
    assert wait_for(lambda: web.request(web.subject("pick"), b"?", timeout=0.5) == b"mine")
    assert all(web.request(web.subject("pick"), b"?", timeout=0.5) == b"mine" for _ in range(5))
    assert "answering" not in caplog.text  # silence is no failure


def test_a_request_that_ends_its_own_subscription_is_still_answered(
    nats_server: NatsServer, make_bus
) -> None:
    """As a camera's removal, asked on the camera's own subject, ends that subscription."""
    capture, web = make_bus(nats_server.url), make_bus(nats_server.url)
    assert capture.wait_connected(5) and web.wait_connected(5)
    cancels = []

    def remove(payload: bytes) -> bytes:
        cancels[0]()
        time.sleep(0.2)  # the subscription is gone by the time the answer goes
        return b"removed"

    cancels.append(capture.serve(capture.subject("camera", 3, "manage"), remove))
    assert wait_for(lambda: web.request(web.subject("camera", 3, "manage"), b"", timeout=2) == b"removed")
    assert web.request(web.subject("camera", 3, "manage"), b"", timeout=0.5) is None  # gone indeed


def test_a_bus_without_nats_starts_and_connects_when_nats_comes(make_bus) -> None:
    server = NatsServer(free_port())  # not started yet
    bus = make_bus(server.url)
    try:
        assert not bus.wait_connected(0.5)
        assert not bus.publish(bus.subject("x"), b"lost")  # dropped, never blocking
        assert bus.request(bus.subject("x"), b"?", timeout=0.2) is None
        inbox = Inbox()
        bus.subscribe(bus.subject("x"), inbox)  # kept until the connection exists
        server.start()
        assert bus.wait_connected(10)
        assert wait_for(lambda: bus.publish(bus.subject("x"), b"now") and inbox.wait(1, 0.1))
    finally:
        server.stop()


def test_a_restarted_nats_server_is_rejoined_with_the_subscriptions(
    nats_server: NatsServer, make_bus
) -> None:
    capture, web = make_bus(nats_server.url), make_bus(nats_server.url)
    assert capture.wait_connected(5) and web.wait_connected(5)
    inbox = Inbox()
    subject = web.subject("camera", 1, "frame")
    web.subscribe(subject, inbox)
    assert wait_for(lambda: capture.publish(subject, b"before") and inbox.wait(1, 0.1))
    nats_server.stop()
    assert wait_for(lambda: not capture.connected and not web.connected)
    nats_server.start()
    assert capture.wait_connected(10) and web.wait_connected(10)
    count = len(inbox.messages)
    assert wait_for(lambda: capture.publish(subject, b"after") and inbox.wait(count + 1, 0.1))
    assert inbox.messages[-1][0] == b"after"


def test_a_tls_nats_server(make_bus, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = certificate
    server = NatsServer(None, "--tls", "--tlscert", str(cert), "--tlskey", str(key)).start()
    try:
        assert server.url.startswith("tls://")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system's trust, as a user sets it up
        capture, web = make_bus(server.url), make_bus(server.url)
        assert capture.wait_connected(10) and web.wait_connected(10)
        inbox = Inbox()
        subject = web.subject("camera", 2, "frame")
        web.subscribe(subject, inbox)
        assert wait_for(lambda: capture.publish(subject, b"over tls") and inbox.wait(1, 0.1))
    finally:
        server.stop()


def test_a_subscription_asked_before_the_connection_is_made_once_and_ends_when_cancelled(make_bus) -> None:
    server = NatsServer(free_port())
    bus = make_bus(server.url)
    subject = bus.subject("x")

    def payloads(inbox: Inbox) -> list[bytes]:
        return [payload for payload, _ in inbox.messages]

    try:
        early, late = Inbox(), Inbox()
        cancel_early = bus.subscribe(subject, early)  # asked before NATS is there
        server.start()
        assert bus.wait_connected(10)
        bus.subscribe(subject, late)
        assert wait_for(lambda: bus.publish(subject, b"ready") and late.wait(1, 0.1) and early.wait(1, 0.1))
        bus.publish(subject, b"once")
        assert wait_for(lambda: b"once" in payloads(late))
        bus.publish(subject, b"flush")  # after "once" was sent: a newer message never replaces it
        assert wait_for(lambda: b"flush" in payloads(early) and b"flush" in payloads(late))
        assert payloads(early).count(b"once") == 1  # one subscription, not two
        cancel_early()
        seen = len(late.messages)
        assert wait_for(lambda: bus.publish(subject, b"after") and late.wait(seen + 2, 0.1))
        assert b"after" in payloads(late) and b"after" not in payloads(early)
    finally:
        server.stop()


def test_while_nats_is_frozen_only_the_newest_message_per_subject_waits(make_bus) -> None:
    server = NatsServer(free_port()).start()
    capture, web = make_bus(server.url), make_bus(server.url)
    subject = capture.subject("camera", 0, "frame", "full")
    try:
        assert capture.wait_connected(5) and web.wait_connected(5)
        inbox = Inbox()
        web.subscribe(subject, inbox)
        assert wait_for(lambda: capture.publish(subject, b"ready") and inbox.wait(1, 0.1))
        os.kill(server.process.pid, signal.SIGSTOP)  # NATS stops reading: the socket fills
        frame = b"\0" * 200_000
        sent = 300
        for n in range(sent):
            assert capture.publish(subject, frame + str(n).encode())
            time.sleep(0.002)  # a paced camera, not a burst: the bus thread gets its turns
        # 60 MB asked for: the kernel's buffers and nats-py's own (2 MB) take a few dozen,
        # the rest were replaced by newer frames while waiting, never queued.
        assert capture.dropped_on(subject) >= sent // 2
        tasks = asyncio.run_coroutine_threadsafe(_task_count(), capture._loop).result(5)
        assert tasks <= 4  # the connection's own tasks and one sender, not a task per frame
        os.kill(server.process.pid, signal.SIGCONT)
        last = frame + str(sent - 1).encode()
        assert wait_for(lambda: any(payload == last for payload, _ in inbox.messages), timeout=20)
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


async def _task_count() -> int:
    """Tasks in the bus thread's loop, this one left out."""
    return len(asyncio.all_tasks()) - 1


def test_a_frame_larger_than_nats_takes_is_said_once_and_counted(
    nats_server: NatsServer, make_bus, caplog: pytest.LogCaptureFixture
) -> None:
    capture = make_bus(nats_server.url)
    assert capture.wait_connected(5)
    subject = capture.subject("camera", 3, "frame", "full")
    assert wait_for(lambda: capture.publish_frame(subject, b"small", {}))  # the frame link is up
    before = capture.dropped_on(capture.subject("camera", 3))  # any while the link came up
    for _ in range(3):
        assert not capture.publish_frame(subject, b"x" * (2 << 20), {})  # nats-server's default: 1 MB
    assert capture.dropped_on(capture.subject("camera", 3)) == before + 3
    assert caplog.text.count("is larger than") == 1
    assert "max_payload, 1048576 bytes" in caplog.text
