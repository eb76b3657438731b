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

Its request threads come and go with the work (``Pool``): a thread is started when a request
waits that no thread will take soon, and ends after a while idle, so a thousand viewers
connecting at once are answered by a few threads in turn and leave none behind.

Two more changes keep the event loop from waiting on clients: closing a connection gracefully
(send FIN, drain what the client still sends) lingers in the loop instead of blocking it, and
an application's ``Connection: close`` header makes gunicorn really close the connection after
the response (gunicorn drops that header otherwise).

TLS connections straight to gunicorn keep gthread's way of reading requests (their bytes
cannot be read before the handshake, which gthread does in a pool thread), so slow clients
can hold threads there: put nginx in front for TLS.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import logging
import os
import re
import resource
import selectors
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from functools import partial
from typing import Any

import gunicorn
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http.parser import Parser
from gunicorn.http.unreader import Unreader
from gunicorn.http.wsgi import Response
from gunicorn.workers import gthread

from .config import MAX_REQUEST_BODY
from .fastpath import PlainStreams
from .mjpeg import OPENING, chunk
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
            + ("murder_pending", "enqueue_req", "get_thread_pool", "wait_for_and_dispatch_events"),
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
    if not isinstance(getattr(gunicorn, "SERVER", None), str):
        missing.append("gunicorn.SERVER")
    if not callable(getattr(util, "http_date", None)):
        missing.append("util.http_date")
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
# A plain GET (see fastpath.py): an origin-form target of visible ASCII, HTTP/1.x, header
# lines of a token, a colon and a value of visible ASCII, spaces and tabs, CRLF throughout,
# nothing after the head, within gunicorn's own limits. Anything else goes to gunicorn's
# parser, whose errors are the rule. Each pattern matches a line one way only: a hostile
# line fails in time linear in its length.
_REQUEST_LINE = re.compile(rb"GET (/[!-~]*) HTTP/1\.([01])")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^`|~0-9A-Za-z-]+):([!-~ \t]*)")  # "_": see plain_get
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The request threads. Python runs one thread at a time: for requests that only compute, a few
# threads answer as fast as many, and many cost a GIL hand-over at every switch, a stack and
# an allocator arena each. More start only when the ones there are all blocked (a snapshot
# waiting for its frame, a stream written by its thread): work waits and none was taken
# for GROW_AFTER.
CORE_THREADS = 4  # started as soon as work finds no thread free
GROW_AFTER = 0.02  # seconds work waits, no thread taking any, before one more thread starts
IDLE_THREAD = 5.0  # seconds a thread waits for work before it ends
ACCEPT_BATCH = 64  # connections accepted in one turn of the event loop, at most


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


def plain_get(
    data: bytes | bytearray, max_line: int = 4094, max_fields: int = 100, max_field: int = 8190
) -> tuple[str, int, dict[str, str]] | None:
    """The target, HTTP/1 minor version and headers (lower-case names) of ``data`` if it is
    one plain GET, whole, within gunicorn's limits (its request line, header count, header
    line size)."""
    if not data.startswith(b"GET /") or not data.endswith(b"\r\n\r\n"):
        return None
    lines = bytes(data[:-4]).split(b"\r\n")
    if len(lines[0]) > max_line or len(lines) - 1 > max_fields:
        return None
    request = _REQUEST_LINE.fullmatch(lines[0])
    if request is None:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        # No "_" in a name: gunicorn drops such headers or, from a trusted proxy, reads them
        # as something else (SCRIPT_NAME).
        field = _HEADER_LINE.fullmatch(line) if len(line) <= max_field else None
        if field is None:
            return None
        key = field[1].decode("ascii").lower()
        if key in headers:
            return None  # twice: which one counts is the parser's call
        headers[key] = field[2].strip(b" \t").decode("ascii")
    return request[1].decode("ascii"), int(request[2]), headers


def head_too_large(data: bytes | bytearray) -> bool:
    """Whether ``data`` has run past MAX_REQUEST_HEAD without the end of a request head."""
    return len(data) > MAX_REQUEST_HEAD and _HEAD_END.search(data, 0, MAX_REQUEST_HEAD + 4) is None


def expects_continue(data: bytes | bytearray) -> bool:
    """Whether a whole request head asks for ``100 Continue`` before its body."""
    end = _HEAD_END.search(data, 0, MAX_REQUEST_HEAD + 4)
    return end is not None and _EXPECT_CONTINUE.search(data, 0, end.start() + 1) is not None


class Pool:
    """The worker's request threads: more only when the ones there are all blocked, fewer when idle.

    Stands in for gthread's ThreadPoolExecutor, which starts a thread for every request that
    finds none idle and keeps it for good: a burst of a thousand viewers left a hundred
    threads behind. ``tend()``, called from the worker's event loop, starts a thread when
    work has waited GROW_AFTER with no thread taking any.
    """

    def __init__(
        self,
        max_threads: int,
        core: int = CORE_THREADS,
        grow_after: float = GROW_AFTER,
        idle: float = IDLE_THREAD,
    ) -> None:
        self.max_threads = max(1, max_threads)
        self._core, self._grow_after, self._idle_timeout = core, grow_after, idle
        self._cond = threading.Condition()  # guards everything below
        self._work: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._threads = 0  # started and not ended
        self._idle = 0  # of those, waiting for work
        self._taken = time.monotonic()  # when a thread last took work, or one was started
        self._shutdown = False

    @property
    def threads(self) -> int:
        """Threads running now, idle ones included."""
        return self._threads

    @property
    def waiting(self) -> bool:
        """Whether work waits that no idle thread is about to take."""
        return len(self._work) > self._idle

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` in a thread; its Future."""
        future: Future[Any] = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._work.append((future, fn, args))
            if self._idle >= len(self._work):
                self._cond.notify()
            else:
                self._grow()
        return future

    def tend(self) -> None:
        """Start a thread if work has waited too long for the ones there."""
        if self.waiting:
            with self._cond:
                self._grow()

    def shutdown(self, wait: bool = True) -> None:
        """Take no more work; threads end once what was submitted is done."""
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
        if wait:
            with self._cond:
                self._cond.wait_for(lambda: self._threads == 0)

    def _grow(self) -> None:
        """(Under the lock) one more thread, if work waits and the threads are few or stuck."""
        if self._threads >= self.max_threads or len(self._work) <= self._idle:
            return
        now = time.monotonic()
        if self._threads < self._core or now - self._taken >= self._grow_after:
            self._taken = now  # the next one only after another GROW_AFTER without progress
            try:
                threading.Thread(target=self._serve, name="livecam-request", daemon=True).start()
            except RuntimeError as exc:  # no thread to be had (TasksMax, pids.max, memory)
                # The work stays queued for the threads there, and tend() tries again; with
                # none at all, nothing would ever run it: its caller is told.
                if self._threads == 0:
                    future, _, _ = self._work.pop()
                    future.set_exception(exc)
                log.warning("livecam: no new request thread (%s); %d serving", exc, self._threads)
                return
            self._threads += 1

    def _serve(self) -> None:
        """A thread's life: take work until none comes for IDLE_THREAD, or the pool shuts down."""
        while True:
            with self._cond:
                self._idle += 1
                deadline = time.monotonic() + self._idle_timeout
                while not self._work and not self._shutdown:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self._idle -= 1
                if not self._work:
                    self._threads -= 1
                    self._cond.notify_all()  # a shutdown may wait for the last one
                    ended_idle = not self._shutdown
                    break
                future, fn, args = self._work.popleft()
                self._taken = time.monotonic()
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:  # noqa: BLE001 - the Future carries it to gunicorn
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args  # nothing of a finished request stays alive in an idle thread
        if ended_idle:
            # The work that needed this thread has been over for a while: the memory it took
            # and gave back (requests, connections, the threads' allocator arenas) goes back
            # to the system, rather than staying with the process after a burst.
            _trim_memory()


def _libc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_trim()


def _trim_memory() -> None:
    """Give the C allocator's free memory back to the system (a no-op without glibc)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


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
        self.plain: PlainStreams | None = None  # set with the app, if it is livecam's
        # Reading early is possible only where gthread would read plain HTTP/1 bytes itself.
        self.reads_early = not self.cfg.is_ssl and self.cfg.http2_cleartext not in ("prior-knowledge", "both")
        # Connections gunicorn serves, those the sender took over, and the rest.
        _allow_descriptors(2 * self.worker_connections + self.cfg.threads + 256)
        super().init_process()

    def get_thread_pool(self) -> Pool:  # type: ignore[override]
        """Request threads that come and go with the work (see Pool)."""
        return Pool(self.cfg.threads)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """Wait and dispatch as gthread does, but look again soon while requests wait for a thread."""
        pool = self.tpool
        if isinstance(pool, Pool) and pool.waiting:
            timeout = min(timeout, GROW_AFTER)
        super().wait_for_and_dispatch_events(timeout)
        if isinstance(pool, Pool):
            pool.tend()

    def load_wsgi(self) -> None:
        """Load the app; let it close a connection by answering ``Connection: close``, and
        take a connection over (``DETACH``)."""
        super().load_wsgi()
        if hasattr(self.wsgi, "wsgi_app"):
            # Wrap the Flask app's inner WSGI callable, so the worker still sees the app itself.
            self.wsgi.wsgi_app = _detachable(_honour_connection_close(self.wsgi.wsgi_app))
            # gunicorn's access log sees only what its own request handling serves: with one
            # asked for, every request goes that way, so that none is missing from it.
            if "livecam" in getattr(self.wsgi, "extensions", {}) and not self.cfg.accesslog:
                self.plain = PlainStreams(self.wsgi)
        # Everything loaded so far lives as long as the worker: out of the collector's sight,
        # a full collection (a camera added or removed leaves an app generation's cyclic URL
        # map behind) scans only what came later: 45 ms stalls of every stream became 12-30.
        # The price: what startup made is never collected, even once replaced (the first
        # generation, the cameras configured then: their sources are released by stop()).
        gc.collect()
        gc.freeze()

    def accept(self, listener: socket.socket) -> None:
        """Accept the connections waiting, each to wait for its request in the event loop.

        Up to ACCEPT_BATCH at a time: a burst of clients costs fewer turns of the loop.
        """
        for _ in range(ACCEPT_BATCH):
            if self.nr_conns >= self.worker_connections or not self._accept_one(listener):
                return

    def _accept_one(self, listener: socket.socket) -> bool:
        """Accept one connection; whether another may be waiting."""
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                log.warning("out of file descriptors: dropping the slowest waiting connection")
                self._evict(1)
                return False
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return exc.errno == errno.ECONNABORTED
        self.nr_conns += 1
        conn = Connection(self.cfg, sock, client, listener.getsockname())  # non-blocking
        conn.linger = self._linger
        if not self.reads_early:
            self.enqueue_req(conn)  # TLS: the handshake and the request are read in a thread
            return True
        conn.deadline = time.monotonic() + REQUEST_TIMEOUT
        # A client usually sends its request with the connection: take it now, and wait in the
        # event loop only for one that is not whole yet.
        data = _receive(sock)
        if data is None:
            self._await_request(conn)
        else:
            self._took(conn, data)
        return True

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

    def _await_request(self, conn: Connection, deadline: float | None = None) -> None:
        conn.deadline = deadline or time.monotonic() + REQUEST_TIMEOUT
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
        if data is not None:
            self._took(conn, data)

    def _took(self, conn: Connection, data: bytes) -> None:
        """Bytes of a request arrived (b"": the client left): a thread for a whole request, else
        wait in the event loop for the rest (registering the connection if it is not yet)."""
        if not data:
            self._forget(conn)
            self.nr_conns -= 1
            conn.close()
            return
        conn.arrived += data
        if request_arrived(conn.arrived):
            self._forget(conn)
            if not self._open_plain_stream(conn):
                conn.data_ready = True
                self.enqueue_req(conn)
        elif head_too_large(conn.arrived):
            self._refuse(conn, TOO_LARGE)
        else:
            if conn not in self.arriving:
                self._await_request(conn, conn.deadline)
            if conn in self.arriving and not conn.continued and expects_continue(conn.arrived):
                # The client waits for leave to send its body, which this loop waits for.
                conn.continued = True
                _send_now(conn.sock, CONTINUE)

    def _open_plain_stream(self, conn: Connection) -> bool:
        """Hand a plain stream request's connection to the sender from here (see fastpath.py);
        whether it was taken (False: a request thread and the app answer it)."""
        if self.plain is None or not self.alive:
            return False
        cfg = self.cfg
        request = plain_get(
            conn.arrived, cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size
        )
        if request is None:
            return False
        target, minor, headers = request
        # HTTP/1.1 frames a body of unknown length in chunks; HTTP/1.0 ends it with the connection.
        chunked = minor == 1
        try:
            opened = self.plain.open(target, headers, chunked)
        except Exception:  # noqa: BLE001 - never the event loop's end: the app answers instead
            log.exception("livecam: a plain stream request failed; the app answers it")
            return False
        if opened is None:
            return False
        self.nr_conns -= 1  # the connection is the sender's from here, or closed
        # The status line and the server's own headers as gunicorn writes them, then the app's.
        response = b"HTTP/1.%d 200 OK\r\nServer: %s\r\nDate: %s\r\nConnection: close\r\n%s%s\r\n%s" % (
            minor,
            gunicorn.SERVER.encode(),
            util.http_date().encode(),
            b"Transfer-Encoding: chunked\r\n" if chunked else b"",
            opened.headers,
            chunk(OPENING) if chunked else OPENING,
        )
        try:
            # A new connection's send buffer takes a head this small at once, or it is broken.
            whole = conn.sock.send(response, socket.MSG_DONTWAIT) == len(response)
        except OSError:
            whole = False
        try:
            if whole:
                opened.start(conn.sock)
                return True
        except Exception:  # noqa: BLE001 - as above; the head is out, so the connection ends
            log.exception("livecam: a plain stream could not be handed to the sender")
        opened.abandon()
        gthread.TConn.close(conn)
        return True

    def _forget(self, conn: Connection) -> None:
        if self.arriving.pop(conn, False) is None:  # registered only while arriving
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
        if count <= 0:
            return  # as on every turn of the loop: no copy of every arriving connection
        for conn in list(self.arriving)[:count]:
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
