"""The thread-per-viewer delivery path, and the choice of path, for video and event streams."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator

from helpers import ChunkReader, Dechunked, read_messages, read_parts, wait_for
from livecam import sse
from livecam.broadcast import Broadcaster
from livecam.events import Event, EventLog
from livecam.mjpeg import OPENING
from livecam.registry import Slots
from livecam.sender import Sender
from livecam.streams import (
    DETACH,
    Track,
    events_by_thread,
    headers,
    multiplexed,
    open_events,
    open_multiplexed,
    open_stream,
    written_by_thread,
)


def publish(broadcaster: Broadcaster, jpeg: bytes, timestamp: float = 1700000000.25) -> None:
    broadcaster.publish(jpeg, timestamp)


def stream(broadcaster: Broadcaster, heartbeat: float = 1.0):
    return written_by_thread(broadcaster, heartbeat)


def test_stream_sends_each_frame_once_then_a_heartbeat() -> None:
    broadcaster = Broadcaster()
    publish(broadcaster, b"first")
    body = stream(broadcaster, heartbeat=0.05)
    parts = read_parts(ChunkReader(body))
    # The first frame is old: it is not sent at once, but after one heartbeat interval.
    assert next(parts).body == b"first"
    publish(broadcaster, b"second")
    assert next(parts).body == b"second"
    assert next(parts).body == b"second"  # heartbeat: nothing new for an interval
    body.close()


def test_stream_sends_a_fresh_frame_at_once() -> None:
    broadcaster = Broadcaster()
    publish(broadcaster, b"now", time.time())
    body = stream(broadcaster, heartbeat=30)
    assert next(body) == b"--frame\r\n"
    assert next(body).endswith(b"now\r\n--frame\r\n")
    body.close()


def test_stream_ends_when_camera_stops_and_viewer_count_returns() -> None:
    broadcaster = Broadcaster()
    body = stream(broadcaster, heartbeat=30)
    assert next(body) == b"--frame\r\n"
    assert broadcaster.viewers == 1
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(body))
    reader.start()
    broadcaster.close()
    reader.join(5)
    assert not reader.is_alive()
    assert chunks == []
    assert broadcaster.viewers == 0


def test_closing_the_generator_frees_the_viewer() -> None:
    broadcaster = Broadcaster()
    body = stream(broadcaster)
    next(body)
    assert broadcaster.viewers == 1
    body.close()  # what the server does when a write to the client fails
    assert broadcaster.viewers == 0


def test_the_development_server_and_test_client_get_the_thread_path_holding_a_slot() -> None:
    sender, slots = Sender(send_timeout=5), Slots(1)
    broadcaster = Broadcaster()
    frames = open_stream(broadcaster, {"SERVER_PROTOCOL": "HTTP/1.1"}, sender, slots, 5)
    assert next(frames) == OPENING and slots.taken == 1 and broadcaster.viewers == 1
    assert open_stream(broadcaster, {"SERVER_PROTOCOL": "HTTP/1.1"}, sender, slots, 5) is None  # full
    frames.close()
    assert slots.taken == 0 and broadcaster.viewers == 0
    sender.stop()


def test_a_connection_the_worker_lets_go_of_is_the_sender_s_alone() -> None:
    server_side, client = socket.socketpair()
    handed: list[socket.socket] = []

    def detach() -> socket.socket:  # what livecam's worker offers: a descriptor of one's own
        handed.append(socket.socket(fileno=os.dup(server_side.fileno())))
        return handed[-1]

    environ = {"SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": server_side, DETACH: detach}
    sender, slots, broadcaster = Sender(send_timeout=5), Slots(1), Broadcaster()
    frames = open_stream(broadcaster, environ, sender, slots, 5)
    assert next(frames) == OPENING  # the server writes it, then asks for more:
    assert list(frames) == []  # the body ends: the request's thread is free
    server_side.close()  # as gunicorn closes its own descriptor
    assert slots.taken == 0 and sender.owned == 1 and broadcaster.viewers == 1
    publish(broadcaster, b"jpeg", time.time())
    client.settimeout(5)
    received = b""
    while b"jpeg" not in received:
        received += client.recv(65536)
    broadcaster.close()  # the camera stops: the sender ends the body and closes the connection
    while chunk := client.recv(65536):
        received += chunk
    assert received.endswith(b"\r\n0\r\n\r\n")  # the chunked body's clean end
    assert wait_for(lambda: sender.owned == 0 and broadcaster.viewers == 0)
    assert handed[0].fileno() == -1  # closed
    client.close()
    sender.stop()


def test_a_stream_closes_its_http1_connection() -> None:
    assert headers({"SERVER_PROTOCOL": "HTTP/1.1"})["Connection"] == "close"
    assert "Connection" not in headers({"SERVER_PROTOCOL": "HTTP/2"})  # no such header in HTTP/2
    assert headers({})["X-Accel-Buffering"] == "no"


def labelled(body) -> Iterator[tuple[str, str, bytes]]:
    """(camera, profile, JPEG) of each part of a multiplexed body."""
    for part in read_parts(ChunkReader(body)):
        yield part.headers["x-camera"], part.headers["x-profile"], part.body


def test_a_multiplexed_stream_labels_each_camera_s_frames_and_sends_each_once() -> None:
    door, yard = Broadcaster(), Broadcaster()
    sent: list[int] = []
    tracks = [
        Track(1, "preview", door, lambda size, latency, count=1: sent.append(size)),
        Track(4, "full", yard),
    ]
    body = multiplexed(tracks, heartbeat=30)
    parts = labelled(body)
    publish(door, b"d1", time.time())  # fresh: sent at once
    assert next(parts) == ("1", "preview", b"d1")
    publish(yard, b"y1", time.time())
    assert next(parts) == ("4", "full", b"y1")
    publish(door, b"d2", time.time())
    publish(door, b"d3", time.time())  # the newest only, never a backlog
    publish(yard, b"y2", time.time())
    assert sorted([next(parts), next(parts)]) == [("1", "preview", b"d3"), ("4", "full", b"y2")]
    assert door.viewers == yard.viewers == 1 and len(sent) == 2
    door.close()  # a camera that stops leaves the stream; the others go on
    publish(yard, b"y3", time.time())
    assert next(parts) == ("4", "full", b"y3")
    yard.close()  # the last one: the stream ends
    assert list(parts) == []
    assert door.viewers == yard.viewers == 0
    assert door._listeners == yard._listeners == []  # nothing left behind


def test_a_multiplexed_stream_resends_each_camera_s_last_frame_after_a_quiet_heartbeat() -> None:
    door, yard = Broadcaster(), Broadcaster()
    body = multiplexed([Track(1, "preview", door), Track(2, "preview", yard)], heartbeat=0.1)
    parts = labelled(body)
    publish(door, b"d1", time.time())
    assert next(parts) == ("1", "preview", b"d1")
    for _ in range(3):  # the door stays quiet while the yard streams: the door's frame again
        publish(yard, b"y", time.time())
        received = [next(parts) for _ in range(2)]
        if ("1", "preview", b"d1") in received:
            break
    else:
        raise AssertionError("the quiet camera's frame was never sent again")
    body.close()
    assert door.viewers == yard.viewers == 0 and door._listeners == []


def detaching(server_side: socket.socket) -> dict:
    """A request's environ under livecam's worker, which offers to let go of the connection."""

    def detach() -> socket.socket:
        return socket.socket(fileno=os.dup(server_side.fileno()))

    return {"SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": server_side, DETACH: detach}


def test_a_stream_is_refused_when_its_answer_is_decided_never_after() -> None:
    # Two requests decided before either body takes its first step, as two threads may be:
    # the second finds no place left then, not after its 200 went out.
    broadcaster, slots = Broadcaster(), Slots(1)
    sender = Sender(send_timeout=5, capacity=1)
    dev = {"SERVER_PROTOCOL": "HTTP/1.1"}
    first = open_stream(broadcaster, dev, sender, slots, 5)
    assert first is not None and slots.taken == 1
    assert open_stream(broadcaster, dev, sender, slots, 5) is None
    assert open_multiplexed([Track(0, "full", broadcaster)], dev, slots, 5) is None
    pairs = [socket.socketpair() for _ in range(2)]
    handed = open_stream(broadcaster, detaching(pairs[0][0]), sender, slots, 5)
    assert handed is not None and sender.owned == 1  # the sender's place is taken with the answer
    assert open_stream(broadcaster, detaching(pairs[1][0]), sender, slots, 5) is None
    for body in (first, handed):
        body.close()  # the server closes a body it never started: both places come back
    assert slots.taken == 0 and sender.owned == 0 and broadcaster.viewers == 0
    for pair in pairs:
        for sock in pair:
            sock.close()
    sender.stop()


def test_a_body_dropped_unread_gives_its_place_back() -> None:
    # What a failing hook between the view and the server leaves: a response nobody closes.
    broadcaster, slots, sender = Broadcaster(), Slots(2), Sender(send_timeout=5)
    dev = {"SERVER_PROTOCOL": "HTTP/1.1"}
    bodies = [open_stream(broadcaster, dev, sender, slots, 5) for _ in range(2)]
    assert slots.taken == 2
    next(bodies[1])  # one started, one not
    bodies.clear()
    assert slots.taken == 0 and broadcaster.viewers == 0
    sender.stop()


def test_a_multiplexed_stream_holds_its_slot_until_it_ends() -> None:
    broadcaster, slots = Broadcaster(), Slots(1)
    body = open_multiplexed([Track(0, "full", broadcaster)], {"SERVER_PROTOCOL": "HTTP/1.1"}, slots, 5)
    assert next(body) == OPENING and slots.taken == 1
    broadcaster.close()
    assert list(body) == [] and slots.taken == 0


# -- event streams ------------------------------------------------------------------------


def every_event(event: Event) -> bytes:
    return sse.message(event.type, event.id, event.json())


def test_an_event_stream_written_by_a_thread_replays_then_follows_then_ends_with_the_log() -> None:
    log = EventLog()
    first, second = (log.add("camera.state", 0, "Door", state=s) for s in ("starting", "on"))
    body = events_by_thread(log, first.id, every_event, keepalive=0.2)
    messages = read_messages(ChunkReader(body))
    assert next(messages).fields == {"retry": str(sse.RETRY_MS)}
    assert next(messages).fields["id"] == str(second.id)  # the kept one after first
    assert next(messages).comments == ["keepalive"]  # nothing new for a while
    third = log.add("camera.state", 0, "Door", state="off")
    assert next(messages).json["id"] == third.id
    ended = threading.Thread(target=lambda: list(messages))
    ended.start()
    log.close()  # the app stops: the stream ends, whatever it waited for
    ended.join(5)
    assert not ended.is_alive()


def test_an_event_stream_on_the_thread_path_holds_a_place_counted_apart() -> None:
    sender, slots, log = Sender(send_timeout=5), Slots(2), EventLog()
    dev = {"SERVER_PROTOCOL": "HTTP/1.1"}
    body = open_events(log, 0, every_event, dev, sender, slots, 5)
    assert next(body) == sse.OPENING
    assert slots.census() == (0, 1)  # an event stream, not a video stream
    video = open_stream(Broadcaster(), dev, sender, slots, 5)
    assert video is not None and slots.census() == (1, 1)  # the threads' places are shared
    assert open_events(log, 0, every_event, dev, sender, slots, 5) is None  # none left: a 503
    body.close()
    video.close()
    assert slots.taken == 0 and slots.census() == (0, 0)
    sender.stop()


def test_an_event_stream_the_worker_lets_go_of_is_the_sender_s_alone() -> None:
    server_side, client = socket.socketpair()
    sender, slots, log = Sender(send_timeout=5), Slots(1), EventLog()
    kept = log.add("camera.state", 3, "Door", state="on")
    body = open_events(log, 0, every_event, detaching(server_side), sender, slots, 5)
    assert sender.census() == (0, 1)  # the sender's place is taken with the answer
    assert next(body) == sse.OPENING  # the server writes it, then asks for more:
    assert list(body) == []  # the body ends: the request's thread is free
    server_side.close()  # as gunicorn closes its own descriptor
    assert slots.taken == 0
    client.settimeout(5)
    messages = read_messages(io.BufferedReader(Dechunked(client)))
    assert next(messages).json["id"] == kept.id  # replayed by the sender
    new = log.add("camera.state", 3, "Door", state="off")
    assert next(messages).json["id"] == new.id
    log.close()  # livecam stops: the sender ends the body at its next look
    assert list(messages) == []
    assert wait_for(lambda: sender.census() == (0, 0))
    client.close()
    sender.stop()
