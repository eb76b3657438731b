"""The stream sender over real sockets: framing, newest-frame-first, heartbeats, hang-ups; event
subscribers: every event in order, none skipped, keepalives, cut-offs."""

from __future__ import annotations

import fcntl
import io
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from helpers import Dechunked, Message, read_messages, read_parts, wait_for
from livecam import sse
from livecam.broadcast import Broadcaster
from livecam.cursor import Cursor
from livecam.events import Event, EventLog
from livecam.sender import MAX_BACKLOG, MAX_UNHEARD, Sender, Subscriber, Viewer, send_buffer_for

OPENING = b"--frame\r\n"


@pytest.fixture
def sender() -> Iterator[Sender]:
    sender = Sender(send_timeout=1.0)
    sender.sockets = []  # both ends of every pair, closed at teardown as the server would
    yield sender
    sender.stop()
    for sock in sender.sockets:
        sock.close()
    assert not [t for t in threading.enumerate() if t.name == "livecam-sender"]


def publish(broadcaster: Broadcaster, payload: bytes) -> None:
    now = time.time()
    broadcaster.publish(payload, now)


def connect(
    sender: Sender, broadcaster: Broadcaster, chunked: bool = False, **options
) -> tuple[socket.socket, Viewer]:
    """A viewer on a real socket pair: the server end is handed to the sender."""
    server, client = socket.socketpair()
    sender.sockets += [server, client]
    for name, value in options.items():
        client.setsockopt(socket.SOL_SOCKET, getattr(socket, name), value)
    server.sendall(OPENING if not chunked else b"9\r\n" + OPENING + b"\r\n")  # as gunicorn would
    viewer = Viewer(server, Cursor(broadcaster, heartbeat=0.3), chunked, lambda size, latency, count: None)
    sender.add(viewer)
    client.settimeout(10)
    return client, viewer


def test_each_frame_once_in_raw_framing(sender: Sender) -> None:
    broadcaster = Broadcaster()
    client, viewer = connect(sender, broadcaster)
    parts = read_parts(client.makefile("rb"))
    for payload in (b"one", b"two", b"three"):
        publish(broadcaster, payload)
        assert next(parts).body == payload
    client.close()


def test_chunked_framing_for_http_11(sender: Sender) -> None:
    broadcaster = Broadcaster()
    client, _ = connect(sender, broadcaster, chunked=True)
    parts = read_parts(io.BufferedReader(Dechunked(client)))
    for payload in (b"a" * 70000, b"b" * 10):
        publish(broadcaster, payload)
        assert next(parts).body == payload
    client.close()


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_a_slow_viewer_gets_the_newest_frame_not_a_backlog(sender: Sender, tcp: bool) -> None:
    broadcaster = Broadcaster()
    # Over TCP the sender bounds the socket's send buffer: the guarantee holds all the same.
    client, viewer = tcp_viewer(sender, broadcaster) if tcp else connect(sender, broadcaster, SO_RCVBUF=4096)
    client.settimeout(10)
    payloads = [bytes([n]) * 3_000_000 for n in range(10)]
    publish(broadcaster, payloads[0])  # more than the socket buffers hold: it waits half sent
    assert wait_for(lambda: viewer.pending is not None)
    for payload in payloads[1:]:  # while nobody reads
        publish(broadcaster, payload)
    parts = read_parts(client.makefile("rb"))
    first = next(parts).body
    second = next(parts).body
    assert first == payloads[0]  # the part that was under way is completed
    assert second == payloads[-1]  # then straight to the newest
    client.close()


def test_heartbeat_resends_the_last_frame(sender: Sender) -> None:
    broadcaster = Broadcaster()
    client, _ = connect(sender, broadcaster)
    parts = read_parts(client.makefile("rb"))
    publish(broadcaster, b"still")
    assert [next(parts).body for _ in range(2)] == [b"still", b"still"]
    client.close()


def test_hang_up_releases_the_viewer_at_the_next_frames(sender: Sender) -> None:
    broadcaster = Broadcaster()
    client, viewer = connect(sender, broadcaster)
    client.close()
    for number in range(50):
        publish(broadcaster, b"frame %d" % number)
        if viewer.done.wait(0.1):
            break
    assert viewer.done.is_set()


def test_a_half_closed_client_keeps_its_stream(sender: Sender) -> None:
    broadcaster = Broadcaster()
    client, viewer = connect(sender, broadcaster)
    client.shutdown(socket.SHUT_WR)  # the client has said all it will say, and still reads
    parts = read_parts(client.makefile("rb"))
    for payload in (b"one", b"two", b"three"):
        publish(broadcaster, payload)
        assert next(parts).body == payload
    assert not viewer.done.is_set()
    client.close()


def test_bytes_sent_on_a_stream_are_left_for_the_server(sender: Sender) -> None:
    broadcaster = Broadcaster()
    client, viewer = connect(sender, broadcaster)
    client.sendall(b"GET /next HTTP/1.1\r\n\r\n")  # pipelined behind the stream request
    parts = read_parts(client.makefile("rb"))
    publish(broadcaster, b"one")
    assert next(parts).body == b"one"
    assert wait_for(lambda: not viewer.reading)
    publish(broadcaster, b"two")
    assert next(parts).body == b"two"
    # Not swallowed: the bytes are still on the socket for gunicorn, which closes the connection.
    assert viewer.sock.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT).startswith(b"GET /next")
    client.close()


def test_stuck_viewer_is_dropped_after_the_send_timeout(sender: Sender) -> None:
    broadcaster = Broadcaster()
    client, viewer = connect(sender, broadcaster, SO_RCVBUF=4096)
    for n in range(5):
        publish(broadcaster, bytes([n]) * 500_000)
    assert viewer.done.wait(10)  # the client never read
    # Cut off mid-part: the connection is shut, so the server's closing write fails at once
    # instead of blocking on a client that reads nothing.
    with pytest.raises(OSError):
        viewer.sock.sendall(b"0\r\n\r\n")
    client.close()


def test_stopped_camera_ends_its_streams(sender: Sender) -> None:
    broadcaster = Broadcaster()
    client, viewer = connect(sender, broadcaster)
    publish(broadcaster, b"last")
    next(read_parts(client.makefile("rb")))
    broadcaster.close()
    assert viewer.done.wait(5)
    client.close()


def test_stopping_the_sender_lets_every_viewer_go(sender: Sender) -> None:
    broadcaster = Broadcaster()
    clients_viewers = [connect(sender, broadcaster) for _ in range(3)]
    sender.stop()
    assert all(viewer.done.wait(5) for _, viewer in clients_viewers)
    late_client, late = connect(sender, broadcaster)
    assert late.done.is_set()  # nothing is taken after a stop
    sender.wake()  # a camera publishing after the stop writes to no stale descriptor
    for client, _ in [*clients_viewers, (late_client, late)]:
        client.close()


def test_the_sender_stops_listening_to_a_camera_when_its_last_viewer_leaves(sender: Sender) -> None:
    door, yard = Broadcaster(), Broadcaster()
    (first, first_viewer), (second, second_viewer) = connect(sender, door), connect(sender, door)
    other, _ = connect(sender, yard)
    assert wait_for(lambda: len(door._listeners) == 1 and len(yard._listeners) == 1)  # one per camera
    for client, viewer in ((first, first_viewer), (second, second_viewer)):
        client.close()
        for number in range(50):  # the hang-up is noticed at a write
            publish(door, b"frame %d" % number)
            if viewer.done.wait(0.1):
                break
        assert viewer.done.is_set()
        # Until the last viewer leaves, the sender still wakes for the camera's frames.
        assert len(door._listeners) == (0 if viewer is second_viewer else 1)
    assert len(yard._listeners) == 1  # the other camera's viewer still watches
    publish(yard, b"still here")
    assert next(read_parts(other.makefile("rb"))).body == b"still here"
    reader, viewer = connect(sender, door)  # a new viewer: listening again
    assert wait_for(lambda: len(door._listeners) == 1)
    publish(door, b"again")
    parts = read_parts(reader.makefile("rb"))
    assert b"again" in (next(parts).body, next(parts).body)  # after the current frame, if fresh
    for client in (other, reader):
        client.close()


def tcp_viewer(sender: Sender, broadcaster: Broadcaster, owned: bool = False) -> tuple[socket.socket, Viewer]:
    """A viewer on a real loopback TCP connection whose client keeps a tiny window; with
    ``owned`` the sender owns the server's socket (livecam's worker lets go of it)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    sender.sockets += [server, client]
    server.sendall(OPENING)  # as gunicorn would
    ended = (lambda: None) if owned else None
    viewer = Viewer(server, Cursor(broadcaster), False, lambda size, latency, count: None, ended=ended)
    sender.add(viewer)
    return client, viewer


def fill(broadcaster: Broadcaster, viewer: Viewer, part: bytes) -> None:
    """Publish frames until the viewer's socket takes no more and a part waits half sent."""
    for _ in range(200):
        publish(broadcaster, part)
        if wait_for(lambda: viewer.pending is not None, timeout=0.1, every=0.01):
            return
    raise AssertionError("the socket never filled")


def queued(sock: socket.socket) -> int:
    """Bytes in a TCP socket's send queue, not yet acknowledged by the peer (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def kernel_keeps(ports: tuple[int, int]) -> bool:
    """Whether the kernel keeps a TCP socket of local and remote ``ports`` (say in FIN-WAIT-1)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if tuple(int(address.rsplit(":", 1)[1], 16) for address in fields[1:3]) == ports:
            return True
    return False


def test_a_viewer_that_never_reads_costs_a_few_parts_of_send_buffer(sender: Sender) -> None:
    broadcaster = Broadcaster()
    part = bytes(100_000)
    client, viewer = tcp_viewer(sender, broadcaster, owned=False)
    fill(broadcaster, viewer, part)
    bound = send_buffer_for(len(broadcaster.latest.part))  # the JPEG with its part's headers
    # Linux reports (and allows for) twice the size asked for, its bookkeeping included.
    assert viewer.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * bound
    assert len(part) < queued(viewer.sock) <= 2 * bound  # autotuned, it grows to megabytes
    client.close()


@pytest.mark.parametrize("owned", [True, False])
def test_a_viewer_cut_off_for_not_reading_is_reset_freeing_its_buffer(sender: Sender, owned: bool) -> None:
    broadcaster = Broadcaster()
    client, viewer = tcp_viewer(sender, broadcaster, owned)
    server_end = (viewer.sock.getsockname()[1], client.getsockname()[1])
    fill(broadcaster, viewer, bytes(100_000))
    assert kernel_keeps(server_end)
    assert viewer.done.wait(10)  # the send timeout (1 s) cut it off
    if not owned:
        viewer.sock.close()  # what gunicorn's thread does with the socket it gets back
    # Reset, not closed with a FIN behind the unsent rest: no socket lingers in FIN-WAIT-1.
    assert not kernel_keeps(server_end)
    with pytest.raises(ConnectionResetError):
        while client.recv(65536):  # what was delivered before the reset, then the reset
            pass
    client.close()


# -- event subscribers ----------------------------------------------------------------------


def frame_all(event: Event) -> bytes:
    return sse.message(event.type, event.id, event.json())


def subscribe(
    sender: Sender,
    log: EventLog,
    since: int = 0,
    chunked: bool = False,
    tcp: bool = False,
    frame: Callable[[Event], bytes | None] = frame_all,
) -> tuple[socket.socket, Subscriber]:
    """A subscriber whose socket the sender owns, on a socket pair or (``tcp``) a loopback TCP
    connection whose client keeps a tiny window."""
    if tcp:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(listener.getsockname())
            server, _ = listener.accept()
    else:
        server, client = socket.socketpair()
    sender.sockets += [server, client]
    server.sendall(sse.OPENING if not chunked else b"D\r\n" + sse.OPENING + b"\r\n")  # as gunicorn would
    assert sender.reserve(subscriber=True)
    subscriber = Subscriber(server, log, since, frame, chunked, ended=lambda: None)
    sender.add(subscriber)
    client.settimeout(10)
    return client, subscriber


def ids(messages: Iterator[Message], count: int) -> list[int]:
    """The ids of the next ``count`` events, after the opening retry hint if it comes."""
    found = []
    for message in messages:
        if "id" in message.fields:
            found.append(int(message.fields["id"]))
            if len(found) == count:
                break
    return found


def add(log: EventLog, number: int, camera: int = 0, pad: int = 0) -> Event:
    return log.add("camera.state", camera, "Door", state="on", number=number, pad="x" * pad)


def test_a_subscriber_gets_the_kept_events_after_its_id_then_each_new_one_in_order(sender: Sender) -> None:
    log = EventLog()
    before = [add(log, n) for n in range(3)]
    client, subscriber = subscribe(sender, log, since=before[0].id)
    messages = read_messages(client.makefile("rb"))
    assert next(messages).fields == {"retry": str(sse.RETRY_MS)}
    assert ids(messages, 2) == [e.id for e in before[1:]]  # the missed ones, oldest first
    later = [add(log, n) for n in range(3, 6)]
    received = [next(messages) for _ in range(3)]
    assert [int(m.fields["id"]) for m in received] == [e.id for e in later]
    assert [m.fields["event"] for m in received] == ["camera.state"] * 3
    assert [m.json["number"] for m in received] == [3, 4, 5]
    assert sender.census() == (0, 1)
    client.close()


def test_chunked_events_for_http_11_and_a_clean_end_when_the_log_closes(sender: Sender) -> None:
    log = EventLog()
    client, subscriber = subscribe(sender, log, chunked=True)
    messages = read_messages(io.BufferedReader(Dechunked(client)))
    events = [add(log, n) for n in range(2)]
    assert ids(messages, 2) == [e.id for e in events]
    log.close()  # the app is stopping
    assert subscriber.done.wait(5)
    assert client.recv(100).endswith(b"0\r\n\r\n")  # the last chunk: the stream ended cleanly
    assert sender.census() == (0, 0)
    client.close()


def test_a_slow_subscriber_gets_every_event_batched_none_skipped(sender: Sender) -> None:
    log = EventLog()
    client, subscriber = subscribe(sender, log, tcp=True)
    events = [add(log, n, pad=400) for n in range(400)]  # while nobody reads: ~200 KB
    assert wait_for(lambda: subscriber.pending is not None)  # the socket is full: some wait
    assert ids(read_messages(client.makefile("rb")), len(events)) == [e.id for e in events]
    assert not subscriber.done.is_set()
    client.close()


def test_a_subscriber_joining_while_events_pour_in_gets_each_exactly_once(sender: Sender) -> None:
    log = EventLog()
    pouring = threading.Event()
    added: list[Event] = []

    def pour() -> None:
        # At most a thousand (about 130 KB): however slow the machine, no backlog bound is reached.
        while not pouring.is_set() and len(added) < 1000:
            added.append(add(log, len(added)))
            time.sleep(0.0005)

    writer = threading.Thread(target=pour)
    writer.start()
    try:
        subscribers = []
        for _ in range(40):  # each joins at another moment of the flow
            assert wait_for(lambda: len(added) > 5, timeout=5)
            subscribers.append((added[-3].id, *subscribe(sender, log, since=added[-3].id)))
            time.sleep(0.01)
    finally:
        pouring.set()
        writer.join(5)
    for since, client, _ in subscribers:
        expected = [e.id for e in added if e.id > since]
        assert ids(read_messages(client.makefile("rb")), len(expected)) == expected
        client.close()


def test_a_subscriber_that_stops_reading_is_cut_off_past_the_backlog_bound(sender: Sender) -> None:
    sender._send_timeout = 60  # only the bound can cut it off here
    log = EventLog()
    client, subscriber = subscribe(sender, log, tcp=True)
    server_end = (subscriber.sock.getsockname()[1], client.getsockname()[1])
    for n in range(1000):  # about 1 MB of events; the client reads none
        add(log, n, pad=1000)
        if subscriber.done.is_set():
            break
    assert subscriber.done.wait(5)
    assert sender.census() == (0, 0)
    # Reset, not closed behind a full buffer: no socket lingers in FIN-WAIT-1.
    assert not kernel_keeps(server_end)
    client.close()


def test_a_subscriber_whose_events_stay_stuck_is_cut_off_after_the_send_timeout(sender: Sender) -> None:
    log = EventLog()
    client, subscriber = subscribe(sender, log, tcp=True)
    for n in range(200):  # fills the kernel's buffers; 200 KB in all can never pass the backlog bound
        add(log, n, pad=1000)
    assert wait_for(lambda: subscriber.pending is not None)
    assert subscriber.backlog < MAX_BACKLOG
    assert subscriber.done.wait(10)  # the send timeout (1 s) cut it off
    client.close()


def test_a_quiet_stream_gets_a_keepalive_comment(sender: Sender) -> None:
    sender._keepalive = 0.3
    client, _ = subscribe(sender, EventLog())
    messages = read_messages(client.makefile("rb"))
    assert next(messages).fields == {"retry": str(sse.RETRY_MS)}
    started = time.monotonic()
    assert next(messages).comments == ["keepalive"]
    assert 0.2 < time.monotonic() - started < 2
    client.close()


def test_a_subscriber_that_closes_its_side_is_let_go_at_once(sender: Sender) -> None:
    log = EventLog()
    client, subscriber = subscribe(sender, log)
    client.shutdown(socket.SHUT_WR)
    assert subscriber.done.wait(2)  # no event, no keepalive needed to notice it
    assert sender.census() == (0, 0)
    client.close()


def test_a_subscriber_that_sent_bytes_is_still_let_go_when_it_closes(sender: Sender) -> None:
    log = EventLog()
    client, subscriber = subscribe(sender, log)
    reader = client.makefile("rb")
    messages = read_messages(reader)
    client.sendall(b"GET /next HTTP/1.1\r\n\r\n")  # pipelined behind the stream request: for nobody
    event = add(log, 0)
    assert ids(messages, 1) == [event.id] and sender.census() == (0, 1)  # the stream goes on
    reader.close()
    client.close()
    assert subscriber.done.wait(2)  # noticed as it closed, not at a keepalive 15 s on
    assert sender.census() == (0, 0)


def test_a_subscriber_that_keeps_talking_is_no_longer_read_and_still_gets_its_events(sender: Sender) -> None:
    log = EventLog()
    client, subscriber = subscribe(sender, log)
    reader = client.makefile("rb")
    messages = read_messages(reader)
    client.sendall(b"x" * (MAX_UNHEARD + 1))
    assert wait_for(lambda: not subscriber.reading)  # what it says no longer wakes the loop
    event = add(log, 0)
    assert ids(messages, 1) == [event.id] and not subscriber.done.is_set()
    reader.close()
    client.close()


def ask_alive(sender: Sender, asking: threading.Event, stop: threading.Event, dead: list[bool]) -> None:
    """Ask whether ``sender`` is alive until ``stop``, noting in ``dead`` if it once was not."""
    asking.set()
    while not stop.is_set() and not dead:
        if not sender.alive:
            dead.append(True)


def test_the_sender_counts_as_alive_while_its_loop_starts(sender: Sender) -> None:
    # A request thread asks ``alive`` (without the lock) while another's hand-over starts the
    # loop: a loop not yet running must not read as one that died, or that request's stream
    # is written by a thread of its own, which notices a closed subscriber only at a keepalive.
    for _ in range(20):  # the window is short: look at many starts
        starting = Sender(send_timeout=1.0)
        server, client = socket.socketpair()
        sender.sockets += [server, client]
        asking, stop = threading.Event(), threading.Event()
        dead: list[bool] = []
        watcher = threading.Thread(target=ask_alive, args=(starting, asking, stop, dead))
        watcher.start()
        asking.wait(10)
        assert starting.reserve(subscriber=True)
        starting.add(Subscriber(server, EventLog(), 0, frame_all, False, ended=lambda: None))
        stop.set()
        watcher.join(10)
        starting.stop()
        assert not dead, "the sender read as not alive while its loop started"


def test_the_filter_and_the_last_subscriber_leaving_stops_the_listening(sender: Sender) -> None:
    log = EventLog()
    door, yard = add(log, 0, camera=1), add(log, 1, camera=2)
    only_yard = partial(lambda event, camera: frame_all(event) if event.camera == camera else None, camera=2)
    client, subscriber = subscribe(sender, log, frame=only_yard)
    reader = client.makefile("rb")
    messages = read_messages(reader)
    assert ids(messages, 1) == [yard.id] and door.id < yard.id
    assert wait_for(lambda: len(log._listeners) == 1)
    add(log, 2, camera=1)
    last = add(log, 3, camera=2)
    assert ids(messages, 1) == [last.id]
    reader.close()
    client.close()  # no event for it since: the hang-up itself is noticed
    assert subscriber.done.wait(5)
    assert wait_for(lambda: log._listeners == [])  # a log nobody follows never wakes the loop


def test_a_framing_failure_ends_that_stream_only(sender: Sender) -> None:
    log = EventLog()
    broadcaster = Broadcaster()
    viewer_client, _ = connect(sender, broadcaster)

    def broken(event: Event) -> bytes:
        raise TypeError("not JSON")

    client, subscriber = subscribe(sender, log, frame=broken)
    add(log, 0)
    assert subscriber.done.wait(5)
    publish(broadcaster, b"still")
    assert next(read_parts(viewer_client.makefile("rb"))).body == b"still"  # the loop lives on
    for sock in (client, viewer_client):
        sock.close()
