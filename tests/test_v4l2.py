"""V4L2 discovery and capture modes, answered by packed structs as the kernel fills them.

There is no webcam here: a fake driver answers the real ioctl requests (numbers, struct
sizes and layouts of linux/videodev2.h) on real file descriptors of a fake /dev tree.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from livecam.v4l2 import (
    V4L2_CAP_DEVICE_CAPS,
    V4L2_CAP_VIDEO_CAPTURE,
    VIDIOC_ENUM_FMT,
    VIDIOC_ENUM_FRAMEINTERVALS,
    VIDIOC_ENUM_FRAMESIZES,
    VIDIOC_QUERYCAP,
    CaptureMode,
    Mode,
    SizeRange,
    can_capture,
    card_name,
    choose_mode,
    describe_modes,
    device_modes,
    discover_devices,
    list_devices,
)

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


def modes_of(table: dict, tmp_path: Path) -> list[Mode]:
    """Enumerate a camera with this mode table through the ioctls."""
    dev = FakeDev(Path(tempfile.mkdtemp(dir=tmp_path)))
    node = dev.add("video0", FakeCamera(formats=table))
    return device_modes(node, dev.ioctl)


def test_ioctl_numbers_are_those_of_linux_videodev2_h() -> None:
    # The values of _IOR('V', 0, 104 bytes) and _IOWR('V', 2|74|75, 64|44|52 bytes) on x86-64.
    assert VIDIOC_QUERYCAP == 0x80685600
    assert VIDIOC_ENUM_FMT == 0xC0405602
    assert VIDIOC_ENUM_FRAMESIZES == 0xC02C564A
    assert VIDIOC_ENUM_FRAMEINTERVALS == 0xC034564B


@pytest.mark.skipif(
    not (shutil.which("cc") and Path("/usr/include/linux/videodev2.h").exists()),
    reason="needs a C compiler and the kernel headers",
)
def test_ioctl_numbers_match_the_kernel_header_compiled_here(tmp_path: Path) -> None:
    program = tmp_path / "numbers.c"
    program.write_text(
        "#include <stdio.h>\n#include <linux/videodev2.h>\n"
        'int main(void) { printf("%lu %lu %lu %lu\\n", (unsigned long)VIDIOC_QUERYCAP,'
        " (unsigned long)VIDIOC_ENUM_FMT, (unsigned long)VIDIOC_ENUM_FRAMESIZES,"
        " (unsigned long)VIDIOC_ENUM_FRAMEINTERVALS); return 0; }\n"
    )
    subprocess.run(["cc", str(program), "-o", str(tmp_path / "numbers")], check=True, timeout=60)
    output = subprocess.run([str(tmp_path / "numbers")], capture_output=True, text=True, check=True)
    numbers = [VIDIOC_QUERYCAP, VIDIOC_ENUM_FMT, VIDIOC_ENUM_FRAMESIZES, VIDIOC_ENUM_FRAMEINTERVALS]
    assert [int(value) for value in output.stdout.split()] == numbers


def test_capability_parsing() -> None:
    assert can_capture(capability(V4L2_CAP_VIDEO_CAPTURE))
    # A webcam's metadata node: the physical device captures, this node does not.
    metadata = capability(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_DEVICE_CAPS, METADATA_CAPTURE)
    assert not can_capture(metadata)
    assert card_name(capability(1, card=b"HD Webcam")) == "HD Webcam"


def test_discover_devices_keeps_capture_nodes_only(tmp_path: Path) -> None:
    dev = FakeDev(tmp_path)
    dev.add(
        "video0",
        FakeCamera(capability(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_DEVICE_CAPS, V4L2_CAP_VIDEO_CAPTURE)),
    )
    dev.add("video1", FakeCamera(capability(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_DEVICE_CAPS, METADATA_CAPTURE)))
    dev.add("video2")  # not a V4L2 node: the ioctl is refused
    dev.add("video10", FakeCamera(capability(V4L2_CAP_VIDEO_CAPTURE)))
    for name in ("vbi0", "videox"):
        dev.add(name, FakeCamera())
    assert discover_devices(tmp_path, dev.ioctl) == [0, 10]


def test_discover_devices_on_this_machine_does_not_fail() -> None:
    assert all(isinstance(index, int) for index in discover_devices())


def test_list_devices_names_the_card_and_its_by_id_link(tmp_path: Path) -> None:
    dev = FakeDev(tmp_path)
    dev.add(
        "video0", FakeCamera(capability(V4L2_CAP_VIDEO_CAPTURE, card=b"HD Webcam C615")), "usb-Logi-index0"
    )
    (device,) = list_devices(tmp_path, dev.ioctl)
    assert (device.index, device.name) == (0, "HD Webcam C615")
    assert device.by_id == str(tmp_path / "v4l" / "by-id" / "usb-Logi-index0")


def test_modes_of_a_1080p_webcam_are_enumerated_with_every_rate(tmp_path: Path) -> None:
    modes = modes_of(HD_WEBCAM, tmp_path)
    assert modes[0] == Mode("MJPG", 1920, 1080, (30.0, 25.0, 20.0, 15.0, 10.0, 5.0))
    assert modes[1] == Mode("MJPG", 1280, 720, (60.0, 30.0, 15.0))
    assert [(m.fourcc, m.width, m.height) for m in modes][3:] == [
        ("YUYV", 640, 480),
        ("YUYV", 1280, 720),
        ("YUYV", 1920, 1080),
        ("H264", 3840, 2160),
    ]


def test_stepwise_and_continuous_sizes_and_intervals(tmp_path: Path) -> None:
    (stepwise,) = modes_of(STEPWISE, tmp_path)
    assert stepwise.sizes == SizeRange(32, 3840, 16, 32, 2160, 8)
    assert (stepwise.width, stepwise.height) == (3840, 2160)
    assert stepwise.rates == (60.0, 1.0) and stepwise.any_rate  # any interval from 1/60 s to 1 s
    (continuous,) = modes_of(CONTINUOUS, tmp_path)
    assert continuous.sizes == SizeRange(160, 1280, 1, 120, 720, 1)
    assert continuous.rates == (25.0, 15.0) and not continuous.any_rate


def test_a_1080p_mjpg_and_yuyv_webcam_captures_mjpg_1080p_at_30(tmp_path: Path) -> None:
    modes = modes_of(HD_WEBCAM, tmp_path)
    assert choose_mode(modes) == CaptureMode("MJPG", 1920, 1080, 30.0)
    assert choose_mode(modes, size=(1280, 720)) == CaptureMode("MJPG", 1280, 720, 60.0)
    # The camera's fps setting caps the rate at one the camera offers.
    assert choose_mode(modes, size=(1280, 720), fps=20) == CaptureMode("MJPG", 1280, 720, 15.0)
    assert choose_mode(modes, fps=12.5) == CaptureMode("MJPG", 1920, 1080, 10.0)


def test_never_a_format_opencv_cannot_capture(tmp_path: Path) -> None:
    modes = modes_of(HD_WEBCAM, tmp_path)
    assert choose_mode(modes, size=(3840, 2160)).fourcc == "MJPG"  # not the H264 mode
    assert choose_mode([Mode("H264", 1920, 1080, (30.0,))]) is None


def test_a_yuyv_only_vga_webcam(tmp_path: Path) -> None:
    modes = modes_of(VGA_WEBCAM, tmp_path)
    assert choose_mode(modes) == CaptureMode("YUYV", 640, 480, 30.0)
    assert choose_mode(modes, size=(320, 240), fps=10) == CaptureMode("YUYV", 320, 240, 30.0)


def test_a_size_only_yuyv_offers_wins_over_mjpg() -> None:
    modes = [Mode("MJPG", 1280, 720, (30.0,)), Mode("YUYV", 800, 600, (20.0,))]
    assert choose_mode(modes, size=(800, 600)) == CaptureMode("YUYV", 800, 600, 20.0)


def test_a_size_not_offered_takes_the_nearest_covering_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    modes = modes_of(HD_WEBCAM, tmp_path)
    with caplog.at_level(logging.INFO, logger="livecam.v4l2"):
        assert choose_mode(modes, size=(800, 600), label="Camera 0") == CaptureMode("MJPG", 1280, 720, 60.0)
    assert "Camera 0: size 800x600 is not offered, capturing 1280x720" in caplog.text
    # Larger than anything offered: the largest, never an upscale by the driver.
    assert choose_mode(modes, size=(2560, 1440)) == CaptureMode("MJPG", 1920, 1080, 30.0)


def test_stepwise_sizes_take_the_configured_size_on_their_grid(tmp_path: Path) -> None:
    (mode,) = modes_of(STEPWISE, tmp_path)
    assert choose_mode([mode]) == CaptureMode("YU12", 3840, 2160, 60.0)
    assert choose_mode([mode], size=(1280, 720), fps=25) == CaptureMode("YU12", 1280, 720, 25.0)
    # 1366 is not on the 16-pixel grid: the nearest size of the range that covers it.
    assert choose_mode([mode], size=(1366, 768)) == CaptureMode("YU12", 1376, 768, 60.0)
    assert SizeRange(32, 3840, 16, 32, 2160, 8).fit(9999, 1) == (3840, 32)
    assert SizeRange(32, 3840, 16, 32, 2160, 8).fit(1360, 720) == (1360, 720)


def test_modes_are_described_compactly(tmp_path: Path) -> None:
    assert describe_modes(modes_of(HD_WEBCAM, tmp_path)) == [
        "MJPG 1920x1080@30 1280x720@60 640x480@30",
        "YUYV 640x480@30 1280x720@10 1920x1080@5",
        "H264 3840x2160@30",
    ]
    (stepwise,) = modes_of(STEPWISE, tmp_path)
    assert describe_modes([stepwise]) == ["YU12 32x32-3840x2160 step 16x8@1-60"]


def test_a_node_that_is_no_v4l2_device_raises(tmp_path: Path) -> None:
    dev = FakeDev(tmp_path)
    node = dev.add("video0")
    with pytest.raises(OSError) as info:
        device_modes(node, dev.ioctl)
    assert info.value.errno == errno.ENOTTY
