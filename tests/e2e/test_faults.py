"""Real faults against real gunicorn: dead and hung cameras, stuck and vanishing clients,
racing switches, restarts, signals and hostile requests."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from camera_server import MjpegCamera
from helpers import (
    ROOT,
    Part,
    Server,
    capture_threads,
    decode,
    free_port,
    proc_status,
    read_for,
    read_parts,
    wait_for,
)
from hostile_camera import HostileCamera
from livecam.config import load_settings
from livecam.registry import Registry


def is_placeholder(part: Part) -> bool:
    """The "no signal" image is a flat dark grey; the test camera's frames are colourful."""
    image = decode(part.body)
    return float(np.median(image[..., 2])) < 60


@pytest.fixture
def camera_process() -> Iterator[Callable[[], subprocess.Popen]]:
    """Start tests/camera_server.py as its own process on one fixed port; kill it at teardown."""
    port = free_port()
    processes: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        command = [sys.executable, str(ROOT / "tests" / "camera_server.py"), "--port", str(port)]
        process = subprocess.Popen([*command, "--size", "320x240"], stdout=subprocess.PIPE)
        assert process.stdout.readline().startswith(b"http://127.0.0.1:")  # listening
        processes.append(process)
        return process

    start.url = f"http://127.0.0.1:{port}/cam.mjpg"
    yield start
    for process in processes:
        process.kill()
        process.wait(10)
        process.stdout.close()


@pytest.fixture(scope="module")
def shared(serve_module: Callable[..., Server]) -> Server:
    """One small camera for the tests that only ask and never break the server."""
    return serve_module({"LIVECAM_CAMERAS": "0=testsrc:160x120@10"})


def test_killed_camera_shows_no_signal_then_live_video_on_the_same_connection(
    serve: Callable[..., Server], camera_process
) -> None:
    camera = camera_process()
    livecam = serve({"LIVECAM_CAMERAS": f"1={camera_process.url}"})
    livecam.request("POST", "/cameras/1/start")
    conn, response = livecam.open_stream("/cameras/1/stream.mjpg")
    parts = read_parts(response)
    assert not is_placeholder(next(parts))
    camera.kill()  # the camera dies mid-stream
    camera.wait(10)
    placeholder = next(part for part in parts if is_placeholder(part))
    assert decode(placeholder.body).shape == (240, 320, 3)  # the camera's own frame size
    record = livecam.record(1)
    assert record["state"] == "error" and record["error"]
    camera_process()  # the camera is back
    returned = time.monotonic()
    live = next(part for part in parts if not is_placeholder(part))
    assert decode(live.body).shape == (240, 320, 3)
    # Within two seconds of the return (a generous bound: this is not a benchmark).
    assert time.monotonic() - returned < 4
    assert livecam.record(1)["state"] == "on"
    conn.close()


def test_hung_camera_is_detected_and_recovers(
    serve: Callable[..., Server], mjpeg_camera: MjpegCamera
) -> None:
    # A camera silent for 1.5 s counts as failed here rather than after livecam's 3 s
    # (source_base.READ_TIMEOUT_MS, tests/shortened.py): the same detection, sooner.
    shortened = {"livecam.source_base.READ_TIMEOUT_MS": 1500}
    livecam = serve({"LIVECAM_CAMERAS": f"1={mjpeg_camera.url}"}, shortened=shortened)
    livecam.request("POST", "/cameras/1/start")
    conn, response = livecam.open_stream("/cameras/1/stream.mjpg")
    parts = read_parts(response)
    next(parts)
    mjpeg_camera.stall()  # connection open, no frames
    assert is_placeholder(next(part for part in parts if is_placeholder(part)))
    assert livecam.record(1)["state"] == "error"
    mjpeg_camera.resume()
    assert not is_placeholder(next(part for part in parts if not is_placeholder(part)))
    conn.close()


def test_stuck_viewer_is_cut_off_and_others_keep_their_rate(serve: Callable[..., Server]) -> None:
    # Big frames fill the socket buffers quickly; a short send timeout keeps the test short.
    livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:1280x720@20", "LIVECAM_SEND_TIMEOUT": "3"})
    livecam.request("POST", "/cameras/0/start")
    with socket.socket() as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", livecam.port))
        stuck.sendall(b"GET /cameras/0/stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never read
        conn, response = livecam.open_stream("/cameras/0/stream.mjpg")
        try:
            parts = read_parts(response)
            assert wait_for(lambda: livecam.record(0)["viewers"] == 2)
            read_for(parts, 1.0)  # the allocator settles on the frame size
            memory_before = proc_status(livecam.worker_pid())["rss_kb"]
            stamps = [float(part.headers["x-timestamp"]) for part in read_for(parts, 3.0)]
            memory_after = proc_status(livecam.worker_pid())["rss_kb"]
            rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
            assert rate > 12, f"the normal viewer fell to {rate:.1f} fps beside a stuck one"
            # No queue builds up for the stuck viewer: memory stays flat.
            assert memory_after - memory_before < 8 * 1024, (memory_before, memory_after)
            assert wait_for(lambda: livecam.record(0)["viewers"] == 1, timeout=30), (
                "the stuck viewer was never cut off"
            )
        finally:
            conn.close()


def test_connect_disconnect_cycles_leak_nothing(serve: Callable[..., Server]) -> None:
    # A small pool: a viewer thread that was never freed would soon make connects fail.
    livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:320x240@30", "LIVECAM_THREADS": "16"})
    livecam.request("POST", "/cameras/0/start")

    def cycle(count: int) -> None:
        for number in range(count):
            conn, response = livecam.open_stream("/cameras/0/stream.mjpg")
            next(read_parts(response))
            if number % 2:
                conn.stream_socket.shutdown(socket.SHUT_RDWR)  # vanish without a goodbye
            conn.close()
            if number % 8 == 7:
                # A gone viewer is noticed at its next frame; let the server catch up now and
                # then so that these quick cycles stay within the pool.
                assert wait_for(lambda: livecam.request("GET", "/healthz")[1]["streams"] == 0)
        assert wait_for(lambda: livecam.record(0)["viewers"] == 0)

    cycle(20)  # warm up: thread pool, caches, allocator
    before = proc_status(livecam.worker_pid())
    cycle(120)
    after = proc_status(livecam.worker_pid())
    # Main thread, gunicorn's own, one capture thread, and at most the pool.
    assert after["threads"] <= 16 + 5, (before, after)
    assert after["rss_kb"] - before["rss_kb"] < 8 * 1024, (before, after)


def test_racing_switches_never_fail_and_the_record_is_true(serve: Callable[..., Server]) -> None:
    livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:160x120@30"})
    statuses: list[int] = []
    lock = threading.Lock()

    def hammer(worker: int) -> None:
        for number in range(15):
            action = ("toggle", "start", "stop")[(worker + number) % 3]
            status, _ = livecam.request("POST", f"/cameras/0/{action}")
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(statuses) == 300
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    record = livecam.record(0)
    stream_status = livecam.request("GET", "/cameras/0/snapshot.jpg", {"Accept": "*/*"})[0]
    if record["state"] == "off":
        assert stream_status == 503
    else:
        assert stream_status == 200
    last = livecam.request("POST", "/cameras/0/stop")[1]
    assert last["state"] == "off"


def test_switches_survive_a_restart(serve: Callable[..., Server]) -> None:
    env = {"LIVECAM_CAMERAS": "0=testsrc:160x120@10,1=testsrc:160x120@10"}
    first = serve(env)
    first.request("POST", "/cameras/1/toggle")
    first.stop()
    second = serve(env)
    assert [second.record(i)["state"] != "off" for i in (0, 1)] == [False, True]


def test_hup_restarts_the_worker_and_keeps_cameras_on(serve: Callable[..., Server]) -> None:
    livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:160x120@10"})
    livecam.request("POST", "/cameras/0/start")
    old_worker = livecam.worker_pid()
    livecam.process.send_signal(signal.SIGHUP)

    def new_worker_on() -> bool:
        try:
            return livecam.worker_pid() != old_worker and livecam.record(0)["state"] == "on"
        except (AssertionError, OSError):
            return False

    assert wait_for(new_worker_on, timeout=20)


def test_sigint_releases_cameras_and_exits(serve: Callable[..., Server], mjpeg_camera: MjpegCamera) -> None:
    livecam = serve({"LIVECAM_CAMERAS": f"1={mjpeg_camera.url}"})
    livecam.request("POST", "/cameras/1/start")
    assert mjpeg_camera.wait_connections(1)
    livecam.process.send_signal(signal.SIGINT)
    assert livecam.process.wait(15) == 0
    assert mjpeg_camera.wait_connections(0)


def raw_exchange(port: int, payload: bytes, half_close: bool = False) -> bytes:
    """Send raw bytes and read whatever comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("payload", "half_close"),
    [
        (b"GET /cameras/0?" + b"a" * 10000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", False),
        (b"GET /cameras/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", False),
        (b"GET /cameras/0/stream.mjpg HTTP/1.1\r\nHo", True),  # half a request, then half-closed
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n", False),  # TLS on HTTP
        (b"GET /cameras/%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", False),
        (b"POST /cameras/0/toggle HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999\r\n\r\nx", True),
    ],
)
def test_hostile_requests_never_get_a_500(shared: Server, payload: bytes, half_close: bool) -> None:
    livecam = shared
    answer = raw_exchange(livecam.port, payload, half_close)
    assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]
    assert livecam.request("GET", "/healthz")[0] == 200
    assert "Traceback" not in livecam.output()


def test_unknown_ids_over_the_wire(shared: Server) -> None:
    livecam = shared
    for path in ("/cameras/-1", "/cameras/99999999999999999999", "/cameras/abc", "/cameras/0x1"):
        status, body = livecam.request("GET", path)
        assert (status, "error" in body) == (404, True)
    status, body = livecam.request("PATCH", "/cameras/0/toggle")
    assert (status, "error" in body) == (405, True)


def test_state_file_is_written_atomically(shared: Server) -> None:
    livecam = shared
    assert livecam.request("POST", "/cameras/0/start")[0] == 200
    files = sorted(p.name for p in livecam.state_dir.iterdir())
    assert files == ["cameras.json", "secret_key"]  # no temporary file left behind


def test_viewers_hold_no_thread_and_buttons_still_answer(serve: Callable[..., Server]) -> None:
    livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:160x120@10", "LIVECAM_THREADS": "6"})
    livecam.request("POST", "/cameras/0/start")
    # Five times the thread pool: each viewer costs a socket, not a parked thread.
    streams = [livecam.open_stream("/cameras/0/stream.mjpg") for _ in range(30)]
    try:
        for _, response in streams:
            assert decode(next(read_parts(response)).body).shape == (120, 160, 3)
        assert livecam.request("GET", "/healthz")[1]["streams"] == 30
        assert livecam.request("POST", "/cameras/0/toggle")[0] == 200  # the buttons still work
        assert livecam.request("POST", "/cameras/0/toggle")[0] == 200
    finally:
        for stream_conn, _ in streams:
            stream_conn.close()
    assert wait_for(lambda: livecam.request("GET", "/healthz")[1]["streams"] == 0)
    # Streams that do keep a thread (the dashboard's, several cameras in one) stop at the
    # pool's size less the threads kept for everything else.
    path = "/streams.mjpg?cameras=0:preview"
    kept = [livecam.open_stream(path) for _ in range(4)]  # 6 threads - 2 kept
    try:
        conn = http.client.HTTPConnection("127.0.0.1", livecam.port, timeout=10)
        conn.request("GET", path)
        refused = conn.getresponse()
        assert refused.status == 503
        assert refused.getheader("Retry-After") == "5"
        assert "too many viewers" in json.loads(refused.read())["error"]
        conn.close()
        assert livecam.request("POST", "/cameras/0/stop")[0] == 200  # the buttons still work
    finally:
        for stream_conn, _ in kept:
            stream_conn.close()
    assert wait_for(lambda: livecam.record(0)["viewers"] == 0)


@pytest.mark.parametrize("path", ["/garbage-first.mjpg", "/garbage-payloads.mjpg", "/huge.mjpg"])
def test_a_hostile_camera_never_reaches_viewers_or_breaks_the_api(
    serve: Callable[..., Server], path: str
) -> None:
    camera = HostileCamera().start()
    try:
        livecam = serve({"LIVECAM_CAMERAS": f"1={camera.url(path)}"})
        livecam.request("POST", "/cameras/1/start")
        conn, response = livecam.open_stream("/cameras/1/stream.mjpg")
        parts = read_for(read_parts(response), 1.0)
        conn.close()
        assert parts and all(part.body in camera.frames for part in parts)  # only whole JPEGs
        status, snapshot = livecam.request("GET", "/cameras/1/snapshot.jpg", {"Accept": "*/*"})
        assert status == 200 and snapshot in camera.frames
        status, records = livecam.request("GET", "/cameras")
        assert status == 200 and records[0]["rejected"] >= 1 and records[0]["state"] == "on"
        assert livecam.request("GET", "/metrics")[0] == 200
    finally:
        camera.stop()


# The shutdown budget of the next two tests: livecam's 4 s (registry.SHUTDOWN_BUDGET)
# shortened, the same code waited for in less time.
BUDGET = 1.5


def test_shutdown_stops_hung_cameras_in_parallel_within_its_budget(tmp_path: Path) -> None:
    # A network camera that accepts the connection and never answers: each capture thread
    # sits in its open timeout, which nothing can interrupt (and OpenCV runs FFmpeg's opens
    # one at a time: the second camera waits for the first's).
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        port = silent.getsockname()[1]
        cameras = {str(i): {"source": f"rtsp://127.0.0.1:{port}/s{i}", "autostart": True} for i in range(2)}
        registry = Registry(
            load_settings(environ={}, overrides={"state_dir": str(tmp_path), "cameras": cameras})
        )
        registry.restore()
        assert wait_for(lambda: len(capture_threads()) == 2)
        started = time.monotonic()
        registry.shutdown(BUDGET)
        elapsed = time.monotonic() - started
        # One budget for every camera, not a stop timeout for each in turn (2 x 5 s).
        assert elapsed < BUDGET + 1.0, elapsed
        assert all(camera.state == "off" for camera in registry)
    # The silent camera gone (its waiting connections reset), the opens fail and the threads end.
    assert wait_for(lambda: capture_threads() == [], timeout=20)


def test_a_second_shutdown_shares_the_first_ones_budget(tmp_path: Path) -> None:
    # gunicorn's SIGTERM hook and its exit hook each ask for a shutdown: one budget for both.
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        port = silent.getsockname()[1]
        cameras = {"0": {"source": f"rtsp://127.0.0.1:{port}/s", "autostart": True}}
        registry = Registry(
            load_settings(environ={}, overrides={"state_dir": str(tmp_path), "cameras": cameras})
        )
        registry.restore()
        assert wait_for(lambda: len(capture_threads()) == 1)
        started = time.monotonic()
        first = threading.Thread(target=registry.shutdown, args=(BUDGET,))
        first.start()
        registry.shutdown(BUDGET)
        first.join(10)
        assert time.monotonic() - started < BUDGET + 1.0
    assert wait_for(lambda: capture_threads() == [], timeout=15)  # the silent camera gone
