"""Frames over NATS without an event loop: a second connection that carries frames alone.

nats-py is asyncio: a frame published from the capture thread waits for the bus thread's
loop to wake and hand it on, and a frame received wakes that loop before its handler runs.
At 30 frames a second those hand-overs cost each process more than the frame itself
(bench/bus_floor.py). A FrameLink speaks NATS's text protocol on a plain socket instead:
the capture thread writes each frame itself, and one reader thread per process reads the
frames it subscribed to and runs their handlers (quick, never blocking) where they arrive.

Everything else (records, control, requests, events) stays on the FrameBus's nats-py
connection. The link authenticates as the bus does (the URL's user and password or token, a
.creds file or an nkey seed, TLS for ``tls://`` or when the server asks), answers the
server's pings, pings it in turn, and reconnects for as long as it lives, subscriptions
restored. Publishing never blocks: a frame the socket cannot take now is not sent (the bus
counts it as dropped), and a frame half written is finished by the reader thread, whole,
before anything else is written.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from .config import CREDS_JWT, CREDS_SEED, bus_creds_kind, creds_line
from .redaction import redact

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0  # seconds to reach NATS and be let in
RECONNECT_WAIT = 0.5  # seconds between attempts to reach NATS
PING_EVERY = 5.0  # seconds between the link's pings; two unanswered ones end the connection
MAX_PINGS_OUT = 2
MAX_LINE = 4096  # a protocol line (MSG, INFO, -ERR) longer than this is a broken connection
MAX_PAYLOAD = 64 << 20  # the most a NATS server's max_payload can be (its max_pending)
DEFAULT_PAYLOAD = 1 << 20  # NATS's max_payload when a server's INFO does not say
MAX_AFTER = 64 * 1024  # protocol lines waiting behind a message under way; past that the link is stuck
READ_SIZE = 256 * 1024
LOSS_SAID_EVERY = 60.0  # seconds: a lost connection is warned of at most this often

Handler = Callable[[bytes, dict[str, str]], None]  # (payload, headers), run in the reader thread
Errors = Callable[[str], None]  # a -ERR's text from the server, for the bus to report


class FrameLink:
    """A NATS connection for frames, published from any thread, received in one reader thread."""

    def __init__(self, url: str, name: str, creds: str | None = None, on_error: Errors | None = None) -> None:
        """:param creds: a NATS .creds file or a user nkey seed file (LIVECAM_BUS_CREDS)."""
        self._url = url
        self._shown = redact(url)
        self._name = name
        self._creds = creds
        self._on_error = on_error or (lambda text: log.debug("frame link: %s", text))
        self._lock = threading.Lock()  # guards _sock, _pending, _subs and writes to the socket
        self._sock: socket.socket | ssl.SSLSocket | None = None
        self._connecting: socket.socket | None = None  # the connection being made, if any
        # What is owed to the socket: the rest of a message it took only in part. Over TLS the
        # whole message, once OpenSSL has begun it: it must be given the very same bytes again.
        self._pending = b""
        self._after = bytearray()  # protocol lines (PING, PONG, SUB, UNSUB) to send after _pending
        self._reader = _Reader()  # the connection's, made anew at each
        self._max_payload = DEFAULT_PAYLOAD  # the server's limit, from its INFO
        self._subs: dict[int, tuple[str, Handler]] = {}
        self._sids = itertools.count(1)
        self._closing = threading.Event()
        # A byte here wakes the reader thread's poll: a message half written (to be finished as
        # soon as the socket takes more), or the link closing. The reader thread's, from start
        # to its end (-1 outside); written to under _lock.
        self._wake_r = self._wake_w = -1
        self._thread = threading.Thread(target=self._run, name="livecam-frames", daemon=True)

    def start(self) -> FrameLink:
        """Connect in the background, for as long as it takes."""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """End the connection and the reader thread."""
        self._closing.set()
        with self._lock:
            self._wake()
            sock, self._sock = self._sock, None
            connecting = self._connecting
        _shut(sock)
        if connecting is not None:
            _drop(connecting)  # a connection being made ends now, not at its timeout
        if self._thread.is_alive():
            self._thread.join(timeout)  # still connecting, it ends when that attempt does

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (its INFO's max_payload), in bytes."""
        return self._max_payload

    @property
    def connected(self) -> bool:
        """Whether the link is connected now."""
        return self._sock is not None

    # -- any thread -----------------------------------------------------------------------

    def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> bool:
        """Send a frame now if the socket takes it; False (nothing sent) if it cannot. Never waits."""
        head = _headers(headers) if headers else b""
        if len(head) + len(payload) > self._max_payload:
            return False
        if head:
            line = b"HPUB %s %d %d\r\n" % (subject.encode(), len(head), len(head) + len(payload))
        else:
            line = b"PUB %s %d\r\n" % (subject.encode(), len(payload))
        with self._lock:
            sock = self._sock
            if sock is None or self._pending:
                return False  # not connected, or the last one is still going
            message = [line, head, payload, b"\r\n"] if head else [line, payload, b"\r\n"]
            try:
                if isinstance(sock, ssl.SSLSocket):
                    # OpenSSL may have taken part of a write it asks to retry: the message is
                    # then under way, to be finished with the same bytes, never dropped.
                    self._pending = _try_send(sock, b"".join(message))
                else:
                    sent = sock.sendmsg(message)
                    if sent == 0:
                        return False
                    if sent < sum(len(part) for part in message):
                        self._pending = b"".join(message)[sent:]
            except BlockingIOError:
                return False
            except OSError:
                _drop(sock)  # the reader thread sees it at once and reconnects
                return False
            if self._pending:
                self._wake()  # finished by the reader thread as soon as the socket takes more
        return True

    def _wake(self) -> None:
        """Wake the reader thread (under _lock; a byte already waiting does as well)."""
        if self._wake_w < 0:
            return  # not started, or ended
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:  # full: it wakes anyway
            pass

    def subscribe(self, subject: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(payload, headers)`` in the reader thread for each message on
        ``subject``; return a function that ends the subscription."""
        sid = next(self._sids)
        with self._lock:
            self._subs[sid] = (subject, handler)
            self._write_control(b"SUB %s %d\r\n" % (subject.encode(), sid))

        def cancel() -> None:
            with self._lock:
                if self._subs.pop(sid, None) is not None:
                    self._write_control(b"UNSUB %d\r\n" % sid)

        return cancel

    def _write_control(self, data: bytes) -> None:
        """Send a short protocol line (under _lock) without waiting: after the message under
        way, if any, whole (a line cut or lost would tear the stream). A lost connection
        restores subscriptions itself, so a failure here is left to the reader thread."""
        sock = self._sock
        if sock is None:
            return
        if self._pending:
            self._after += data
            if len(self._after) > MAX_AFTER:
                _drop(sock)  # nothing has gone out for long: the server is gone
            return
        try:
            self._pending = _try_send(sock, data)
        except OSError:
            log.debug("frame link: write failed", exc_info=True)
            _drop(sock)
            return
        if self._pending:
            self._wake()

    # -- the reader thread ----------------------------------------------------------------

    def _run(self) -> None:
        """The reader thread: the link's connections, one after another; its pipe closed at the end."""
        try:
            self._connect_and_read()
        finally:
            with self._lock:
                ends, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
            for end in ends:
                os.close(end)

    def _connect_and_read(self) -> None:
        """Connect, read until the connection ends, again, until closed."""
        said_lost = False
        lost_said_at = -LOSS_SAID_EVERY
        while not self._closing.is_set():
            try:
                sock = self._connect()
            except Exception as exc:  # noqa: BLE001 - whatever a peer sends, the link goes on trying
                if "authorization" in str(exc).lower():
                    # Each refusal: the bus says one once, for both of its connections, and
                    # again after its other connection was let in (this one may not be).
                    self._on_error(str(exc))
                log.debug("frame link: cannot connect to %s: %s", self._shown, exc)
                self._closing.wait(RECONNECT_WAIT)
                continue
            if said_lost:
                log.info("frame bus: frames connected again to %s", self._shown)
                said_lost = False
            try:
                self._read(sock)
            except Exception as exc:  # noqa: BLE001 - whatever ends a connection, the link reconnects
                # Said at most once a minute: a peer that breaks every connection at once
                # would otherwise fill the log.
                if not self._closing.is_set() and time.monotonic() - lost_said_at >= LOSS_SAID_EVERY:
                    log.warning("frame bus: lost %s for frames (%s), reconnecting", self._shown, exc)
                    lost_said_at, said_lost = time.monotonic(), True
                else:
                    log.debug("frame link: lost %s: %s", self._shown, exc)
            finally:
                with self._lock:
                    if self._sock is sock:
                        self._sock = None
                    self._pending, self._after = b"", bytearray()
                _shut(sock)
            self._closing.wait(RECONNECT_WAIT)

    def _connect(self) -> socket.socket | ssl.SSLSocket:
        """Reach the server, be let in, subscribe again; the socket, non-blocking."""
        parts = urlsplit(self._url)
        deadline = time.monotonic() + 2 * CONNECT_TIMEOUT
        raw = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), CONNECT_TIMEOUT)
        sock: socket.socket | ssl.SSLSocket = raw
        with self._lock:
            self._connecting = raw  # for close() to interrupt
        if self._closing.is_set():
            _shut(raw)
            raise ProtocolError("closing")
        try:
            reader = _Reader()
            info = _info(reader.line(sock))
            self._max_payload = _max_payload(info)
            reader.limit = self._max_payload + MAX_LINE
            if parts.scheme == "tls" or info.get("tls_required"):
                context = ssl.create_default_context()
                sock = context.wrap_socket(raw, server_hostname=parts.hostname)
            options = {
                "verbose": False,
                "pedantic": False,
                "lang": "python3",
                "version": "livecam",
                "protocol": 1,
                "headers": True,
                "no_responders": True,
                "name": self._name,
                **self._auth(parts, info),
            }
            sock.sendall(b"CONNECT %s\r\nPING\r\n" % json.dumps(options).encode())
            while True:  # the server's answer: PONG, or why not
                line = reader.line(sock)
                if line == b"PONG":
                    break
                if line.startswith(b"-ERR"):
                    raise ProtocolError(_error_text(line))
                if time.monotonic() > deadline:  # lines, but never the answer
                    raise ProtocolError("no answer to CONNECT")
            with self._lock:
                subs = list(self._subs.items())
                self._sock = sock
                lines = b"".join(b"SUB %s %d\r\n" % (subject.encode(), sid) for sid, (subject, _) in subs)
                if lines:
                    sock.sendall(lines)
                sock.setblocking(False)
            self._reader = reader
            log.debug("frame link: connected to %s", self._shown)
            return sock
        except BaseException:
            _shut(sock)
            raise
        finally:
            with self._lock:
                self._connecting = None

    def _auth(self, parts, info: dict) -> dict[str, str]:  # noqa: ANN001 - a urlsplit result
        """The CONNECT fields that let this link in: as the FrameBus's connection is let in."""
        if self._creds:
            import nkeys  # only with credentials

            with open(self._creds, "rb") as handle:
                data = handle.read()
            nonce = str(info.get("nonce", "")).encode()
            if bus_creds_kind(self._creds) == "creds":
                jwt, seed = creds_line(data, CREDS_JWT), creds_line(data, CREDS_SEED)
                if jwt is None or seed is None:
                    raise ValueError(f"{self._creds} is no longer a NATS .creds file")
                pair = nkeys.from_seed(bytearray(seed))
                fields = {"jwt": jwt.decode(), "sig": base64.b64encode(pair.sign(nonce)).decode()}
            else:
                pair = nkeys.from_seed(bytearray(data.strip()))
                fields = {
                    "nkey": pair.public_key.decode(),
                    "sig": base64.b64encode(pair.sign(nonce)).decode(),
                }
            pair.wipe()
            return fields
        # As nats-py reads the URL: no percent escape decoded, a user alone is a token.
        if parts.username is None:
            return {}
        if parts.password is None:
            return {"auth_token": parts.username}
        return {"user": parts.username, "pass": parts.password}

    def _read(self, sock: socket.socket | ssl.SSLSocket) -> None:
        """Read messages until the connection ends: frames to their handlers, pings answered."""
        reader = self._reader
        poller = select.poll()  # not select(): a worker's descriptors go past 1024
        poller.register(self._wake_r, select.POLLIN)
        pinged_at, pings_out = time.monotonic(), 0
        while not self._closing.is_set():
            if not reader.buffered and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                poller.register(sock, select.POLLIN | (select.POLLOUT if self._pending else 0))
                wait = max(0.0, pinged_at + PING_EVERY - time.monotonic())
                events = dict(poller.poll(wait * 1000))
                if self._wake_r in events:
                    _drain(self._wake_r)
                if events.get(sock.fileno(), 0) & select.POLLOUT:
                    self._finish_pending(sock)
                if not events.get(sock.fileno(), 0) & (select.POLLIN | select.POLLERR | select.POLLHUP):
                    if time.monotonic() - pinged_at >= PING_EVERY:
                        if pings_out >= MAX_PINGS_OUT:
                            raise ProtocolError("no answer to the link's pings")
                        pings_out += 1
                        pinged_at = time.monotonic()
                        with self._lock:
                            self._write_control(b"PING\r\n")
                    continue
            for kind, text, headers, payload in reader.messages(sock):
                if kind == b"PING":
                    with self._lock:
                        self._write_control(b"PONG\r\n")
                elif kind == b"PONG":
                    pings_out = 0
                elif kind == b"-ERR":
                    self._on_error(text)
                elif kind == b"MSG":
                    entry = self._subs.get(int(text))
                    if entry is not None:
                        try:
                            entry[1](payload, headers)
                        except Exception:  # noqa: BLE001 - one bad message must not end the link
                            log.exception("frame link: handler for %s failed", entry[0])

    def _finish_pending(self, sock: socket.socket | ssl.SSLSocket) -> None:
        """Send on what the socket owes, then the protocol lines waiting behind it."""
        with self._lock:
            if self._sock is not sock:
                return
            if self._pending:
                self._pending = _try_send(sock, self._pending)
            if not self._pending and self._after:
                data, self._after = bytes(self._after), bytearray()
                self._pending = _try_send(sock, data)


class ProtocolError(Exception):
    """The server said no, or sent what NATS never sends."""


class _Reader:
    """NATS protocol parsing over a buffer: lines, and messages with their payloads."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.limit = MAX_PAYLOAD + MAX_LINE  # the largest message taken: the server's max_payload, once known
        self._wanted = 0  # the bytes the message at the buffer's start needs, its payload part-read

    @property
    def buffered(self) -> bool:
        """Whether a whole line, or a whole message, may already be waiting in the buffer."""
        return len(self._buffer) >= self._wanted and b"\r\n" in self._buffer

    def line(self, sock: socket.socket | ssl.SSLSocket) -> bytes:
        """The next line, waiting for it (the connection's start, a blocking socket)."""
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > MAX_LINE:
                raise ProtocolError("a protocol line too long")
            self._take(sock)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _take(self, sock: socket.socket | ssl.SSLSocket) -> bool:
        """Read what has arrived; False when nothing could be read now."""
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        if not data:
            raise ConnectionResetError("NATS closed the connection")
        self._buffer += data
        return True

    def messages(self, sock: socket.socket | ssl.SSLSocket):  # noqa: ANN201 - a generator of tuples
        """What the socket has brought: (kind, subject or sid or text, headers, payload)."""
        self._take(sock)
        buffer = self._buffer
        while (end := buffer.find(b"\r\n")) >= 0:
            line = bytes(buffer[:end])
            if line.startswith((b"MSG ", b"HMSG ")):
                fields = line.split()
                with_headers = fields[0] == b"HMSG"
                try:
                    sid, total = int(fields[2]), int(fields[-1])
                    head = int(fields[-2]) if with_headers else 0
                except (IndexError, ValueError):
                    raise ProtocolError(f"a malformed message line: {line[:80]!r}") from None
                if not 0 <= head <= total <= self.limit:
                    raise ProtocolError(f"a malformed message line: {line[:80]!r}")
                if len(buffer) < end + 2 + total + 2:
                    if not self._take(sock):
                        self._wanted = end + 2 + total + 2  # poll for the rest, rather than spin
                        return
                    buffer = self._buffer
                    continue
                self._wanted = 0
                start = end + 2
                if buffer[start + total : start + total + 2] != b"\r\n":
                    raise ProtocolError(f"a message longer than its size: {line[:80]!r}")
                payload = bytes(buffer[start + head : start + total])
                headers = _parse_headers(buffer[start : start + head]) if head else {}
                del buffer[: start + total + 2]
                yield b"MSG", str(sid), headers, payload
                continue
            if len(line) > MAX_LINE:
                raise ProtocolError("a protocol line too long")
            del buffer[: end + 2]
            if line in (b"PING", b"PONG"):
                yield line, "", {}, b""
            elif line.startswith(b"-ERR"):
                yield b"-ERR", _error_text(line), {}, b""
            # +OK and INFO (a cluster's news) need nothing
        if len(buffer) > MAX_LINE:
            raise ProtocolError("a protocol line too long")


def _headers(headers: dict[str, str]) -> bytes:
    """A message's NATS headers block."""
    return b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"


def _parse_headers(block: bytes | bytearray) -> dict[str, str]:
    """The fields of a NATS headers block (its status line skipped)."""
    fields = {}
    for line in bytes(block).split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            fields[name.decode(errors="replace").strip()] = value.decode(errors="replace").strip()
    return fields


def _info(line: bytes) -> dict:
    if not line.startswith(b"INFO "):
        raise ProtocolError("not a NATS server")
    try:
        info = json.loads(line[5:])
    except RecursionError:  # nested past Python's limit: no server's INFO is
        raise ProtocolError("not a NATS server") from None
    if not isinstance(info, dict):
        raise ProtocolError("not a NATS server")
    return info


def _error_text(line: bytes) -> str:
    """A -ERR's text, as nats-py gives it to the bus: lowercased, quotes kept."""
    return line[4:].decode(errors="replace").strip().strip("'").lower()


def _max_payload(info: dict) -> int:
    """The server's max_payload: NATS's default if its INFO does not say, never past NATS's own
    bound (the reader holds a whole message)."""
    value = info.get("max_payload")
    if value is None:
        return DEFAULT_PAYLOAD
    if type(value) is not int or not 0 < value <= MAX_PAYLOAD:
        raise ProtocolError(f"a max_payload no NATS server has: {str(value)[:40]}")
    return value


def _try_send(sock: socket.socket | ssl.SSLSocket, data: bytes) -> bytes:
    """Write what the socket takes now; what is left. Over TLS that is all or nothing: a write
    OpenSSL asks to retry must be retried with the same bytes, or the stream is torn."""
    try:
        sent = sock.send(data)
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        return data
    return data[sent:]


def _drop(sock: socket.socket | ssl.SSLSocket) -> None:
    """End a connection that cannot go on (a write lost or stuck): the reader thread's poll
    sees it and reconnects; it closes the socket."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _drain(pipe: int) -> None:
    """Empty the wake-up pipe."""
    try:
        while os.read(pipe, 4096):
            pass
    except BlockingIOError:
        pass


def _shut(sock: socket.socket | ssl.SSLSocket | None) -> None:
    """Close a connection; shut down first, which wakes the reader thread's poll (a close
    alone does not)."""
    if sock is None:
        return
    for end in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
        try:
            end()
        except OSError:
            pass
