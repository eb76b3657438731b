"""Images livecam draws itself: the moving test pattern and the "no signal" placeholder."""

from __future__ import annotations

import time

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
# Classic SMPTE-like colour bars, BGR.
BARS = np.array(
    [
        (192, 192, 192),
        (0, 192, 192),
        (192, 192, 0),
        (0, 192, 0),
        (192, 0, 192),
        (0, 0, 192),
        (192, 0, 0),
    ],
    dtype=np.uint8,
)


def _text(image: np.ndarray, text: str, y: int, scale: float) -> None:
    """Draw one line of white text with a dark outline so it reads on any background."""
    thickness = max(1, int(scale * 2))
    x = max(4, image.shape[1] // 40)
    # The outline is the same text shifted around it: a thicker stroke would also be wider
    # (OpenCV adds the thickness to every letter's advance) and trail behind the text.
    for dx, dy in ((-2, 0), (2, 0), (0, -2), (0, 2)):
        cv2.putText(image, text, (x + dx, y + dy), FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def _bars(width: int, height: int) -> np.ndarray:
    """Colour bars of the given size, built once per test pattern."""
    columns = (np.arange(width) * len(BARS) // width).astype(np.intp)
    return np.ascontiguousarray(np.broadcast_to(BARS[columns], (height, width, 3)))


class TestPattern:
    """Renders frames of a moving test pattern: bars, a sweeping block, name, clock, counter."""

    __test__ = False  # not a pytest test class

    def __init__(self, width: int, height: int, name: str) -> None:
        self.width, self.height, self.name = width, height, name
        self._background = _bars(width, height)
        self._scale = max(0.4, height / 480)

    def render(self, counter: int, when: float | None = None) -> np.ndarray:
        """Draw frame number ``counter``, stamped with wall-clock ``when``."""
        when = time.time() if when is None else when
        image = self._background.copy()
        block = max(8, self.width // 16)
        x = (counter * max(2, self.width // 120)) % max(1, self.width - block)
        image[self.height - block * 2 : self.height - block, x : x + block] = 255
        _text(image, self.name, int(40 * self._scale), self._scale)
        stamp = time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"
        _text(image, stamp, int(80 * self._scale), self._scale)
        _text(image, f"frame {counter}", int(120 * self._scale), self._scale)
        return image


def no_signal(width: int, height: int, name: str, reason: str, since: float) -> np.ndarray:
    """Draw the placeholder a viewer sees while a camera's source is failing."""
    image = np.full((height, width, 3), 32, dtype=np.uint8)
    scale = max(0.35, min(width / 640, height / 480))
    _text(image, "NO SIGNAL", int(height * 0.3), scale * 1.6)
    _text(image, name, int(height * 0.3 + 50 * scale), scale)
    _text(image, reason[:60], int(height * 0.3 + 90 * scale), scale * 0.7)
    since_text = time.strftime("since %Y-%m-%d %H:%M:%S", time.localtime(since))
    _text(image, since_text, int(height * 0.3 + 125 * scale), scale * 0.7)
    return image
