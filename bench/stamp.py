"""Frame stamps: what the bench camera puts into each JPEG and how a reader gets it back.

Two stamps, because a frame reaches a reader either byte for byte or re-encoded:

- a JPEG comment segment (``FF FE``) right after SOI carries the camera's frame number and
  send time; it survives a direct read and a passthrough server, not a re-encode;
- the frame's index in the camera's loop of pre-encoded pictures, drawn as black and white
  blocks that survive re-encoding; a reader maps index and arrival time back to the frame
  number with the camera's send log.
"""

from __future__ import annotations

import re
from bisect import bisect_right

import cv2
import numpy as np

LOOP = 150  # distinct pictures: 5 s at 30 fps, far more than any latency to be told apart
BLOCK = 40  # pixels per stamp block (10 after the reader's 1/4 reduced decode), at most
BITS = 16  # the index, then its complement as a check
COMMENT_TAG = b"livecam-bench"
_COMMENT = re.compile(rb"livecam-bench n=(\d+) t=(\d+\.\d+)")


def pictures(width: int, height: int, quality: int) -> list[bytes]:
    """The camera's loop: ``LOOP`` textured JPEGs (realistic size) stamped with their index."""
    rng = np.random.default_rng(7)
    # Blurred noise over gradients compresses like a real scene (about 34 KB at 640x480 q80);
    # a flat test card would be a few KB and make every server look cheap.
    wide = width + 4 * LOOP
    noise = cv2.GaussianBlur(rng.integers(0, 256, (height, wide, 3), dtype=np.uint8), (0, 0), 2.0)
    yy, xx = np.mgrid[0:height, 0:wide]
    gradient = np.dstack([xx % 256, yy * 255 // height, (xx + yy) % 256]).astype(np.uint8)
    texture = cv2.addWeighted(noise, 0.6, gradient, 0.4, 0)
    frames = []
    for index in range(LOOP):
        image = np.ascontiguousarray(texture[:, 4 * index : 4 * index + width])
        draw_index(image, index)
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("cannot encode a bench picture")
        frames.append(buffer.tobytes())
    return frames


def _cells(value: int) -> list[tuple[int, int, bool]]:
    """(row, column, white) for the index's bits (row 0) and its complement's (row 1)."""
    check = ~value & (1 << BITS) - 1
    return [
        (row, bit, bool(number >> bit & 1))
        for row, number in enumerate((value, check))
        for bit in range(BITS)
    ]


def block_size(width: int) -> int:
    """The stamp's block size for a picture ``width`` pixels wide: a row of BITS must fit."""
    return min(BLOCK, width // BITS)


def draw_index(image: np.ndarray, index: int) -> None:
    """Draw ``index`` as two rows of blocks across the top of ``image``."""
    block = block_size(image.shape[1])
    for row, column, white in _cells(index):
        y, x = row * block, column * block
        image[y : y + block, x : x + block] = 255 if white else 0


def read_index(jpeg: bytes) -> int | None:
    """The loop index drawn in a (possibly re-encoded) JPEG; None if there is no valid stamp."""
    small = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_4)
    if small is None:
        return None
    block = block_size(small.shape[1] * 4)
    if block < 16 or small.shape[0] * 4 < 2 * block:
        return None  # too small a picture to carry a stamp
    centre = block // 2
    value = check = 0
    for bit in range(BITS):
        x = (bit * block + centre) // 4
        value |= int(small[centre // 4, x] > 127) << bit
        check |= int(small[(block + centre) // 4, x] > 127) << bit
    return value if value ^ check == (1 << BITS) - 1 and value < LOOP else None


def with_comment(jpeg: bytes, number: int, sent: float) -> bytes:
    """``jpeg`` with a comment segment after SOI naming its frame number and send time."""
    payload = COMMENT_TAG + b" n=%d t=%.6f" % (number, sent)
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def read_comment(head: bytes) -> tuple[int, float] | None:
    """Frame number and send time from the first bytes of a JPEG, if it kept its comment."""
    if head[2:4] != b"\xff\xfe":
        return None
    match = _COMMENT.match(head, 6, 4 + int.from_bytes(head[4:6], "big"))
    return (int(match[1]), float(match[2])) if match else None


def frame_number(index: int, received: float, first: int, sent: list[float]) -> int | None:
    """The newest frame the camera had sent by ``received`` whose picture was ``index``.

    ``sent[i]`` is the send time of frame ``first + i``.
    """
    latest = first + bisect_right(sent, received) - 1
    number = latest - (latest - index) % LOOP
    return number if number >= first else None
