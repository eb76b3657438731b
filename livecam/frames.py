"""What a camera's settings do to its pictures: size, resize, rotation, JPEG encoding.

Plain functions of images and numbers, so the capture thread and the record agree on sizes.
"""

from __future__ import annotations

import cv2
import imutils
import numpy as np

from .config import FULL, CameraConfig, Profile
from .pattern import no_signal

# The largest "no signal" picture livecam draws (4K UHD): a size told by a record or a frame
# header is trusted only up to this, never to the 8192x8192 a header may claim.
MAX_PLACEHOLDER = 3840 * 2160
DEFAULT_QUALITY = 80  # when livecam has to encode and the camera sets no quality
# Exact right-angle rotations; imutils.rotate_bound interpolates and shifts by a pixel.
ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def output_size(source_size: tuple[int, int], width: int | None, rotate: int) -> tuple[int, int]:
    """The size viewers get from a source of ``source_size``, resized to ``width`` and rotated."""
    out_width, out_height = source_size
    if width and width != out_width:
        # imutils.resize's own arithmetic, so the record says what transform() makes.
        out_width, out_height = width, int(out_height * width / float(out_width))
    if rotate in (90, 270):
        out_width, out_height = out_height, out_width
    return out_width, out_height


def stream_width(config: CameraConfig, profile: Profile, source_width: int) -> int | None:
    """The width a profile's frames are resized to (None: none): its own, never wider than
    the full stream's; a profile with no width is as wide as the full stream."""
    if profile.name == FULL or not profile.width:
        return config.width
    limit = config.width or source_width
    return profile.width if profile.width < limit else config.width


def stream_size(config: CameraConfig, profile: Profile, source_size: tuple[int, int]) -> tuple[int, int]:
    """The size of a profile's frames from a source of ``source_size``."""
    return output_size(source_size, stream_width(config, profile, source_size[0]), config.rotate)


# JPEG decoders scale by 1/2, 1/4 and 1/8 while decoding, at a fraction of a full decode's
# cost: a preview of a 1080p camera needs only an eighth of its pixels.
REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def decode(jpeg: bytes, source_width: int, widest: int | None = None) -> np.ndarray | None:
    """Decode a JPEG to pixels, at the smallest scale still at least ``widest`` wide (None:
    full size); None if it cannot be decoded."""
    flag = cv2.IMREAD_COLOR
    if widest:
        for factor, reduced in REDUCED:
            if source_width // factor >= widest:
                flag = reduced
                break
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag)


def transform(
    image: np.ndarray, width: int | None, rotate: int, source_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Resize (keeping the aspect ratio) and rotate a decoded frame as configured.

    ``source_size``: the size the frame was captured at, when it was decoded smaller (see
    decode()); the result then has the size output_size() gives for the source, to the pixel.
    """
    shape = (image.shape[1], image.shape[0])
    if source_size is not None and shape != source_size:
        target = output_size(source_size, width or source_size[0], 0)
        if shape != target:
            image = cv2.resize(image, target, interpolation=cv2.INTER_AREA)
    elif width and image.shape[1] != width:
        image = imutils.resize(image, width=width)
    if rotate:
        image = cv2.rotate(image, ROTATIONS[rotate])
    return image


def encode(image: np.ndarray, quality: int | None) -> bytes | None:
    """Encode a frame to JPEG at ``quality`` (DEFAULT_QUALITY when None); None if it fails."""
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality or DEFAULT_QUALITY])
    return buffer.tobytes() if ok else None


def placeholder_size(width: int | None) -> tuple[int, int]:
    """A 4:3 size for a placeholder shown before the source ever delivered a frame."""
    width = width or 640
    return width, width * 3 // 4


def no_signal_image(
    config: CameraConfig, profile: Profile, size: tuple[int, int] | None, reason: str, since: float
) -> np.ndarray:
    """The "no signal" picture of a profile: at ``size`` (the profile's frames' size, when
    known and sane), else a 4:3 guess at the profile's width."""
    if size is None or not (min(size) >= 1 and size[0] * size[1] <= MAX_PLACEHOLDER):
        # Never trusted beyond MAX_PLACEHOLDER: a size from a JPEG header or a bus message could
        # otherwise ask for a picture of gigabytes.
        size = placeholder_size(stream_width(config, profile, 640))
    return no_signal(size[0], size[1], config.name, reason, since)
