"""gunicorn's gthread worker, holding each connection in its event loop until a request has arrived.

gthread gives a new connection to a pool thread, which then reads the request from a blocking
socket: a client sending one header byte every few seconds pins that thread for as long as it
likes, and a few hundred such clients leave no thread for viewers or buttons. This worker reads
a request's bytes in its main loop with non-blocking sockets, as nginx does, and commits a pool
thread only to a request that has arrived whole (its headers, and a body of declared length up
to ``MAX_REQUEST_BODY``). A connection whose request is not whole within ``REQUEST_TIMEOUT``
is closed, having cost nothing but a file descriptor.

A stream viewer does not keep a thread either: the app may take a connection over for good
(``streams.DETACH``). gunicorn then writes nothing more to it and only closes its own
descriptor, and the request's thread goes back to the pool while livecam's sender thread
writes the stream.

Two more changes keep the event loop from waiting on clients: closing a connection gracefully
(send FIN, drain what the client still sends) lingers in the loop instead of blocking it, and
an application's ``Connection: close`` header makes gunicorn really close the connection after
the response (gunicorn drops that header otherwise).

TLS connections straight to gunicorn keep gthread's way of reading requests (their bytes
cannot be read before the handshake, which gthread does in a pool thread), so slow clients
can hold threads there: put nginx in front for TLS.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import re
import resource
import selectors
import socket
import time
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import gunicorn
from gunicorn.config import Config
from gunicorn.http.parser import Parser
from gunicorn.http.unreader import Unreader
from gunicorn.http.wsgi import Response
from gunicorn.workers import gthread

from .config import MAX_REQUEST_BODY
from .streams import DETACH

log = logging.getLogger(__name__)

# The gunicorn series this module's use of gunicorn's internals was verified against;
# setup.cfg pins it.
GUNICORN_SERIES = 27


class IncompatibleGunicorn(ImportError):
    """The installed gunicorn lacks internals this worker relies on."""


def missing_internals(
    worker: type | None = None,
    conn: type | None = None,
    response: type = Response,
    parser: type = Parser,
    unreader: type = Unreader,
) -> list[str]:
    """The gunicorn internals this module uses that ``gunicorn`` (or the classes given) lacks.

    Methods must be there and callable; attributes gunicorn's objects get in ``__init__``
    must be assigned there (named in its code), since there is no object to look at yet.
    """
    missing = [f"gthread.{name}" for name in ("_DEFER", "STOP_KEEPALIVE_LINGER") if name not in vars(gthread)]
    worker = worker or getattr(gthread, "ThreadWorker", None)
    conn = conn or getattr(gthread, "TConn", None)
    wanted: list[tuple[str, type | None, tuple[str, ...], tuple[str, ...]]] = [
        (
            "gthread.ThreadWorker",
            worker,
            ("init_process", "load_wsgi", "accept", "on_client_socket_readable", "finish_request")
            + ("murder_pending", "enqueue_req"),
            ("worker_connections", "poller", "keepalived_conns", "nr_conns"),
        ),
        ("gthread.TConn", conn, ("init", "close"), ("sock", "parser", "data_ready")),
        ("http.wsgi.Response", response, ("start_response", "force_close"), ("chunked",)),
        ("http.parser.Parser", parser, (), ("unreader",)),
        ("http.unreader.Unreader", unreader, ("unread", "take_buffered"), ("buf",)),
    ]
    for label, cls, methods, fields in wanted:
        if cls is None:
            missing.append(label)
            continue
        missing += [f"{label}.{name}" for name in methods if not callable(getattr(cls, name, None))]
        assigned = getattr(getattr(cls, "__init__", None), "__code__", None)
        missing += [f"{label}.{name}" for name in fields if assigned is None or name not in assigned.co_names]
    if not isinstance(getattr(Config, "is_ssl", None), property):
        missing.append("config.Config.is_ssl")
    if "http2_cleartext" not in Config().settings:
        missing.append("the http2_cleartext setting")
    return missing


def check_gunicorn(**classes: type) -> None:
    """Refuse, in one line, a gunicorn that lacks what this worker relies on.

    :raise IncompatibleGunicorn: naming the version found, what it lacks, and the series needed.
    """
    missing = missing_internals(**classes)
    if missing:
        series, pin = f"{GUNICORN_SERIES}.x", f"gunicorn>={GUNICORN_SERIES},<{GUNICORN_SERIES + 1}"
        raise IncompatibleGunicorn(
            f"livecam's worker needs gunicorn {series}, found gunicorn {gunicorn.__version__}, "
            f"which lacks {', '.join(missing)} (pip install '{pin}')",
            name="gunicorn",
        )


# At import, before anything is built on gunicorn's classes: gunicorn imports its worker
# class in the master, so a mismatch stops startup before any worker boots.
check_gunicorn()

REQUEST_TIMEOUT = 10.0  # seconds a client may take to send a whole request
MAX_REQUEST_HEAD = 64 * 1024  # a request head larger than this is refused (431)
LINGER = 2.0  # seconds a closing connection may keep sending before it is cut
MAX_LINGER_BYTES = 64 * 1024
# Any number of digits (leading zeros too): gunicorn reads them all, so must the check.
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:[ \t]*(\d+)[ \t]*\r?(?:\n|$)", re.IGNORECASE)
_EXPECT_CONTINUE = re.compile(rb"\nexpect[ \t]*:[ \t]*100-continue", re.IGNORECASE)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _refusal(status: str, message: str) -> bytes:
    """A whole HTTP response that refuses a request and closes the connection."""
    body = b'{"error": "%s"}\n' % message.encode()
    return (
        b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (status.encode(), len(body), body)
    )


TOO_LARGE = _refusal("431 Request Header Fields Too Large", "request head too large")
TOO_SLOW = _refusal("408 Request Timeout", "request not sent in time")


def request_arrived(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds a whole request: headers, and a small body of declared length.

    A body larger than MAX_REQUEST_BODY is not waited for: the application refuses it with 413
    without reading it. So is a chunked body: livecam takes none (411).
    """
    end = _HEAD_END.search(data, 0, MAX_REQUEST_HEAD + 4)
    if end is None:
        return False
    match = _CONTENT_LENGTH.search(data, 0, end.start() + 1)
    if match is None:
        return True
    digits = match[1].lstrip(b"0") or b"0"
    if len(digits) > 18:
        return True  # absurd: refused (413, or gunicorn's 400) without waiting for a body
    length = int(digits)
    return length > MAX_REQUEST_BODY or len(data) - end.end() >= length


def head_too_large(data: bytes | bytearray) -> bool:
    """Whether ``data`` has run past MAX_REQUEST_HEAD without the end of a request head."""
    return len(data) > MAX_REQUEST_HEAD and _HEAD_END.search(data, 0, MAX_REQUEST_HEAD + 4) is None


def expects_continue(data: bytes | bytearray) -> bool:
    """Whether a whole request head asks for ``100 Continue`` before its body."""
    end = _HEAD_END.search(data, 0, MAX_REQUEST_HEAD + 4)
    return end is not None and _EXPECT_CONTINUE.search(data, 0, end.start() + 1) is not None


# The sockets of connections the app took over: gunicorn closes its descriptor of each one
# without a graceful shutdown, which would end the stream the new owner is writing.
_detached: weakref.WeakSet[socket.socket] = weakref.WeakSet()


class Connection(gthread.TConn):
    """A gthread connection that hands the bytes read in the event loop to gunicorn's parser."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrived = bytearray()
        self.deadline = 0.0  # when the request must have arrived
        self.drained = 0  # bytes read and dropped while lingering
        self.continued = False  # "100 Continue" was sent for the request arriving
        self.linger: Callable[[Connection], None] | None = None

    def init(self) -> None:
        """Set up the parser as gthread does, then give it the bytes read so far."""
        super().init()
        if self.arrived:
            self.parser.unreader.unread(bytes(self.arrived))
            self.arrived = bytearray()

    def close(self, graceful: bool = False) -> None:
        """Close; a graceful close lingers in the event loop rather than blocking it. Of a
        connection the app took over, only gunicorn's own descriptor is closed."""
        if self.sock in _detached:
            gthread.TConn.close(self)
        elif graceful and self.linger is not None:
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


def _detachable(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """WSGI middleware: offer the app ``environ[DETACH]``, which takes the connection over.

    Called once the response's first bytes are written, ``DETACH()`` returns a socket of
    the caller's own for the connection: gunicorn ends the response without writing
    anything more (no final chunk: the new owner writes it) and closes only its descriptor.
    """

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = getattr(start_response, "__self__", None)
        sock = environ.get("gunicorn.socket")
        if response is not None and hasattr(response, "force_close") and type(sock) is socket.socket:

            def detach() -> socket.socket:
                response.chunked = False  # the final chunk is the new owner's to write
                response.force_close()
                _detached.add(sock)
                return socket.socket(fileno=os.dup(sock.fileno()))

            environ[DETACH] = detach
        return app(environ, start_response)

    return wrapped


class ThreadWorker(gthread.ThreadWorker):
    """gthread, but a pool thread is committed only to a request that has fully arrived."""

    def init_process(self) -> None:
        """Set up the bookkeeping for arriving and lingering connections, then run."""
        self.arriving: dict[Connection, None] = {}  # in deadline order: all get the same timeout
        self.lingering: dict[Connection, float] = {}
        self.stopping_since: float | None = None
        # Reading early is possible only where gthread would read plain HTTP/1 bytes itself.
        self.reads_early = not self.cfg.is_ssl and self.cfg.http2_cleartext not in ("prior-knowledge", "both")
        # Connections gunicorn serves, those the sender took over, and the rest.
        _allow_descriptors(2 * self.worker_connections + self.cfg.threads + 256)
        super().init_process()

    def load_wsgi(self) -> None:
        """Load the app; let it close a connection by answering ``Connection: close``, and
        take a connection over (``DETACH``)."""
        super().load_wsgi()
        if hasattr(self.wsgi, "wsgi_app"):
            # Wrap the Flask app's inner WSGI callable, so the worker still sees the app itself.
            self.wsgi.wsgi_app = _detachable(_honour_connection_close(self.wsgi.wsgi_app))
        # Everything loaded so far lives as long as the worker: out of the collector's sight,
        # a full collection (a camera added or removed leaves an app generation's cyclic URL
        # map behind) scans only what came later: 45 ms stalls of every stream became 12-30.
        gc.collect()
        gc.freeze()

    def accept(self, listener: socket.socket) -> None:
        """Accept a connection and wait for its request in the event loop."""
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                log.warning("out of file descriptors: dropping the slowest waiting connection")
                self._evict(1)
                return
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = Connection(self.cfg, sock, client, listener.getsockname())  # non-blocking
        conn.linger = self._linger
        if self.reads_early:
            self._await_request(conn)
        else:
            self.enqueue_req(conn)  # TLS: the handshake and the request are read in a thread

    def on_client_socket_readable(self, conn: gthread.TConn, client: socket.socket) -> None:
        """A kept-alive connection has bytes again: wait for its whole request too."""
        if not self.reads_early or not isinstance(conn, Connection):
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_request(conn)

    def finish_request(self, conn: gthread.TConn, fs: Any) -> None:
        """After a request: bytes read ahead that are not yet a whole request wait in the loop.

        gthread hands a connection with read-ahead straight back to a thread, which would
        then block on the rest of a request that a client sends a byte at a time.
        """
        if self.reads_early and not fs.cancelled() and fs.exception() is None:
            result = fs.result()
            if result and result is not gthread._DEFER and self.alive and conn.parser is not None:
                ahead = conn.parser.unreader.buf.getvalue()
                if ahead and not request_arrived(ahead):
                    conn.arrived = bytearray(conn.parser.unreader.take_buffered())
                    conn.sock.setblocking(False)
                    self._await_request(conn)
                    if expects_continue(conn.arrived):
                        conn.continued = True
                        _send_now(conn.sock, CONTINUE)
                    return
        super().finish_request(conn, fs)

    def _await_request(self, conn: Connection) -> None:
        conn.deadline = time.monotonic() + REQUEST_TIMEOUT
        conn.continued = False
        try:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))
        except (OSError, ValueError, KeyError):
            # The kernel cannot watch one more socket: this connection is the one to go.
            self.nr_conns -= 1
            conn.close()
            return
        self.arriving[conn] = None

    def _on_request_bytes(self, conn: Connection, sock: socket.socket) -> None:
        """Take what the client sent; hand the connection to a thread once the request is whole."""
        data = _receive(sock)
        if data is None:
            return
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
        elif head_too_large(conn.arrived):
            self._refuse(conn, TOO_LARGE)
        elif not conn.continued and expects_continue(conn.arrived):
            # The client waits for leave to send its body, which this loop waits for.
            conn.continued = True
            _send_now(sock, CONTINUE)

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
        if not self.alive and self.stopping_since is None:
            # Stopping: a request already on its way is still served (with Connection: close,
            # as gthread does), for a moment only.
            self.stopping_since = now
            for conn in self.arriving:
                conn.deadline = min(conn.deadline, now + gthread.STOP_KEEPALIVE_LINGER)
        while self.arriving:
            conn = next(iter(self.arriving))
            if conn.deadline > now:
                break
            if conn.arrived:
                self._refuse(conn, TOO_SLOW)
            else:
                self._forget(conn)
                self.nr_conns -= 1
                conn.close()
        # Near the limit, the connections still waiting for a request make room for new ones:
        # otherwise slow clients could hold every connection and new ones would not be accepted.
        self._evict(self.nr_conns - (self.worker_connections - 16))
        for conn, until in list(self.lingering.items()):
            if until <= now or self.stopping_since is not None and now - self.stopping_since > LINGER:
                self._end_linger(conn)

    def _evict(self, count: int) -> None:
        """Close the ``count`` connections that have waited longest for their request."""
        for conn in list(self.arriving)[: max(0, count)]:
            self._forget(conn)
            self.nr_conns -= 1
            conn.close()

    def _refuse(self, conn: Connection, response: bytes) -> None:
        """Answer a request that will never be served, and close without blocking the loop."""
        self._forget(conn)
        self.nr_conns -= 1
        _send_now(conn.sock, response)
        self._linger(conn)

    # -- graceful close, without blocking the event loop ------------------------------

    def _linger(self, conn: Connection) -> None:
        """Send FIN, then drain the client's last bytes from the event loop (RFC 9112 9.6)."""
        conn.drained = 0
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_bytes, conn))
        except (OSError, ValueError, KeyError):
            gthread.TConn.close(conn)
            return
        self.lingering[conn] = time.monotonic() + LINGER

    def _on_linger_bytes(self, conn: Connection, sock: socket.socket) -> None:
        data = _receive(sock)
        if data is None:
            return
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


def _receive(sock: socket.socket) -> bytes | None:
    """What a readable socket holds: None if nothing after all, b"" at its end or on an error."""
    try:
        return sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def _send_now(sock: socket.socket, data: bytes) -> None:
    """Send a small answer without waiting: what the socket does not take at once is lost."""
    try:
        sock.send(data, socket.MSG_DONTWAIT)
    except OSError:
        pass


def _allow_descriptors(wanted: int) -> None:
    """Raise the soft limit on open files towards ``wanted`` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
