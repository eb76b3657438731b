"""The frame bus: NATS core between the processes of bus mode (capture, and web workers).

nats-py is asyncio; livecam's capture and request threads are not. A FrameBus runs one event
loop in a thread of its own, and its methods may be called from any thread: publishing never
blocks its caller (a frame that cannot go now is dropped, as a slow viewer's would be), and
every wait has a timeout. It connects in the background and keeps reconnecting for as long as
it lives, so a web worker starts whether or not NATS is up, and resumes by itself after a
restart of nats-server; nats-py restores the subscriptions on every reconnect.

Subjects live under a prefix (``LIVECAM_BUS_PREFIX``, default ``livecam``); wire.py names them.
A prefix is not isolation: sites that share one nats-server are kept apart by NATS accounts
(deploy/nats/livecam.conf).

Credentials go in the URL (``nats://user:password@host``) or in a file (``LIVECAM_BUS_CREDS``:
a NATS .creds file, or a user nkey seed alone). nats-py reads the file at each connection and
signs the server's challenge with the seed; livecam reads it only to check its shape at
startup. Neither is ever logged: the URL is shown with its password masked, the file by name.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .config import bus_creds_kind
from .framelink import FrameLink
from .redaction import redact
from .wire import Rejections, Subjects

log = logging.getLogger(__name__)

MAX_ANSWERING = 16  # requests answered at once; more are dropped (a flood never queues up)
QUEUED = 1000  # messages sent with send() that may wait while NATS is slow
RECONNECT_WAIT = 0.5  # seconds between attempts to reach NATS, at start and after a loss
# What one subscription may hold for a slow consumer before NATS drops its messages: a few
# seconds of one camera at full rate; the newest frame is all a viewer ever wants.
PENDING_BYTES = 8 * 2**20

Handler = Callable[[bytes, dict[str, str]], None]  # (payload, headers), run in the bus thread
# request payload -> reply (None: no answer, another process answers), run in a worker thread
Responder = Callable[[bytes], bytes | None]


class FrameBus:
    """One connection to NATS for one process, usable from any thread."""

    def __init__(
        self, url: str, prefix: str = "livecam", name: str = "livecam", creds: str | None = None
    ) -> None:
        """:param creds: a NATS .creds file or a user nkey seed file (LIVECAM_BUS_CREDS).
        :raise ConfigError: ``creds`` names a file that holds neither."""
        self.url = url
        self.prefix = prefix
        self._name = name
        self._auth = credentials(creds)
        self._refused = False  # NATS refused the credentials since the last connection
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="livecam-bus", daemon=True)
        self._client: Client | None = None
        self._connected = threading.Event()
        # The subscriptions asked for, and those made on the connection, by token. Both belong
        # to the bus thread alone, so a subscription is made once whatever the timing of the
        # connection, and cancelling one always ends what was made.
        self._wanted: dict[int, tuple[str, Any, int]] = {}
        self._made: dict[int, Subscription | None] = {}  # None: being made
        self._tokens = itertools.count()
        self._closing = False
        self._answering: set[asyncio.Task[None]] = set()  # answers under way (the bus thread's)
        self._connecting: Future[None] | None = None
        # Messages waiting for the bus thread, newest per subject; _sending says whether the
        # bus thread's sender task is under way (it clears it when the outbox is empty).
        self._outbox_lock = threading.Lock()  # guards _outbox, _queue, _sending and dropped
        self._outbox: dict[str, tuple[bytes, dict[str, str] | None]] = {}
        self._queue: deque[tuple[str, bytes]] = deque(maxlen=QUEUED)  # messages sent one and all
        self._sending = False
        self.dropped: dict[str, int] = {}
        self._answering = 0  # requests being answered (the bus thread's own count)
        self.rejections = Rejections()  # bad messages received, counted and logged by subject
        self._denials: set[tuple[str, str]] = set()  # (what, subject) NATS denied, said once each
        self._too_large: set[str] = set()  # subjects whose frames were too large for NATS, said once
        # Frames go over a connection of their own, without the event loop (framelink.py).
        self._frames = FrameLink(url, name, creds, on_error=self._report)

    # -- life -----------------------------------------------------------------------

    def start(self) -> FrameBus:
        """Start the loop and begin connecting (in the background, for as long as it takes)."""
        self._thread.start()
        self._connecting = asyncio.run_coroutine_threadsafe(self._connect(), self._loop)
        self._frames.start()
        return self

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closing

    @property
    def connected(self) -> bool:
        """Whether the bus is connected to NATS now."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for a connection; return whether there is one."""
        return self._connected.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Flush what is pending (briefly), close the connection and stop the loop."""
        self._closing = True
        self._frames.close(timeout)
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            try:
                future.result(timeout)
            except (FutureTimeout, Exception):  # noqa: BLE001 - closing must not fail
                log.debug("frame bus: closing did not finish cleanly", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._loop.is_running():
            self._loop.close()

    def subject(self, *parts: object) -> str:
        """A subject under this bus's prefix: ``subject("camera", 3, "frame")``."""
        return ".".join([self.prefix, *(str(part) for part in parts)])

    @property
    def subjects(self) -> Subjects:
        """The named subjects of this bus's site."""
        return Subjects(self.prefix)

    # -- publishing and subscribing ---------------------------------------------------

    def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> bool:
        """Send a message without waiting; False (and nothing sent) while NATS is out of reach.

        What waits to be sent is bounded: one message per subject, the newest. While NATS is
        slow a newer record replaces the one still waiting, counted in ``dropped``. Frames go
        by ``publish_frame``.
        """
        if not self.connected or self._closing:
            return False
        with self._outbox_lock:
            if subject in self._outbox:
                self.dropped[subject] = self.dropped.get(subject, 0) + 1
            self._outbox[subject] = (payload, headers)
            if self._sending:
                return True  # the bus thread's sender takes it with the rest
            self._sending = True
        self._loop.call_soon_threadsafe(self._start_sending)
        return True

    def publish_frame(self, subject: str, payload: bytes, headers: dict[str, str]) -> bool:
        """Send a frame from the calling thread, now or never: False (and nothing sent) while
        the frame link is not connected or still busy with the last frame, counted in
        ``dropped``."""
        if self._closing:
            return False
        sent = self._frames.publish(subject, payload, headers)
        if not sent and self.connected:
            with self._outbox_lock:
                self.dropped[subject] = self.dropped.get(subject, 0) + 1
                said = subject in self._too_large
                too_large = len(payload) > self._frames.max_payload and not said
                if too_large:
                    self._too_large.add(subject)
            if too_large:  # said once per subject: at 30 fps every frame would be
                log.error(
                    "frame bus: a frame of %d bytes on %s is larger than %s takes (its max_payload,"
                    " %d bytes): raise it in nats-server's configuration, or lower the camera's size"
                    " or quality",
                    len(payload),
                    subject,
                    redact(self.url),
                    self._frames.max_payload,
                )
        return sent

    def subscribe_frames(self, subject: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(payload, headers)`` for each frame on ``subject``, in the frame
        link's reader thread (quick, never blocking); return a function that ends it."""
        return self._frames.subscribe(subject, handler)

    def send(self, subject: str, payload: bytes) -> bool:
        """Send a message that no newer one replaces (an event), in order, without waiting;
        False while NATS is out of reach. At most QUEUED wait: past that the oldest is
        dropped, counted in ``dropped``."""
        if not self.connected or self._closing:
            return False
        with self._outbox_lock:
            if len(self._queue) == self._queue.maxlen:
                gone = self._queue[0][0]
                self.dropped[gone] = self.dropped.get(gone, 0) + 1
            self._queue.append((subject, payload))
            if self._sending:
                return True
            self._sending = True
        self._loop.call_soon_threadsafe(self._start_sending)
        return True

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until what was published has reached NATS; return whether it has."""
        if not self.connected:
            return False
        future = asyncio.run_coroutine_threadsafe(self._flush(timeout), self._loop)
        try:
            return future.result(timeout + 1.0)
        except FutureTimeout:
            future.cancel()
            return False

    async def _flush(self, timeout: float) -> bool:
        deadline = self._loop.time() + timeout
        while self._sending and self._loop.time() < deadline:
            await asyncio.sleep(0.005)  # the sender task empties the outbox in its own turns
        client = self._client
        try:
            # nats-py writes a flush's PING ahead of what still waits in its buffer: the second
            # PING is sent after that buffer, so its answer means everything reached NATS.
            for _ in range(2):
                await client.flush(max(0.1, deadline - self._loop.time()))
        except Exception:  # noqa: BLE001 - not connected, or too slow: not flushed
            return False
        return not self._sending

    def dropped_on(self, prefix: str) -> int:
        """Messages replaced by newer ones before they could be sent, on subjects under ``prefix``."""
        with self._outbox_lock:
            return sum(count for subject, count in self.dropped.items() if subject.startswith(prefix))

    def subscribe(
        self, subject: str, handler: Handler, pending_bytes: int = PENDING_BYTES
    ) -> Callable[[], None]:
        """Call ``handler(payload, headers)`` (in the bus thread: quick, never blocking) for each
        message; return a function that ends the subscription."""
        return self._keep(subject, handler, pending_bytes)

    def serve(self, subject: str, responder: Responder) -> Callable[[], None]:
        """Answer requests on ``subject`` with ``responder(payload)``, run off the bus thread;
        when it returns None, this process stays silent (the request is another's to answer)."""
        return self._keep(subject, responder, 0)

    def request(self, subject: str, payload: bytes, timeout: float) -> bytes | None:
        """Ask and wait up to ``timeout`` for the answer; None when none came (or no NATS)."""
        if not self.connected:
            return None
        future = asyncio.run_coroutine_threadsafe(self._request(subject, payload, timeout), self._loop)
        try:
            return future.result(timeout + 1.0)
        except FutureTimeout:
            future.cancel()
            return None

    # -- in the bus thread ------------------------------------------------------------

    async def _connect(self) -> None:
        shown = redact(self.url)

        async def disconnected() -> None:
            self._connected.clear()
            if not self._closing:
                log.warning("frame bus: lost %s, reconnecting", shown)

        async def reconnected() -> None:
            self._refused = False
            self._connected.set()
            log.info("frame bus: connected again to %s", shown)

        async def error(exc: Exception) -> None:
            self._report(str(exc))

        client = nats.NATS()
        self._client = client
        # Connects however long it takes: max_reconnect_attempts=-1 retries the first
        # connection too, every RECONNECT_WAIT.
        await client.connect(
            servers=[self.url],
            name=self._name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT,
            connect_timeout=2,
            ping_interval=5,
            max_outstanding_pings=2,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
            # Requests' answers come to P._INBOX.<id>.<n> rather than nats-py's _INBOX.<id>.<n>,
            # so that a role's permissions stay within the prefix (deploy/nats/livecam.conf).
            inbox_prefix=f"{self.prefix}._INBOX",
            **self._auth,
        )
        if self._closing:
            await client.close()
            return
        for token in list(self._wanted):
            await self._make(token)
        self._refused = False
        self._connected.set()
        log.info("frame bus: connected to %s", shown)

    def _given(self) -> str:
        """Which credentials livecam gave NATS, said without any secret."""
        path = self._auth.get("user_credentials") or self._auth.get("nkeys_seed")
        if path:
            return f"LIVECAM_BUS_CREDS {path}"
        return "those in LIVECAM_BUS" if "@" in self.url else "none given"

    def _report(self, text: str) -> None:
        """What NATS said went wrong, on either connection: refused credentials once until let
        in again, each denied permission once, the rest at debug level."""
        if "authorization" in text.lower() and not self._refused:
            self._refused = True
            log.error(
                "frame bus: %s refused livecam's credentials (%s); retrying", redact(self.url), self._given()
            )
        # A permission NATS denies this role comes back at each message (the connection
        # stays): said once per subject, not once per frame. nats-py lowercases the
        # server's text ('permissions violation for publish to "p.camera.0.frame.full"'),
        # as the frame link does, so the prefix gets its case back.
        denied = re.search(r'permissions violation for (publish|subscription) to "([^"]+)"', text.lower())
        if denied and denied.groups() not in self._denials and len(self._denials) < 100:
            self._denials.add(denied.groups())
            what, subject = denied.groups()
            if subject.startswith(f"{self.prefix.lower()}."):
                subject = self.prefix + subject[len(self.prefix) :].replace("._inbox.", "._INBOX.", 1)
            log.error(
                "frame bus: %s denies %s (%s) permission to %s to %s: check the role's permissions"
                " (deploy/nats/livecam.conf)",
                redact(self.url),
                self._name,
                self._given(),
                "subscribe" if what == "subscription" else "publish",
                subject,
            )
        log.debug("frame bus: %s", text)

    def _start_sending(self) -> None:
        self._loop.create_task(self._send_outbox())

    async def _send_outbox(self) -> None:
        """Send what waits in the outbox until it is empty: one task at a time, so while NATS
        is slow (nats-py's publish waits once its own buffer is full) messages wait in the
        outbox, one per subject, rather than in a growing number of tasks."""
        while True:
            with self._outbox_lock:
                if not self._outbox and not self._queue:
                    self._sending = False
                    return
                queued, batch, self._outbox = list(self._queue), self._outbox, {}
                self._queue.clear()
            client = self._client
            messages = [(subject, payload, None) for subject, payload in queued]
            messages += [(subject, payload, headers) for subject, (payload, headers) in batch.items()]
            for subject, payload, headers in messages:
                if client is None or not client.is_connected:
                    break  # lost: nothing is kept for later, a newer frame will come
                try:
                    await client.publish(subject, payload, headers=headers)
                except Exception:  # noqa: BLE001 - a frame lost to a dropped connection is just lost
                    log.debug("frame bus: publish on %s failed", subject, exc_info=True)

    def _keep(self, subject: str, callback: Any, pending: int) -> Callable[[], None]:
        """Ask for a subscription, made now if connected, else at the connection."""
        token = next(self._tokens)
        asyncio.run_coroutine_threadsafe(self._add(token, (subject, callback, pending)), self._loop)

        def cancel() -> None:
            if not self._closing:  # a closed bus has no subscription left to end
                asyncio.run_coroutine_threadsafe(self._remove(token), self._loop)

        return cancel

    async def _add(self, token: int, entry: tuple[str, Any, int]) -> None:
        self._wanted[token] = entry
        client = self._client
        if client is not None and client.is_connected:
            await self._make(token)

    async def _make(self, token: int) -> None:
        """Subscribe for ``token`` unless already done (or under way)."""
        if token in self._made or token not in self._wanted:
            return
        self._made[token] = None
        subscription = await self._subscribe(*self._wanted[token])
        if subscription is None:  # not connected after all: the connection makes it
            self._made.pop(token, None)
        elif token in self._wanted:
            self._made[token] = subscription
        else:  # cancelled while being made
            self._made.pop(token, None)
            await _unsubscribe(subscription)

    async def _remove(self, token: int) -> None:
        self._wanted.pop(token, None)
        await _unsubscribe(self._made.pop(token, None))

    async def _subscribe(self, subject: str, callback: Any, pending: int) -> Subscription | None:
        client = self._client
        if client is None or not client.is_connected:
            return None
        if pending:  # a stream of messages for a quick handler

            async def deliver(msg: Msg) -> None:
                try:
                    callback(msg.data, msg.headers or {})
                except Exception:  # noqa: BLE001 - one bad message must not end a subscription
                    log.exception("frame bus: handler for %s failed", subject)

            return await client.subscribe(subject, cb=deliver, pending_bytes_limit=pending)

        async def answer(msg: Msg) -> None:
            if not msg.reply:
                # Not a request (nobody to answer): never acted on, a switch included.
                self.rejections.reject(subject, "a request without a reply subject")
                return
            if self._answering >= MAX_ANSWERING:
                self.rejections.reject(subject, f"more than {MAX_ANSWERING} requests at once")
                return
            self._answering += 1
            try:
                reply = await self._loop.run_in_executor(None, callback, msg.data)
                if reply is not None:
                    await msg.respond(reply)
            except Exception:  # noqa: BLE001 - the asker times out; the server goes on
                log.warning(
                    "frame bus: answering %s failed", subject, exc_info=log.isEnabledFor(logging.DEBUG)
                )
            finally:
                self._answering -= 1

        async def take(msg: Msg) -> None:
            # One request at a time per subscription, as nats-py delivers them; but an answer
            # under way outlives its subscription: a request that ends it (a camera removed
            # or reopened by its own manage request) is still answered.
            task = self._loop.create_task(answer(msg))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
            await asyncio.shield(task)

        return await client.subscribe(subject, cb=take)

    async def _request(self, subject: str, payload: bytes, timeout: float) -> bytes | None:
        client = self._client
        if client is None or not client.is_connected:
            return None
        try:
            return (await client.request(subject, payload, timeout=timeout)).data
        except Exception:  # noqa: BLE001 - no answerer, a timeout, a lost connection: no answer
            return None

    async def _close(self) -> None:
        client = self._client
        self._connected.clear()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()  # still trying to reach NATS: stop trying
        if client is not None and not client.is_closed:
            try:
                await asyncio.wait_for(client.drain(), 1.0)
            except Exception:  # noqa: BLE001 - drained or not, it is closed below
                pass
            await client.close()


def credentials(path: str | None) -> dict[str, str]:
    """nats-py's connect options for a credentials file: a .creds file (user JWT and nkey
    seed) is ``user_credentials``, a seed alone ``nkeys_seed``; nothing without a file."""
    if path is None:
        return {}
    return {"user_credentials" if bus_creds_kind(path) == "creds" else "nkeys_seed": path}


async def _unsubscribe(subscription: Subscription | None) -> None:
    """End a subscription; one on a lost connection is gone anyway."""
    if subscription is None:
        return
    try:
        await subscription.unsubscribe()
    except Exception:  # noqa: BLE001 - nothing to end
        log.debug("frame bus: unsubscribe failed", exc_info=True)
