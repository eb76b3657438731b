"""Open a camera's source (V4L2 device, URL, file or test pattern) behind one small interface.

A source is used by exactly one capture thread, which opens it, calls ``grab()`` for every
frame (cheap: advance to the newest frame) and ``retrieve()`` only for frames someone will
see (expensive: decode), and finally ``release()``. OpenCV captures are not thread-safe, so
nothing else may touch a source.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from .config import SourceSpec
from .httpcam import open_http
from .jpeg import Span, jpeg_span, with_huffman_tables
from .pattern import TestPattern
from .redaction import redact
from .source_base import (
    MAX_FRAME,
    OPEN_TIMEOUT_MS,
    READ_TIMEOUT_MS,
    Screening,
    Source,
    SourceError,
    human_size,
)
from .v4l2 import (
    PREFERRED_FORMATS,
    CaptureMode,
    Ioctl,
    choose_mode,
    device_modes,
    device_path,
    fourcc_code,
    fourcc_text,
)

log = logging.getLogger(__name__)

MJPG = cv2.VideoWriter_fourcc(*"MJPG")
# Some V4L2 drivers name their motion-JPEG format JPEG rather than MJPG.
JPEG_FOURCCS = {MJPG, cv2.VideoWriter_fourcc(*"JPEG")}


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
        except BaseException as error:
            self._opening_failed(error)
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
            span = self._span(data if ok else None)
            if span.problem is None:
                # A view, no copy: without stray bytes before the picture or a trailer after it.
                self._held = data[:, span.start : span.end]
                self._accept()
                return True
            self._reject(span.problem)

    def _span(self, data: np.ndarray | None) -> Span:
        """Where the camera's JPEG lies in a raw packet, or why it cannot be handed out."""
        if not is_packet(data):
            return Span(0, 0, "not a JPEG")
        if data.size > self._max_frame:
            limit = human_size(self._max_frame)
            return Span(0, 0, f"frame of {human_size(data.size)} exceeds the {limit} limit")
        return jpeg_span(data)

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


def _device_mode(
    target: int | str,
    name: str,
    size: tuple[int, int] | None,
    fps: float | None,
    dev: str = "/dev",
    ioctl: Ioctl | None = None,
) -> CaptureMode | None:
    """The mode to ask of a device, from its own list; None when it cannot be listed."""
    path = device_path(target, dev)
    try:
        modes = device_modes(path) if ioctl is None else device_modes(path, ioctl)
    except OSError as exc:
        log.info("%s: cannot list the modes of %s: %s", name, path, exc.strerror or exc)
        modes = []
    mode = choose_mode(modes, size, fps, label=name)
    if mode is None and size is not None:
        # Nothing listed: still ask for the configured size, both sides, or OpenCV keeps 640x480.
        mode = CaptureMode("MJPG", *size, fps)
    return mode


def _open_device(target: int | str, mode: CaptureMode | None, raw: bool) -> cv2.VideoCapture:
    """Open a V4L2 device in ``mode``, asking in the order the driver needs, with one buffer.

    OpenCV opens a device at 640x480 and 30 fps and applies a size only once both width and
    height are set (videoio cap_v4l.cpp, icvSetFrameSize). The format and the size each
    restart the stream with VIDIOC_S_FMT, and a frame rate (VIDIOC_S_PARM) is only valid for
    the format and size already set: so FOURCC, then width and height, then FPS.
    """
    cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
    if not cap.isOpened():
        raise SourceError(f"cannot open V4L2 device {target}")
    cap.set(cv2.CAP_PROP_FOURCC, fourcc_code(mode.fourcc) if mode else MJPG)
    if mode is not None:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, mode.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, mode.height)
        if mode.fps:
            cap.set(cv2.CAP_PROP_FPS, mode.fps)
    # One buffer: the newest frame, not one from a queue filled while nobody read.
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    # OpenCV falls back to another format when the driver refuses the one asked: read it back.
    if raw and fourcc_text(int(cap.get(cv2.CAP_PROP_FOURCC))) in PREFERRED_FORMATS:
        # Hand over the camera's JPEG buffers as they are; decoding is livecam's choice.
        cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
    return cap


def _open_v4l2(
    target: int | str, name: str, stop: threading.Event, size: tuple[int, int] | None, fps: float | None
) -> CaptureSource:
    """Open a device in the mode chosen from its list and say when it gives something else."""
    asked = _device_mode(target, name, size, fps)
    cap = _open_device(target, asked, raw=True)
    fourcc, rate = fourcc_text(int(cap.get(cv2.CAP_PROP_FOURCC))), cap.get(cv2.CAP_PROP_FPS)
    raw = not cap.get(cv2.CAP_PROP_CONVERT_RGB)
    source = CaptureSource(cap, stop)
    if raw and not source.compressed:
        # MJPG buffers that are no JPEG: let OpenCV convert them instead.
        source.release()
        source = CaptureSource(_open_device(target, asked, raw=False), stop)
    # The first frame says what the device really gives.
    got = CaptureMode(fourcc, source.width, source.height, rate if rate > 0 else None)
    if asked is None or asked.matches(got):
        log.info("%s: device %s captures %s", name, target, got)
    else:
        log.warning("%s: device %s was asked for %s and gives %s", name, target, asked, got)
    return source


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
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    *,
    max_frame: int = MAX_FRAME,
    tls_verify: bool = False,
) -> Source:
    """Open ``spec`` for the calling capture thread, or raise SourceError saying why.

    ``size`` and ``fps`` choose a device's capture mode; ``width`` is a resize of the output
    done by the capture thread, so no source uses it. ``fps`` is also how often a camera
    that serves single JPEG snapshots is fetched.

    :param max_frame: bytes; a camera's frame larger than this is dropped, never buffered
        whole where livecam reads the camera itself (HTTP).
    """
    if spec.kind == "testsrc":
        return PatternSource(spec, name, stop)
    if spec.kind == "device":
        return _open_v4l2(spec.target, name, stop, size, fps)
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
        source = open_http(target, stop, max_frame=max_frame, fps=fps, tls_verify=tls_verify)
        if source is not None:
            return source
    cap = _open_ffmpeg(target)
    if not cap.isOpened():
        raise SourceError(f"cannot open {redact(target)}")
    return CaptureSource(cap, stop, max_frame=max_frame)
