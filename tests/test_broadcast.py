"""The broadcaster: newest frame by sequence number, no duplicates, prompt close."""

from __future__ import annotations

import logging
import threading

import pytest

from livecam.broadcast import BroadcastClosed, Broadcaster
from livecam.mjpeg import make_part


def publish(broadcaster: Broadcaster, payload: bytes) -> None:
    broadcaster.publish(payload, 0.0)


def test_wait_next_returns_only_newer_frames() -> None:
    broadcaster = Broadcaster()
    assert broadcaster.wait_next(0, 0.01) is None
    publish(broadcaster, b"a")
    frame = broadcaster.wait_next(0, 0.01)
    assert (frame.seq, frame.jpeg, frame.part) == (1, b"a", make_part(b"a", 0.0))  # framed once
    assert broadcaster.wait_next(frame.seq, 0.01) is None  # never the same frame twice


def test_slow_viewer_gets_the_newest_frame_not_a_backlog() -> None:
    broadcaster = Broadcaster()
    for payload in (b"a", b"b", b"c"):
        publish(broadcaster, payload)
    frame = broadcaster.wait_next(0, 0.01)
    assert (frame.seq, frame.jpeg) == (3, b"c")


def test_waiting_viewers_wake_on_publish() -> None:
    broadcaster = Broadcaster()
    received: list[bytes] = []
    ready = threading.Barrier(4)

    def viewer() -> None:
        ready.wait()
        frame = broadcaster.wait_next(0, 10)
        received.append(frame.jpeg)

    threads = [threading.Thread(target=viewer) for _ in range(3)]
    for thread in threads:
        thread.start()
    ready.wait()
    publish(broadcaster, b"x")
    for thread in threads:
        thread.join(5)
    assert received == [b"x"] * 3


def test_close_wakes_every_waiter() -> None:
    broadcaster = Broadcaster()
    outcome: list[str] = []
    entered = threading.Event()

    def viewer() -> None:
        entered.set()
        try:
            broadcaster.wait_next(0, 30)
        except BroadcastClosed:
            outcome.append("closed")

    thread = threading.Thread(target=viewer)
    thread.start()
    entered.wait(5)
    broadcaster.close()
    thread.join(5)
    assert not thread.is_alive()
    assert outcome == ["closed"]
    with pytest.raises(BroadcastClosed):
        broadcaster.wait_next(0, 0)


def test_watching_counts_viewers_and_snapshots_apart() -> None:
    broadcaster = Broadcaster()
    assert not broadcaster.wanted
    with broadcaster.watching():
        assert broadcaster.viewers == 1 and broadcaster.wanted
        with broadcaster.watching(snapshot=True):
            assert broadcaster.viewers == 1
        assert broadcaster.wanted
    assert broadcaster.viewers == 0 and not broadcaster.wanted


def test_viewer_count_is_exact_when_a_viewer_fails() -> None:
    broadcaster = Broadcaster()
    with pytest.raises(OSError):
        with broadcaster.watching():
            raise OSError("client went away")
    assert broadcaster.viewers == 0


def test_viewer_milestones_are_logged_not_every_change(caplog: pytest.LogCaptureFixture) -> None:
    broadcaster = Broadcaster("camera 4 (Gate)")
    with caplog.at_level(logging.INFO, logger="livecam.broadcast"):
        with broadcaster.watching(), broadcaster.watching(), broadcaster.watching(snapshot=True):
            pass
    assert [r.getMessage() for r in caplog.records] == [
        "camera 4 (Gate): 1 viewer",
        "camera 4 (Gate): no viewers",
    ]


def test_wait_wanted_wakes_when_the_first_viewer_comes() -> None:
    broadcaster = Broadcaster()
    assert not broadcaster.wait_wanted(0.01)
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(broadcaster.wait_wanted(10)))
    waiter.start()
    with broadcaster.watching():
        waiter.join(5)
    assert woke == [True]
