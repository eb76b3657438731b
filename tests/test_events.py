"""The event log: ids, what is kept, snapshots within a budget, waiting for the next event."""

from __future__ import annotations

import threading
import time

from livecam.events import Event, EventLog


def test_events_get_increasing_ids_that_outlive_a_restart() -> None:
    before = EventLog().add("camera.state", 0, "Bench", state="on")
    log = EventLog()  # a new process: its ids still come after the old one's
    ids = [log.add("motion.start", 0, "Bench", score=0.1).id for _ in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert ids[0] > before.id
    assert abs(ids[0] / 1e6 - time.time()) < 60  # microseconds since the epoch


def test_an_event_as_json() -> None:
    log = EventLog()
    event = log.add("motion.start", 3, "Door", b"\xff\xd8jpeg", score=0.25, box=[0.1, 0.2, 0.3, 0.4])
    assert event.json() == {
        "id": event.id,
        "type": "motion.start",
        "camera": 3,
        "name": "Door",
        "time": event.time,
        "score": 0.25,
        "box": [0.1, 0.2, 0.3, 0.4],
        "snapshot": True,
    }
    assert log.snapshot(event.id) == b"\xff\xd8jpeg"


def test_a_busy_camera_never_pushes_a_quiet_ones_events_out() -> None:
    log = EventLog(max_events=100, per_camera=20)
    quiet = [log.add("camera.state", 1, "Quiet", state="on") for _ in range(5)]
    for _ in range(500):
        log.add("motion.start", 0, "Busy")
    assert [e.id for e in log.newest(camera=1)] == [e.id for e in reversed(quiet)]
    everything = log.newest(limit=1000)
    assert len([e for e in everything if e.camera == 0]) == 100  # the last 100 in all
    assert all(e in everything for e in quiet)
    assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)


def test_snapshots_are_kept_within_their_budget_oldest_let_go_first() -> None:
    log = EventLog(budget=10_000)
    events = [log.add("motion.end", 0, "Bench", bytes(3000)) for _ in range(5)]
    kept = [log.snapshot(e.id) is not None for e in events]
    assert kept == [False, False, True, True, True]
    assert log.get(events[0].id) == events[0]  # the event stays, its picture is gone


def test_after_gives_what_came_since_an_id() -> None:
    log = EventLog()
    first, second, third = (log.add("camera.state", i % 2, "c") for i in range(3))
    assert log.after(first.id) == [second, third]
    assert log.after(first.id, camera=0) == [third]
    assert log.after(third.id) == []


def test_a_waiter_wakes_for_the_next_event_and_for_close() -> None:
    log = EventLog()
    got: list[list[Event]] = []
    ready, woken = threading.Event(), threading.Event()

    def wait() -> None:
        last = log.last_id  # before saying ready: the event added after it is newer
        ready.set()
        got.append(log.wait_after(last, 10))
        woken.set()
        got.append(log.wait_after(10**20, 10))  # nothing newer will come: only close ends it

    thread = threading.Thread(target=wait)
    thread.start()
    ready.wait(5)
    event = log.add("motion.start", 0, "Bench")
    assert woken.wait(5)
    log.close()
    thread.join(5)
    assert not thread.is_alive()
    assert got == [[event], []]


def test_a_waiter_without_events_returns_after_its_timeout() -> None:
    log = EventLog()
    started = time.monotonic()
    assert log.wait_after(log.last_id, 0.1) == []
    assert time.monotonic() - started >= 0.1


def test_listeners_hear_each_event_until_they_stop() -> None:
    log = EventLog()
    heard: list[Event] = []
    stop = log.listen(heard.append)
    first = log.add("camera.state", 0, "c")
    stop()
    log.add("camera.state", 0, "c")
    assert heard == [first]


def test_an_event_from_elsewhere_is_kept_once_and_ids_go_on_after_it() -> None:
    log = EventLog()
    far = Event(int(time.time() * 1e6) + 10**9, "motion.start", 2, "Yard", time.time(), {"score": 0.5})
    assert log.take(far) and not log.take(far)
    assert log.newest() == [far]
    assert log.add("camera.state", 0, "c").id > far.id
