"""Bus mode with one web host frozen (SIGSTOP on its master and workers): the capture process
and the other hosts never wait for it, and it catches up with live video once it runs again."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import Server, free_port, read_parts, wait_for
from nats_server import NatsServer

# Large frames (about 55 KB, 1.1 MB/s) fill a frozen reader's socket buffers in seconds.
RATE = 20
CAMERA = f"0=testsrc:1280x960@{RATE}"
# nats-server cuts a client off as a slow consumer once a write to it has waited this long
# (its default is 10 s): short, so that the frozen host is cut off within the test.
WRITE_DEADLINE = "2s"


class Viewer:
    """A stream read by a thread of its own: each part's arrival and capture times."""

    def __init__(self, server: Server, path: str) -> None:
        self.conn, response = server.open_stream(path)
        assert self.conn.stream_socket is not None
        self.conn.stream_socket.settimeout(60)  # a frozen host sends nothing for a while
        self.frames: list[tuple[float, float]] = []  # (arrived, captured), both time.time()
        self.ended: str | None = None  # how the stream ended, while it has
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()

    def _read(self, response) -> None:
        try:
            for part in read_parts(response):
                with self._changed:
                    self.frames.append((time.time(), float(part.headers["x-timestamp"])))
                    self._changed.notify_all()
            ended = "ended by the server"
        except Exception as exc:  # noqa: BLE001 - reported by the test that reads ``ended``
            ended = repr(exc)
        with self._changed:
            self.ended = ended
            self._changed.notify_all()

    def wait(self, predicate: Callable[[list[tuple[float, float]]], bool], timeout: float) -> bool:
        """Wait until ``predicate(frames)`` holds; False at the timeout or if the stream ended."""
        with self._changed:
            self._changed.wait_for(lambda: predicate(self.frames) or self.ended is not None, timeout)
            return predicate(self.frames)

    def between(self, start: float, end: float) -> list[tuple[float, float]]:
        with self._changed:
            return [frame for frame in self.frames if start <= frame[0] < end]

    def close(self) -> None:
        assert self.conn.stream_socket is not None
        try:
            self.conn.stream_socket.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
        except OSError:
            pass
        self.conn.close()
        self._thread.join(5)


@pytest.fixture
def monitored_nats(tmp_path: Path) -> Iterator[tuple[NatsServer, Callable[[], dict]]]:
    """A nats-server with a short write deadline, and its monitoring's /varz."""
    config = tmp_path / "nats.conf"
    config.write_text(f'write_deadline: "{WRITE_DEADLINE}"\n')
    monitor = free_port()
    server = NatsServer(None, "-c", str(config), "-m", str(monitor)).start()

    def varz() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=5) as response:
            return json.load(response)

    yield server, varz
    server.stop()


def process_tree(server: Server) -> list[int]:
    """The gunicorn master and its workers, as started by the test."""
    master = server.process.pid
    return [master, *map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split())]


def distinct(frames: list[tuple[float, float]]) -> int:
    """How many different frames (by capture time) are among ``frames``."""
    return len({captured for _, captured in frames})


def test_a_frozen_web_host_slows_neither_the_capture_process_nor_another_host(
    serve: Callable[..., Server],
    start_capture: Callable[..., subprocess.Popen],
    monitored_nats: tuple[NatsServer, Callable[[], dict]],
) -> None:
    nats, varz = monitored_nats
    start_capture(CAMERA, url=nats.url)
    env = {"LIVECAM_BUS": nats.url, "LIVECAM_CAMERAS": CAMERA}
    frozen, other = serve(env, "--workers", "2"), serve(env, "--workers", "2")
    assert wait_for(lambda: other.record(0)["state"] == "off", timeout=15)
    assert other.request("POST", "/cameras/0/start")[0] == 200
    assert wait_for(lambda: frozen.record(0)["state"] == "on")
    viewers = [Viewer(frozen, "/cameras/0/stream.mjpg"), Viewer(other, "/cameras/0/stream.mjpg")]
    stuck, watching = viewers
    pids = process_tree(frozen)
    try:
        assert all(viewer.wait(lambda frames: len(frames) >= RATE, 15) for viewer in viewers)
        assert wait_for(lambda: other.record(0)["viewers"] == 2)  # one on each host
        before = other.record(0)
        stopped = time.time()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            # Its interest expires, then nats-server, finding its socket full for longer than
            # the write deadline, cuts its connection off: the capture process only ever
            # publishes once, to nats-server.
            assert wait_for(lambda: other.record(0)["viewers"] == 1, timeout=10)
            assert wait_for(lambda: varz()["slow_consumers"] >= 1, timeout=20)
            during = other.record(0)
            ended = time.time()
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        resumed = time.time()
        assert stuck.between(stopped + 0.5, resumed) == []  # it was frozen indeed

        frames = watching.between(stopped, ended)
        seconds = ended - stopped
        assert distinct(frames) >= 0.75 * RATE * seconds, (distinct(frames), seconds)
        assert max(b[0] - a[0] for a, b in itertools.pairwise(frames)) < 1.0  # never a pause
        delays = sorted(arrived - captured for arrived, captured in frames)
        assert delays[len(delays) * 95 // 100] < 0.5  # p95 capture-to-viewer delay
        # The capture process captured and encoded (for publishing) on; its record comes every
        # second, so each of the two may be up to a second old.
        for counter in ("frames", "encoded"):
            assert during[counter] - before[counter] >= 0.75 * RATE * (seconds - 1), (counter, before, during)

        # Once running again, the frozen host reconnects and its viewer, on the same
        # connection, gets live frames (after those its socket held, if any).
        def live(frames: list[tuple[float, float]]) -> list[float]:
            return [arrived for arrived, captured in frames if arrived > resumed and arrived - captured < 0.5]

        assert stuck.wait(lambda frames: bool(live(frames)), 10), stuck.ended
        first = live(stuck.frames)[0]
        assert stuck.wait(lambda frames: frames[-1][0] >= first + 2.0, 5), stuck.ended
        assert distinct(stuck.between(first, first + 2.0)) >= 0.75 * RATE * 2.0
        assert "frame bus: frames connected again" in frozen.output()  # after nats-server cut it off
        assert wait_for(lambda: other.record(0)["viewers"] == 2)
    finally:
        for pid in pids:  # never leave a frozen process behind, whatever failed
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for viewer in viewers:
            viewer.close()
