"""V4L2 devices: which nodes capture video, and in which modes, asked with the kernel's ioctls.

No OpenCV here: this asks the driver directly (``linux/videodev2.h``), so listing devices and
their modes never starts a capture. Every query goes through an ``ioctl(fd, request, buffer)``
callable (``fcntl.ioctl`` by default) that fills a bytearray in place, so tests answer with
packed structs as the kernel fills them instead of a webcam.

Why modes matter: OpenCV's V4L2 backend opens every device at 640x480 and 30 fps, in the
first pixel format of its own list the driver accepts (YUYV comes before MJPG there), and
changes the size only once both width and height are set (videoio ``cap_v4l.cpp``,
``icvSetFrameSize``). So livecam picks the mode itself (:func:`choose_mode`) and asks for it.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import re
import struct
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# fcntl.ioctl's shape: the driver fills ``buffer`` in place.
Ioctl = Callable[[int, int, bytearray], object]

# Struct layouts from linux/videodev2.h (every field a __u32, so "<" packs them as the kernel).
CAPABILITY = struct.Struct("<16s32s32sIII3I")  # driver, card, bus_info, version, caps, device_caps
FMTDESC = struct.Struct("<III32sII3I")  # index, type, flags, description, pixelformat, mbus_code
FRMSIZEENUM = struct.Struct("<III6I2I")  # index, pixel_format, type, discrete or stepwise union
FRMIVALENUM = struct.Struct("<IIIII6I2I")  # index, pixel_format, width, height, type, union

# The ioctl number encoding of asm-generic/ioctl.h (x86, arm, arm64, riscv; not alpha, mips,
# powerpc or sparc): direction in bits 30-31, argument size in 16-29, type in 8-15, number.
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, number: int, size: int) -> int:
    """An ioctl request number of the 'V' (video4linux) type."""
    return direction << 30 | size << 16 | ord("V") << 8 | number


VIDIOC_QUERYCAP = _ioc(_IOC_READ, 0, CAPABILITY.size)
VIDIOC_ENUM_FMT = _ioc(_IOC_READ | _IOC_WRITE, 2, FMTDESC.size)
VIDIOC_ENUM_FRAMESIZES = _ioc(_IOC_READ | _IOC_WRITE, 74, FRMSIZEENUM.size)
VIDIOC_ENUM_FRAMEINTERVALS = _ioc(_IOC_READ | _IOC_WRITE, 75, FRMIVALENUM.size)

V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
V4L2_CAP_DEVICE_CAPS = 0x80000000
# OpenCV's V4L2 backend captures single-planar buffers only, so modes are listed for that type.
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
FRMSIZE_DISCRETE, FRMSIZE_CONTINUOUS, FRMSIZE_STEPWISE = 1, 2, 3
FRMIVAL_DISCRETE, FRMIVAL_CONTINUOUS, FRMIVAL_STEPWISE = 1, 2, 3
# A driver that never says "no more" must not hang discovery.
MAX_ENTRIES = 256

# Pixel formats OpenCV's V4L2 backend turns into BGR pixels (cap_v4l.cpp, convertableToRgb).
# Anything else (H264, for one) it cannot open, however large.
OPENCV_FORMATS = frozenset(
    {"MJPG", "JPEG", "YUYV", "UYVY", "YU12", "YV12", "NV12", "NV21", "411P"}
    | {"BA81", "GBRG", "S910", "RGB3", "BGR3", "Y16 ", "Y10 ", "GREY"}
)
# The camera's own JPEGs can be passed to viewers without a decode or an encode.
PREFERRED_FORMATS = ("MJPG", "JPEG")


def fourcc_text(code: int) -> str:
    """The four characters of a V4L2 pixel format code (``MJPG``, ``YUYV``)."""
    return code.to_bytes(4, "little").decode("ascii", "replace")


def fourcc_code(text: str) -> int:
    """The V4L2 pixel format code of four characters."""
    return int.from_bytes(text.encode("ascii"), "little")


def _open_node(path: str | os.PathLike[str]) -> int:
    """Open a V4L2 node for queries only; non-blocking, as OpenCV opens it too."""
    return os.open(path, os.O_RDWR | os.O_NONBLOCK)


def querycap(fd: int, ioctl: Ioctl = fcntl.ioctl) -> bytes:
    """The node's v4l2_capability struct (the VIDIOC_QUERYCAP ioctl)."""
    buffer = bytearray(CAPABILITY.size)
    ioctl(fd, VIDIOC_QUERYCAP, buffer)
    return bytes(buffer)


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
    by_path: str | None = None  # the /dev/v4l/by-path link: the USB port, when there is no serial

    @property
    def stable(self) -> str | None:
        """A path that stays this device's when USB order changes: by-id, else by-path."""
        return self.by_id or self.by_path


def list_devices(dev: str | os.PathLike[str] = "/dev", ioctl: Ioctl = fcntl.ioctl) -> list[Device]:
    """The V4L2 nodes under ``dev`` that can capture video (not metadata nodes), by index."""
    by_id, by_path = (
        {os.path.realpath(p): str(p) for p in sorted(Path(dev, "v4l", kind).glob("*"))}
        for kind in ("by-id", "by-path")
    )
    found = []
    for node in Path(dev).glob("video*"):
        match = re.fullmatch(r"video(\d+)", node.name)
        if not match:
            continue
        try:
            fd = _open_node(node)
            try:
                caps = querycap(fd, ioctl)
            finally:
                os.close(fd)
        except OSError as exc:
            log.info("skipping %s: %s", node, exc.strerror or exc)
            continue
        if can_capture(caps):
            real = os.path.realpath(node)
            found.append(
                Device(int(match.group(1)), str(node), card_name(caps), by_id.get(real), by_path.get(real))
            )
    return sorted(found, key=lambda device: device.index)


def discover_devices(dev: str | os.PathLike[str] = "/dev", ioctl: Ioctl = fcntl.ioctl) -> list[int]:
    """Indexes of the V4L2 nodes under ``dev`` that can capture video, in order."""
    return [device.index for device in list_devices(dev, ioctl)]


def assign_ids(
    devices: list[Device],
    remembered: Mapping[str, int],
    taken: Collection[int] = (),
    reserved: Collection[int] = (),
) -> dict[int, Device]:
    """Camera ids for discovered devices, kept by stable path so USB order cannot move them.

    A device whose stable path is remembered keeps its id; one without a stable path keeps
    its index as before, if no other device holds it; a new device takes its index too when
    that is free (so ids stay what they were before ids were remembered), else the lowest id
    that is neither in use nor remembered for a device now absent (it may come back).
    ``taken``: ids other cameras hold already (a device plugged in while livecam runs).
    ``reserved``: ids of cameras removed at run time: a remembered device keeps its own (and
    stays removed), a device seen for the first time never takes one (it would stay hidden).
    """
    ids: dict[int, Device] = {}
    new = []
    for device in devices:
        cam_id = remembered.get(device.stable) if device.stable else None
        if cam_id is not None and cam_id not in ids and cam_id not in taken:
            ids[cam_id] = device
        else:
            new.append(device)
    for device in [d for d in new if d.stable is None and d.index not in ids and d.index not in taken]:
        ids[device.index] = device
        new.remove(device)
    for device in new:
        held = set(ids) | set(remembered.values()) | set(taken) | set(reserved)
        free = device.index if device.index not in held else None
        ids[free if free is not None else next(n for n in itertools.count() if n not in held)] = device
    return dict(sorted(ids.items()))


def device_path(target: int | str, dev: str | os.PathLike[str] = "/dev") -> str:
    """The real node of a configured device: index N is ``/dev/videoN``, links are followed."""
    path = os.path.join(dev, f"video{target}") if isinstance(target, int) else target
    return os.path.realpath(path)


@dataclass(frozen=True)
class SizeRange:
    """The frame sizes of a stepwise (or, with steps of 1, continuous) size enumeration."""

    min_width: int
    max_width: int
    step_width: int
    min_height: int
    max_height: int
    step_height: int

    def fit(self, width: int, height: int) -> tuple[int, int]:
        """The smallest size of this range that covers ``width`` x ``height``, else its largest."""

        def snap(value: int, low: int, high: int, step: int) -> int:
            steps = -(-(max(value, low) - low) // max(step, 1))  # rounded up: never smaller
            return min(low + steps * max(step, 1), high)

        return (
            snap(width, self.min_width, self.max_width, self.step_width),
            snap(height, self.min_height, self.max_height, self.step_height),
        )

    def __str__(self) -> str:
        text = f"{self.min_width}x{self.min_height}-{self.max_width}x{self.max_height}"
        if (self.step_width, self.step_height) != (1, 1):
            text += f" step {self.step_width}x{self.step_height}"
        return text


@dataclass(frozen=True)
class Mode:
    """A pixel format at one frame size, or over a range of sizes, with its frame rates."""

    fourcc: str
    width: int  # for a range: its largest size
    height: int
    rates: tuple[float, ...] = ()  # frames per second, highest first; () when not told
    any_rate: bool = False  # stepwise or continuous intervals: any rate from the lowest to the highest
    sizes: SizeRange | None = None  # the driver takes any size of this range

    def offers(self, size: tuple[int, int]) -> bool:
        """Whether the driver takes exactly this frame size in this mode."""
        if self.sizes is None:
            return size == (self.width, self.height)
        return self.sizes.fit(*size) == size


@dataclass(frozen=True)
class CaptureMode:
    """The mode chosen for a capture: what to ask OpenCV for, in the driver's order."""

    fourcc: str
    width: int
    height: int
    fps: float | None  # None: the driver did not list its rates, so none is asked

    def matches(self, got: CaptureMode) -> bool:
        """Whether ``got`` (what the device gives) is this mode; rates within OpenCV's rounding."""
        if (self.fourcc, self.width, self.height) != (got.fourcc, got.width, got.height):
            return False
        # OpenCV asks the driver for whole frames per second (cvRound in setProperty).
        return self.fps is None or got.fps is None or abs(self.fps - got.fps) < 0.51

    def __str__(self) -> str:
        rate = f" @{self.fps:g} fps" if self.fps else ""
        return f"{self.fourcc} {self.width}x{self.height}{rate}"


def _enumerate(fd: int, request: int, layout: struct.Struct, fields: tuple, ioctl: Ioctl) -> Iterator[tuple]:
    """Ask an ENUM ioctl for index 0, 1, 2... until the driver answers EINVAL (no more)."""
    for index in range(MAX_ENTRIES):
        # What the driver is asked (index, type or format, size) leads each struct; rest zero.
        buffer = bytearray(layout.size)
        struct.pack_into(f"<{1 + len(fields)}I", buffer, 0, index, *fields)
        try:
            ioctl(fd, request, buffer)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return
            raise
        yield layout.unpack(buffer)


def _rates(
    fd: int, pixelformat: int, width: int, height: int, ioctl: Ioctl
) -> tuple[tuple[float, ...], bool]:
    """The frame rates a driver offers at one format and size, highest first, and if any between."""
    rates: set[float] = set()
    for entry in _enumerate(fd, VIDIOC_ENUM_FRAMEINTERVALS, FRMIVALENUM, (pixelformat, width, height), ioctl):
        kind, values = entry[4], entry[5:11]
        # An interval is seconds per frame, numerator / denominator: the rate is its inverse.
        if kind == FRMIVAL_DISCRETE:
            numerator, denominator = values[:2]
            if numerator and denominator:
                rates.add(round(denominator / numerator, 3))
        elif kind in (FRMIVAL_CONTINUOUS, FRMIVAL_STEPWISE):
            shortest, longest = values[0:2], values[2:4]
            if all(shortest) and all(longest):
                fastest = round(shortest[1] / shortest[0], 3)
                slowest = round(longest[1] / longest[0], 3)
                return (fastest, slowest) if fastest != slowest else (fastest,), fastest != slowest
    return tuple(sorted(rates, reverse=True)), False


def list_modes(fd: int, ioctl: Ioctl = fcntl.ioctl) -> list[Mode]:
    """Every pixel format, frame size and frame rate an open V4L2 node offers, in driver order."""
    modes = []
    for entry in _enumerate(fd, VIDIOC_ENUM_FMT, FMTDESC, (V4L2_BUF_TYPE_VIDEO_CAPTURE,), ioctl):
        pixelformat = entry[4]
        fourcc = fourcc_text(pixelformat)
        for size in _enumerate(fd, VIDIOC_ENUM_FRAMESIZES, FRMSIZEENUM, (pixelformat,), ioctl):
            kind, values = size[2], size[3:9]
            if kind == FRMSIZE_DISCRETE:
                width, height = values[:2]
                rates, any_rate = _rates(fd, pixelformat, width, height, ioctl)
                modes.append(Mode(fourcc, width, height, rates, any_rate))
            elif kind in (FRMSIZE_CONTINUOUS, FRMSIZE_STEPWISE):
                # Continuous is stepwise with steps of 1 (the kernel reports 1 there too).
                step_w, step_h = (1, 1) if kind == FRMSIZE_CONTINUOUS else (values[2], values[5])
                sizes = SizeRange(values[0], values[1], step_w, values[3], values[4], step_h)
                # Rates depend on the size; the driver is asked at the largest one.
                rates, any_rate = _rates(fd, pixelformat, sizes.max_width, sizes.max_height, ioctl)
                modes.append(Mode(fourcc, sizes.max_width, sizes.max_height, rates, any_rate, sizes))
                break  # a range is the only answer, at index 0
    return modes


def device_modes(path: str | os.PathLike[str], ioctl: Ioctl = fcntl.ioctl) -> list[Mode]:
    """The modes of the V4L2 node at ``path``; raises OSError when it cannot be asked."""
    fd = _open_node(path)
    try:
        return list_modes(fd, ioctl)
    finally:
        os.close(fd)


def _rate(mode: Mode, cap: float | None) -> float | None:
    """The highest rate of ``mode`` not above ``cap``, else its lowest; None when not told."""
    if not mode.rates:
        return None
    if mode.any_rate:
        slowest, fastest = min(mode.rates), max(mode.rates)
        return fastest if cap is None else min(max(cap, slowest), fastest)
    within = [rate for rate in mode.rates if cap is None or rate <= cap + 1e-6]
    return max(within) if within else min(mode.rates)


def choose_mode(
    modes: list[Mode],
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    label: str = "device",
) -> CaptureMode | None:
    """Choose the capture mode: MJPG if offered, the largest size (or ``size``), the fastest rate.

    The configured ``size`` wins over MJPG if only another format offers it exactly. A size
    not offered at all is replaced by the smallest offered size that covers it (so nothing is
    upscaled), else the largest, and a line says so. ``fps`` caps the rate. None when no mode
    is one OpenCV can capture.
    """
    usable = [mode for mode in modes if mode.fourcc in OPENCV_FORMATS]
    if not usable:
        return None
    formats = list(dict.fromkeys(mode.fourcc for mode in usable))
    formats.sort(
        key=lambda f: PREFERRED_FORMATS.index(f) if f in PREFERRED_FORMATS else len(PREFERRED_FORMATS)
    )
    if size is not None:
        for fourcc in formats:
            for mode in usable:
                if mode.fourcc == fourcc and mode.offers(size):
                    return CaptureMode(fourcc, *size, _rate(mode, fps))
    # The candidate sizes of the preferred format, ranges fitted to the configured size.
    candidates = []
    for mode in usable:
        if mode.fourcc == formats[0]:
            candidates.append((mode, (mode.width, mode.height)))
            if mode.sizes is not None and size is not None:
                candidates.append((mode, mode.sizes.fit(*size)))

    def area(candidate: tuple[Mode, tuple[int, int]]) -> tuple[int, float]:
        (width, height), rates = candidate[1], candidate[0].rates
        return width * height, max(rates, default=0.0)

    largest = max(candidates, key=area)
    chosen = largest
    if size is not None:
        covering = [c for c in candidates if c[1][0] >= size[0] and c[1][1] >= size[1]]
        if covering:
            chosen = min(covering, key=lambda c: (area(c)[0], -area(c)[1]))
        log.info("%s: size %dx%d is not offered, capturing %dx%d", label, *size, *chosen[1])
    mode, (width, height) = chosen
    return CaptureMode(mode.fourcc, width, height, _rate(mode, fps))


def describe_modes(modes: list[Mode]) -> list[str]:
    """One compact line per pixel format: its sizes, each with its highest frame rate."""
    lines: dict[str, list[str]] = {}
    for mode in modes:
        if mode.sizes is not None:
            text = str(mode.sizes)
        else:
            text = f"{mode.width}x{mode.height}"
        if mode.rates:
            high, low = max(mode.rates), min(mode.rates)
            text += f"@{low:g}-{high:g}" if mode.any_rate else f"@{high:g}"
        lines.setdefault(mode.fourcc, []).append(text)
    return [f"{fourcc.strip()} {' '.join(sizes)}" for fourcc, sizes in lines.items()]
