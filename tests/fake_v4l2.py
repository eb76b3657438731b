"""A fake V4L2 driver: real ioctl requests answered with packed structs on real fds.

The structs are packed here by hand from linux/videodev2.h, independently of livecam.v4l2,
so a wrong layout or ioctl number there fails the tests instead of agreeing with itself.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_DEVICE_CAPS = 0x80000000
VIDIOC_QUERYCAP = 0x80685600
VIDIOC_ENUM_FMT = 0xC0405602
VIDIOC_ENUM_FRAMESIZES = 0xC02C564A
VIDIOC_ENUM_FRAMEINTERVALS = 0xC034564B
METADATA_CAPTURE = 0x00800000


def capability(caps: int, device_caps: int = 0, card: bytes = b"") -> bytes:
    """A v4l2_capability struct as the kernel fills it (104 bytes)."""
    return struct.pack("<16s32s32sIII12x", b"uvcvideo", card, b"usb-1", 0, caps, device_caps)


CAMERA_CAPS = capability(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_DEVICE_CAPS, V4L2_CAP_VIDEO_CAPTURE)


def fourcc(text: str) -> int:
    return int.from_bytes(text.encode(), "little")


def fps(*rates: int) -> list[tuple[int, int]]:
    """Discrete frame intervals as uvcvideo reports them: 1/30 s for 30 fps."""
    return [(1, rate) for rate in rates]


@dataclass
class FakeCamera:
    """A V4L2 driver's answers: capability and, per format, sizes and their intervals.

    A size is ``(width, height)`` or ``("stepwise"|"continuous", (min_w, max_w, step_w,
    min_h, max_h, step_h))``; intervals are ``(numerator, denominator)`` pairs or
    ``("stepwise", (min_num, min_den, max_num, max_den, step_num, step_den))``.
    """

    caps: bytes = CAMERA_CAPS
    formats: dict[str, list[tuple[object, object]]] = field(default_factory=dict)
    asked: list[int] = field(default_factory=list)

    def ioctl(self, request: int, buffer: bytearray) -> None:
        """Answer one request the way the kernel does: fill ``buffer`` or raise EINVAL."""
        self.asked.append(request)
        # The kernel copies exactly the size encoded in the request number.
        assert len(buffer) == (request >> 16) & 0x3FFF
        if request == VIDIOC_QUERYCAP:
            buffer[:] = self.caps
            return
        if request == VIDIOC_ENUM_FMT:
            index, kind = struct.unpack_from("<II", buffer)
            names = list(self.formats)
            if kind != 1 or index >= len(names):
                raise OSError(errno.EINVAL, "Invalid argument")
            flags = 1 if names[index] in ("MJPG", "H264") else 0
            description = names[index].encode() + b" format"
            struct.pack_into(
                "<III32sII3I", buffer, 0, index, kind, flags, description, fourcc(names[index]), 0, 0, 0, 0
            )
            return
        if request == VIDIOC_ENUM_FRAMESIZES:
            index, pixelformat = struct.unpack_from("<II", buffer)
            sizes = self._sizes(pixelformat)
            if index >= len(sizes):
                raise OSError(errno.EINVAL, "Invalid argument")
            size = sizes[index][0]
            if isinstance(size[0], str):
                kind, values = {"continuous": 2, "stepwise": 3}[size[0]], size[1]
            else:
                kind, values = 1, (*size, 0, 0, 0, 0)
            struct.pack_into("<III6I2I", buffer, 0, index, pixelformat, kind, *values, 0, 0)
            return
        if request == VIDIOC_ENUM_FRAMEINTERVALS:
            index, pixelformat, width, height = struct.unpack_from("<IIII", buffer)
            intervals = self._intervals(pixelformat, width, height)
            if index >= len(intervals):
                raise OSError(errno.EINVAL, "Invalid argument")
            interval = intervals[index]
            if isinstance(interval[0], str):
                kind, values = 3, interval[1]
            else:
                kind, values = 1, (*interval, 0, 0, 0, 0)
            struct.pack_into("<IIIII6I2I", buffer, 0, index, pixelformat, width, height, kind, *values, 0, 0)
            return
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")

    def _sizes(self, pixelformat: int) -> list[tuple[object, object]]:
        for name, sizes in self.formats.items():
            if fourcc(name) == pixelformat:
                return sizes
        raise OSError(errno.EINVAL, "Invalid argument")

    def _intervals(self, pixelformat: int, width: int, height: int) -> list:
        for size, intervals in self._sizes(pixelformat):
            if size == (width, height):
                return intervals
            if isinstance(size[0], str):
                min_w, max_w, _, min_h, max_h, _ = size[1]
                if min_w <= width <= max_w and min_h <= height <= max_h:
                    return intervals
        raise OSError(errno.EINVAL, "Invalid argument")


class FakeDev:
    """A fake /dev tree whose nodes are answered by fake drivers, found by the open fd's path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.drivers: dict[str, FakeCamera] = {}

    def add(self, name: str, driver: FakeCamera | None = None, by_id: str | None = None) -> Path:
        node = self.root / name
        node.touch()
        if driver is not None:
            self.drivers[name] = driver
        if by_id:
            link = self.root / "v4l" / "by-id" / by_id
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(node)
        return node

    def ioctl(self, fd: int, request: int, buffer: bytearray) -> int:
        """fcntl.ioctl's contract: fill the buffer in place, raise OSError on refusal."""
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if name not in self.drivers:
            raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")
        self.drivers[name].ioctl(request, buffer)
        return 0


# Realistic mode tables, as `v4l2-ctl --list-formats-ext` shows them for such cameras.
HD_WEBCAM = {
    "MJPG": [
        ((1920, 1080), fps(30, 25, 20, 15, 10, 5)),
        ((1280, 720), fps(60, 30, 15)),
        ((640, 480), fps(30, 15)),
    ],
    "YUYV": [
        ((640, 480), fps(30, 15)),
        ((1280, 720), fps(10, 5)),
        ((1920, 1080), fps(5)),
    ],
    "H264": [((3840, 2160), fps(30))],  # some UVC cameras offer it; OpenCV's V4L2 backend cannot
}
VGA_WEBCAM = {"YUYV": [((640, 480), fps(30, 15)), ((352, 288), fps(30)), ((320, 240), fps(30))]}
STEPWISE = {
    "YU12": [(("stepwise", (32, 3840, 16, 32, 2160, 8)), [("stepwise", (1, 60, 1, 1, 1, 1))])],
}
CONTINUOUS = {"MJPG": [(("continuous", (160, 1280, 1, 120, 720, 1)), fps(25, 15))]}
