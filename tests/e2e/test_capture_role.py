"""``livecam capture`` against a real nats-server: frames while wanted, state, control, claims."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from helpers import decode, wait_for
from livecam import wire
from livecam.bus import FrameBus
from nats_server import Inbox, NatsServer


@pytest.fixture
def bus(nats_server: NatsServer) -> Iterator[FrameBus]:
    """A web worker's view of the bus."""
    bus = FrameBus(nats_server.url).start()
    assert bus.wait_connected(5)
    yield bus
    bus.close()


class Interest:
    """A web worker saying it wants a camera's frames, every half second while it does."""

    def __init__(
        self, bus: FrameBus, cam_id: int, viewers: int, profiles: dict[str, int] | None = None
    ) -> None:
        interest = wire.Interest("test-worker", profiles if profiles is not None else {"full": viewers})
        self._payload = wire.encode_interest(interest)
        self._subject = bus.subject("camera", cam_id, "interest")
        self._bus = bus
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._bus.publish(self._subject, self._payload)
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def state_of(states: Inbox) -> dict:
    return json.loads(states.messages[-1][0])


def test_the_capture_role_publishes_frames_only_while_wanted(start_capture, bus: FrameBus) -> None:
    # An interest kept 2 s rather than 3 (still four of the test's renewals) and a record every
    # half second rather than every second (tests/shortened.py): the waits for the interest to
    # expire and for the next records are shorter.
    capture = start_capture(
        shortened={"livecam.publisher.INTEREST_TTL": 2.0, "livecam.publisher.STATE_EVERY": 0.5}
    )
    states, frames = Inbox(), Inbox()
    bus.subscribe(bus.subject("camera", 0, "state"), states)
    bus.subscribe(bus.subject("camera", 0, "frame", "full"), frames)
    assert states.wait(1, 15), capture.stdout.peek(4000) if capture.poll() is None else capture.stdout.read()
    assert state_of(states)["state"] == "off" and state_of(states)["owner"].endswith(f":{capture.pid}")

    started = json.loads(bus.request(bus.subject("camera", 0, "control"), b"start", timeout=5))
    assert started["state"] in ("starting", "on")
    assert wait_for(lambda: state_of(states)["state"] == "on")
    assert frames.messages == [] and state_of(states)["encoded"] == 0  # nobody wants frames yet

    interest = Interest(bus, 0, viewers=3)
    try:
        assert frames.wait(21, 10)  # a second's worth at 20 fps
        seqs = [int(headers["seq"]) for _, headers in frames.messages]
        assert seqs == sorted(set(seqs))  # each frame once, in order
        assert decode(frames.messages[-1][0]).shape == (120, 160, 3)
        assert wait_for(lambda: state_of(states)["viewers"] == 3)
        latest = bus.request(bus.subject("camera", 0, "latest"), b"", timeout=2)
        head, _, jpeg = latest.partition(b"\n")
        assert json.loads(head)["ph"] == "0" and decode(jpeg).shape == (120, 160, 3)
    finally:
        interest.stop()
    # The interest expires: frames stop, and so does encoding.
    assert wait_for(lambda: state_of(states)["viewers"] == 0, timeout=10)
    count = len(frames.messages)
    assert not frames.wait(count + 5, 1.5)
    encoded = state_of(states)["encoded"]
    assert states.wait(len(states.messages) + 2, 5) and state_of(states)["encoded"] == encoded

    stopped = json.loads(bus.request(bus.subject("camera", 0, "control"), b"stop", timeout=5))
    assert stopped["state"] == "off"
    assert json.loads(bus.request(bus.subject("camera", 0, "control"), b"jump", timeout=5))["error"]


def test_each_profile_is_published_on_its_own_subject_only_while_wanted(start_capture, bus: FrameBus) -> None:
    start_capture("0=testsrc:640x480@20")
    states, full, preview = Inbox(), Inbox(), Inbox()
    bus.subscribe(bus.subject("camera", 0, "state"), states)
    bus.subscribe(bus.subject("camera", 0, "frame", "full"), full)
    bus.subscribe(bus.subject("camera", 0, "frame", "preview"), preview)
    assert states.wait(1, 15)
    bus.request(bus.subject("camera", 0, "control"), b"start", timeout=5)
    assert wait_for(lambda: state_of(states)["state"] == "on")

    interest = Interest(bus, 0, viewers=2, profiles={"preview": 2})
    try:
        assert preview.wait(1, 10)
        first = len(preview.messages)
        started = time.monotonic()
        assert preview.wait(first + 10, 5)
        rate = (len(preview.messages) - first) / (time.monotonic() - started)
        assert 3.5 <= rate <= 6.5  # the preview's 5 fps cap, not the camera's 20
        assert decode(preview.messages[-1][0]).shape == (240, 320, 3)
        assert full.messages == []  # nobody wants the full stream: none published, none encoded
        record = state_of(states)
        assert record["profiles"]["preview"]["viewers"] == 2 and record["profiles"]["full"]["viewers"] == 0
        assert record["profiles"]["full"]["encoded"] == 0
        latest = bus.request(bus.subject("camera", 0, "latest"), b"preview", timeout=2)
        assert decode(latest.partition(b"\n")[2]).shape == (240, 320, 3)
    finally:
        interest.stop()


def test_a_camera_captured_twice_is_refused(start_capture, bus: FrameBus) -> None:
    first = start_capture()
    owner = bus.subject("camera", 1, "owner")
    assert wait_for(lambda: bus.request(owner, b"", timeout=0.3) is not None, timeout=15)
    second = start_capture("1=testsrc:64x48@10")
    assert second.wait(20) == 2
    assert b"camera 1 is already captured by" in second.stdout.read()
    assert first.poll() is None


def test_sigterm_stops_the_capture_role_cleanly(start_capture, bus: FrameBus) -> None:
    capture = start_capture()
    states = Inbox()
    bus.subscribe(bus.subject("camera", 1, "state"), states)
    assert states.wait(1, 15)
    bus.request(bus.subject("camera", 1, "control"), b"start", timeout=5)
    started = time.monotonic()
    capture.send_signal(signal.SIGTERM)
    assert capture.wait(10) == 0
    assert time.monotonic() - started < 6
    assert b"stopped 1 camera(s)" in capture.stdout.read()
