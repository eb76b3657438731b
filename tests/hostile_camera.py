"""A hostile HTTP camera on loopback for tests: each path misbehaves in its own way.

Streams (``multipart/x-mixed-replace``, 160x120 numbered frames):

- ``/good.mjpg``: a well-behaved camera.
- ``/garbage-first.mjpg``, ``/crlf-first.mjpg``, ``/long-lead-first.mjpg``: the first part is
  garbage, a JPEG after a stray CRLF, or one after 1 KB of spaces; good parts follow.
- ``/crlf-every.mjpg``: every part is a stray CRLF then a good JPEG, its Content-Length
  counting both (``?as=octet``: sent as ``application/octet-stream``, so FFmpeg reads it).
- ``/garbage-payloads.mjpg``, ``/truncated.mjpg``: every other part is garbage, or a JPEG cut
  in half, in valid framing.
- ``/only-garbage.mjpg``: nothing but garbage parts.
- ``/fake-jpeg.mjpg``: every other part has a JPEG's start and end markers around HTML.
- ``/trailer.mjpg``: every part is a good JPEG followed by bytes of garbage.
- ``/odd-length.mjpg``: good parts whose Content-Length is ``²``.
- ``/resize.mjpg``: 160x120 for a second, then 320x240.
- ``/claims-60000.mjpg``: every other part, the first included, is a good JPEG whose frame
  header claims 60000x60000 pixels.
- ``/trickle.mjpg``: one good part, then a part that arrives a byte every 0.2 s.
- ``/stall.mjpg``: three good parts, then silence on an open connection (``stalled`` is set)
  until the client leaves (``left`` is set) or the camera stops.
- ``/huge.mjpg``, ``/huge-no-length.mjpg``: every other part is 30 MB (with and without a
  Content-Length).
- ``/claims-2gb.mjpg``: a part claiming 2 GiB, then data trickling at 100 MB/s.
- ``/no-length.mjpg``: good parts without Content-Length, the boundary declared quoted and
  with its leading ``--``.
- ``/big-header.mjpg``: a part header of 20 KB.
- ``/basic.mjpg``, ``/digest.mjpg``: good streams behind Basic or Digest authentication;
  without it a 401 HTML page with the challenge.
- ``/octet.mjpg``: a multipart stream sent as ``application/octet-stream`` (left to FFmpeg).

Other answers: ``/snapshot.jpg`` (one JPEG per request), ``/stall.jpg`` (a JPEG, then for
every later request 100 bytes of one and silence, as ``/stall.mjpg``), ``/missing`` (404), ``/error``
(500), ``/page.html`` (a 200 HTML page), ``/redirect`` (302 to ``/good.mjpg?from=redirect``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import select
import socket
import ssl
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

from camera_server import numbered_frames

BOUNDARY = b"camframe"
USER, PASSWORD = "admin", "p@ss[w0rd"
REALM = "livecam-test"
NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
HUGE = 30 * 2**20
CLAIMED = 2 * 2**30
GARBAGE = b"<html><body>Camera busy</body></html>" * 4
FAKE_JPEG = b"\xff\xd8<html><body>not a jpeg</body></html>\xff\xd9"  # a JPEG's markers, no JPEG
TRAILER = b"GARBAGE<html>" * 20  # some cameras append bytes after the picture


def claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with a frame header claiming ``width`` x ``height`` (baseline JPEGs from OpenCV)."""
    at = jpeg.index(b"\xff\xc0") + 5  # after the marker, the length and the precision
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4 :]


def jpeg_sized(size: int) -> bytes:
    """A part that looks like a JPEG (start and end markers) of ``size`` bytes."""
    return b"\xff\xd8" + bytes(size - 4) + b"\xff\xd9"


class HostileCamera:
    """The camera's server on 127.0.0.1 (HTTPS given a certificate); records every request."""

    def __init__(
        self, fps: float = 30.0, certificate: tuple[Path, Path] | None = None, password: str = PASSWORD
    ) -> None:
        self.frames = numbered_frames(160, 120, 10)
        self.password = password  # what /basic.mjpg and /digest.mjpg require, with USER
        self.fps = fps
        self.port = 0
        self.requests: list[tuple[str, dict[str, str]]] = []  # path as sent, headers
        self.arrivals: list[float] = []  # when each request came (monotonic clock)
        self._certificate = certificate
        self._lock = threading.Condition()  # guards requests and _clients
        self._clients: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.stalled = threading.Event()  # a /stall.mjpg stream has gone silent
        self.left = threading.Event()  # and its client has gone
        self._large = numbered_frames(320, 240, 1)[0]
        self._huge = jpeg_sized(HUGE)  # built once, so the test's memory baseline includes it

    def url(self, path: str, user: str | None = None, password: str | None = None) -> str:
        """The URL of ``path``, with credentials percent-encoded into it when given."""
        scheme = "https" if self._certificate else "http"
        userinfo = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user is not None else ""
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}{path}"

    def start(self) -> HostileCamera:
        """Listen and serve in a background thread."""
        camera = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with camera._lock:
                    camera.requests.append((self.path, dict(self.headers.items())))
                    camera.arrivals.append(time.monotonic())
                    camera._clients.add(self.connection)
                try:
                    camera._answer(self)
                except OSError:
                    pass  # the client left
                finally:
                    with camera._lock:
                        camera._clients.discard(self.connection)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self._certificate:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._certificate)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, drop every client and wait for the server thread."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            for client in list(self._clients):
                try:
                    client.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        assert self._thread is not None
        self._thread.join(5)

    def paths(self) -> list[str]:
        """The paths requested so far, query strings as sent."""
        with self._lock:
            return [path for path, _ in self.requests]

    # -- answers ---------------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        good = self.frames
        streams = {
            "/good.mjpg": lambda n: good[n % 10],
            "/garbage-first.mjpg": lambda n: GARBAGE if n == 0 else good[n % 10],
            "/crlf-first.mjpg": lambda n: b"\r\n" + good[0] if n == 0 else good[n % 10],
            "/long-lead-first.mjpg": lambda n: b" " * 1024 + good[0] if n == 0 else good[n % 10],
            "/crlf-every.mjpg": lambda n: b"\r\n" + good[n % 10],
            "/garbage-payloads.mjpg": lambda n: GARBAGE if n % 2 else good[n % 10],
            "/truncated.mjpg": lambda n: good[n % 10][:300] if n % 2 else good[n % 10],
            "/only-garbage.mjpg": lambda n: GARBAGE,
            "/huge.mjpg": lambda n: self._huge if n % 2 else good[n % 10],
            "/octet.mjpg": lambda n: good[n % 10],
            "/fake-jpeg.mjpg": lambda n: FAKE_JPEG if n % 2 else good[n % 10],
            "/trailer.mjpg": lambda n: good[n % 10] + TRAILER,
            "/resize.mjpg": lambda n: good[n % 10] if n < self.fps else self._large,
            "/claims-60000.mjpg": lambda n: (
                claiming(good[n % 10], 60000, 60000) if n % 2 == 0 else good[n % 10]
            ),
        }
        if path in streams:
            octet = path == "/octet.mjpg" or handler.path.endswith("?as=octet")
            kind = "application/octet-stream" if octet else None
            self._stream(handler, streams[path], content_type=kind)
        elif path == "/huge-no-length.mjpg":
            self._stream(handler, lambda n: self._huge if n % 2 else good[n % 10], length=False)
        elif path == "/odd-length.mjpg":
            self._stream(handler, lambda n: good[n % 10], length=False, extra=b"Content-Length: \xb2\r\n")
        elif path == "/trickle.mjpg":
            self._trickle(handler)
        elif path == "/stall.mjpg":
            self._stall(handler)
        elif path == "/no-length.mjpg":
            self._stream(handler, lambda n: good[n % 10], length=False, declared='"--camframe"')
        elif path == "/big-header.mjpg":
            self._stream(handler, lambda n: good[n % 10], extra=b"X-Padding: " + b"a" * 20000 + b"\r\n")
        elif path == "/claims-2gb.mjpg":
            self._claim_2gb(handler)
        elif path == "/basic.mjpg":
            if self._basic_ok(handler):
                self._stream(handler, lambda n: good[n % 10])
            else:
                self._challenge(handler, f'Basic realm="{REALM}"')
        elif path == "/digest.mjpg":
            if self._digest_ok(handler):
                self._stream(handler, lambda n: good[n % 10])
            else:
                self._challenge(
                    handler, f'Digest realm="{REALM}", nonce="{NONCE}", qop="auth", algorithm=MD5'
                )
        elif path == "/snapshot.jpg":
            self._send(handler, 200, "image/jpeg", good[len(self.requests) % 10])
        elif path == "/stall.jpg" and self.paths().count(handler.path) > 1:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(len(good[0])))
            handler.end_headers()
            handler.wfile.write(good[0][:100])
            handler.wfile.flush()
            self._hang(handler)
        elif path == "/stall.jpg":
            self._send(handler, 200, "image/jpeg", good[0])
        elif path == "/page.html":
            self._send(handler, 200, "text/html; charset=utf-8", b"<html><body>Login</body></html>")
        elif path == "/redirect":
            handler.send_response(302)
            handler.send_header("Location", "/good.mjpg?from=redirect")
            handler.end_headers()
        elif path == "/error":
            handler.send_error(500)
        else:
            handler.send_error(404)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, kind: str, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _challenge(self, handler: BaseHTTPRequestHandler, challenge: str) -> None:
        body = b"<html><body>401 Unauthorized</body></html>"
        handler.send_response(401)
        handler.send_header("WWW-Authenticate", challenge)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _basic_ok(self, handler: BaseHTTPRequestHandler) -> bool:
        scheme, _, value = handler.headers.get("Authorization", "").partition(" ")
        return scheme == "Basic" and base64.b64decode(value) == f"{USER}:{self.password}".encode()

    def _digest_ok(self, handler: BaseHTTPRequestHandler) -> bool:
        scheme, _, value = handler.headers.get("Authorization", "").partition(" ")
        if scheme != "Digest":
            return False
        fields = {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', value)}

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{USER}:{REALM}:{self.password}")
        ha2 = md5(f"GET:{fields.get('uri')}")
        expected = md5(f"{ha1}:{NONCE}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
        return fields.get("username") == USER and fields.get("response") == expected

    def _stream(
        self,
        handler: BaseHTTPRequestHandler,
        part: object,
        length: bool = True,
        declared: str = BOUNDARY.decode(),
        content_type: str | None = None,
        extra: bytes = b"",
    ) -> None:
        """Send parts ``part(0)``, ``part(1)``... at the camera's rate until the client leaves."""
        handler.send_response(200)
        handler.send_header("Content-Type", content_type or f"multipart/x-mixed-replace; boundary={declared}")
        handler.end_headers()
        interval, next_at, number = 1.0 / self.fps, time.monotonic(), 0
        while self._server is not None:
            body = part(number)  # type: ignore[operator]
            head = b"--%s\r\nContent-Type: image/jpeg\r\n%s" % (BOUNDARY, extra)
            if length:
                head += b"Content-Length: %d\r\n" % len(body)
            handler.wfile.write(head + b"\r\n")
            handler.wfile.write(body)
            handler.wfile.write(b"\r\n")
            handler.wfile.flush()
            number += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing a frame clock, not synchronisation
            else:
                next_at = time.monotonic()

    def _trickle(self, handler: BaseHTTPRequestHandler) -> None:
        """One good part, then a part of 50,000 bytes sent a byte every 0.2 s: never silent."""
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        handler.end_headers()
        first = self.frames[0]
        handler.wfile.write(b"--%s\r\nContent-Length: %d\r\n\r\n%s\r\n" % (BOUNDARY, len(first), first))
        handler.wfile.write(b"--%s\r\nContent-Length: 50000\r\n\r\n" % BOUNDARY)
        handler.wfile.flush()
        for _ in range(300):  # at most a minute
            if self._server is None:
                return
            handler.wfile.write(b"\0")
            handler.wfile.flush()
            time.sleep(0.2)  # the trickle's pace, not synchronisation

    def _stall(self, handler: BaseHTTPRequestHandler) -> None:
        """Three good parts, then nothing on the open connection, like a camera that hangs."""
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        handler.end_headers()
        for jpeg in self.frames[:3]:
            handler.wfile.write(b"--%s\r\nContent-Length: %d\r\n\r\n%s\r\n" % (BOUNDARY, len(jpeg), jpeg))
        handler.wfile.flush()
        self._hang(handler)

    def _hang(self, handler: BaseHTTPRequestHandler) -> None:
        """Send nothing more, the connection open, until the client leaves or the camera stops."""
        self.stalled.set()
        # The client sends nothing after its request: readable means it closed or shut down.
        while self._server is not None and not select.select([handler.connection], [], [], 0.1)[0]:
            pass
        self.left.set()

    def _claim_2gb(self, handler: BaseHTTPRequestHandler) -> None:
        """Announce a 2 GiB part, then send zeros at about 100 MB/s until the client leaves."""
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        handler.end_headers()
        handler.wfile.write(
            b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (BOUNDARY, CLAIMED)
        )
        chunk = bytes(2**20)
        sent = 0
        while self._server is not None and sent < CLAIMED:
            handler.wfile.write(chunk)
            sent += len(chunk)
            time.sleep(0.01)  # a trickle's pace, not synchronisation
