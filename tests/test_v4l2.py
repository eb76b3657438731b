"""V4L2 discovery and capture modes, answered by packed structs as the kernel fills them.

There is no webcam here: a fake driver answers the real ioctl requests (numbers, struct
sizes and layouts of linux/videodev2.h) on real file descriptors of a fake /dev tree.
"""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fake_v4l2 import (
    CONTINUOUS,
    HD_WEBCAM,
    METADATA_CAPTURE,
    STEPWISE,
    VGA_WEBCAM,
    FakeCamera,
    FakeDev,
    capability,
)
from livecam.v4l2 import (
    V4L2_CAP_DEVICE_CAPS,
    V4L2_CAP_VIDEO_CAPTURE,
    VIDIOC_ENUM_FMT,
    VIDIOC_ENUM_FRAMEINTERVALS,
    VIDIOC_ENUM_FRAMESIZES,
    VIDIOC_QUERYCAP,
    CaptureMode,
    Device,
    Mode,
    SizeRange,
    assign_ids,
    can_capture,
    card_name,
    choose_mode,
    describe_modes,
    device_modes,
    device_path,
    discover_devices,
    list_devices,
)


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


def test_ids_taken_by_other_cameras_are_not_given_to_devices() -> None:
    remembered = {"/dev/v4l/by-id/desk": 1, "/dev/v4l/by-id/gone": 3}
    desk = Device(5, "/dev/video5", "Desk", "/dev/v4l/by-id/desk")
    plain = Device(0, "/dev/video0", "Plain", None)
    new = Device(2, "/dev/video2", "New", "/dev/v4l/by-id/new")
    # Nothing taken: the remembered id, the index, the index.
    assert assign_ids([plain, new, desk], remembered) == {0: plain, 1: desk, 2: new}
    # A device plugged in while livecam runs: ids of other cameras (the test pattern's 0, a camera
    # added at run time as 2) are skipped, and so are ids remembered for absent devices (3).
    assert assign_ids([plain, new], remembered, taken={0, 2}) == {4: plain, 5: new}
    # A remembered id another camera took meanwhile: the device gets a new one.
    assert assign_ids([desk], remembered, taken={1}) == {5: desk}
    # Ids of cameras removed at run time: a remembered device keeps its own (it stays removed),
    # a device seen for the first time takes none of them.
    assert assign_ids([desk, new], remembered, reserved={1, 2}) == {1: desk, 0: new}


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


def test_what_the_device_gives_is_compared_within_opencvs_rounding() -> None:
    asked = CaptureMode("MJPG", 1920, 1080, 7.5)
    assert asked.matches(CaptureMode("MJPG", 1920, 1080, 8.0))  # OpenCV asks whole fps
    assert not asked.matches(CaptureMode("YUYV", 1920, 1080, 7.5))
    assert not asked.matches(CaptureMode("MJPG", 640, 480, 7.5))
    assert not CaptureMode("MJPG", 640, 480, 30.0).matches(CaptureMode("MJPG", 640, 480, 15.0))
    assert str(asked) == "MJPG 1920x1080 @7.5 fps"


def test_an_index_a_node_and_a_by_id_link_are_one_device(tmp_path: Path) -> None:
    dev = FakeDev(tmp_path)
    dev.add("video2", FakeCamera(), by_id="usb-Cam_123-video-index0")
    real = str(tmp_path / "video2")
    assert device_path(2, tmp_path) == real
    assert device_path(str(tmp_path / "video2")) == real
    assert device_path(str(tmp_path / "v4l" / "by-id" / "usb-Cam_123-video-index0")) == real
    assert device_path(0) == "/dev/video0"  # index N is /dev/videoN, whether or not it exists
