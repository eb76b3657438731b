"""The programs people run beside a camera server, for real, against one protected livecam:
ffmpeg's mpjpeg demuxer (what Frigate and go2rtc's ffmpeg sources use), OpenCV, Motion and
VLC reading its streams with the view token as a Basic password; livecam reading Motion's
own stream and an ffmpeg-served MJPEG; and the rule Home Assistant's proxy keeps, that a
stream silent for 10 s is ended. Every program must be installed (``.ci/run`` installs
them): a missing one fails its test, none is skipped.
"""

from __future__ import annotations

import base64
import http.client
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from camera_server import MjpegCamera
from helpers import (
    ROOT,
    Part,
    Server,
    StreamConnection,
    decode,
    end_process,
    free_port,
    read_parts,
    wait_for,
)

VIEW, CONTROL = "interop-view-token-1", "interop-control-token-2"
HA_SILENCE = 10.0  # Home Assistant's proxy ends a stream that sends nothing for this long
HEARTBEAT_SLACK = 3.0  # a heartbeat is due each second; this leaves room for a busy machine


def program(name: str) -> str:
    """The path of a program the test needs; a missing one fails the test."""
    path = shutil.which(name)
    assert path, f"{name} is not installed: .ci/run installs it (apt-get)"
    return path


def basic(user: str, token: str) -> str:
    """An Authorization header with the token as the Basic password."""
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def upstream_colour(jpeg: bytes) -> bool:
    """Whether a picture shows the upstream camera's frames (reddish: R 160, G 80), not a grey
    placeholder of livecam's or Motion's "no camera" picture."""
    image = decode(jpeg).astype(np.float32)
    return float(image[..., 2].mean() - image[..., 1].mean()) > 40


def listening(port: int) -> bool:
    """Whether a socket listens on the loopback port, seen without connecting to it (a server
    that serves one client must not spend it on a probe)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
            return True
    return False


def accepts(port: int) -> bool:
    """Whether a TCP connection to the loopback port is accepted."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def running(command: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Run a program for the block, its output to ``log``; then SIGTERM, and SIGKILL if it
    lingers, by its PID."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, env=env)
        try:
            yield process
        finally:
            end_process(process, 5)


def parts_within(parts: Iterator[Part], seconds: float, wanted) -> Part:
    """The first part that ``wanted`` accepts, read for at most about ``seconds``."""
    deadline = time.monotonic() + seconds
    for part in parts:
        if wanted(part):
            return part
        assert time.monotonic() < deadline, "no such part in time"
    raise AssertionError("the stream ended")


class Rig:
    """One protected livecam with its sources, shared by the tests of this file."""

    def __init__(self, state: Path) -> None:
        self.upstream = MjpegCamera(320, 240, 15).start()  # camera 0: reddish numbered frames
        self.stalling = MjpegCamera(320, 240, 10).start()  # camera 3: one a test makes hang
        self.motion_port, self.ffmpeg_port = free_port(), free_port()
        config = state / "livecam.toml"
        config.write_text(
            f"[cameras.0]\nsource = '{self.upstream.url}'\nname = 'Upstream'\nautostart = true\n"
            f"[cameras.1]\nsource = 'http://127.0.0.1:{self.motion_port}/1/stream'\nname = 'Motion'\n"
            f"[cameras.2]\nsource = 'http://127.0.0.1:{self.ffmpeg_port}/feed.mjpg'\nname = 'ffmpeg'\n"
            f"[cameras.3]\nsource = '{self.stalling.url}'\nname = 'Stalling'\nautostart = true\n"
            "[cameras.4]\nsource = 'testsrc:320x240@10'\nname = 'Pattern'\nautostart = true\n"
        )
        env = {"LIVECAM_CONFIG": str(config), "LIVECAM_VIEW_TOKEN": VIEW, "LIVECAM_CONTROL_TOKEN": CONTROL}
        self.livecam = Server(env, state / "state")
        self.livecam.wait_ready()

    def url(self, path: str, user: str = "viewer", token: str = VIEW) -> str:
        """A URL carrying the token as the password, as players and recorders are given it."""
        return f"http://{user}:{token}@127.0.0.1:{self.livecam.port}{path}"

    def switch(self, camera: int, action: str) -> None:
        status, body = self.livecam.send_json("POST", f"/cameras/{camera}/{action}", token=CONTROL)
        assert status == 200, body

    def record(self, camera: int) -> dict:
        status, body = self.livecam.send_json("GET", f"/cameras/{camera}", token=VIEW)
        assert status == 200, body
        return body

    def stream(self, path: str, timeout: float = HA_SILENCE) -> tuple[StreamConnection, Iterator[Part]]:
        """Open a stream with Basic credentials as Home Assistant does; a read waiting longer
        than ``timeout`` fails the test, as Home Assistant's proxy would end the stream."""
        conn = StreamConnection("127.0.0.1", self.livecam.port, timeout=timeout)
        conn.request("GET", path, headers={"Authorization": basic("homeassistant", VIEW)})
        response = conn.response = conn.getresponse()
        assert response.status == 200, response.read()
        return conn, read_parts(response)

    def close(self) -> None:
        self.livecam.stop()
        self.livecam.log.close()
        self.upstream.stop()
        self.stalling.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    rig = Rig(tmp_path_factory.mktemp("interop"))
    yield rig
    assert "Traceback" not in rig.livecam.output()
    rig.close()


FFMPEG_STRICT = ["-nostdin", "-hide_banner", "-v", "error", "-xerror", "-err_detect", "explode"]


MPJPEG_STRICT = ["-f", "mpjpeg", "-strict_mime_boundary", "1"]
# Frigate's "preset-http-mjpeg-generic" input arguments: no format named, so ffmpeg must
# recognise the stream by itself.
FRIGATE_PRESET = ["-avoid_negative_ts", "make_zero", "-fflags", "nobuffer", "-flags", "low_delay"]
FRIGATE_PRESET += [
    "-strict",
    "experimental",
    "-fflags",
    "+genpts+discardcorrupt",
    "-use_wallclock_as_timestamps",
    "1",
]


@pytest.mark.parametrize(
    ("path", "input_args"),
    [
        ("/cameras/0/stream.mjpg", MPJPEG_STRICT),  # the camera's own JPEGs, passed through
        ("/cameras/4/stream.mjpg?profile=preview", MPJPEG_STRICT),  # encoded by livecam
        ("/cameras/0/stream.mjpg", FRIGATE_PRESET),
    ],
    ids=["passthrough", "encoded", "frigate-preset"],
)
def test_ffmpeg_decodes_the_stream_strictly(rig: Rig, path: str, input_args: list[str]) -> None:
    # ffmpeg sends a URL's credentials only once a 401 has asked for Basic: this also proves
    # the challenge.
    command = [program("ffmpeg"), *FFMPEG_STRICT, *input_args, "-i", rig.url(path)]
    command += ["-frames:v", "12", "-f", "framemd5", "-"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    frames = [line.split(",") for line in result.stdout.splitlines() if not line.startswith("#")]
    assert len(frames) == 12
    assert len({frame[-1] for frame in frames}) > 6  # live video, not one picture again


def test_ffmpeg_with_a_wrong_token_is_refused(rig: Rig) -> None:
    command = [
        program("ffmpeg"),
        *FFMPEG_STRICT,
        "-f",
        "mpjpeg",
        "-i",
        rig.url("/cameras/0/stream.mjpg", token="wrong"),
    ]
    result = subprocess.run(
        [*command, "-frames:v", "1", "-f", "null", "-"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0 and "403 Forbidden" in result.stderr


def test_opencv_reads_a_protected_stream_with_the_token_in_its_url(rig: Rig) -> None:
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
    capture = cv2.VideoCapture(rig.url("/cameras/0/stream.mjpg"), cv2.CAP_FFMPEG, params)
    try:
        assert capture.isOpened()
        for _ in range(3):
            ok, image = capture.read()
            assert ok and image.shape == (240, 320, 3)
        assert float(image[..., 2].mean() - image[..., 1].mean()) > 40  # the upstream's frames
    finally:
        capture.release()


@pytest.fixture(scope="module")
def motion(rig: Rig, tmp_path_factory: pytest.TempPathFactory, stop_every_server) -> Iterator[Path]:
    """Debian's Motion watching livecam's camera 0 with the view token as its netcam password,
    serving its own stream of it on a loopback port; the path of its log. Told to stop at the
    end (it takes seconds to), and waited for while the next tests run."""
    work = tmp_path_factory.mktemp("motion")
    log = work / "motion.log"
    (work / "camera1.conf").write_text(
        "camera_id 1\n"
        f"netcam_url http://127.0.0.1:{rig.livecam.port}/cameras/0/stream.mjpg\n"
        f"netcam_userpass motion:{VIEW}\n"
    )
    (work / "motion.conf").write_text(
        f"daemon off\nsetup_mode off\nlog_level 6\nlog_file {log}\ntarget_dir {work / 'out'}\n"
        "width 320\nheight 240\nframerate 10\npicture_output off\nmovie_output off\n"
        f"webcontrol_port 0\nstream_port {rig.motion_port}\nstream_localhost on\nstream_maxrate 10\n"
        f"camera {work / 'camera1.conf'}\n"
    )
    output = (work / "output.log").open("wb")
    command = [program("motion"), "-n", "-c", str(work / "motion.conf")]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    try:
        assert wait_for(lambda: accepts(rig.motion_port), 15), log.read_text() if log.exists() else ""
        yield log
    finally:
        stop_every_server.add_process(process, output.close)


def motion_stream(port: int) -> StreamConnection:
    """A connection to Motion's own stream of its camera; its server drops connections until
    that camera's thread runs, so this asks again, bounded."""
    deadline = time.monotonic() + 15
    while True:
        conn = StreamConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/1/stream")
            conn.response = conn.getresponse()
            if conn.response.status == 200:
                return conn
        except (http.client.HTTPException, OSError):
            pass
        conn.close()
        assert time.monotonic() < deadline, "Motion serves no stream"
        time.sleep(0.2)  # polling a server that has no event to wait on


def test_motion_receives_frames_of_a_protected_stream(rig: Rig, motion: Path) -> None:
    conn = motion_stream(rig.motion_port)
    try:
        # Motion streams a grey "no camera" picture until frames arrive: wait for livecam's.
        parts = read_parts(conn.response, b"BoundaryString")
        part = parts_within(parts, 20, lambda p: upstream_colour(p.body))
        assert decode(part.body).shape == (240, 320, 3)
    finally:
        conn.close()
    assert "connected" in motion.read_text()


def test_livecam_reads_motions_own_stream(rig: Rig, motion: Path) -> None:
    rig.switch(1, "start")
    conn, parts = rig.stream("/cameras/1/stream.mjpg")
    try:
        part = parts_within(parts, 20, lambda p: upstream_colour(p.body))
        assert decode(part.body).shape == (240, 320, 3)
        assert rig.record(1)["state"] == "on"
    finally:
        conn.close()
        rig.switch(1, "stop")


def test_livecam_reads_an_ffmpeg_served_mjpeg(rig: Rig, tmp_path: Path) -> None:
    # A flat colour like the upstream camera's (R 160, G 80), so its frames are told from
    # livecam's grey placeholder. "-listen 1" serves one client, then ffmpeg exits.
    command = [program("ffmpeg"), "-nostdin", "-v", "error", "-re", "-f", "lavfi"]
    command += ["-i", "color=c=0xA05010:s=320x240:r=10", "-c:v", "mjpeg", "-f", "mpjpeg"]
    command += ["-content_type", "multipart/x-mixed-replace;boundary=ffmpeg", "-listen", "1"]
    command += [f"http://127.0.0.1:{rig.ffmpeg_port}/feed.mjpg"]
    with running(command, tmp_path / "ffmpeg.log"):
        assert wait_for(lambda: listening(rig.ffmpeg_port), 10)
        rig.switch(2, "start")
        conn, parts = rig.stream("/cameras/2/stream.mjpg")
        try:
            first = parts_within(parts, 15, lambda p: upstream_colour(p.body))
            later = parts_within(parts, 5, lambda p: p.headers["x-timestamp"] != first.headers["x-timestamp"])
            assert upstream_colour(later.body) and decode(later.body).shape == (240, 320, 3)
            assert rig.record(2)["state"] == "on"
        finally:
            conn.close()
            rig.switch(2, "stop")


def test_vlc_decodes_a_protected_stream(rig: Rig) -> None:
    command = [program("cvlc")]
    if os.geteuid() == 0:
        # VLC refuses to run as root: run it as nobody, as a desktop user would run it.
        nobody = pwd.getpwnam("nobody")
        command = [
            program("setpriv"),
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
        ]
        command += [program("cvlc")]
    with tempfile.TemporaryDirectory(prefix="livecam-vlc-") as work:
        os.chmod(work, 0o777)  # VLC's home and the pictures it writes, whoever it runs as
        pictures = Path(work) / "pictures"
        pictures.mkdir(mode=0o777)
        pictures.chmod(0o777)
        # The scene filter writes each picture VLC decoded; the dummy output shows none.
        command += ["-I", "dummy", "--no-audio", "--vout=dummy", "--video-filter=scene"]
        command += [f"--scene-path={pictures}", "--scene-ratio=1", "--scene-format=png"]
        command += [rig.url("/cameras/0/stream.mjpg", user="vlc")]
        log = Path(work) / "vlc.log"
        with running(command, log, env={**os.environ, "HOME": work}):
            decoded = wait_for(lambda: len(list(pictures.glob("scene*.png"))) >= 5, 20)
        assert decoded, log.read_text(errors="replace")[-3000:]
        image = cv2.imread(str(sorted(pictures.glob("scene*.png"))[-1]), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] == 320
    assert float(image[..., 2].mean() - image[..., 1].mean()) > 40  # livecam's upstream frames


def test_a_stream_is_never_silent_for_home_assistants_ten_seconds(rig: Rig) -> None:
    # Each read fails past HA_SILENCE; the gaps must stay near the one-second heartbeat while
    # the source hangs, before and after livecam notices and shows its placeholder.
    conn, parts = rig.stream("/cameras/3/stream.mjpg")
    try:
        assert upstream_colour(next(parts).body)
        rig.stalling.stall()
        arrivals = [time.monotonic()]
        placeholder = False
        while not placeholder:  # bounded: livecam gives up on a silent source within seconds
            part = next(parts)
            arrivals.append(time.monotonic())
            placeholder = not upstream_colour(part.body)
            assert arrivals[-1] - arrivals[0] < 20, "no placeholder"
        late, late_parts = rig.stream("/cameras/3/stream.mjpg")  # a viewer joining the hang
        try:
            start = time.monotonic()
            next(late_parts)
            assert time.monotonic() - start < HEARTBEAT_SLACK
        finally:
            late.close()
        gaps = np.diff(arrivals)
        assert gaps.max() < HEARTBEAT_SLACK, gaps
        rig.stalling.resume()
        parts_within(parts, 10, lambda p: upstream_colour(p.body))
    finally:
        rig.stalling.resume()
        conn.close()
