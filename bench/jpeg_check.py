"""Microseconds per frame that livecam's HTTP camera reader spends checking a part's JPEG.

Times ``MjpegSource._keep`` (the check of its markers, the view of the picture, the count) on
real JPEGs of three sizes, as parts arrive: clean, after a stray CRLF, with a trailer.

    PYTHONPATH=. python bench/jpeg_check.py
"""

from __future__ import annotations

import timeit

import cv2
import numpy as np

from livecam.httpcam import MjpegSource


def picture(width: int, height: int) -> bytes:
    """A JPEG of noise and shapes, so its entropy-coded data is as long as a camera's."""
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (5, 5), 0)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


def main() -> None:
    """Print the figures."""
    source = MjpegSource.__new__(MjpegSource)  # no camera: only the per-part check is timed
    source._frame = None
    for width, height in ((320, 240), (1280, 720), (1920, 1080)):
        jpeg = picture(width, height)
        for label, part in (("clean", jpeg), ("CRLF first", b"\r\n" + jpeg), ("trailer", jpeg + b"\r\n" * 8)):
            number = max(200, 20_000_000 // len(part))

            def copy_only(part: bytes = part) -> None:
                source._frame, source._bad_in_row, source._bad_since = None, 0, None
                bytearray(part)

            copy = min(timeit.repeat(copy_only, number=number, repeat=5)) / number

            def keep(part: bytes = part) -> None:
                source._frame, source._bad_in_row, source._bad_since = None, 0, None
                source._keep(bytearray(part))

            check = min(timeit.repeat(keep, number=number, repeat=5)) / number
            kept = source._frame is not None and bytes(source._frame) == jpeg
            print(
                f"{width}x{height} ({len(jpeg) // 1024} KB) {label:10}: "
                f"{(check - copy) * 1e6:7.2f} µs per frame  kept={kept}"
            )


if __name__ == "__main__":
    main()
