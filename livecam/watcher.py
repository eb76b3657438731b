"""The capture thread's motion watch: pictures to the detector at its own rate, whether or not
anyone watches, and its starts and ends to the event log with the JPEG of the strongest moment.

Runs in the capture thread (which owns the source), so a picture costs no copy and no hand-off:
a JPEG camera's frame is decoded small and gray (in full only when it is small already),
another source's frame is the one the capture thread decoded anyway when it has one, else
retrieved once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from .config import CameraConfig
from .events import EventLog
from .frames import encode
from .motion import Analysis, Change, MotionDetector, gray_of_image, gray_of_jpeg

log = logging.getLogger(__name__)

SNAPSHOT_QUALITY = 80  # an event's picture, when the camera's own JPEG is not at hand


class MotionWatch:
    """One camera's motion detection and the events it makes; lives as long as the camera."""

    def __init__(self, config: CameraConfig, events: EventLog) -> None:
        self.config = config
        self._events = events
        self._detector = MotionDetector(config.motion)
        self._interval = 1.0 / config.motion.fps
        self._next_due = 0.0
        self._peak = 0.0  # the strongest score of the event under way
        self._snapshot: bytes | None = None  # its picture
        self.score = 0.0  # the last picture's, for the record
        self.analysed = 0  # pictures analysed so far

    @property
    def active(self) -> bool:
        """Whether a motion event is under way."""
        return self._detector.active

    def due(self, now: float) -> bool:
        """Whether the picture grabbed at monotonic ``now`` is to be analysed."""
        if now < self._next_due:
            return False
        self._next_due = max(self._next_due + self._interval, now)
        return True

    def look(
        self,
        now: float,
        jpeg: Callable[[], bytes | None],
        image: Callable[[], np.ndarray | None],
        width: int,
    ) -> Analysis | None:
        """Analyse the picture just grabbed: ``jpeg`` gives the camera's own JPEG (None: it
        sends none), ``image`` its pixels; both are asked only as needed. None when it gave
        no picture."""
        own = jpeg()
        gray = gray_of_jpeg(own, width) if own is not None else None
        pixels = None
        if gray is None:
            pixels = image()
            if pixels is None:
                return None
            gray = gray_of_image(pixels)
        analysis = self._detector.analyse(gray, now)
        self.analysed += 1
        self.score = analysis.score
        if analysis.moving and (analysis.change is not None or analysis.score > self._peak):
            self._peak = analysis.score
            self._snapshot = own if own is not None else self._encoded(pixels, image)
        if analysis.change is not None:
            self._note(analysis.change)
        return analysis

    def _encoded(self, pixels: np.ndarray | None, image: Callable[[], np.ndarray | None]) -> bytes | None:
        pixels = pixels if pixels is not None else image()
        return encode(pixels, SNAPSHOT_QUALITY) if pixels is not None else None

    def _note(self, change: Change) -> None:
        """An event starts or ends: into the log, with the strongest picture so far."""
        data = {"score": round(change.score, 4), "box": list(change.box)}
        if change.kind == "end":
            data["duration"] = change.duration
        self._events.add(f"motion.{change.kind}", self.config.id, self.config.name, self._snapshot, **data)
        if change.kind == "end":
            self._peak, self._snapshot = 0.0, None

    def interrupted(self) -> None:
        """The camera stopped or its source failed: an event under way ends now."""
        change = self._detector.interrupt()
        if change is not None:
            self._note(change)
