"""Motion detection on a small grayscale picture: where something moved, how much, and when an
event starts and ends.

The capture thread hands a MotionDetector a picture a few times a second (a JPEG camera's
frame decoded straight to grayscale at the smallest of 1/8, 1/4 and 1/2 scale still
ANALYSIS_WIDTH wide, in full only when narrower than twice that; another source's frame
shrunk). Each picture is blurred and compared with a background that adapts
(a running average), so light that changes slowly and noise are not motion. Pixels that
differ by more than ``threshold`` count as changed, outside the areas to ignore; when more
than ``area`` of the picture changes for ``duration`` seconds an event starts, and it ends
``end_after`` seconds after the last motion. When most of the picture changes at once (the
lights go on, the camera adjusts its exposure) the background is taken anew instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config import MotionConfig

ANALYSIS_WIDTH = 160  # pixels: enough to see a person across a room, cheap to compare
ALPHA = 0.05  # how fast the background follows the picture, per analysis
SETTLE = 3  # analyses after a recalibration before motion counts again
SLACK = 0.02  # seconds of clock jitter forgiven when motion is timed
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 relative to the picture, 0 to 1


def reduced_flag(width: int) -> int:
    """The imdecode flag that decodes a JPEG of ``width`` to grayscale at the smallest scale
    (1/2, 1/4 or 1/8: libjpeg's DCT scaling) still at least ANALYSIS_WIDTH wide."""
    for factor, flag in ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4)):
        if width // factor >= ANALYSIS_WIDTH:
            return flag
    return cv2.IMREAD_REDUCED_GRAYSCALE_2 if width // 2 >= ANALYSIS_WIDTH else cv2.IMREAD_GRAYSCALE


def gray_of_jpeg(jpeg: bytes, width: int) -> np.ndarray | None:
    """A JPEG of ``width`` decoded small and gray for analysis; None if it does not decode."""
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), reduced_flag(width))


def gray_of_image(image: np.ndarray) -> np.ndarray:
    """A decoded BGR frame, gray and shrunk for analysis."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    if gray.shape[1] > 2 * ANALYSIS_WIDTH:
        height = max(1, gray.shape[0] * ANALYSIS_WIDTH // gray.shape[1])
        gray = cv2.resize(gray, (ANALYSIS_WIDTH, height), interpolation=cv2.INTER_AREA)
    return gray


@dataclass(frozen=True)
class Change:
    """An event's start or end, as the detector saw it."""

    kind: str  # "start" or "end"
    score: float  # the share of the picture that changed (0-1): at the start, or the most during the event
    box: Box  # where: at the start, or everywhere it moved during the event
    duration: float = 0.0  # seconds, at the end


@dataclass(frozen=True)
class Analysis:
    """What one picture showed."""

    score: float  # the share of the picture that changed
    box: Box | None  # where, when anything did
    moving: bool  # above the area threshold
    change: Change | None = None  # an event started or ended with this picture
    recalibrated: bool = False


class MotionDetector:
    """One camera's detector: feed it pictures with their time; it says when events start and end."""

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._background: np.ndarray | None = None
        self._mask: np.ndarray | None = None  # 1 where pixels count, for the current size
        self._settle = 0
        self._moving_since: float | None = None  # the first picture of the motion so far
        self._last_motion = 0.0
        self._active = False
        self._started = 0.0
        self._peak = 0.0
        self._box: Box | None = None  # union of every box during the event

    @property
    def active(self) -> bool:
        """Whether an event is under way."""
        return self._active

    def _mask_for(self, shape: tuple[int, int]) -> np.ndarray:
        if self._mask is None or self._mask.shape != shape:
            mask = np.ones(shape, np.uint8)
            height, width = shape
            for x0, y0, x1, y1 in self.config.ignore:
                mask[
                    int(y0 * height) : int(np.ceil(y1 * height)), int(x0 * width) : int(np.ceil(x1 * width))
                ] = 0
            self._mask = mask
        return self._mask

    def analyse(self, gray: np.ndarray, now: float) -> Analysis:
        """Compare a small grayscale picture taken at monotonic ``now`` with the background."""
        blurred = cv2.GaussianBlur(gray, (5, 5), 0)
        if self._background is None or self._background.shape != blurred.shape:
            self._background = blurred.astype(np.float32)
            self._settle = SETTLE
            return Analysis(0.0, None, False, self._idle(now), recalibrated=True)
        mask = self._mask_for(blurred.shape)
        counted = int(mask.sum())
        difference = cv2.absdiff(blurred, cv2.convertScaleAbs(self._background))
        changed = (difference > self.config.threshold).astype(np.uint8) & mask
        cv2.accumulateWeighted(blurred, self._background, ALPHA)
        score = float(changed.sum()) / counted if counted else 0.0
        if score > self.config.recalibrate:
            # Most of the picture at once: the lights, not a thief. The new picture is the
            # background; an event under way goes on until end_after passes without motion.
            self._background = blurred.astype(np.float32)
            self._settle = SETTLE
            self._moving_since = None
            return Analysis(score, None, False, self._idle(now), recalibrated=True)
        if self._settle:
            self._settle -= 1
            return Analysis(score, None, False, self._idle(now))
        moving = score >= self.config.area and score > 0
        box = _box(changed) if moving else None
        if not moving:
            return Analysis(score, None, False, self._idle(now))
        self._last_motion = now
        if self._moving_since is None:
            self._moving_since = now
        if self._active:
            self._peak = max(self._peak, score)
            self._box = _union(self._box, box)
            return Analysis(score, box, True)
        # A little slack: with analyses exactly ``duration`` apart, clock jitter must not make
        # the event wait for one more analysis.
        if now - self._moving_since < self.config.duration - SLACK:
            return Analysis(score, box, True)
        self._active, self._started, self._peak, self._box = True, now, score, box
        assert box is not None
        return Analysis(score, box, True, Change("start", score, box))

    def interrupt(self) -> Change | None:
        """The pictures stop (the camera is off or failing): an event under way ends, and the
        next picture starts a new background."""
        self._background, self._moving_since = None, None
        if not self._active:
            return None
        self._active = False
        assert self._box is not None
        return Change("end", self._peak, self._box, round(self._last_motion - self._started, 3))

    def _idle(self, now: float) -> Change | None:
        """A picture without motion: the end of the event, once end_after has passed."""
        self._moving_since = None
        if self._active and now - self._last_motion >= self.config.end_after:
            self._active = False
            assert self._box is not None
            return Change("end", self._peak, self._box, round(self._last_motion - self._started, 3))
        return None


def _box(changed: np.ndarray) -> Box:
    """The box around where it moved, relative to the picture: changed pixels near each other
    joined into regions, and the regions that matter (at least a fifth of the largest) boxed
    together, so a flickering clock digit far away does not stretch the box of a person."""
    joined = cv2.dilate(changed, np.ones((3, 3), np.uint8), iterations=2)
    contours, _ = cv2.findContours(joined, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    areas = [cv2.contourArea(contour) for contour in contours]
    largest = max(areas, default=0.0)
    boxes = [cv2.boundingRect(c) for c, area in zip(contours, areas, strict=True) if area >= largest / 5]
    rows, columns = changed.shape
    x0 = min(x for x, _, _, _ in boxes)
    y0 = min(y for _, y, _, _ in boxes)
    x1 = max(x + w for x, _, w, _ in boxes)
    y1 = max(y + h for _, y, _, h in boxes)
    return (round(x0 / columns, 4), round(y0 / rows, 4), round(x1 / columns, 4), round(y1 / rows, 4))


def _union(first: Box | None, second: Box | None) -> Box | None:
    if first is None or second is None:
        return first or second
    return (
        min(first[0], second[0]),
        min(first[1], second[1]),
        max(first[2], second[2]),
        max(first[3], second[3]),
    )
