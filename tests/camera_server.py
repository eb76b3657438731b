"""A real HTTP MJPEG camera on loopback for tests: numbered frames at a steady rate.

Use it in-process (``MjpegCamera``) or as a separate process that a test can kill::

    python tests/camera_server.py --port 8091 --size 320x240 --fps 30
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = b"camframe"


def numbered_frames(width: int, height: int, count: int, quality: int = 80) -> list[bytes]:
    """``count`` distinct JPEGs, each showing its number, so viewers can tell frames apart."""
    frames = []
    for number in range(count):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, :] = (number * 7 % 256, 80, 160)
        cv2.putText(image, str(number), (10, height - 20), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        frames.append(buffer.tobytes())
    return frames


class MjpegCamera:
    """An MJPEG camera serving ``/cam.mjpg`` on 127.0.0.1; counts its open connections."""

    def __init__(self, width: int = 320, height: int = 240, fps: float = 30.0, port: int = 0) -> None:
        self.frames = numbered_frames(width, height, 60)
        self.fps = fps
        self.port = port
        self.connections = 0
        self.sent = 0  # frames written, to every client together
        self._lock = threading.Condition()
        self._sending = threading.Event()
        self._sending.set()
        self.paused = threading.Event()  # set once a sending loop has seen a stall
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._clients: set[socket.socket] = set()

    @property
    def url(self) -> str:
        """The stream's URL."""
        return f"http://127.0.0.1:{self.port}/cam.mjpg"

    def start(self) -> MjpegCamera:
        """Listen (on the same port again after a stop) and serve in a background thread."""
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/cam.mjpg":
                    self.send_error(404)
                    return
                camera._serve(self)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every client connection, like a camera losing power."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for client in list(self._clients):
                try:
                    client.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(5)
        self._server = None

    def stall(self) -> None:
        """Keep connections open but send nothing, like a hung network camera."""
        self._sending.clear()

    def resume(self) -> None:
        """Send frames again after a stall."""
        self.paused.clear()
        self._sending.set()

    def wait_connections(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until exactly ``count`` clients are connected."""
        with self._lock:
            return self._lock.wait_for(lambda: self.connections == count, timeout)

    def wait_sent(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` frames have been written in all."""
        with self._lock:
            return self._lock.wait_for(lambda: self.sent >= count, timeout)

    def frame(self, number: int) -> bytes:
        """The JPEG of frame ``number``."""
        return self.frames[number % len(self.frames)]

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=" + BOUNDARY.decode())
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        with self._lock:
            self.connections += 1
            self._clients.add(handler.connection)
            self._lock.notify_all()
        try:
            interval = 1.0 / self.fps
            next_at = time.monotonic()
            number = 0
            while self._server is not None:
                if not self._sending.is_set():
                    self.paused.set()
                if not self._sending.wait(0.5):
                    continue
                jpeg = self.frame(number)
                handler.wfile.write(
                    b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                    % (BOUNDARY, len(jpeg), jpeg)
                )
                handler.wfile.flush()
                number += 1
                with self._lock:
                    self.sent = max(self.sent, number)  # one client: its frame count
                    self._lock.notify_all()
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing a frame clock, not synchronisation
                else:
                    next_at = time.monotonic()
        except OSError:
            pass
        finally:
            with self._lock:
                self.connections -= 1
                self._clients.discard(handler.connection)
                self._lock.notify_all()


class SceneCamera(MjpegCamera):
    """A camera looking at a still room, with a clock in its corner: nothing moves until a test
    puts an object in it (``show``), moves it, takes it away, or turns the lights up."""

    def __init__(self, width: int = 320, height: int = 240, fps: float = 15.0) -> None:
        super().__init__(width, height, fps)
        rng = np.random.default_rng(11)
        room = rng.integers(80, 140, (height, width, 3), dtype=np.uint8)
        self._room = cv2.GaussianBlur(room, (5, 5), 0)
        self._object: tuple[float, float] | None = None  # x, y of its top left, 0 to 1
        self._light = 0

    def show(self, x: float, y: float) -> None:
        """Put (or move) a dark object at relative position x, y."""
        self._object = (x, y)

    def clear(self) -> None:
        """Take the object away."""
        self._object = None

    def lights(self, level: int) -> None:
        """Brighten (or darken) the whole room by ``level``."""
        self._light = level

    def frame(self, number: int) -> bytes:
        image = (
            cv2.add(self._room, np.full_like(self._room, self._light)) if self._light else self._room.copy()
        )
        height, width = image.shape[:2]
        if self._object is not None:
            x, y = int(self._object[0] * width), int(self._object[1] * height)
            image[y : y + height // 4, x : x + width // 6] = (20, 30, 40)
        stamp = time.strftime("%H:%M:%S") + f".{number % 1000:03d}"
        cv2.putText(image, stamp, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        return buffer.tobytes()


def main() -> None:
    """Serve a camera until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    camera = MjpegCamera(width, height, args.fps, args.port).start()
    print(camera.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
