"""End to end: real gunicorn from gunicorn.conf.py, a real HTTP camera, clients on sockets."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gunicorn
import pytest

from camera_server import MjpegCamera
from helpers import ROOT, Server, decode, free_port, read_for, read_parts, run_cli, wait_for


def start_livecam(serve: Callable[..., Server], camera: MjpegCamera, directory: Path) -> Server:
    """livecam under gunicorn: camera 1 forwards an HTTP camera's JPEGs, camera 3 re-encodes
    the same camera at quality 70, camera 2 is a test pattern; every one off."""
    config = directory / "livecam.toml"
    config.write_text("[cameras.3]\nquality = 70\n")
    cameras = f"1={camera.url},2=testsrc:160x120@15,3={camera.url}"
    return serve({"LIVECAM_CAMERAS": cameras, "LIVECAM_CONFIG": str(config)})


@pytest.fixture(scope="module")
def shared_camera() -> Iterator[MjpegCamera]:
    """A real HTTP MJPEG camera on loopback, 320x240 at 30 fps, for the module's livecam."""
    camera = MjpegCamera(320, 240, 30).start()
    yield camera
    camera.stop()


@pytest.fixture(scope="module")
def shared_livecam(
    serve_module: Callable[..., Server], shared_camera: MjpegCamera, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    """The module's livecam, for the tests that leave it serving."""
    return start_livecam(serve_module, shared_camera, tmp_path_factory.mktemp("livecam"))


@pytest.fixture
def mjpeg_camera(shared_camera: MjpegCamera) -> MjpegCamera:
    """The module's camera (the tests' livecam reads it)."""
    return shared_camera


@pytest.fixture
def livecam(shared_livecam: Server, shared_camera: MjpegCamera) -> Server:
    """The module's livecam, every camera off and its source released, no stream left."""
    for camera in (1, 2, 3):
        assert shared_livecam.request("POST", f"/cameras/{camera}/stop")[0] == 200
    assert wait_for(lambda: all(shared_livecam.record(i)["state"] == "off" for i in (1, 2, 3)))
    assert shared_camera.wait_connections(0)
    assert wait_for(lambda: shared_livecam.request("GET", "/healthz")[1]["streams"] == 0)
    return shared_livecam


def test_stream_delivers_new_valid_frames_at_the_source_rate(livecam: Server) -> None:
    assert livecam.request("POST", "/cameras/1/start")[0] == 200
    conn, response = livecam.open_stream("/cameras/1/stream.mjpg")
    assert response.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
    assert response.getheader("X-Accel-Buffering") == "no"
    stream = read_parts(response)
    read_for(stream, 0.5)  # let the source settle
    parts = read_for(stream, 2.0)
    conn.close()
    stamps = [float(p.headers["x-timestamp"]) for p in parts]
    assert len(stamps) == len(set(stamps)), "a frame was sent twice"
    assert all(decode(p.body).shape == (240, 320, 3) for p in parts)
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 20 <= rate <= 36, f"{rate:.1f} fps from a 30 fps camera"
    status = livecam.request("GET", "/cameras/1")[1]
    assert status["state"] == "on" and 20 <= status["fps"] <= 36


def test_two_viewers_cost_one_encode_per_frame(livecam: Server) -> None:
    livecam.request("POST", "/cameras/3/start")
    streams = [livecam.open_stream("/cameras/3/stream.mjpg") for _ in range(2)]
    readers_parts = [read_parts(response) for _, response in streams]
    for parts in readers_parts:
        read_for(parts, 0.3)
    assert livecam.request("GET", "/cameras/3")[1]["viewers"] == 2
    before = livecam.request("GET", "/cameras/3")[1]["encoded"]
    seen: list[set[float]] = [set(), set()]

    def watch(index: int) -> None:
        for part in read_for(readers_parts[index], 2.0):
            seen[index].add(float(part.headers["x-timestamp"]))

    readers = [threading.Thread(target=watch, args=(i,)) for i in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(20)
    after = livecam.request("GET", "/cameras/3")[1]["encoded"]
    for conn, _ in streams:
        conn.close()
    shared = seen[0] & seen[1]
    assert len(shared) >= 30, "the two viewers did not get the same frames"
    # Every frame either viewer saw was encoded once: the count grew by one per frame, not two.
    assert after - before < len(seen[0] | seen[1]) + 10
    # (Parts already on their way when "before" was read were encoded earlier.)
    assert after - before >= len(shared) - 10


def test_an_mjpeg_camera_is_forwarded_byte_for_byte(livecam: Server, mjpeg_camera: MjpegCamera) -> None:
    livecam.request("POST", "/cameras/1/start")
    conn, response = livecam.open_stream("/cameras/1/stream.mjpg")
    parts = read_for(read_parts(response), 1.0)
    conn.close()
    assert all(part.body in mjpeg_camera.frames for part in parts)  # the camera's own bytes
    record = livecam.record(1)
    assert record["passthrough"] is True and record["encoded"] == 0
    assert (record["width"], record["height"]) == (320, 240)


def test_viewer_count_returns_to_zero_when_clients_vanish(livecam: Server) -> None:
    livecam.request("POST", "/cameras/2/start")
    for _ in range(3):
        conn, response = livecam.open_stream("/cameras/2/stream.mjpg")
        read_for(read_parts(response), 0.1)
        conn.stream_socket.shutdown(socket.SHUT_RDWR)
        conn.close()
    deadline = time.monotonic() + 10
    while livecam.request("GET", "/cameras/2")[1]["viewers"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert livecam.request("GET", "/cameras/2")[1]["viewers"] == 0


def test_toggle_off_ends_stream_and_releases_source_then_resumes(
    livecam: Server, mjpeg_camera: MjpegCamera
) -> None:
    assert livecam.request("POST", "/cameras/1/toggle")[1]["state"] in ("starting", "on")
    assert mjpeg_camera.wait_connections(1)
    conn, response = livecam.open_stream("/cameras/1/stream.mjpg")
    parts = read_parts(response)
    next(parts)
    status, record = livecam.request("POST", "/cameras/1/toggle")
    assert (status, record["state"]) == (200, "off")
    assert list(parts) == []  # the stream ends (a hang would hit the socket timeout)
    conn.close()
    assert mjpeg_camera.wait_connections(0), "the source connection stayed open"
    status, _ = livecam.request("GET", "/cameras/1/stream.mjpg")
    assert status == 503
    livecam.request("POST", "/cameras/1/toggle")
    conn, response = livecam.open_stream("/cameras/1/stream.mjpg")
    assert decode(next(read_parts(response)).body).shape == (240, 320, 3)
    conn.close()


def test_dashboard_form_post_redirects(livecam: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", livecam.port, timeout=10)
    conn.request("POST", "/cameras/2/toggle", headers={"Accept": "text/html"})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 303
    assert response.getheader("Location").endswith("/#camera-2")


def test_sigterm_stops_gunicorn_and_releases_every_camera(
    serve: Callable[..., Server], tmp_path: Path, livecam: Server, mjpeg_camera: MjpegCamera
) -> None:
    # A livecam of its own, as this one stops; the module's (``livecam``) has let go of the camera.
    own = start_livecam(serve, mjpeg_camera, tmp_path)
    own.request("POST", "/cameras/1/start")
    own.request("POST", "/cameras/2/start")
    conn, response = own.open_stream("/cameras/1/stream.mjpg")
    parts = read_parts(response)
    next(parts)
    own.process.send_signal(signal.SIGTERM)
    # The open stream ends instead of holding the worker (a hang would hit the socket
    # timeout); a frame or two published before the camera stopped may still come first.
    list(parts)
    conn.close()
    assert own.process.wait(15) == 0
    assert mjpeg_camera.wait_connections(0)
    log = own.output()
    assert "stopped 2 camera(s)" in log
    assert "Traceback" not in log


def test_bad_configuration_stops_startup_with_one_line(serve: Callable[..., Server]) -> None:
    server = serve({"LIVECAM_CAMERAS": "0,0=testsrc"}, ready=False)
    assert server.process.wait(20) != 0
    lines = server.output().strip().splitlines()
    assert lines == ["livecam: configuration error: LIVECAM_CAMERAS: duplicate camera id 0"]


# gunicorn itself, its gthread worker replaced by a subclass without a hook livecam relies on,
# as a gunicorn of another series could be.
OLDER_GUNICORN = """
import sys
from gunicorn.workers import gthread

class ThreadWorker(gthread.ThreadWorker):
    on_client_socket_readable = None

gthread.ThreadWorker = ThreadWorker
from gunicorn.app.wsgiapp import run
sys.exit(run())
"""


def test_a_gunicorn_without_the_internals_livecam_uses_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
    env |= {"LIVECAM_CAMERAS": "0=testsrc:32x24@10", "LIVECAM_STATE_DIR": str(tmp_path / "state")}
    command = [sys.executable, "-c", OLDER_GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"]
    command += ["--bind", f"127.0.0.1:{free_port()}"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode != 0
    assert output.decode().strip().splitlines() == [
        f"livecam: livecam's worker needs gunicorn 27.x, found gunicorn {gunicorn.__version__}, which "
        "lacks gthread.ThreadWorker.on_client_socket_readable (pip install 'gunicorn>=27,<28')"
    ]


def test_more_than_one_worker_is_refused(serve: Callable[..., Server]) -> None:
    server = serve({"LIVECAM_CAMERAS": "0=testsrc"}, "--workers", "2", ready=False)
    assert server.process.wait(20) != 0
    assert "refusing to start with 2 workers" in server.output()


VIEW, CONTROL = "view-secret-123", "control-secret-456"


def test_gunicorn_logs_carry_no_secrets(serve) -> None:
    env = {
        "LIVECAM_CAMERAS": "0=testsrc:32x24@10",
        "LIVECAM_VIEW_TOKEN": VIEW,
        "LIVECAM_CONTROL_TOKEN": CONTROL,
    }
    livecam = serve(env, "--access-logfile", "-", "--log-level", "debug")
    livecam.request("POST", "/cameras/0/start", {"Authorization": f"Bearer {CONTROL}"})
    livecam.request("GET", "/cameras/0", {"Authorization": f"Bearer {VIEW}"})
    livecam.request("GET", "/cameras", {"Authorization": "Bearer wrong-guess-77"})
    status, _ = livecam.request("GET", "/cameras/0/snapshot.jpg", {"Authorization": f"Bearer {VIEW}"})
    assert status == 200
    livecam.stop()
    log = livecam.output()
    assert "GET /cameras/0" in log  # the access log did record the requests
    for secret in (VIEW, CONTROL, "wrong-guess-77"):
        assert secret not in log


def test_livecam_snapshot_from_a_running_livecam(serve, tmp_path: Path) -> None:
    run = run_cli
    livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:64x48@10", "LIVECAM_VIEW_TOKEN": "viewers-only-1"})
    url = f"http://127.0.0.1:{livecam.port}"
    livecam.request("POST", "/cameras/0/start", {"Authorization": "Bearer viewers-only-1"})
    target = tmp_path / "frame.jpg"
    refused = run("snapshot", "0", str(target), "--url", url)
    assert refused.returncode == 1 and "needs a token" in refused.stderr
    saved = run("snapshot", "0", str(target), "--url", url, env={"LIVECAM_VIEW_TOKEN": "viewers-only-1"})
    assert saved.returncode == 0, saved.stderr
    assert decode(target.read_bytes()).shape == (48, 64, 3)
    env = {"LIVECAM_VIEW_TOKEN": "viewers-only-1"}
    unknown = run("snapshot", "0", str(target), "--url", url, "--profile", "nope", env=env)
    assert unknown.returncode == 1 and "no stream profile 'nope'" in unknown.stderr
    missing = run("snapshot", "5", str(target), "--url", url, "--token", "viewers-only-1")
    assert missing.returncode == 1 and "no camera 5" in missing.stderr


def test_tls_straight_to_gunicorn_streams_and_answers(serve, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    livecam = serve(
        {"LIVECAM_CAMERAS": "0=testsrc:64x48@10"}, "--certfile", str(cert), "--keyfile", str(key), ready=False
    )
    context = ssl.create_default_context(cafile=str(cert))

    def request(method: str, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", livecam.port, timeout=10, context=context)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def ready() -> bool:
        try:
            return request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    assert wait_for(ready, timeout=20), livecam.output()
    assert request("POST", "/cameras/0/start")[0] == 200
    conn = http.client.HTTPSConnection("127.0.0.1", livecam.port, timeout=10, context=context)
    conn.request("GET", "/cameras/0/stream.mjpg")
    response = conn.getresponse()
    assert response.status == 200
    assert len(read_for(read_parts(response), 0.5)) >= 2  # written by the request's own thread
    response.close()
    conn.close()
    for _ in range(3):  # the closed stream's connection lingers in the event loop, never blocks it
        assert request("GET", "/cameras/0")[0] == 200


def test_streams_beyond_the_slots_get_a_503_never_an_empty_200(serve) -> None:
    # 6 threads: 4 slots for streams that keep a thread (the dashboard's multiplexed one).
    livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:64x48@15", "LIVECAM_THREADS": "6"})
    livecam.request("POST", "/cameras/0/start")
    clients = 12
    ready = threading.Barrier(clients)
    answers: list[tuple[int, http.client.HTTPResponse, http.client.HTTPConnection]] = []
    lock = threading.Lock()

    def ask() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", livecam.port, timeout=10)
        conn.connect()
        ready.wait(10)  # all at once, so that several views decide together
        conn.request("GET", "/streams.mjpg?cameras=0:preview")
        response = conn.getresponse()
        with lock:
            answers.append((response.status, response, conn))

    askers = [threading.Thread(target=ask) for _ in range(clients)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(20)
    try:
        assert sorted(status for status, _, _ in answers) == [200] * 4 + [503] * 8
        for status, response, _ in answers:
            if status == 200:
                assert next(read_parts(response)).body  # a stream, not an empty 200
            else:
                assert response.getheader("Retry-After") == "5"
                assert "too many viewers" in json.loads(response.read())["error"]
    finally:
        for _, response, conn in answers:
            response.close()
            conn.close()
    assert wait_for(lambda: livecam.request("GET", "/healthz")[1]["streams"] == 0)
