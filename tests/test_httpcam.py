"""HTTP cameras read by livecam itself, against a real hostile camera on loopback."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from camera_server import MjpegCamera
from helpers import blocked_reading, decode, wait_for
from hostile_camera import CLAIMED, PASSWORD, USER, HostileCamera
from livecam import httpcam
from livecam.config import SourceSpec, load_settings, parse_source
from livecam.httpcam import MjpegSource, SnapshotSource, split_credentials
from livecam.source_base import StopSignal
from livecam.sources import READ_TIMEOUT_MS, CaptureSource, Source, SourceError, open_source

MB = 2**20
CAP = 16 * MB


@pytest.fixture(scope="module")
def camera() -> Iterator[HostileCamera]:
    """One hostile camera for the module; every stream ends when its client leaves."""
    server = HostileCamera().start()
    yield server
    server.stop()


@pytest.fixture
def opened() -> Iterator[Callable[..., Source]]:
    """Open URLs as a capture thread would; every source is released at teardown."""
    sources: list[Source] = []

    def open_url(url: str, **kwargs: object) -> Source:
        source = open_source(parse_source(url, "s"), "Net", threading.Event(), **kwargs)
        sources.append(source)
        return source

    yield open_url
    for source in sources:
        source.release()


def peak_growth_mb(action: Callable[[], object]) -> float:
    """How far the process's peak RSS (VmHWM, reset first) rose above its RSS while ``action`` ran."""

    def status(field: str) -> int:
        return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = status("VmRSS")
    action()
    return (status("VmHWM") - before) / 1024


def grab_jpegs(source: Source, count: int) -> list[bytes]:
    """Grab ``count`` frames and return the JPEG each one handed over."""
    result = []
    for _ in range(count):
        assert source.grab()
        result.append(source.jpeg())
    return result


def test_good_camera_hands_over_its_own_jpegs(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/good.mjpg"))
    assert isinstance(source, MjpegSource)
    assert source.compressed is True
    assert (source.width, source.height) == (160, 120)
    assert all(jpeg in camera.frames for jpeg in grab_jpegs(source, 5))  # byte for byte
    assert source.retrieve().shape == (120, 160, 3)
    assert (source.rejected, source.last_rejection) == (0, None)


@pytest.mark.parametrize("path", ["/garbage-first.mjpg", "/long-lead-first.mjpg"])
def test_a_bad_first_part_does_not_poison_the_stream(camera: HostileCamera, opened, path: str) -> None:
    source = opened(camera.url(path))
    assert source.compressed is True
    assert (source.width, source.height) == (160, 120)  # not a 1xN strip
    assert all(jpeg in camera.frames for jpeg in grab_jpegs(source, 4))
    assert (source.rejected, source.last_rejection) == (1, "not a JPEG")


@pytest.mark.parametrize("path", ["/crlf-first.mjpg", "/crlf-every.mjpg", "/crlf-every.mjpg?as=octet"])
def test_a_stray_crlf_before_the_jpeg_is_cut_as_ffmpeg_skips_it(
    camera: HostileCamera, opened, path: str
) -> None:
    # Every part is CRLF + JPEG, the Content-Length counting both; "?as=octet" is FFmpeg's to read.
    source = opened(camera.url(path))
    assert isinstance(source, CaptureSource if path.endswith("octet") else MjpegSource)
    first = source.retrieve()
    jpegs = grab_jpegs(source, 30)
    assert all(jpeg in camera.frames for jpeg in jpegs)  # 30 of 30, clean: no CRLF forwarded
    assert (source.rejected, source.last_rejection) == (0, None)
    assert np.array_equal(first, decode(jpegs[0]))  # the picture the camera drew


@pytest.mark.parametrize(
    ("path", "reason"), [("/garbage-payloads.mjpg", "not a JPEG"), ("/truncated.mjpg", "truncated JPEG")]
)
def test_bad_payloads_in_valid_framing_are_dropped_and_counted(
    camera: HostileCamera, opened, path: str, reason: str
) -> None:
    source = opened(camera.url(path))
    assert all(jpeg in camera.frames for jpeg in grab_jpegs(source, 6))
    assert type(source.rejected) is int and source.rejected >= 5
    assert source.last_rejection == reason


def test_a_frame_claiming_60000_pixels_square_is_dropped_and_counted(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/claims-60000.mjpg"))  # its first part claims it too
    assert (source.width, source.height) == (160, 120)
    assert all(jpeg in camera.frames for jpeg in grab_jpegs(source, 4))
    assert source.rejected >= 4
    assert source.last_rejection == "picture size 60000x60000 is not from 1x1 to 8192x8192"


def test_a_camera_sending_only_garbage_fails_clearly(camera: HostileCamera, opened) -> None:
    with pytest.raises(SourceError, match=r"^camera sends no valid JPEG: not a JPEG") as caught:
        opened(camera.url("/only-garbage.mjpg"))
    # No source is left to ask: the error carries the frames dropped, to be counted.
    assert (caught.value.rejected, caught.value.last_rejection) == (50, "not a JPEG")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/huge.mjpg", "frame of 30 MB exceeds the 16 MB limit"),
        ("/huge-no-length.mjpg", "frame of more than 16 MB exceeds the 16 MB limit"),
    ],
)
def test_30_mb_parts_are_dropped_without_being_held(
    camera: HostileCamera, opened, path: str, reason: str
) -> None:
    jpegs: list[bytes] = []

    def read() -> None:
        source = opened(camera.url(path), max_frame=CAP)
        jpegs.extend(grab_jpegs(source, 6))
        assert source.rejected >= 5 and source.last_rejection == reason

    growth = peak_growth_mb(read)
    assert all(jpeg in camera.frames for jpeg in jpegs)
    assert growth < 64, f"peak RSS grew by {growth:.0f} MB"


def test_memory_comes_back_after_an_oversized_part(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/huge-no-length.mjpg"), max_frame=CAP)
    grab_jpegs(source, 4)
    assert source.rejected >= 3
    # The scan buffer held up to 16 MB; nothing of that size may stay allocated.
    assert source._buffer.__sizeof__() < MB


def test_a_part_claiming_2_gb_fails_within_the_read_timeout(camera: HostileCamera, opened) -> None:
    errors: list[SourceError] = []
    started = time.monotonic()

    def read() -> None:
        with pytest.raises(SourceError) as caught:
            opened(camera.url("/claims-2gb.mjpg"), max_frame=CAP)
        errors.append(caught.value)

    growth = peak_growth_mb(read)
    elapsed = time.monotonic() - started
    assert str(errors[0]).startswith(
        f"camera sends no valid JPEG: frame of {CLAIMED // MB} MB exceeds the 16 MB"
    )
    assert elapsed < READ_TIMEOUT_MS / 1000 + 3
    assert growth < 64, f"peak RSS grew by {growth:.0f} MB"


def test_the_frame_cap_is_a_setting(camera: HostileCamera, opened) -> None:
    with pytest.raises(SourceError, match="exceeds the 512 bytes limit"):
        opened(camera.url("/good.mjpg"), max_frame=512)


def test_a_part_header_above_16_kb_is_an_error(camera: HostileCamera, opened) -> None:
    with pytest.raises(SourceError, match="part header of more than 16 KB"):
        opened(camera.url("/big-header.mjpg"))


def test_parts_without_length_and_a_quoted_dashed_boundary(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/no-length.mjpg"))
    assert all(jpeg in camera.frames for jpeg in grab_jpegs(source, 5))
    assert source.rejected == 0


@pytest.mark.parametrize("path", ["/basic.mjpg", "/digest.mjpg"])
@pytest.mark.parametrize("encoded", [True, False])
def test_credentials_from_the_url_answer_basic_and_digest(
    camera: HostileCamera, opened, path: str, encoded: bool
) -> None:
    url = camera.url(path, USER, PASSWORD)
    if not encoded:
        url = url.replace("p%40ss%5Bw0rd", PASSWORD)  # as people type it
    source = opened(url)
    assert all(jpeg in camera.frames for jpeg in grab_jpegs(source, 3))
    sent = [headers for p, headers in camera.requests if p == path]
    assert sent[-1]["Authorization"].startswith("Basic" if "basic" in path else "Digest")
    assert all(PASSWORD not in p for p in camera.paths())
    assert all("admin" not in headers.get("Host", "") for _, headers in camera.requests)


@pytest.mark.parametrize("path", ["/basic.mjpg", "/digest.mjpg"])
@pytest.mark.parametrize("password", [None, "wrong[pass"])
def test_refused_credentials_say_401_and_are_marked_refused(
    camera: HostileCamera, opened, path: str, password: str | None
) -> None:
    url = camera.url(path) if password is None else camera.url(path, USER, password)
    with pytest.raises(SourceError) as caught:
        opened(url)
    assert str(caught.value) == "camera answered 401 Unauthorized (text/html)"
    assert caught.value.refused is True


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/missing", r"^camera answered 404 Not Found"),
        ("/error", r"^camera answered 500 Internal Server Error"),
        ("/page.html", r"^camera sent text/html, not video$"),
    ],
)
def test_errors_and_pages_say_what_came_back(camera: HostileCamera, opened, path: str, message: str) -> None:
    with pytest.raises(SourceError, match=message) as caught:
        opened(camera.url(path, "admin", "hunter2"))
    assert caught.value.refused is False
    assert "hunter2" not in str(caught.value)


def test_an_unreachable_camera_names_the_url_without_its_password(camera: HostileCamera) -> None:
    url = camera.url("/good.mjpg", "admin", "hunter2").replace(str(camera.port), "1")
    with pytest.raises(SourceError, match=r"^cannot open http://127\.0\.0\.1:1/good\.mjpg: ") as caught:
        open_source(parse_source(url, "s"), "Net", threading.Event())
    assert "hunter2" not in str(caught.value)


def test_redirects_are_followed_and_query_strings_kept(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/redirect"))
    assert source.grab() and source.jpeg() in camera.frames
    source = opened(camera.url("/good.mjpg?channel=1&token=a%2Fb+c"))
    assert source.grab()
    assert "/good.mjpg?from=redirect" in camera.paths()
    assert "/good.mjpg?channel=1&token=a%2Fb+c" in camera.paths()


def test_a_snapshot_url_is_polled_at_the_given_rate(camera: HostileCamera, opened) -> None:
    before = camera.paths().count("/snapshot.jpg")
    source = opened(camera.url("/snapshot.jpg"), fps=20)
    assert isinstance(source, SnapshotSource) and source.compressed is True
    started = time.monotonic()
    jpegs = grab_jpegs(source, 5)  # the first was fetched by the open
    elapsed = time.monotonic() - started
    assert all(jpeg in camera.frames for jpeg in jpegs)
    assert camera.paths().count("/snapshot.jpg") - before == 5
    assert elapsed >= 4 / 20 * 0.9  # polled at 20 fps, not as fast as the camera answers
    assert source.retrieve().shape == (120, 160, 3)


def test_a_snapshot_camera_is_polled_at_2_fps_by_default(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/snapshot.jpg"))
    started = time.monotonic()
    grab_jpegs(source, 2)
    assert time.monotonic() - started >= 0.45


def test_other_video_is_left_to_ffmpeg(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/octet.mjpg"))
    assert isinstance(source, CaptureSource)
    assert source.grab()
    assert source.retrieve().shape == (120, 160, 3)


def test_https_camera_with_a_trusted_certificate(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, opened
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    server = HostileCamera(certificate=certificate).start()
    try:
        source = opened(server.url("/digest.mjpg", USER, PASSWORD), tls_verify=True)
        assert all(jpeg in server.frames for jpeg in grab_jpegs(source, 3))
        source.release()
    finally:
        server.stop()


def test_https_camera_with_a_self_signed_certificate(certificate: tuple[Path, Path], opened) -> None:
    server = HostileCamera(certificate=certificate).start()
    try:
        # As IP cameras ship: encrypted, its certificate not checked unless asked.
        source = opened(server.url("/good.mjpg"))
        assert isinstance(source, MjpegSource) and not source.skims  # TLS: the socket cannot tell
        assert all(jpeg in server.frames for jpeg in grab_jpegs(source, 3))
        with pytest.raises(SourceError, match="cannot open https://127.0.0.1:.*CERTIFICATE_VERIFY_FAILED"):
            opened(server.url("/good.mjpg"), tls_verify=True)
    finally:
        server.stop()


def test_a_stalled_stream_ends_with_the_read_timeout(opened) -> None:
    # A camera that answers, then never sends a part: no thread may hang on it.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        conn.recv(4096)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=x\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match=r"camera sent nothing for 3 s"):
            opened(f"http://127.0.0.1:{port}/cam")
        assert time.monotonic() - started < READ_TIMEOUT_MS / 1000 + 2
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize(
    ("url", "bare", "user", "password"),
    [
        ("http://admin:p@ss[w0rd@10.0.0.5:80/a?b=1", "http://10.0.0.5:80/a?b=1", "admin", "p@ss[w0rd"),
        ("https://u%40x:p%3Ab@h:8/", "https://h:8/", "u@x", "p:b"),
        ("http://h/x?user=a@b", "http://h/x?user=a@b", None, ""),
    ],
)
def test_split_credentials(url: str, bare: str, user: str | None, password: str) -> None:
    assert split_credentials(url) == (bare, user, password)


@pytest.mark.parametrize("path", ["/basic.mjpg", "/digest.mjpg"])
def test_a_password_typed_with_at_signs_brackets_and_colons_is_read_as_ffmpeg_reads_it(path: str) -> None:
    # The userinfo ends at the last "@" before the host, as FFmpeg and VLC read it.
    password = "p@a[s]:w@rd"
    server = HostileCamera(password=password).start()
    try:
        url = f"http://{USER}:{password}@127.0.0.1:{server.port}{path}"
        spec = load_settings(environ={"LIVECAM_CAMERAS": f"5={url}"}).cameras[5].source
        source = open_source(spec, "Net", threading.Event())
        try:
            assert all(jpeg in server.frames for jpeg in grab_jpegs(source, 3))
        finally:
            source.release()
        assert server.requests[-1][1]["Authorization"].startswith("Basic" if "basic" in path else "Digest")
        assert all("127.0.0.1" in headers["Host"] for _, headers in server.requests)
    finally:
        server.stop()


def test_a_bracket_left_open_is_a_reason_not_a_traceback() -> None:
    # What the configuration refuses, opened anyway: a SourceError (the retry shows it),
    # never urlsplit's ValueError escaping to the capture thread's traceback log.
    for url in ("http://[::1:8080/x", "http://admin:pw@[::1:8080/x"):
        with pytest.raises(SourceError, match=r"^cannot open http://(admin:\*\*\*@)?\[::1:8080/x: "):
            open_source(SourceSpec("url", url), "Net", threading.Event())


def test_a_switch_off_wakes_a_snapshot_read_stalled_mid_body(camera: HostileCamera) -> None:
    stop = StopSignal()  # what a camera's capture thread is given
    source = open_source(parse_source(camera.url("/stall.jpg?from=switch-off"), "s"), "Net", stop, fps=20)
    grabbed: list[bool] = []
    reader = threading.Thread(target=lambda: grabbed.append(source.grab()))
    try:
        assert source.grab()  # the first snapshot, fetched whole by the open
        camera.stalled.clear()
        reader.start()  # the next one stops after 100 bytes: a read of up to 3 s
        assert camera.stalled.wait(5) and wait_for(lambda: blocked_reading(reader))
        stop.set()
        reader.join(0.5)
        assert not reader.is_alive() and grabbed == [False]
    finally:
        stop.set()
        reader.join(5)
        source.release()


def test_frames_decode_to_what_the_camera_drew(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/garbage-first.mjpg"))
    image = source.retrieve()
    assert image is not None and image.dtype == np.uint8 and image.shape == (120, 160, 3)


def test_a_fake_jpeg_with_the_right_markers_is_dropped(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/fake-jpeg.mjpg"))
    assert all(jpeg in camera.frames for jpeg in grab_jpegs(source, 4))
    assert source.rejected >= 3 and source.last_rejection == "not a JPEG"


def test_bytes_after_the_picture_are_cut_not_the_frame(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/trailer.mjpg"))
    assert all(jpeg in camera.frames for jpeg in grab_jpegs(source, 4))  # the picture alone
    assert source.rejected == 0


def test_an_unreadable_content_length_means_scanning(camera: HostileCamera, opened) -> None:
    source = opened(camera.url("/odd-length.mjpg"))
    assert all(jpeg in camera.frames for jpeg in grab_jpegs(source, 4))


def test_a_trickling_camera_fails_and_stops_when_told(
    camera: HostileCamera, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpcam, "FRAME_TIMEOUT", 1.0)  # ten seconds in production
    stop = threading.Event()
    source = open_source(parse_source(camera.url("/trickle.mjpg"), "s"), "Net", stop)
    try:
        assert source.grab()  # the one good frame
        started = time.monotonic()
        with pytest.raises(SourceError, match="no whole frame for 1 s"):
            source.grab()  # a byte every 0.2 s: no read ever times out
        assert time.monotonic() - started < 3
    finally:
        source.release()
    stopped = open_source(parse_source(camera.url("/trickle.mjpg"), "s"), "Net", stop)
    try:
        assert stopped.grab()
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        assert not stopped.grab()  # switched off mid-frame: it lets go at once
        assert time.monotonic() - started < 2
    finally:
        stopped.release()


def chunked_camera(frames: list[bytes], ready: threading.Event, port: list[int]) -> None:
    """An HTTP/1.1 MJPEG camera that sends its stream chunked, in chunks of odd sizes across
    parts, then the closing delimiter (one connection, then it ends)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port.append(server.getsockname()[1])
        ready.set()
        server.settimeout(10)
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=cam\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            body = b"".join(
                b"--cam\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(f), f)
                for f in frames
            )
            body += b"--cam--\r\n"
            for start in range(0, len(body), 777):
                chunk = body[start : start + 777]
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.sendall(b"0\r\n\r\n")


def test_a_chunked_stream_is_read_through_its_chunks(opened) -> None:
    frames = [
        cv2.imencode(".jpg", np.full((48, 64, 3), shade, np.uint8))[1].tobytes() for shade in (10, 120, 240)
    ]
    ready, port = threading.Event(), []
    server = threading.Thread(target=chunked_camera, args=(frames, ready, port), daemon=True)
    server.start()
    assert ready.wait(5)
    source = opened(f"http://127.0.0.1:{port[0]}/cam.mjpg")
    assert isinstance(source, MjpegSource) and not source.skims  # http.client takes the chunks apart
    assert grab_jpegs(source, 3) == frames
    assert not source.grab()  # the closing delimiter ends the stream
    assert source.rejected == 0
    server.join(5)


def test_what_has_arrived_is_told_so_an_unwatched_camera_is_read_only_then(
    mjpeg_camera: MjpegCamera, opened
) -> None:
    source = opened(mjpeg_camera.url)
    assert isinstance(source, MjpegSource) and source.skims
    assert source.grab()  # the first frame (number 0), read while opening
    assert mjpeg_camera.wait_sent(6)
    mjpeg_camera.stall()
    try:
        assert mjpeg_camera.paused.wait(5)  # nothing more comes
        sent = mjpeg_camera.sent
        taken = 0
        while source.arrived():
            assert source.grab()
            taken += 1
        assert taken == sent - 1 >= 5  # every one that came since, none waited for
        assert source.jpeg() == mjpeg_camera.frame(sent - 1)  # the newest held
        assert source.rejected == 0
    finally:
        mjpeg_camera.resume()
    assert source.grab()  # then it waits for the next one, as ever
