"""The frame link against a real nats-server: frames of every size with their headers, a
server restarted or frozen, TLS, and a peer that is no NATS server at all."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import free_port, wait_for
from livecam import framelink
from livecam.framelink import FrameLink
from nats_server import Inbox, NatsServer

SUBJECT = "site1.camera.0.frame.full"


@pytest.fixture
def make_link(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FrameLink]]:
    """Links closed at teardown, their reader threads ended; they retry every 0.1 s."""
    monkeypatch.setattr(framelink, "RECONNECT_WAIT", 0.1)
    links: list[FrameLink] = []

    def factory(url: str, errors: list[str] | None = None) -> FrameLink:
        on_error = errors.append if errors is not None else None
        links.append(FrameLink(url, "test", on_error=on_error).start())
        return links[-1]

    yield factory
    for link in links:
        link.close()
    assert not [t for t in threading.enumerate() if t.name == "livecam-frames"]


def subscribed(sender: FrameLink, receiver: FrameLink, subject: str = SUBJECT) -> Inbox:
    """An inbox of ``receiver``'s for ``subject``, once a message has crossed (a subscription
    takes effect with the server's next round trip)."""
    inbox = Inbox()
    receiver.subscribe(subject, inbox)
    assert wait_for(lambda: sender.publish(subject, b"first") and inbox.wait(1, 0.05), 10)
    return inbox


def test_frames_of_every_size_cross_whole_in_order_with_their_headers(
    nats_server: NatsServer, make_link
) -> None:
    sender, receiver = make_link(nats_server.url), make_link(nats_server.url)
    inbox = subscribed(sender, receiver)
    # Sizes around the reader's reads and a big frame that takes several, headers or none.
    sizes = [0, 1, 2, 100, framelink.READ_SIZE - 1, framelink.READ_SIZE, framelink.READ_SIZE + 1, 900_000]
    sent = []
    for number, size in enumerate(sizes):
        payload = os.urandom(size)
        headers = {"seq": str(number), "ts": "1.5", "ph": "0"} if number % 2 else None
        assert wait_for(lambda: sender.publish(SUBJECT, payload, headers), 5)  # noqa: B023 - run at once
        sent.append((payload, headers or {}))
    assert inbox.wait(1 + len(sizes), 10)
    assert inbox.messages[1:] == sent


def test_a_frame_larger_than_the_server_takes_is_not_sent_and_the_link_goes_on(
    nats_server: NatsServer, make_link
) -> None:
    sender, receiver = make_link(nats_server.url), make_link(nats_server.url)
    inbox = subscribed(sender, receiver)
    assert not sender.publish(SUBJECT, b"x" * (2 << 20))  # nats-server's max_payload is 1 MB
    assert sender.publish(SUBJECT, b"after") and inbox.wait(2)
    assert inbox.messages[1][0] == b"after"


def test_a_cancelled_subscription_gets_nothing_more(nats_server: NatsServer, make_link) -> None:
    sender, receiver = make_link(nats_server.url), make_link(nats_server.url)
    ended = subscribed(sender, receiver)
    kept = Inbox()
    receiver.subscribe(SUBJECT, kept)
    assert wait_for(lambda: sender.publish(SUBJECT, b"both") and kept.wait(1, 0.05), 10)
    receiver.subscribe(SUBJECT, ended)()  # subscribed and cancelled: the first one stays
    cancel = receiver.subscribe(SUBJECT, ended)
    cancel()
    cancel()  # twice is once
    first = len(ended.messages)
    marker = "site1.camera.1.frame.full"
    # Subscribed after the cancellations on the same connection, so in place after them; and
    # nats-server keeps one connection's messages in order: once the marker has arrived, a
    # message published before it would have arrived too.
    markers = subscribed(sender, receiver, marker)
    sender.publish(SUBJECT, b"after")
    sender.publish(marker, b"marker")
    assert markers.wait(2)
    # One copy, the first subscription's: none from those cancelled (a "both" may still be
    # arriving from before).
    assert [m for m, _ in ended.messages[first:] if m != b"both"] == [b"after"]


def test_a_restarted_nats_server_is_rejoined_with_the_subscriptions(
    nats_server: NatsServer, make_link
) -> None:
    sender, receiver = make_link(nats_server.url), make_link(nats_server.url)
    inbox = subscribed(sender, receiver)
    nats_server.stop()
    assert wait_for(lambda: not sender.connected and not receiver.connected, 10)
    assert not sender.publish(SUBJECT, b"lost")  # never waits for a server that is gone
    nats_server.start()
    count = len(inbox.messages)
    assert wait_for(lambda: sender.publish(SUBJECT, b"again") and inbox.wait(count + 1, 0.1), 10)
    assert inbox.messages[-1][0] == b"again"


def test_a_frozen_server_never_blocks_the_publisher_and_no_frame_is_torn(
    nats_server: NatsServer, make_link
) -> None:
    sender, receiver = make_link(nats_server.url), make_link(nats_server.url)
    inbox = subscribed(sender, receiver)
    frame = os.urandom(500_000)
    assert nats_server.process is not None
    os.kill(nats_server.process.pid, signal.SIGSTOP)
    try:
        # The socket's buffers fill, then each frame is refused at once rather than waited for;
        # one taken in part is finished later, whole.
        taken = [sender.publish(SUBJECT, frame, {"seq": str(n)}) for n in range(200)]
        assert not taken[-1] and taken.count(True) < 100
    finally:
        os.kill(nats_server.process.pid, signal.SIGCONT)
    count = len(inbox.messages)
    assert wait_for(
        lambda: sender.publish(SUBJECT, b"after", {"seq": "end"}) and inbox.wait(count + 1, 0.1), 10
    )
    assert wait_for(lambda: inbox.messages[-1][1] == {"seq": "end"}, 10)
    for payload, headers in inbox.messages[1:-1]:
        assert payload == frame and headers["seq"].isdigit()


def test_over_tls(make_link, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = certificate
    server = NatsServer(None, "--tls", "--tlscert", str(cert), "--tlskey", str(key)).start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system's trust, as a user sets it up
        sender, receiver = make_link(server.url), make_link(server.url)
        inbox = subscribed(sender, receiver)
        frame = os.urandom(300_000)  # several TLS records
        assert wait_for(lambda: sender.publish(SUBJECT, frame, {"seq": "2"}) and inbox.wait(2, 0.1), 10)
        assert inbox.messages[1] == (frame, {"seq": "2"})
    finally:
        server.stop()


class FakeServer:
    """A peer on loopback that says what a test tells it to, then reads whatever comes."""

    def __init__(self, say: bytes) -> None:
        self.say = say
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.url = f"nats://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                try:
                    self.talk(conn)
                except OSError:
                    pass

    def talk(self, conn: socket.socket) -> None:
        """Say its piece, then read until the link leaves."""
        conn.sendall(self.say)
        conn.settimeout(2)
        while conn.recv(65536):
            pass

    def close(self) -> None:
        self.listener.close()


INFO = b'INFO {"server_id":"x","max_payload":1048576}\r\n'


@pytest.mark.parametrize(
    "say",
    [
        b"HTTP/1.1 200 OK\r\n\r\n",  # not NATS at all
        INFO + b"PONG\r\nMSG site1 1 not-a-number\r\n",
        INFO + b"PONG\r\nHMSG site1 1 20 10\r\n" + b"x" * 40,  # headers longer than the message
        INFO + b"PONG\r\nMSG site1 1 999999999999\r\n",  # more than the server's own limit
        INFO + b"PONG\r\n" + b"x" * 100_000,  # a line without end
        INFO + b"-ERR 'Authorization Violation'\r\n",
        INFO + b"PONG\r\nMSG site1 1 3\r\nABCDEFGH\r\n",  # a message longer than its size
        b'INFO {"max_payload":[1]}\r\nPONG\r\n',  # limits no NATS server has
        b'INFO {"max_payload":Infinity}\r\nPONG\r\n',
        b'INFO {"max_payload":1e12}\r\nPONG\r\nMSG site1 1 900000000000\r\n',  # to be held whole
        b'INFO {"a":' + b"[" * 2000 + b"]" * 2000 + b"}\r\n",  # nested past Python's limit
    ],
)
def test_a_peer_that_is_no_nats_server_is_left_and_tried_again(make_link, say: bytes) -> None:
    server = FakeServer(say)
    errors: list[str] = []
    try:
        link = make_link(server.url, errors)
        handled = Inbox()
        link.subscribe("site1", handled)
        assert wait_for(lambda: server.connections >= 3, 10)  # each time left, tried again
        assert not handled.messages
        assert all("authorization" in error for error in errors)
    finally:
        server.close()


class SilentServer(FakeServer):
    """A peer that lets the link in, starts a message, and says nothing more; it records
    what the link sends it."""

    def __init__(self) -> None:
        self.heard = bytearray()
        super().__init__(b"")

    def talk(self, conn: socket.socket) -> None:
        """Let the link in, begin a message, then only listen."""
        conn.sendall(INFO)
        conn.settimeout(5)
        while b"PING\r\n" not in conn.recv(65536):
            pass
        conn.sendall(b"PONG\r\nMSG site1 1 100\r\nabc")  # 97 bytes never come
        while data := conn.recv(65536):
            self.heard += data


def test_a_peer_silent_in_the_middle_of_a_message_is_pinged_and_left(
    make_link, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framelink, "PING_EVERY", 0.3)
    server = SilentServer()
    try:
        link = make_link(server.url)
        handled = Inbox()
        link.subscribe("site1", handled)
        # Waiting for the rest of the message, the link still pings, and leaves a silent peer.
        assert wait_for(lambda: b"PING" in server.heard and server.connections >= 2, 10)
        assert not handled.messages
    finally:
        server.close()


def stutter(server: NatsServer, times: int, stopped: float) -> None:
    """Freeze and thaw ``server`` ``times`` times, each freeze ``stopped`` seconds."""
    assert server.process is not None
    for _ in range(times):
        os.kill(server.process.pid, signal.SIGSTOP)
        threading.Event().wait(stopped)  # the freeze itself is what is tested
        os.kill(server.process.pid, signal.SIGCONT)
        threading.Event().wait(0.5)


def publish_through(sender: FrameLink, freeze: Callable[[], None]) -> list[bytes]:
    """Frames of one size published at 30 a second while ``freeze`` runs, each numbered."""
    stop, frames = threading.Event(), []

    def capture() -> None:
        while not stop.wait(1 / 30):
            frame = len(frames).to_bytes(4, "big") + os.urandom(500_000)
            if sender.publish(SUBJECT, frame):
                frames.append(frame)

    thread = threading.Thread(target=capture)
    thread.start()
    try:
        freeze()
    finally:
        stop.set()
        thread.join()
    return frames


def test_a_server_frozen_past_the_pings_gets_no_torn_stream(
    nats_server: NatsServer, make_link, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A ping falls due while the server is frozen: sent behind the frame under way, whole, even
    # past the time a connection is given to be let in.
    monkeypatch.setattr(framelink, "PING_EVERY", 1.5)
    monkeypatch.setattr(framelink, "CONNECT_TIMEOUT", 0.5)
    sender, receiver = make_link(nats_server.url), make_link(nats_server.url)
    inbox = subscribed(sender, receiver)
    frames = publish_through(sender, lambda: stutter(nats_server, 1, 2.5))
    assert wait_for(lambda: inbox.wait(len(frames) + 1, 0.1), 10)
    assert [payload for payload, _ in inbox.messages[1:]] == frames
    assert "lost" not in caplog.text  # the server never found the stream broken


def test_over_tls_a_stuttering_server_gets_every_frame_whole(
    make_link, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server = NatsServer(None, "--tls", "--tlscert", str(cert), "--tlskey", str(key)).start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        sender, receiver = make_link(server.url), make_link(server.url)
        inbox = subscribed(sender, receiver)
        # A write OpenSSL must retry, retried with another frame's bytes, splices two frames.
        frames = publish_through(sender, lambda: stutter(server, 3, 1.5))
        assert wait_for(lambda: inbox.wait(len(frames) + 1, 0.1), 10)
        assert [payload for payload, _ in inbox.messages[1:]] == frames
    finally:
        server.stop()
