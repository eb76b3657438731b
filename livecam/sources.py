"""Open a camera's source (V4L2 device, URL, file or test pattern) behind one small interface.

A source is used by exactly one capture thread, which opens it, calls ``grab()`` for every
frame (cheap: advance to the newest frame) and ``retrieve()`` only for frames someone will
see (expensive: decode), and finally ``release()``. OpenCV captures are not thread-safe, so
nothing else may touch a source.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from .config import SourceSpec
from .jpeg import jpeg_problem, with_huffman_tables
from .pattern import TestPattern

log = logging.getLogger(__name__)

OPEN_TIMEOUT_MS = 5000
# A network camera that sends nothing for this long is treated as lost.
READ_TIMEOUT_MS = 3000

# VIDIOC_QUERYCAP = _IOR('V', 0, struct v4l2_capability), a 104-byte struct.
VIDIOC_QUERYCAP = 0x80685600
V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
V4L2_CAP_DEVICE_CAPS = 0x80000000
MJPG = cv2.VideoWriter_fourcc(*"MJPG")
# Some V4L2 drivers name their motion-JPEG format JPEG rather than MJPG.
JPEG_FOURCCS = {MJPG, cv2.VideoWriter_fourcc(*"JPEG")}


# A part larger than this is dropped unread; the app passes settings.max_frame_mb.
MAX_FRAME = 16 * 2**20
# A camera that sends this many bad frames in a row (or only bad ones for READ_TIMEOUT_MS)
# is treated as failed rather than screened for ever.
MAX_BAD_IN_ROW = 50


class SourceError(Exception):
    """The source cannot be opened or stopped delivering frames; the message says why.

    ``refused`` is True when the camera turned livecam away (HTTP 401 or 403): retrying soon
    cannot help until someone fixes the credentials.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def human_size(size: int) -> str:
    """A byte count for a message: whole megabytes, kilobytes or bytes."""
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if size >= scale:
            return f"{size / scale:.0f} {unit}"
    return f"{size} bytes"


class Screening:
    """Drops bad frames and counts them; gives up on a source that sends nothing else.

    A source calls ``_reject(reason)`` for each frame it drops and ``_accept()`` for each it
    hands out; ``rejected`` and ``last_rejection`` are for the camera's status.
    """

    rejected: int = 0  # frames dropped because they were not whole JPEGs or too large
    last_rejection: str | None = None  # why the last one was dropped
    _bad_in_row = 0
    _bad_since: float | None = None

    def _reject(self, reason: str) -> None:
        """Count a dropped frame; raise SourceError if good frames have stopped coming."""
        self.rejected += 1
        self.last_rejection = reason
        self._bad_in_row += 1
        if self._bad_since is None:
            self._bad_since = time.monotonic()
        if self._bad_in_row >= MAX_BAD_IN_ROW:
            raise SourceError(
                f"camera sends no valid JPEG: {reason} ({self._bad_in_row} bad frames in a row)"
            )
        self._check_patience()

    def _check_patience(self) -> None:
        """Raise SourceError once only bad data has come for the read timeout."""
        if self._bad_since is not None and time.monotonic() - self._bad_since >= READ_TIMEOUT_MS / 1000:
            seconds = READ_TIMEOUT_MS / 1000
            raise SourceError(
                f"camera sends no valid JPEG: {self.last_rejection} (none good for {seconds:g} s)"
            )

    def _accept(self) -> None:
        """A good frame: the camera is healthy again."""
        self._bad_in_row = 0
        self._bad_since = None


class Source(Protocol):
    """What the capture thread needs from a source."""

    width: int
    height: int
    compressed: bool  # the source hands over its own JPEG bytes
    rejected: int  # bad frames dropped so far (not whole JPEGs, or larger than the cap)
    last_rejection: str | None  # why the last one was dropped

    def grab(self) -> bool:
        """Advance to the next frame, without decoding it where possible."""

    def retrieve(self) -> np.ndarray | None:
        """Decode the frame last grabbed."""

    def jpeg(self) -> bytes | None:
        """The source's own JPEG bytes of the frame last grabbed, when it has them."""

    def release(self) -> None:
        """Let go of the device, connection or file."""


def redact(source: str) -> str:
    """Hide the password of a URL (``rtsp://user:secret@host``) for logs and status."""
    try:
        parts = urlsplit(source)
    except ValueError:
        return source
    if parts.password is None:
        return source
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class CaptureSource(Screening):
    """An OpenCV capture (device, URL or file), optionally paced and looped like a live feed.

    When OpenCV hands over the camera's own JPEG bytes (FFmpeg's raw packets of an MJPEG
    stream, V4L2's MJPG buffers), the source is ``compressed``: ``jpeg()`` returns them as
    they came and pixels are decoded only when ``retrieve()`` asks for them. Each packet is
    screened on its own: one that is not a whole JPEG, or is larger than ``max_frame``, is
    skipped and counted in ``rejected``.
    """

    def __init__(
        self,
        cap: cv2.VideoCapture,
        stop: threading.Event,
        pace_fps: float | None = None,
        reopen: Callable[[], cv2.VideoCapture] | None = None,
        *,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self._cap = cap
        self._stop = stop
        self._interval = 1.0 / pace_fps if pace_fps else 0.0
        self._next = time.monotonic()
        self._reopen = reopen
        self._max_frame = max_frame
        self._held: np.ndarray | None = None
        # Decided by the stream, never by a packet's bytes: one bad first packet must not
        # turn every later JPEG of the camera into a strip of "pixels".
        self.compressed = hands_over_jpeg(cap)
        try:
            self.height, self.width = self._first_size()
        except BaseException:
            self._cap.release()
            raise
        # The frame read to learn the size is the first one grab() and retrieve() hand out.
        self._held_fresh = True

    def _first_size(self) -> tuple[int, int]:
        """Advance to the first usable frame and tell its height and width."""
        while True:
            if not self._advance():
                if self.rejected:
                    raise SourceError(f"camera sends no valid JPEG: {self.last_rejection}")
                raise SourceError("opened, but no frame arrived")
            if not self.compressed:
                ok, data = self._cap.retrieve()
                if ok and not is_packet(data):
                    self._held = data
                    return data.shape[0], data.shape[1]
                # Raw buffers that are not JPEG (a YUYV device with conversion off): no
                # image to measure, so trust the capture; the device opener reopens it.
                return int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(
                    self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)
                )
            pixels = cv2.imdecode(self._held, cv2.IMREAD_COLOR)
            if pixels is not None:
                return pixels.shape[0], pixels.shape[1]
            self._reject("undecodable JPEG")

    def grab(self) -> bool:
        """Advance one frame; a file is paced at its own rate and loops when asked."""
        if self._held_fresh:
            self._held_fresh = False
            return True
        self._held = None
        if self._interval:
            # A file has no clock of its own: play it at its frame rate, not decode speed.
            self._next = max(self._next + self._interval, time.monotonic() - self._interval)
            delay = self._next - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return False
        return self._advance()

    def _advance(self) -> bool:
        """Grab until a frame fit to hand out, skipping bad packets; False at the end."""
        while True:
            if not self._cap.grab():
                if self._reopen is None:
                    return False
                self._cap.release()
                self._cap = self._reopen()
                if not (self._cap.isOpened() and self._cap.grab()):
                    return False
            if not self.compressed:
                return True  # pixels are decoded lazily by retrieve()
            # In raw mode retrieve() only copies the packet: screening it costs no decode.
            ok, data = self._cap.retrieve()
            problem = self._problem(data if ok else None)
            if problem is None:
                self._held = data
                self._accept()
                return True
            self._reject(problem)

    def _problem(self, data: np.ndarray | None) -> str | None:
        """Why a raw packet cannot be handed out as the camera's JPEG; None if it can."""
        if not is_packet(data):
            return "not a JPEG"
        if data.size > self._max_frame:
            return f"frame of {human_size(data.size)} exceeds the {human_size(self._max_frame)} limit"
        return jpeg_problem(data)

    def _data(self) -> np.ndarray | None:
        """What OpenCV holds for the frame last grabbed: JPEG bytes or pixels."""
        if self._held is not None:
            return self._held
        if self.compressed:
            return None
        ok, data = self._cap.retrieve()
        return data if ok else None

    def retrieve(self) -> np.ndarray | None:
        """The pixels of the frame last grabbed."""
        data = self._data()
        if data is None:
            return None
        if self.compressed:
            return cv2.imdecode(data, cv2.IMREAD_COLOR)
        return None if is_packet(data) else data  # a 1xN array is bytes, never an image

    def jpeg(self) -> bytes | None:
        """The camera's own JPEG bytes of the frame last grabbed, if it sends JPEG."""
        if not self.compressed:
            return None
        data = self._data()
        return None if data is None else with_huffman_tables(data.tobytes())

    def release(self) -> None:
        """Release the OpenCV capture."""
        self._cap.release()


def is_packet(data: np.ndarray | None) -> bool:
    """Whether OpenCV handed over a packet of bytes (a 1xN array), which is never an image."""
    return data is not None and data.ndim == 2 and data.shape[0] == 1


def hands_over_jpeg(cap: cv2.VideoCapture) -> bool:
    """Whether a capture hands over the camera's JPEG packets rather than pixels."""
    # Judged as FFmpeg judges it, by the stream's FOURCC and the mode set, never by the data.
    if int(cap.get(cv2.CAP_PROP_FOURCC)) not in JPEG_FOURCCS:
        return False
    if cap.getBackendName() == "FFMPEG":
        return cap.get(cv2.CAP_PROP_FORMAT) == -1  # raw packets, as _open_ffmpeg asks
    return cap.get(cv2.CAP_PROP_CONVERT_RGB) == 0  # V4L2 hands over its MJPG buffers


class PatternSource:
    """The built-in test pattern: frames are counted at the pattern's rate, drawn on demand."""

    compressed = False
    rejected = 0  # a drawn frame is never bad
    last_rejection = None

    def __init__(self, spec: SourceSpec, name: str, stop: threading.Event) -> None:
        self.width, self.height = spec.width, spec.height
        self._pattern = TestPattern(spec.width, spec.height, name)
        self._interval = 1.0 / spec.fps
        self._stop = stop
        self._next = time.monotonic() - self._interval  # the first frame is due at once
        self._count = -1

    def grab(self) -> bool:
        """Wait for the next frame time; cost nothing else, so an unwatched pattern is free."""
        now = time.monotonic()
        self._next = max(self._next + self._interval, now)
        delay = self._next - now
        if delay > 0 and self._stop.wait(delay):
            return False
        self._count += 1
        return True

    def retrieve(self) -> np.ndarray:
        """Draw the current frame."""
        return self._pattern.render(self._count)

    def jpeg(self) -> None:
        """A drawn pattern has no JPEG of its own."""
        return None

    def release(self) -> None:
        """Nothing to release."""


def _open_device(target: int | str, width: int | None, raw: bool) -> cv2.VideoCapture:
    """Open a V4L2 device asking for MJPG (before the size, as drivers require) and one buffer."""
    cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
    if not cap.isOpened():
        raise SourceError(f"cannot open V4L2 device {target}")
    cap.set(cv2.CAP_PROP_FOURCC, MJPG)
    if width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    # One buffer: the newest frame, not one from a queue filled while nobody read.
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    if raw:
        # Hand over the camera's MJPG buffers as they are; decoding is livecam's choice.
        cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
    return cap


def _open_ffmpeg(target: str) -> cv2.VideoCapture:
    """Open a URL or file with FFmpeg, with timeouts so a dead camera cannot hang the thread.

    An MJPEG source is switched to raw packets: each is one of the camera's JPEGs, so reading
    costs no decode at all (a frame is decoded later only if its pixels are needed).
    """
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        OPEN_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        READ_TIMEOUT_MS,
    ]
    cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    if cap.isOpened() and int(cap.get(cv2.CAP_PROP_FOURCC)) == MJPG:
        cap.set(cv2.CAP_PROP_FORMAT, -1)
    return cap


def open_source(
    spec: SourceSpec,
    name: str,
    stop: threading.Event,
    width: int | None = None,
    loop: bool = True,
    *,
    max_frame: int = MAX_FRAME,
    fps: float | None = None,
) -> Source:
    """Open ``spec`` for the calling capture thread, or raise SourceError saying why.

    :param max_frame: bytes; a camera's frame larger than this is dropped, never buffered
        whole where livecam reads the camera itself (HTTP).
    :param fps: how often to fetch a camera that serves single JPEG snapshots.
    """
    if spec.kind == "testsrc":
        return PatternSource(spec, name, stop)
    if spec.kind == "device":
        source = CaptureSource(_open_device(spec.target, width, raw=True), stop)
        if not source.compressed:
            # Not an MJPG camera: raw buffers would be YUYV or the like, so let OpenCV convert.
            source.release()
            source = CaptureSource(_open_device(spec.target, width, raw=False), stop)
        if width and source.width != width:
            log.info("%s: device %s delivers %dx%d", name, spec.target, source.width, source.height)
        return source
    target = str(spec.target)
    if spec.kind == "file":
        if not os.path.isfile(target):
            raise SourceError(f"no such file: {target}")
        cap = _open_ffmpeg(target)
        if not cap.isOpened():
            raise SourceError(f"cannot read video file {target}")
        rate = cap.get(cv2.CAP_PROP_FPS)
        if not (math.isfinite(rate) and 0.1 <= rate <= 240):
            rate = 25.0
        reopen = (lambda: _open_ffmpeg(target)) if loop else None
        return CaptureSource(cap, stop, pace_fps=rate, reopen=reopen, max_frame=max_frame)
    if target.lower().startswith(("http://", "https://")):
        # FFmpeg's mpjpeg demuxer buffers a part of any size the camera claims, so livecam
        # reads HTTP cameras itself and falls back to FFmpeg only for other kinds of video.
        from .httpcam import open_http  # httpcam builds on this module's SourceError

        source = open_http(target, stop, max_frame=max_frame, fps=fps)
        if source is not None:
            return source
    cap = _open_ffmpeg(target)
    if not cap.isOpened():
        raise SourceError(f"cannot open {redact(target)}")
    return CaptureSource(cap, stop, max_frame=max_frame)


def _querycap(path: str) -> bytes:
    """Ask a V4L2 node for its capabilities (the VIDIOC_QUERYCAP ioctl)."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        return bytes(fcntl.ioctl(fd, VIDIOC_QUERYCAP, bytearray(104)))
    finally:
        os.close(fd)


def can_capture(caps: bytes) -> bool:
    """Tell from a v4l2_capability struct whether the node captures video (not metadata)."""
    capabilities, device_caps = struct.unpack_from("<II", caps, 84)
    if capabilities & V4L2_CAP_DEVICE_CAPS:
        capabilities = device_caps
    return bool(capabilities & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE))


def card_name(caps: bytes) -> str:
    """The device's own name from a v4l2_capability struct."""
    return caps[16:48].split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True)
class Device:
    """A V4L2 node that captures video."""

    index: int
    path: str
    name: str
    by_id: str | None  # the stable /dev/v4l/by-id link, when udev made one


def list_devices(
    dev: str | os.PathLike[str] = "/dev", querycap: Callable[[str], bytes] = _querycap
) -> list[Device]:
    """The V4L2 nodes under ``dev`` that can capture video (not metadata nodes), by index."""
    links = {os.path.realpath(link): str(link) for link in Path(dev, "v4l", "by-id").glob("*")}
    found = []
    for node in Path(dev).glob("video*"):
        match = re.fullmatch(r"video(\d+)", node.name)
        if not match:
            continue
        try:
            caps = querycap(str(node))
        except OSError as exc:
            log.info("skipping %s: %s", node, exc.strerror or exc)
            continue
        if can_capture(caps):
            found.append(
                Device(int(match.group(1)), str(node), card_name(caps), links.get(os.path.realpath(node)))
            )
    return sorted(found, key=lambda device: device.index)


def discover_devices(
    dev: str | os.PathLike[str] = "/dev", querycap: Callable[[str], bytes] = _querycap
) -> list[int]:
    """Indexes of the V4L2 nodes under ``dev`` that can capture video, in order."""
    return [device.index for device in list_devices(dev, querycap)]
