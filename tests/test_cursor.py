"""The one stream policy: fresh frame first, newest never a backlog, heartbeat, end."""

from __future__ import annotations

import time

import pytest

from livecam.broadcast import BroadcastClosed, Broadcaster
from livecam.cursor import Cursor


def test_a_new_viewer_gets_a_fresh_current_frame_at_once() -> None:
    broadcaster = Broadcaster()
    broadcaster.publish(b"now", time.time())
    cursor = Cursor(broadcaster)
    assert cursor.first().jpeg == b"now"
    assert cursor.newer() is None  # never the same frame twice


def test_a_stale_frame_waits_for_the_heartbeat() -> None:
    broadcaster = Broadcaster()
    broadcaster.publish(b"old", time.time() - 5)
    cursor = Cursor(broadcaster, heartbeat=1.0)
    assert cursor.first() is None
    assert cursor.heartbeat_after(0.5) is None
    assert cursor.heartbeat_after(1.0).jpeg == b"old"


def test_newest_frame_never_a_backlog() -> None:
    broadcaster = Broadcaster()
    cursor = Cursor(broadcaster)
    assert cursor.first() is None and cursor.newer() is None
    for payload in (b"a", b"b", b"c"):
        broadcaster.publish(payload, time.time())
    assert cursor.newer().jpeg == b"c"
    assert cursor.newer() is None


def test_wait_gives_new_frames_then_heartbeats_then_the_end() -> None:
    broadcaster = Broadcaster()
    cursor = Cursor(broadcaster, heartbeat=0.05)
    broadcaster.publish(b"one", time.time())
    frame, fresh = cursor.wait()
    assert (frame.jpeg, fresh) == (b"one", True)
    frame, fresh = cursor.wait()  # nothing new for an interval: the last frame again
    assert (frame.jpeg, fresh) == (b"one", False)
    broadcaster.close()
    with pytest.raises(BroadcastClosed):
        cursor.wait()
