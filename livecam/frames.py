"""What a camera's settings do to its pictures: size, resize, rotation, JPEG encoding.

Plain functions of images and numbers, so the capture thread and the record agree on sizes.
"""

from __future__ import annotations

import cv2
import imutils
import numpy as np

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


def transform(image: np.ndarray, width: int | None, rotate: int) -> np.ndarray:
    """Resize (keeping the aspect ratio) and rotate a decoded frame as configured."""
    if width and image.shape[1] != width:
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
