"""The stream policy, in one place: which frame a viewer gets next, and when.

Both ways of writing a stream (a thread per viewer, and the sender's one thread for every
viewer) follow it through a ``Cursor``:

- a viewer joining a running camera gets its current frame at once, if it is fresh;
- then each new frame once, and when several came while it was busy, only the newest:
  never a backlog;
- after a heartbeat interval with nothing new, the last frame again, so that a vanished
  client fails a write and proxies see the connection alive (a frame too old to show at
  once is the first such resend);
- the end when the camera stops (BroadcastClosed).
"""

from __future__ import annotations

from .broadcast import Broadcaster, Frame

HEARTBEAT = 1.0  # seconds without a new frame before the last one is sent again


class Cursor:
    """One viewer's place in one camera's frames. Used by one thread at a time."""

    def __init__(self, broadcaster: Broadcaster, heartbeat: float = HEARTBEAT) -> None:
        self.broadcaster = broadcaster
        self.heartbeat = heartbeat
        self.seq = 0  # the newest frame this viewer has been given
        self.last: Frame | None = None  # what a heartbeat sends again

    def first(self) -> Frame | None:
        """The frame to show a new viewer at once: the camera's current one, if fresh."""
        latest = self.broadcaster.latest
        if latest is None:
            return None
        self.seq, self.last = latest.seq, latest
        return latest if latest.age < self.heartbeat else None

    def newer(self) -> Frame | None:
        """The newest frame if the viewer has not had it, skipping any in between."""
        latest = self.broadcaster.latest
        if latest is None or latest.seq <= self.seq:
            return None
        self.seq, self.last = latest.seq, latest
        return latest

    def heartbeat_after(self, quiet: float) -> Frame | None:
        """The last frame again if nothing was sent for ``quiet`` seconds, at least a heartbeat."""
        return self.last if quiet >= self.heartbeat else None

    def wait(self) -> tuple[Frame, bool]:
        """Block until a part is due: (a new frame, True) or (a heartbeat resend, False).

        :raise BroadcastClosed: the camera stopped.
        """
        while True:
            frame = self.broadcaster.wait_next(self.seq, self.heartbeat)
            if frame is not None:
                self.seq, self.last = frame.seq, frame
                return frame, True
            if self.last is not None:
                return self.last, False
