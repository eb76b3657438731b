"""V4L2 discovery and capture modes, answered by packed structs as the kernel fills them."""

from __future__ import annotations

import struct
from pathlib import Path

from livecam.v4l2 import (
    V4L2_CAP_DEVICE_CAPS,
    V4L2_CAP_VIDEO_CAPTURE,
    can_capture,
    card_name,
    discover_devices,
)


def capability(caps: int, device_caps: int = 0, card: bytes = b"") -> bytes:
    """A v4l2_capability struct as the kernel fills it."""
    return struct.pack("<16s32s32sIII12x", b"uvcvideo", card, b"usb-1", 0, caps, device_caps)


def test_capability_parsing() -> None:
    assert can_capture(capability(V4L2_CAP_VIDEO_CAPTURE))
    # A webcam's metadata node: the physical device captures, this node does not.
    metadata = capability(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_DEVICE_CAPS, 0x00800000)
    assert not can_capture(metadata)
    assert card_name(capability(1, card=b"HD Webcam")) == "HD Webcam"


def test_discover_devices_keeps_capture_nodes_only(tmp_path: Path) -> None:
    for name in ("video0", "video1", "video2", "video10", "vbi0", "videox"):
        (tmp_path / name).touch()
    answers = {
        "video0": capability(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_DEVICE_CAPS, V4L2_CAP_VIDEO_CAPTURE),
        "video1": capability(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_DEVICE_CAPS, 0x00800000),
        "video10": capability(V4L2_CAP_VIDEO_CAPTURE),
    }

    def querycap(path: str) -> bytes:
        name = Path(path).name
        if name not in answers:
            raise PermissionError(13, "Permission denied")
        return answers[name]

    assert discover_devices(tmp_path, querycap) == [0, 10]


def test_discover_devices_on_this_machine_does_not_fail() -> None:
    assert all(isinstance(index, int) for index in discover_devices())
