"""Webhooks: every event POSTed as JSON to each configured receiver, signed, never in the way.

A receiver may be slow, failing, unreachable or hostile. Each URL has its own bounded queue
and its own thread (``livecam-webhook-N``, N its place in ``LIVECAM_WEBHOOK_URL``): the
thread that noticed an event only appends it to each queue, so no receiver can slow capture,
streaming or another receiver. A full queue lets its oldest event go.

Each event is one POST of ``Event.json()``; an attempt ends ``timeout`` seconds after it
began, however slowly the receiver trickles its answer. A 2xx is delivered; a 408, 429, 5xx,
timeout or connection failure is retried with a doubling backoff for ``retry_for`` seconds
(no sooner than a ``Retry-After`` asks, and given up at once if it asks past that window),
then given up; any other answer (3xx: livecam follows no redirect; 4xx) is given up at once.
Events keep their order: a receiver gets the next one once the previous one is settled.

With a secret, each attempt is signed (HMAC-SHA256 of ``TIMESTAMP.BODY``, the timestamp sent
in ``X-Livecam-Timestamp``), so a receiver can check who sent it and refuse a replay. A URL's
credentials, path and query are never logged (``redaction.py``: many receivers take their
secret in the path); nor is the signing secret.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import hmac
import http.client
import io
import json
import logging
import math
import socket
import ssl
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import Settings
from .events import Event, EventLog
from .redaction import redact, redact_endpoint

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000  # events waiting per receiver; past that the oldest is dropped
ATTEMPT_TIMEOUT = 5.0  # seconds one attempt may take, from connect to the answer's headers
RETRY_FOR = 60.0  # seconds an event is retried for before it is given up
BACKOFF = (1.0, 15.0)  # the first wait between attempts, doubling up to the second
LOG_EVERY = 60.0  # seconds between two warnings about one receiver, however it flaps
RETRIED_STATUSES = frozenset({408, 429})  # besides 5xx: the receiver asks to be tried again
USER_AGENT = "livecam-webhook"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Livecam-Signature`` value: ``sha256=`` and the hex HMAC of ``TIMESTAMP.BODY``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


@dataclass(frozen=True)
class Delivery:
    """An event as it is POSTed: made once for every receiver, and holding no JPEG (a queue
    full of events would keep their pictures alive past the event log's budget)."""

    id: int
    type: str
    body: bytes  # Event.json(), compact and ASCII

    @classmethod
    def of(cls, event: Event) -> Delivery:
        """The delivery of an event."""
        return cls(
            event.id, event.type, json.dumps(event.json(), separators=(",", ":"), allow_nan=False).encode()
        )


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, every one ending by one deadline, so a trickling receiver cannot hold
    an attempt for longer (a socket's own timeout starts again at each byte)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(_left(self._deadline))
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """The little of a socket that ``http.client`` uses, every read and write by one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(_left(self._deadline))
        self._sock.sendall(data)

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        self._sock.close()


def _left(deadline: float) -> float:
    """Seconds until ``deadline``; TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no answer in time")
    return left


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (a number of seconds or an HTTP date, as
    RFC 9110 has it), or None when there is none or it is no such thing."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(int(value)), 1e9)  # leading zeros are allowed
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)  # asctime's form: HTTP dates are GMT
    return max(0.0, when.timestamp() - now)


def _printable(text: str, limit: int = 120) -> str:
    """A receiver's words fit for one log line: no control characters, no credentials."""
    return redact("".join(c if c.isprintable() else "?" for c in text[:limit]))


def _reason(exc: BaseException, timeout: float) -> str:
    """What went wrong with an attempt, in a few words a log line can show."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "it closed the connection without answering"
    if isinstance(exc, socket.gaierror):
        return f"its host name does not resolve ({exc.strerror})"
    return _printable(f"{type(exc).__name__}: {exc}")


class Receiver:
    """One webhook URL: its queue, its thread and its counters."""

    def __init__(
        self,
        index: int,
        url: str,
        secret: str | None,
        queue_size: int,
        timeout: float,
        retry_for: float,
        backoff: tuple[float, float],
    ) -> None:
        self.index = index
        self.url = redact_endpoint(url)  # how it is shown and logged
        self.sent = 0  # events it answered with a 2xx
        self.failed = 0  # events given up: refused (3xx, 4xx) or still failing after retry_for
        self.dropped = 0  # events let go untried: pushed out of a full queue, or livecam stopping
        self.retried = 0  # attempts after an event's first
        parts = urllib.parse.urlsplit(url)  # validated by config.py
        self._https = parts.scheme.lower() == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._auth: str | None = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._secret = secret
        self._tls = ssl.create_default_context() if self._https else None
        self._queue_size = queue_size
        self._timeout = timeout
        self._retry_for = retry_for
        self._backoff = backoff
        # One lock guards the queue, the closing state, the socket of the attempt under way
        # and the counters; nobody holds it for any I/O, so adding an event never waits long.
        # Two Conditions share it: the thread waits on one for work, anyone on the other for
        # the end of the work.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._settled = threading.Condition(self._lock)
        self._queue: deque[Delivery] = deque()
        self._busy = False  # an event is being delivered
        self._closing = False  # close() began: no more retries, deliver what is queued
        self._close_by = math.inf  # when closing, the end of the last attempts
        self._abandoned = False  # close()'s time is up: drop the rest, end the attempt under way
        self._socket: socket.socket | None = None  # the attempt's, so close() can end it
        self._overflowed = False  # the queue dropped an event since the thread last looked
        # The worker thread's own: the outage under way and what was last logged.
        self._down_since: float | None = None
        self._down_counts = (0, 0)
        self._down_logged = False
        self._overflow_logged = False
        self._warned_at = -math.inf
        self._thread = threading.Thread(target=self._run, name=f"livecam-webhook-{index}", daemon=True)

    @property
    def queued(self) -> int:
        """Events waiting for their turn."""
        return len(self._queue)

    def start(self) -> None:
        """Start the delivery thread."""
        self._thread.start()

    def offer(self, delivery: Delivery) -> None:
        """Queue an event, at once (the capture thread calls this); a full queue drops its oldest."""
        with self._lock:
            if self._closing:
                return
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.dropped += 1
                self._overflowed = True
            self._queue.append(delivery)
            self._wake.notify()

    def finish(self, by: float) -> None:
        """Begin closing: no more retries; what is queued is tried once until ``by``."""
        with self._lock:
            self._close_by = by
            self._closing = True
            self._wake.notify()

    def abandon(self) -> None:
        """Time is up: drop what is left and cut the attempt under way."""
        with self._lock:
            self._closing = self._abandoned = True
            self.dropped += len(self._queue)
            self._queue.clear()
            sock = self._socket
            self._wake.notify()
            self._settled.notify_all()
        if sock is not None:
            try:
                # The plain socket's shutdown, TLS or not: it wakes the thread's blocked read
                # at once (closing the descriptor under it would not).
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its thread

    def wait_idle(self, until: float) -> bool:
        """Wait until ``until`` (monotonic) for every queued event to be settled (delivered,
        given up or dropped); return whether they are."""
        with self._settled:
            return self._settled.wait_for(
                lambda: not (self._queue or self._busy), max(0.0, until - time.monotonic())
            )

    def join(self, until: float) -> bool:
        """Wait until ``until`` (monotonic) for the thread to end; return whether it has."""
        if self._thread.is_alive():
            self._thread.join(max(0.0, until - time.monotonic()))
        return not self._thread.is_alive()

    def _run(self) -> None:
        """Deliver the queued events in order until closed."""
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    self._settled.notify_all()  # abandon() emptied it, perhaps
                    return  # closing, and nothing left
                delivery = self._queue.popleft()
                self._busy = True
                overflowed, self._overflowed = self._overflowed, False
                if not self._queue:
                    self._overflow_logged = False  # the backlog is gone
            if overflowed:
                self._note_overflow()
            try:
                self._deliver(delivery)
            except Exception:  # never a silent thread death: the next event is tried anyway
                with self._lock:
                    self.failed += 1
                log.exception(
                    "webhook %d (%s): event %d failed unexpectedly", self.index, self.url, delivery.id
                )
            finally:
                with self._lock:
                    self._busy = False
                    self._settled.notify_all()

    def _deliver(self, delivery: Delivery) -> None:
        """Send one event, with retries; count what became of it."""
        started = time.monotonic()
        wait = self._backoff[0]
        while True:
            delivered, retry, reason, asked = self._attempt(delivery)
            if delivered:
                with self._lock:
                    self.sent += 1
                self._answered()
                return
            if not self._closing:  # when closing, close() says what was lost (it may cut attempts)
                self._trouble(reason, retry)
            pause = wait if asked is None else max(wait, asked)  # the receiver knows its load best
            with self._wake:
                if not retry or time.monotonic() + pause > started + self._retry_for:
                    self.failed += 1
                    return
                if self._wake.wait_for(lambda: self._closing, pause):
                    self.dropped += 1  # livecam is stopping: no retry
                    return
                self.retried += 1
            wait = min(wait * 2, self._backoff[1])

    def _attempt(self, delivery: Delivery) -> tuple[bool, bool, str, float | None]:
        """POST once: (delivered, worth retrying, what happened, seconds a Retry-After asks)."""
        deadline = min(time.monotonic() + self._timeout, self._close_by)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Connection": "close",
            "X-Livecam-Event": delivery.type,
            "X-Livecam-Delivery": str(delivery.id),
            "X-Livecam-Timestamp": timestamp,
        }
        if self._secret is not None:
            headers["X-Livecam-Signature"] = sign(self._secret, timestamp, delivery.body)
        if self._auth is not None:
            headers["Authorization"] = self._auth
        connection: http.client.HTTPConnection | None = None
        try:
            connection = self._connect(deadline)
            connection.request("POST", self._target, delivery.body, headers)
            response = connection.getresponse()
            status, phrase = response.status, response.reason
            asked = retry_after(response.getheader("Retry-After"), time.time())
            response.close()  # its body is not read: a hostile one may never end
        except (OSError, http.client.HTTPException) as exc:
            return False, True, _reason(exc, self._timeout), None
        finally:
            if connection is not None:
                connection.close()
            with self._lock:
                sock, self._socket = self._socket, None
            if sock is not None:
                sock.close()
        if 200 <= status < 300:
            return True, False, "", None
        retry = status in RETRIED_STATUSES or 500 <= status < 600
        said = _printable(f"answered {status} {phrase}".strip())
        if retry and asked is not None:
            said += f" (retry after {asked:g} s)"
        return (
            False,
            retry,
            said if retry or status >= 400 else f"{said} (livecam follows no redirect)",
            asked,
        )

    def _connect(self, deadline: float) -> http.client.HTTPConnection:
        """A connection to the receiver, TLS done, its socket known to abandon()."""
        raw = socket.create_connection((self._host, self._port), timeout=_left(deadline))
        sock: socket.socket = raw
        if self._tls is not None:
            # The handshake by hand, so that abandon() can cut it: wrapping detaches ``raw``.
            sock = self._tls.wrap_socket(raw, server_hostname=self._host, do_handshake_on_connect=False)
        with self._lock:
            self._socket = sock
            abandoned = self._abandoned
        if abandoned:
            raise ConnectionAbortedError("livecam is stopping")
        connection: http.client.HTTPConnection
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(_left(deadline))
            sock.do_handshake()
            connection = http.client.HTTPSConnection(self._host, self._port, context=self._tls)
        else:
            connection = http.client.HTTPConnection(self._host, self._port)
        # Given its socket, http.client never connects itself; only the Host header uses these.
        connection.sock = _DeadlineSocket(sock, deadline)
        return connection

    def _trouble(self, reason: str, retry: bool) -> None:
        """An attempt failed: say so once per outage (and at most once a LOG_EVERY)."""
        now = time.monotonic()
        if self._down_since is not None:
            return
        self._down_since = now
        self._down_counts = (self.failed, self.dropped)
        self._down_logged = now - self._warned_at >= LOG_EVERY
        if self._down_logged:
            self._warned_at = now
            then = (
                f"each event is retried for {self._retry_for:g} s, then given up" if retry else "not retried"
            )
            log.warning(
                "webhook %d (%s): %s; %s (said once until it answers again)",
                self.index,
                self.url,
                reason,
                then,
            )

    def _answered(self) -> None:
        """A delivery worked: an outage under way is over."""
        if self._down_since is None:
            return
        if self._down_logged:
            failed, dropped = self.failed - self._down_counts[0], self.dropped - self._down_counts[1]
            log.info(
                "webhook %d (%s) answers again after %.0f s (%d event(s) given up, %d dropped meanwhile)",
                self.index,
                self.url,
                time.monotonic() - self._down_since,
                failed,
                dropped,
            )
        self._down_since = None

    def _note_overflow(self) -> None:
        """The queue was full: say so once per backlog, unless an outage said enough already."""
        if self._overflow_logged or self._down_since is not None:
            return
        self._overflow_logged = True
        now = time.monotonic()
        if now - self._warned_at >= LOG_EVERY:
            self._warned_at = now
            log.warning(
                "webhook %d (%s): %d events waiting, the oldest dropped (it answers too slowly)",
                self.index,
                self.url,
                self._queue_size,
            )


class WebhookOutput:
    """Every event to every webhook URL of the settings, each receiver on its own thread."""

    def __init__(
        self,
        settings: Settings,
        events: EventLog,
        *,
        queue_size: int = QUEUE_SIZE,
        timeout: float = ATTEMPT_TIMEOUT,
        retry_for: float = RETRY_FOR,
        backoff: tuple[float, float] = BACKOFF,
    ) -> None:
        self._events = events
        self._stop_listening: Callable[[], None] | None = None
        self.receivers = [
            Receiver(i, url, settings.webhook_secret, queue_size, timeout, retry_for, backoff)
            for i, url in enumerate(settings.webhook_url)
        ]
        self._signed = settings.webhook_secret is not None

    @property
    def sent(self) -> int:
        """Events delivered, over every receiver."""
        return sum(receiver.sent for receiver in self.receivers)

    @property
    def failed(self) -> int:
        """Events given up after the receiver refused them or kept failing, over every receiver."""
        return sum(receiver.failed for receiver in self.receivers)

    @property
    def dropped(self) -> int:
        """Events let go untried (a full queue, livecam stopping), over every receiver."""
        return sum(receiver.dropped for receiver in self.receivers)

    def start(self) -> WebhookOutput:
        """Start each receiver's thread and follow the events."""
        for receiver in self.receivers:
            receiver.start()
        self._stop_listening = self._events.listen(self._offer)
        urls = ", ".join(receiver.url for receiver in self.receivers)
        log.info(
            "webhooks to %s, %s", urls, "signed" if self._signed else "unsigned (no LIVECAM_WEBHOOK_SECRET)"
        )
        return self

    def _offer(self, event: Event) -> None:
        """The event log's listener: queue the event for every receiver, never waiting."""
        try:
            delivery = Delivery.of(event)
        except (TypeError, ValueError):  # a field JSON cannot hold: never the capture thread's problem
            log.exception("webhooks: event %d cannot be sent as JSON", event.id)
            return
        for receiver in self.receivers:
            receiver.offer(delivery)

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for every queued event to be settled; return whether it is."""
        until = time.monotonic() + timeout
        return all(receiver.wait_idle(until) for receiver in self.receivers)

    def close(self, timeout: float = 2.0) -> None:
        """Stop following the events, deliver what is queued until ``timeout``, drop the rest."""
        end = time.monotonic() + timeout
        before = self.dropped
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        # A little of the time is kept for the threads to end once their attempts are cut.
        drain_by = end - min(0.2, timeout / 4)
        for receiver in self.receivers:
            receiver.finish(drain_by)
        for receiver in self.receivers:
            receiver.join(drain_by)
        for receiver in self.receivers:
            receiver.abandon()
        for receiver in self.receivers:
            receiver.join(end)
        if self.dropped > before:
            log.warning("webhooks: %d event(s) left undelivered as livecam stops", self.dropped - before)
