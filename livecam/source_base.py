"""What every source is: the interface the capture thread uses, its error, its frame screening.

Kept apart from the modules that open sources (sources.py for OpenCV, httpcam.py for cameras
livecam reads itself) so that both build on it and neither imports the other's internals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

OPEN_TIMEOUT_MS = 5000
# A network camera that sends nothing for this long is treated as lost.
READ_TIMEOUT_MS = 3000

# A part larger than this is dropped unread; the app passes settings.max_frame_mb.
MAX_FRAME = 16 * 2**20
# A camera that sends this many bad frames in a row (or only bad ones for READ_TIMEOUT_MS)
# is treated as failed rather than screened for ever.
MAX_BAD_IN_ROW = 50


class StopSignal(threading.Event):
    """A capture thread's stop flag that also wakes a read blocked on the network.

    A camera that stops sending mid-stream leaves its reader blocked for up to the read
    timeout, and a switch-off would wait that long. So a source registers, for as long as
    a read may block, a way to interrupt it (shutting its socket down), which ``set()``
    calls. The capture thread still owns the source: the stopping side only shuts the
    socket down, never reads or closes it, and the source unregisters (under the same lock,
    so no interrupt is still running) before it closes the socket.
    """

    def __init__(self) -> None:
        super().__init__()
        self._interrupt_lock = threading.Lock()  # guards _interrupts; held while they run
        self._interrupts: list[Callable[[], None]] = []

    def set(self) -> None:
        """Raise the flag, then interrupt every read registered."""
        with self._interrupt_lock:
            super().set()
            for interrupt in self._interrupts:
                interrupt()

    def add_interrupt(self, interrupt: Callable[[], None]) -> Callable[[], None]:
        """Call ``interrupt`` when the flag is raised (at once if it is); return the undo."""
        with self._interrupt_lock:
            if self.is_set():
                interrupt()
            self._interrupts.append(interrupt)

        def remove() -> None:
            with self._interrupt_lock:
                if interrupt in self._interrupts:
                    self._interrupts.remove(interrupt)

        return remove


def on_stop(stop: threading.Event, interrupt: Callable[[], None]) -> Callable[[], None]:
    """Have a stop interrupt a blocking read, where it can (a StopSignal); return the undo."""
    if isinstance(stop, StopSignal):
        return stop.add_interrupt(interrupt)
    return lambda: None


class SourceError(Exception):
    """The source cannot be opened or stopped delivering frames; the message says why.

    ``refused`` is True when the camera turned livecam away (HTTP 401 or 403): retrying soon
    cannot help until someone fixes the credentials. ``rejected`` and ``last_rejection`` are
    the frames a source dropped while it was opening, when the open fails: no source is left
    to ask for them.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
        self.rejected = 0
        self.last_rejection: str | None = None


def human_size(size: int) -> str:
    """A byte count for a message: whole megabytes, kilobytes or bytes."""
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if size >= scale:
            return f"{size / scale:.0f} {unit}"
    return f"{size} bytes"


class Screening:
    """Drops bad frames and counts them; gives up on a source that sends nothing else.

    A source calls ``_reject(reason)`` for each frame it drops and ``_accept()`` for each it
    hands out; ``rejected`` and ``last_rejection`` are for the camera's status.
    """

    rejected: int = 0  # frames dropped because they were not whole JPEGs or too large
    last_rejection: str | None = None  # why the last one was dropped
    _bad_in_row = 0
    _bad_since: float | None = None

    def _reject(self, reason: str) -> None:
        """Count a dropped frame; raise SourceError if good frames have stopped coming."""
        self.rejected += 1
        self.last_rejection = reason
        self._bad_in_row += 1
        if self._bad_since is None:
            self._bad_since = time.monotonic()
        if self._bad_in_row >= MAX_BAD_IN_ROW:
            raise SourceError(
                f"camera sends no valid JPEG: {reason} ({self._bad_in_row} bad frames in a row)"
            )
        self._check_patience()

    def _check_patience(self) -> None:
        """Raise SourceError once only bad data has come for the read timeout."""
        if self._bad_since is not None and time.monotonic() - self._bad_since >= READ_TIMEOUT_MS / 1000:
            seconds = READ_TIMEOUT_MS / 1000
            raise SourceError(
                f"camera sends no valid JPEG: {self.last_rejection} (none good for {seconds:g} s)"
            )

    def _accept(self) -> None:
        """A good frame: the camera is healthy again."""
        self._bad_in_row = 0
        self._bad_since = None

    def _opening_failed(self, error: BaseException) -> None:
        """Hand the frames dropped so far to the error that ends an open, to be counted."""
        if isinstance(error, SourceError):
            error.rejected, error.last_rejection = self.rejected, self.last_rejection


@runtime_checkable
class Skimming(Protocol):
    """A source that can tell whether more has arrived, so that it is read only then (an
    HTTP MJPEG stream)."""

    skims: bool  # whether it can tell what has arrived, as it is read now

    def arrived(self) -> bool:
        """Whether more of the stream has arrived than the end of the frame last grabbed."""


class Source(Protocol):
    """What the capture thread needs from a source."""

    width: int
    height: int
    compressed: bool  # the source hands over its own JPEG bytes
    rejected: int  # bad frames dropped so far (not whole JPEGs, or larger than the cap)
    last_rejection: str | None  # why the last one was dropped

    def grab(self) -> bool:
        """Advance to the next frame, without decoding it where possible."""

    def retrieve(self) -> np.ndarray | None:
        """Decode the frame last grabbed."""

    def jpeg(self) -> bytes | None:
        """The source's own JPEG bytes of the frame last grabbed, when it has them."""

    def release(self) -> None:
        """Let go of the device, connection or file."""
