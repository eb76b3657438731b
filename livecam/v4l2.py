"""V4L2 devices: which nodes capture video, found with the kernel's own ioctls.

No OpenCV here: this asks the driver directly (``linux/videodev2.h``), so listing devices
never opens a capture, and the answers can be tested with packed structs instead of a webcam.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# VIDIOC_QUERYCAP = _IOR('V', 0, struct v4l2_capability), a 104-byte struct.
VIDIOC_QUERYCAP = 0x80685600
V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
V4L2_CAP_DEVICE_CAPS = 0x80000000


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
