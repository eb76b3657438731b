"""gunicorn's gthread worker, holding each connection in its event loop until a request has arrived.

gthread gives a new connection to a pool thread, which then reads the request from a blocking
socket: a client sending one header byte every few seconds pins that thread for as long as it
likes, and a few hundred such clients leave no thread for viewers or buttons. This worker reads
a request's bytes in its main loop with non-blocking sockets, as nginx does, and commits a pool
thread only to a request that has arrived whole (its headers, and a body of declared length up
to ``MAX_REQUEST_BODY``). A connection whose request is not whole within ``REQUEST_TIMEOUT``
is closed, having cost nothing but a file descriptor.

Two more changes keep the event loop from waiting on clients: closing a connection gracefully
(send FIN, drain what the client still sends) lingers in the loop instead of blocking it, and
an application's ``Connection: close`` header makes gunicorn really close the connection after
the response (gunicorn drops that header otherwise).

TLS connections straight to gunicorn keep gthread's own behaviour: their bytes cannot be read
before the handshake, which gthread does in the pool thread. Put nginx in front for TLS.
"""

from __future__ import annotations

import errno
import re
import selectors
import socket
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from gunicorn.workers import gthread

from .config import MAX_REQUEST_BODY

REQUEST_TIMEOUT = 10.0  # seconds a client may take to send a whole request
MAX_REQUEST_HEAD = 64 * 1024  # past this, gunicorn's own limits answer the request
LINGER = 2.0  # seconds a closing connection may keep sending before it is cut
MAX_LINGER_BYTES = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:[ \t]*(\d{1,18})[ \t]*\r?(?:\n|$)", re.IGNORECASE)
_HEAD_END = re.compile(rb"\r?\n\r?\n")


def request_arrived(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds a whole request: headers, and a small body of declared length.

    A body larger than MAX_REQUEST_BODY is not waited for: the application refuses it with 413
    without reading it. So is a chunked body: livecam takes none (411).
    """
    end = _HEAD_END.search(data)
    if end is None:
        return len(data) > MAX_REQUEST_HEAD
    match = _CONTENT_LENGTH.search(data, 0, end.start() + 1)
    if match is None:
        return True
    length = int(match[1])
    return length > MAX_REQUEST_BODY or len(data) - end.end() >= length


class Connection(gthread.TConn):
    """A gthread connection that hands the bytes read in the event loop to gunicorn's parser."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrived = bytearray()
        self.deadline = 0.0  # when the request must have arrived
        self.drained = 0  # bytes read and dropped while lingering
        self.linger: Callable[[Connection], None] | None = None

    def init(self) -> None:
        """Set up the parser as gthread does, then give it the bytes read so far."""
        super().init()
        if self.arrived:
            self.parser.unreader.unread(bytes(self.arrived))
            self.arrived = bytearray()

    def close(self, graceful: bool = False) -> None:
        """Close; a graceful close lingers in the event loop rather than blocking it."""
        if graceful and self.linger is not None:
            self.linger(self)
        else:
            super().close(graceful)


def _honour_connection_close(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """WSGI middleware: an application's ``Connection: close`` makes gunicorn close after the response."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers):
                response = getattr(start_response, "__self__", None)
                if response is not None and hasattr(response, "force_close"):
                    response.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


class ThreadWorker(gthread.ThreadWorker):
    """gthread, but a pool thread is committed only to a request that has fully arrived."""

    def init_process(self) -> None:
        """Set up the bookkeeping for arriving and lingering connections, then run."""
        self.arriving: dict[Connection, None] = {}  # in deadline order: all get the same timeout
        self.lingering: dict[Connection, float] = {}
        # Reading early is possible only where gthread would read plain HTTP/1 bytes itself.
        self.reads_early = not self.cfg.is_ssl and self.cfg.http2_cleartext not in ("prior-knowledge", "both")
        super().init_process()

    def load_wsgi(self) -> None:
        """Load the app, and let it close a connection by answering ``Connection: close``."""
        super().load_wsgi()
        if hasattr(self.wsgi, "wsgi_app"):
            # Wrap the Flask app's inner WSGI callable, so the worker still sees the app itself.
            self.wsgi.wsgi_app = _honour_connection_close(self.wsgi.wsgi_app)

    def accept(self, listener: socket.socket) -> None:
        """Accept a connection and wait for its request in the event loop."""
        if not self.reads_early:
            super().accept(listener)
            return
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = Connection(self.cfg, sock, client, listener.getsockname())  # non-blocking
        conn.linger = self._linger
        self._await_request(conn)

    def on_client_socket_readable(self, conn: gthread.TConn, client: socket.socket) -> None:
        """A kept-alive connection has bytes again: wait for its whole request too."""
        if not isinstance(conn, Connection):
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_request(conn)

    def _await_request(self, conn: Connection) -> None:
        conn.deadline = time.monotonic() + REQUEST_TIMEOUT
        self.arriving[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

    def _on_request_bytes(self, conn: Connection, sock: socket.socket) -> None:
        """Take what the client sent; hand the connection to a thread once the request is whole."""
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._forget(conn)
            self.nr_conns -= 1
            conn.close()
            return
        conn.arrived += data
        if request_arrived(conn.arrived):
            self._forget(conn)
            conn.data_ready = True
            self.enqueue_req(conn)

    def _forget(self, conn: Connection) -> None:
        self.arriving.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def murder_pending(self) -> None:
        """Also close connections whose request did not arrive in time, and finished lingerers."""
        super().murder_pending()
        now = time.monotonic()
        while self.arriving:
            conn = next(iter(self.arriving))
            if self.alive and conn.deadline > now:
                break
            self._forget(conn)
            self.nr_conns -= 1
            conn.close()
        for conn, until in list(self.lingering.items()):
            if until <= now or not self.alive:
                self._end_linger(conn)

    # -- graceful close, without blocking the event loop ------------------------------

    def _linger(self, conn: Connection) -> None:
        """Send FIN, then drain the client's last bytes from the event loop (RFC 9112 9.6)."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_bytes, conn))
        except (OSError, ValueError, KeyError):
            gthread.TConn.close(conn)
            return
        self.lingering[conn] = time.monotonic() + LINGER

    def _on_linger_bytes(self, conn: Connection, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained > MAX_LINGER_BYTES:
            self._end_linger(conn)

    def _end_linger(self, conn: Connection) -> None:
        self.lingering.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        gthread.TConn.close(conn)
