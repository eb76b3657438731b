"""What reading an HTTP MJPEG camera costs livecam, against reading its socket at all.

Starts the bench camera (640x480 q80, 30 fps), then, in turn and ``--repeat`` times: reads
the stream with plain ``recv_into`` calls into one buffer (the floor: what the socket costs),
and with livecam's reader (``open_http``, ``grab()`` on every frame as an unwatched camera's
capture thread does, the JPEG copied out once a second as its size check does). Prints the
thread's CPU time per frame and in % of one core; nothing is asserted::

    PYTHONPATH=. python bench/camera_read.py --seconds 8 --repeat 3
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from procs import Server, free_port

from livecam.httpcam import MjpegSource, open_http

BENCH = Path(__file__).resolve().parent
FPS = 30.0


def floor(port: int, seconds: float) -> float:
    """CPU seconds per frame of reading the stream's bytes and nothing else."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /cam.mjpg HTTP/1.0\r\n\r\n")
        view = memoryview(bytearray(256 * 1024))
        started, cpu = time.monotonic(), time.thread_time()
        while time.monotonic() - started < seconds:
            if not sock.recv_into(view):
                raise RuntimeError("the camera hung up")
        return (time.thread_time() - cpu) / ((time.monotonic() - started) * FPS)


def reader(port: int, seconds: float) -> float:
    """CPU seconds per frame of livecam's reader, grabbing every frame of an unwatched camera."""
    source = open_http(f"http://127.0.0.1:{port}/cam.mjpg", threading.Event())
    assert source is not None
    try:
        frames, started, cpu = 0, time.monotonic(), time.thread_time()
        while time.monotonic() - started < seconds:
            if not source.grab():
                raise RuntimeError("the camera hung up")
            frames += 1
            if frames % int(FPS) == 0:
                source.jpeg()  # the capture thread's once-a-second size check
        return (time.thread_time() - cpu) / frames
    finally:
        source.release()


def skimmer(port: int, seconds: float, interval: float) -> float:
    """CPU seconds per frame of livecam's reader taking what arrived every ``interval``
    seconds, as an unwatched camera's capture thread does."""
    source = open_http(f"http://127.0.0.1:{port}/cam.mjpg", threading.Event())
    assert isinstance(source, MjpegSource) and source.skims
    try:
        frames, started, cpu = 0, time.monotonic(), time.thread_time()
        checked = started
        while time.monotonic() - started < seconds:
            time.sleep(interval)
            while True:
                if not source.grab():
                    raise RuntimeError("the camera hung up")
                frames += 1
                if not source.arrived():
                    break
            if time.monotonic() - checked >= 1:
                checked = time.monotonic()
                source.jpeg()  # the capture thread's once-a-second size check
        return (time.thread_time() - cpu) / frames
    finally:
        source.release()


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.1, help="an unwatched camera's read interval")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="livecam-read-bench-") as logs:
        port = free_port()
        argv = [sys.executable, str(BENCH / "camera.py"), "--port", str(port), "--fps", str(FPS)]
        camera = Server("camera", argv, f"http://127.0.0.1:{port}/stats", Path(logs) / "camera.log")
        camera.wait_ready()
        try:
            runs = [
                (
                    floor(port, args.seconds),
                    reader(port, args.seconds),
                    skimmer(port, args.seconds, args.interval),
                )
                for _ in range(args.repeat)
            ]
        finally:
            camera.stop()
    print(f"reading a 640x480 30 fps MJPEG camera, {args.seconds:g} s windows, {args.repeat} runs:")
    rows = (
        ("socket alone", [f for f, _, _ in runs]),
        ("livecam's reader", [r for _, r, _ in runs]),
        (f"skimming /{args.interval:g} s", [k for _, _, k in runs]),
    )
    for label, values in rows:
        low, middle = min(values), statistics.median(values)
        print(
            f"  {label:17} {middle * 1e6:6.0f} µs per frame (min {low * 1e6:.0f}), "
            f"{middle * FPS * 100:.2f} % of a core"
        )


if __name__ == "__main__":
    main()
