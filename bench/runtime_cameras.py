"""What viewers of other cameras notice while cameras are added, changed and removed at run time.

livecam under gunicorn serves three 20 fps test-pattern cameras, each watched by one viewer on
one connection. Then 20 cameras are added, renamed, rotated (a reopen) and removed one after
another through the API, and the viewers note when each part arrives. The same viewers are
then watched for a quiet window of the same length, with no change, so what the machine's
own load does to the intervals is visible beside what the changes do. Nothing is asserted;
figures are printed::

    .venv/bin/python bench/runtime_cameras.py --repeat 3

The aim (issue: cameras at run time) is no gap longer than two frame intervals (100 ms at
20 fps) during the changes, and no reconnect.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from procs import Server, free_port

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
FPS = 20
CONTROL = "bench-control"
WATCHED = 3
CHANGES = 20


class Viewer(threading.Thread):
    """One stream on one connection; the arrival time of each part's end."""

    def __init__(self, port: int, cam_id: int) -> None:
        super().__init__(daemon=True, name=f"camera {cam_id}")
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", f"/cameras/{cam_id}/stream.mjpg")
        self.response = self.conn.getresponse()
        self.arrivals: list[float] = []
        self.ended = False

    def run(self) -> None:
        try:
            while True:
                line = self.response.fp.readline()
                if not line:
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                    self.response.fp.readline()  # the blank line after the part's headers
                    if len(self.response.fp.read(length)) < length:
                        break
                    self.arrivals.append(time.monotonic())
        except OSError:
            pass
        self.ended = True

    def gaps(self, start: float, end: float, longer_than: float) -> list[tuple[float, float]]:
        """(previous part, next part) arrival times around each gap longer than ``longer_than``."""
        times = [t for t in self.arrivals if start <= t <= end]
        return [(a, b) for a, b in zip(times, times[1:], strict=False) if b - a > longer_than]

    def intervals(self, start: float, end: float) -> list[float]:
        """Seconds between consecutive parts that arrived within [start, end]."""
        times = [t for t in self.arrivals if start <= t <= end]
        return [b - a for a, b in zip(times, times[1:], strict=False)]


def call(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any, float]:
    """One API request with the control token: status, JSON body, seconds it took."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {CONTROL}", "Content-Type": "application/json"}
    started = time.monotonic()
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    took = time.monotonic() - started
    conn.close()
    return response.status, json.loads(data) if data else None, took


def summary(intervals: list[float]) -> str:
    """Parts, median, p99 and largest interval, and gaps longer than two frame intervals."""
    if not intervals:
        return "no parts"
    ordered = sorted(intervals)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    over = sum(1 for i in intervals if i > 2 / FPS)
    return (
        f"{len(intervals) + 1:4d} parts  median {statistics.median(intervals) * 1000:5.1f} ms  "
        f"p99 {p99 * 1000:5.1f}  max {ordered[-1] * 1000:5.1f}  gaps > {2000 / FPS:.0f} ms: {over}"
    )


class Changes:
    """The API requests that add, rename, rotate and remove cameras, each timed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.took: dict[str, list[float]] = {"add": [], "rename": [], "rotate": [], "remove": []}
        self.calls: list[tuple[float, float, str]] = []  # (start, end, what): what a gap overlapped

    def send(self, what: str, n: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One timed request; its JSON answer."""
        begun = time.monotonic()
        status, answer, seconds = call(self.port, method, path, body)
        if status >= 300:
            raise RuntimeError(f"{what} answered {status}: {answer}")
        self.calls.append((begun, begun + seconds, f"{what} #{n}"))
        self.took[what].append(seconds)
        return answer

    def run(self) -> None:
        """Add, rename, rotate and remove a camera, ``CHANGES`` times."""
        for n in range(CHANGES):
            added = self.send("add", n, "POST", "/cameras", {"source": "testsrc:64x48@5", "name": f"x{n}"})
            self.send("rename", n, "PATCH", f"/cameras/{added['id']}", {"name": f"y{n}"})
            self.send("rotate", n, "PATCH", f"/cameras/{added['id']}", {"rotate": 180})
            self.send("remove", n, "DELETE", f"/cameras/{added['id']}")

    def during(self, begun: float, ended: float) -> str:
        """The requests under way between two instants."""
        return ", ".join(what for a, b, what in self.calls if a < ended and b > begun) or "no request"


def report(viewers: list[Viewer], changes: Changes, started: float, changed: float, quiet: float) -> None:
    """Print the requests' times and each viewer's intervals, during the changes and after."""
    load = os.getloadavg()[0]
    print(
        f"  {CHANGES} cameras added, renamed, rotated, removed in {changed - started:.1f} s; load {load:.1f}"
    )
    times = (f"{k} {statistics.median(v) * 1000:.0f}/{max(v) * 1000:.0f}" for k, v in changes.took.items())
    print("  request ms (median/max): " + ", ".join(times))
    for viewer in viewers:
        print(f"  {viewer.name} during changes: {summary(viewer.intervals(started, changed))}")
        print(f"  {viewer.name} quiet window:   {summary(viewer.intervals(changed, quiet))}")
        for begun, ended in viewer.gaps(started, changed, 2 / FPS):
            print(f"    a {(ended - begun) * 1000:.0f} ms gap during: {changes.during(begun, ended)}")
    print("  reconnects: " + ("a stream ended" if any(v.ended for v in viewers) else "none"))


def one_run(logs: Path) -> None:
    """Start livecam, watch, change cameras, watch quietly, print, stop."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
    env |= {
        "LIVECAM_CAMERAS": ",".join(f"{i}=testsrc:160x120@{FPS}" for i in range(WATCHED)),
        "LIVECAM_CONTROL_TOKEN": CONTROL,
        "LIVECAM_STATE_DIR": str(logs / f"state-{port}"),
    }
    argv = [PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app", "--bind", f"127.0.0.1:{port}"]
    url = f"http://127.0.0.1:{port}/healthz"
    server = Server("livecam", argv, url, logs / f"livecam-{port}.log", cwd=REPO, env=env)
    viewers: list[Viewer] = []
    try:
        server.wait_ready()
        for cam_id in range(WATCHED):
            call(port, "POST", f"/cameras/{cam_id}/start")
        viewers = [Viewer(port, cam_id) for cam_id in range(WATCHED)]
        for viewer in viewers:
            viewer.start()
        deadline = time.monotonic() + 15
        while not all(len(v.arrivals) >= FPS for v in viewers) and time.monotonic() < deadline:
            time.sleep(0.1)
        changes = Changes(port)
        started = time.monotonic()
        changes.run()
        changed = time.monotonic()
        time.sleep(changed - started)  # the quiet window: as long as the changes took
        report(viewers, changes, started, changed, time.monotonic())
    finally:
        for viewer in viewers:
            viewer.conn.close()
        server.stop()


def main() -> None:
    """Run the scenario ``--repeat`` times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="livecam-runtime-bench-") as tmp:
        for run in range(args.repeat):
            print(f"run {run + 1}:")
            one_run(Path(tmp))


if __name__ == "__main__":
    main()
