"""The bench camera: an HTTP MJPEG camera on loopback that stamps every frame it sends.

It pre-encodes a loop of textured pictures (640x480 by default) once, then sends one frame per tick of a
single 30 fps clock to every client from one thread (a selectors loop), inserting a JPEG
comment with the frame number and send time. It is also the benchmark's floor: N readers
reading it directly cost what serving MJPEG costs at all.

Routes: ``/cam.mjpg`` (the stream), ``/stats`` (JSON: clients, frames, late ticks, frames
skipped for clients still busy with the previous one) and ``/sent`` (JSON: the send time
of each recent frame, for readers that only recover a picture's index)::

    python bench/camera.py --port 8091 --size 640x480 --fps 30 --quality 80
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import time
from collections import deque
from dataclasses import dataclass, field

from stamp import LOOP, pictures, with_comment

BOUNDARY = b"camframe"
STREAM_HEAD = (
    b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=%s\r\n"
    b"Cache-Control: no-store\r\nConnection: close\r\n\r\n" % BOUNDARY
)
PART_HEAD = b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
SENT_LOG = 4096  # send times kept: over two minutes at 30 fps, longer than any bench window
JSON_HEAD = b"HTTP/1.0 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
MAX_REQUEST = 8192


@dataclass
class Client:
    """One connection: its request until it is read, then what is left to send."""

    sock: socket.socket
    request: bytearray = field(default_factory=bytearray)
    pending: memoryview | None = None
    streaming: bool = False
    close_when_sent: bool = False


class BenchCamera:
    """Serves the stream and the JSON routes from one thread, paced by one clock."""

    def __init__(self, port: int, fps: float, frames: list[bytes]) -> None:
        self.fps = fps
        self.frames = frames
        self.number = 0  # frames sent so far; the next frame's number
        self.late = 0  # ticks that came more than one interval late (the camera fell behind)
        self.skipped = 0  # frames not sent to a client still busy with the previous one
        self.sent: deque[float] = deque(maxlen=SENT_LOG)
        self.clients: dict[int, Client] = {}
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", port), backlog=512)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)

    def serve_forever(self) -> None:
        """Tick at ``fps`` and answer clients between ticks."""
        interval = 1.0 / self.fps
        next_tick = time.monotonic()
        while True:
            for key, events in self.selector.select(max(0.0, next_tick - time.monotonic())):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._service(self.clients[key.fd], events)
            now = time.monotonic()
            if now >= next_tick:
                self._tick()
                next_tick += interval
                if now - next_tick > interval:
                    self.late += 1
                    next_tick = now  # keep one steady clock instead of bursting to catch up

    def _tick(self) -> None:
        """Send the next frame, built once, to every streaming client that is ready for it."""
        sent = time.time()
        jpeg = with_comment(self.frames[self.number % LOOP], self.number, sent)
        part = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (
            BOUNDARY,
            len(jpeg),
            jpeg,
        )
        self.number += 1
        self.sent.append(sent)
        for client in list(self.clients.values()):
            if not client.streaming:
                continue
            if client.pending is not None:
                self.skipped += 1  # like a real camera: a client that cannot keep up misses frames
                continue
            self._send(client, part)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        self.clients[sock.fileno()] = Client(sock)
        self.selector.register(sock, selectors.EVENT_READ)

    def _service(self, client: Client, events: int) -> None:
        """Read a request (or notice a hang-up) and flush what is pending."""
        if events & selectors.EVENT_READ:
            try:
                data = client.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                self._close(client)
                return
            if not client.streaming and not client.close_when_sent:
                client.request += data
                self._answer(client)
        if events & selectors.EVENT_WRITE and client.pending is not None:
            self._send(client, client.pending)

    def _answer(self, client: Client) -> None:
        """Answer a complete request: start a stream or send one JSON document."""
        if b"\r\n\r\n" not in client.request:
            if len(client.request) > MAX_REQUEST:
                self._close(client)
            return
        path = client.request.split(b" ", 2)[1] if client.request.count(b" ") >= 2 else b""
        if path == b"/cam.mjpg":
            client.streaming = True
            self._send(client, STREAM_HEAD)
            return
        body, status = self._document(path.decode("latin-1"))
        head = b"HTTP/1.0 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
            status,
            len(body),
        )
        client.close_when_sent = True
        self._send(client, head + body)

    def _document(self, path: str) -> tuple[bytes, bytes]:
        """The JSON body and status line for ``/stats`` and ``/sent``."""
        if path == "/stats":
            streaming = sum(client.streaming for client in self.clients.values())
            data = {"clients": streaming, "frames": self.number, "fps": self.fps, "late": self.late}
            data["skipped"] = self.skipped
        elif path == "/sent":
            data = {"first": self.number - len(self.sent), "times": list(self.sent)}
        else:
            return b'{"error": "not found"}', b"404 Not Found"
        return json.dumps(data).encode(), b"200 OK"

    def _send(self, client: Client, data: bytes | memoryview) -> None:
        """Send without blocking; keep the rest for when the socket is writable again."""
        try:
            count = client.sock.send(data)
        except BlockingIOError:
            count = 0
        except OSError:
            self._close(client)
            return
        if count < len(data):
            client.pending = memoryview(data)[count:]
            self.selector.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        if client.pending is not None:
            client.pending = None
            self.selector.modify(client.sock, selectors.EVENT_READ)
        if client.close_when_sent:
            self._close(client)

    def _close(self, client: Client) -> None:
        if self.clients.pop(client.sock.fileno(), None) is None:
            return
        client.pending, client.streaming = None, False
        self.selector.unregister(client.sock)
        client.sock.close()


def main() -> None:
    """Serve the bench camera until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--quality", type=int, default=80)
    args = parser.parse_args()
    width, height = (int(value) for value in args.size.split("x"))
    BenchCamera(args.port, args.fps, pictures(width, height, args.quality)).serve_forever()


if __name__ == "__main__":
    main()
