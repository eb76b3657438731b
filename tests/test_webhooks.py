"""Webhooks against real HTTP receivers on loopback: healthy, slow, failing, gone and hostile."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT
from livecam.config import ConfigError, Settings, load_settings
from livecam.events import EventLog
from livecam.registry import SHUTDOWN_BUDGET, Registry
from livecam.webhooks import WebhookOutput, retry_after

SECRET = "hook-secret-123"
FAST = {"timeout": 1.0, "retry_for": 5.0, "backoff": (0.05, 0.2)}  # quick retries for tests


@dataclass
class Request:
    """One POST a receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> int:
        return int(self.headers["X-Livecam-Delivery"])


# How a receiver answers its request number n (from 0): it writes to the handler itself.
Answer = Callable[["Hook", BaseHTTPRequestHandler, int], None]


def status(code: int) -> Answer:
    """Answer every request with ``code``."""
    return lambda hook, handler, n: _reply(handler, code)


def statuses(*codes: int) -> Answer:
    """Answer with each code in turn, then 200."""
    return lambda hook, handler, n: _reply(handler, codes[n] if n < len(codes) else 200)


def _reply(handler: BaseHTTPRequestHandler, code: int) -> None:
    handler.send_response(code)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def hang(hook: Hook, handler: BaseHTTPRequestHandler, n: int) -> None:
    """Answer nothing until the test ends."""
    hook.release.wait(60)


def hang_first(hook: Hook, handler: BaseHTTPRequestHandler, n: int) -> None:
    """Hold the first request until ``gate`` opens, then answer 200; the others at once."""
    if n == 0:
        hook.gate.wait(60)
    _reply(handler, 200)


def trickle(hook: Hook, handler: BaseHTTPRequestHandler, n: int) -> None:
    """Begin a 200 answer, then send a header byte every 50 ms and never finish it."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not hook.release.wait(0.05):
        handler.wfile.write(b"a")
        handler.wfile.flush()


def endless_body(hook: Hook, handler: BaseHTTPRequestHandler, n: int) -> None:
    """A 200 whose body never ends."""
    handler.send_response(200)
    handler.end_headers()
    while not hook.release.is_set():
        handler.wfile.write(b"x" * 65536)


def terminal_escapes(hook: Hook, handler: BaseHTTPRequestHandler, n: int) -> None:
    """A 500 whose reason phrase would colour a terminal and ring its bell, then 200."""
    if n == 0:
        handler.wfile.write(b"HTTP/1.0 500 \x1b[31mred\x07bell\r\nContent-Length: 0\r\n\r\n")
    else:
        _reply(handler, 200)


def garbage(hook: Hook, handler: BaseHTTPRequestHandler, n: int) -> None:
    """No HTTP at all the first time, then 200."""
    if n == 0:
        handler.wfile.write(b"SSH-2.0-not-http\r\n\r\n")
    else:
        _reply(handler, 200)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        hook = self.server.hook
        n = hook.record(Request(self.path, dict(self.headers), body))
        try:
            hook.answer(hook, self, n)
        except OSError:
            pass  # livecam hung up first: what the hostile receivers expect

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hook: Hook


class Hook:
    """A real HTTP receiver on 127.0.0.1, in a thread: records each POST, answers as told."""

    def __init__(self, answer: Answer | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.answer = answer or status(200)
        self.requests: list[Request] = []
        self.release = threading.Event()  # the end of the test: every hanging answer ends
        self.gate = threading.Event()
        self._changed = threading.Condition()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.hook = self
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-hook", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def record(self, request: Request) -> int:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
            return len(self.requests) - 1

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Request]:
        """The first ``count`` requests, once they have come (failing the test if they do not)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.requests) >= count, timeout)
            assert arrived, f"{len(self.requests)} of {count} requests came within {timeout} s"
            return self.requests[:count]

    def stop(self) -> None:
        self.release.set()
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def webhook_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("livecam-webhook-")]


@pytest.fixture
def hook() -> Iterator[Callable[..., Hook]]:
    """Receivers, stopped at teardown."""
    hooks: list[Hook] = []

    def factory(answer: Answer | None = None, tls: tuple[Path, Path] | None = None) -> Hook:
        hooks.append(Hook(answer, tls))
        return hooks[-1]

    yield factory
    for each in hooks:
        each.stop()


@pytest.fixture
def output() -> Iterator[Callable[..., tuple[WebhookOutput, EventLog]]]:
    """Started webhook outputs on an event log of their own; closed at teardown, no thread left."""
    outputs: list[WebhookOutput] = []

    def factory(
        urls: list[str], secret: str | None = SECRET, **options: Any
    ) -> tuple[WebhookOutput, EventLog]:
        events = EventLog()
        outputs.append(WebhookOutput(settings(urls, secret), events, **{**FAST, **options}).start())
        return outputs[-1], events

    yield factory
    for each in outputs:
        each.close(1.0)
    assert webhook_threads() == []


def settings(urls: list[str], secret: str | None = SECRET, **more: Any) -> Settings:
    """Validated settings with these webhooks and no camera."""
    overrides: dict[str, Any] = {"cameras": {}, "webhook_url": urls, **more}
    if secret is not None:
        overrides["webhook_secret"] = secret
    return load_settings(environ={}, overrides=overrides)


def readme_verify() -> Callable[..., bool]:
    """The documentation's own ``verify`` recipe (docs/events.md), run as written."""
    page = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    section = page.partition("\n## Webhooks\n")[2].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "docs/events.md's Webhooks section has no python block"
    scope: dict[str, Any] = {}
    exec(code[1], scope)  # noqa: S102 - the documentation's code, run as a receiver would
    return scope["verify"]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "livecam.webhooks" and r.levelno >= logging.WARNING
    ]


def test_each_event_is_posted_as_json_and_signed_as_the_readme_says(
    hook: Callable[..., Hook], output: Callable[..., tuple[WebhookOutput, EventLog]]
) -> None:
    receiver = hook()
    out, events = output([receiver.url + "?site=a"])
    event = events.add("motion.start", 0, "Bench", b"\xff\xd8jpeg", score=0.25, box=[0.1, 0.2, 0.5, 0.9])
    (request,) = receiver.wait_for(1)
    assert request.path == "/hook?site=a"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Livecam-Event"] == "motion.start"
    assert request.id == event.id
    assert json.loads(request.body) == event.json()
    assert json.loads(request.body)["snapshot"] is True  # said, not sent
    timestamp = request.headers["X-Livecam-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 5
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    assert request.headers["X-Livecam-Signature"] == f"sha256={mac.hexdigest()}"
    verify = readme_verify()
    assert verify(SECRET, request.headers, request.body)
    assert not verify(SECRET, request.headers, request.body.replace(b"Bench", b"Bunch"))
    assert not verify("another-secret", request.headers, request.body)
    stale = {**request.headers, "X-Livecam-Timestamp": str(int(timestamp) - 600)}
    assert not verify(SECRET, stale, request.body)  # an old request replayed
    assert not verify(SECRET, {**request.headers, "X-Livecam-Timestamp": "²"}, request.body)
    assert not verify(SECRET, {**request.headers, "X-Livecam-Signature": "sha256=é"}, request.body)
    assert not verify(SECRET, {"X-Livecam-Timestamp": timestamp}, request.body)  # unsigned
    assert out.wait_idle(2)
    assert (out.sent, out.failed, out.dropped) == (1, 0, 0)


def test_without_a_secret_nothing_is_signed_and_url_credentials_are_basic_auth(
    hook: Callable[..., Hook], output: Callable[..., tuple[WebhookOutput, EventLog]]
) -> None:
    receiver = hook()
    url = receiver.url.replace("http://", "http://hooker:pa%40ss@")
    out, events = output([url], secret=None)
    events.add("camera.state", 3, "Door", state="on", error=None, previous="starting")
    (request,) = receiver.wait_for(1)
    assert "X-Livecam-Signature" not in request.headers
    assert request.headers["X-Livecam-Event"] == "camera.state"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"hooker:pa@ss").decode()


def test_https_receivers_must_show_a_trusted_certificate(
    hook: Callable[..., Hook],
    output: Callable[..., tuple[WebhookOutput, EventLog]],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = hook(tls=certificate)
    untrusting, events = output([receiver.url], retry_for=0.0)
    events.add("motion.start", 0, "Bench", score=0.1, box=[0, 0, 1, 1])
    assert untrusting.wait_idle(5)
    assert (untrusting.sent, untrusting.failed) == (0, 1) and receiver.requests == []
    (warning,) = warnings_of(caplog)
    assert "certificate is not trusted" in warning
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the system's trust, as openssl reads it
    trusting, events = output([receiver.url])
    event = events.add("motion.start", 0, "Bench", score=0.1, box=[0, 0, 1, 1])
    (request,) = receiver.wait_for(1)
    assert request.id == event.id and readme_verify()(SECRET, request.headers, request.body)


def test_an_event_json_cannot_hold_is_skipped_never_raised_into_capture(
    hook: Callable[..., Hook], output: Callable[..., tuple[WebhookOutput, EventLog]]
) -> None:
    receiver = hook()
    out, events = output([receiver.url])
    events.add("motion.start", 0, "Bench", score=float("nan"), box=[0, 0, 1, 1])  # returns: no raise
    events.add("motion.start", 0, "Bench", score=object(), box=[0, 0, 1, 1])
    good = events.add("motion.end", 0, "Bench", score=0.1, box=[0, 0, 1, 1], duration=1.0)
    assert out.wait_idle(5)
    assert [r.id for r in receiver.requests] == [good.id]


def test_a_slow_receiver_delays_neither_another_receiver_nor_capture(
    hook: Callable[..., Hook], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slow, healthy = hook(hang), hook()
    registry = Registry(
        settings(
            [slow.url, healthy.url],
            cameras={"0": {"source": "testsrc:160x120@30", "name": "Bench"}},
            state_dir=str(tmp_path),
        )
    )
    try:
        (out,) = registry.outputs
        assert sorted(t.name for t in webhook_threads()) == ["livecam-webhook-0", "livecam-webhook-1"]
        camera = registry.get(0)
        assert camera is not None
        camera.start()
        assert camera.snapshot(5.0) is not None  # capture runs while the slow receiver hangs
        states = [json.loads(r.body)["state"] for r in healthy.wait_for(2)]
        assert states == ["starting", "on"]
        slowest = 0.0
        for n in range(300):
            started = time.monotonic()
            registry.events.add("motion.start", 0, "Bench", score=n / 1000, box=[0, 0, 1, 1])
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 0.5  # waiting for the slow receiver would take its attempt's 5 s
        got = healthy.wait_for(302)
        assert [json.loads(r.body)["score"] for r in got[2:]] == [n / 1000 for n in range(300)]
        assert len(slow.requests) == 1  # still its first event, in the order they came
        assert out.receivers[1].wait_idle(time.monotonic() + 5)
        assert out.receivers[1].sent == 302 and out.receivers[0].sent == 0
    finally:
        started = time.monotonic()
        registry.shutdown()
        assert time.monotonic() - started < SHUTDOWN_BUDGET + 0.5
    assert webhook_threads() == []
    assert out.receivers[0].dropped > 300  # the slow one's queue, let go at the end
    assert "hook-secret" not in caplog.text


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (statuses(500), "answered 500 Internal Server Error"),
        (statuses(503, 502), "answered 503 Service Unavailable"),
        (terminal_escapes, "answered 500 ?[31mred?bell"),
        (statuses(408), "answered 408 Request Timeout"),
        (statuses(429), "answered 429 Too Many Requests"),
        (garbage, "BadStatusLine"),
    ],
)
def test_a_failing_receiver_gets_the_event_on_a_retry(
    hook: Callable[..., Hook],
    output: Callable[..., tuple[WebhookOutput, EventLog]],
    caplog: pytest.LogCaptureFixture,
    answer: Answer,
    said: str,
) -> None:
    caplog.set_level(logging.INFO, "livecam.webhooks")
    receiver = hook(answer)
    out, events = output([receiver.url])
    event = events.add("motion.end", 1, "Door", score=0.3, box=[0, 0, 1, 1], duration=2.5)
    assert out.wait_idle(5)
    tries = receiver.requests
    assert len(tries) >= 2
    assert {r.id for r in tries} == {event.id} and {r.body for r in tries} == {tries[0].body}
    assert (out.sent, out.failed, out.dropped) == (1, 0, 0)
    assert out.receivers[0].retried == len(tries) - 1
    (warning,) = warnings_of(caplog)  # once for the outage, not once a try
    assert said in warning and "retried" in warning
    assert any("answers again" in r.getMessage() for r in caplog.records)


def busy(seconds: str, times: list[float]) -> Answer:
    """A 503 asking to be tried again after ``seconds`` (a Retry-After value), then 200; the
    time of each request is noted in ``times``."""

    def answer(hook: Hook, handler: BaseHTTPRequestHandler, n: int) -> None:
        times.append(time.monotonic())
        if n > 0:
            return _reply(handler, 200)
        handler.send_response(503)
        handler.send_header("Retry-After", seconds)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def test_a_retry_waits_as_long_as_retry_after_asks(
    hook: Callable[..., Hook],
    output: Callable[..., tuple[WebhookOutput, EventLog]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    times: list[float] = []
    receiver = hook(busy("1", times))
    out, events = output([receiver.url])  # its own backoff starts at 0.05 s
    events.add("motion.start", 1, "Door", score=0.3, box=[0, 0, 1, 1])
    assert out.wait_idle(5)
    assert (out.sent, out.failed, len(times)) == (1, 0, 2)
    assert times[1] - times[0] >= 1.0
    assert "(retry after 1 s)" in warnings_of(caplog)[0]


def test_a_retry_after_past_the_retry_window_gives_up_at_once(
    hook: Callable[..., Hook], output: Callable[..., tuple[WebhookOutput, EventLog]]
) -> None:
    times: list[float] = []
    receiver = hook(busy("3600", times))
    out, events = output([receiver.url])  # retried for 5 s
    events.add("motion.start", 1, "Door", score=0.3, box=[0, 0, 1, 1])
    assert out.wait_idle(2)
    assert (out.sent, out.failed, len(times)) == (0, 1, 1)


@pytest.mark.parametrize("seconds", ["soon", "-5", "1e3", "Wed, 99 Foo 2026", "\u0661"])
def test_a_retry_after_that_means_nothing_leaves_the_backoff(
    hook: Callable[..., Hook], output: Callable[..., tuple[WebhookOutput, EventLog]], seconds: str
) -> None:
    times: list[float] = []
    receiver = hook(busy(seconds, times))
    out, events = output([receiver.url])
    events.add("motion.start", 1, "Door", score=0.3, box=[0, 0, 1, 1])
    assert out.wait_idle(5)
    assert (out.sent, out.failed, len(times)) == (1, 0, 2)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0000000120", 120.0),  # leading zeros are allowed
        (" 0 ", 0.0),
        ("Thu, 03 Dec 2026 12:00:30 GMT", 30.0),
        ("Thu, 03 Dec 2026 11:00:00 GMT", 0.0),  # past: at once
        ("Thursday, 03-Dec-26 12:00:30 GMT", 30.0),  # RFC 850's form, still to be read
        ("Thu Dec  3 12:00:30 2026", 30.0),  # asctime's: GMT without saying so
        ("Thu, 32 Dec 2026 12:00:30 GMT", None),
        (None, None),
        ("", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits are no number here
    ],
)
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    now = 1796299200.0  # Thu, 03 Dec 2026 12:00:00 GMT
    assert retry_after(value, now) == seconds


@pytest.mark.parametrize(
    ("code", "said"), [(404, "answered 404 Not Found"), (401, "answered 401"), (302, "follows no redirect")]
)
def test_a_refusal_is_not_retried(
    hook: Callable[..., Hook],
    output: Callable[..., tuple[WebhookOutput, EventLog]],
    caplog: pytest.LogCaptureFixture,
    code: int,
    said: str,
) -> None:
    receiver = hook(status(code))
    out, events = output([receiver.url])
    first = events.add("motion.start", 0, "Bench", score=0.1, box=[0, 0, 1, 1])
    second = events.add("motion.end", 0, "Bench", score=0.1, box=[0, 0, 1, 1], duration=1.0)
    assert out.wait_idle(5)
    # Events go in order, so the first was settled before the second was sent: never retried.
    assert [r.id for r in receiver.requests] == [first.id, second.id]
    assert (out.sent, out.failed, out.dropped) == (0, 2, 0)
    (warning,) = warnings_of(caplog)
    assert said in warning and "not retried" in warning


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_receiver_is_retried_then_given_up(
    output: Callable[..., tuple[WebhookOutput, EventLog]], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://hooker:s3cret-pw@127.0.0.1:{closed_port()}/api/webhook/p4th-secret?token=t0ken-value"
    out, events = output([url], retry_for=0.6, backoff=(0.1, 0.2))
    started = time.monotonic()
    events.add("motion.start", 0, "Bench", score=0.1, box=[0, 0, 1, 1])
    events.add("motion.end", 0, "Bench", score=0.1, box=[0, 0, 1, 1], duration=1.0)
    assert out.wait_idle(5)
    assert time.monotonic() - started >= 0.9  # each retried for about retry_for
    assert (out.sent, out.failed, out.dropped) == (0, 2, 0)
    assert out.receivers[0].retried >= 4
    (warning,) = warnings_of(caplog)  # one outage, one line
    assert "connection refused" in warning
    assert "hooker:***@127.0.0.1:" in warning and "/***)" in warning  # the path may be a secret too
    assert not {"s3cret-pw", "p4th-secret", "t0ken-value"} & set(re.findall(r"[\w-]+", caplog.text))
    assert SECRET not in caplog.text


def test_a_full_queue_drops_its_oldest_events(
    hook: Callable[..., Hook],
    output: Callable[..., tuple[WebhookOutput, EventLog]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = hook(hang_first)
    out, events = output([receiver.url], queue_size=3, timeout=30.0)
    ids = [events.add("motion.start", 0, "Bench", score=0.1, box=[0, 0, 1, 1]).id]
    receiver.wait_for(1)  # the first is under way, held
    ids += [events.add("motion.start", 0, "Bench", score=0.1, box=[0, 0, 1, 1]).id for _ in range(6)]
    assert out.dropped == 3 and out.receivers[0].queued == 3  # at once, in the adding thread
    receiver.gate.set()
    assert out.wait_idle(5)
    assert [r.id for r in receiver.requests] == [ids[0], *ids[4:]]
    assert (out.sent, out.failed, out.dropped) == (4, 0, 3)
    (warning,) = warnings_of(caplog)
    assert "oldest dropped" in warning


def test_close_returns_in_time_with_a_hanging_receiver(
    hook: Callable[..., Hook], output: Callable[..., tuple[WebhookOutput, EventLog]]
) -> None:
    receiver = hook(hang)
    out, events = output([receiver.url], timeout=30.0)
    for _ in range(3):
        events.add("motion.start", 0, "Bench", score=0.1, box=[0, 0, 1, 1])
    receiver.wait_for(1)
    started = time.monotonic()
    out.close(0.5)
    assert time.monotonic() - started < 0.8
    assert webhook_threads() == []  # the hanging attempt was cut, not left behind
    assert (out.sent, out.failed, out.dropped) == (0, 0, 3)
    events.add("motion.end", 0, "Bench", score=0.1, box=[0, 0, 1, 1], duration=1.0)
    assert out.dropped == 3  # no longer following


def test_a_trickling_answer_ends_with_the_attempts_timeout(
    hook: Callable[..., Hook],
    output: Callable[..., tuple[WebhookOutput, EventLog]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = hook(trickle)
    out, events = output([receiver.url], timeout=0.5, retry_for=0.0)
    started = time.monotonic()
    events.add("motion.start", 0, "Bench", score=0.1, box=[0, 0, 1, 1])
    assert out.wait_idle(5)
    assert 0.5 <= time.monotonic() - started < 1.5  # though a byte came every 50 ms
    assert (out.sent, out.failed) == (0, 1)
    (warning,) = warnings_of(caplog)
    assert "no answer within 0.5 s" in warning


def test_an_endless_answer_body_is_not_read(
    hook: Callable[..., Hook], output: Callable[..., tuple[WebhookOutput, EventLog]]
) -> None:
    receiver = hook(endless_body)
    out, events = output([receiver.url], timeout=30.0)
    events.add("motion.start", 0, "Bench", score=0.1, box=[0, 0, 1, 1])
    events.add("motion.end", 0, "Bench", score=0.1, box=[0, 0, 1, 1], duration=1.0)
    assert out.wait_idle(5)
    assert (out.sent, out.failed) == (2, 0)


def test_only_the_capturing_process_sends_webhooks(hook: Callable[..., Hook], tmp_path: Path) -> None:
    receiver = hook()
    bus = f"nats://127.0.0.1:{closed_port()}"
    cameras = {"0": {"source": "testsrc:160x120@30"}}
    configured = settings([receiver.url], bus=bus, cameras=cameras, state_dir=str(tmp_path))
    web = Registry(configured, remote=True)  # bus mode's web worker
    try:
        assert web.outputs == [] and webhook_threads() == []
    finally:
        web.shutdown()
    capture = Registry(configured)  # `livecam capture`, as cli.py makes it
    try:
        (out,) = capture.outputs
        assert isinstance(out, WebhookOutput)
        event = capture.events.add("motion.start", 0, "Test pattern", score=0.1, box=[0, 0, 1, 1])
        assert receiver.wait_for(1)[0].id == event.id
    finally:
        capture.shutdown()
    assert webhook_threads() == []


def test_one_process_without_webhooks_has_no_output(tmp_path: Path) -> None:
    registry = Registry(load_settings(environ={}, overrides={"cameras": {}, "state_dir": str(tmp_path)}))
    assert registry.outputs == [] and webhook_threads() == []
    registry.shutdown()


def test_good_settings() -> None:
    environ = {
        "LIVECAM_CAMERAS": "0",
        "LIVECAM_WEBHOOK_URL": " http://a.example/x, https://u:p@b.example:8443/y?token=1,",
        "LIVECAM_WEBHOOK_SECRET": SECRET,
    }
    configured = load_settings(environ=environ)
    assert configured.webhook_url == ("http://a.example/x", "https://u:p@b.example:8443/y?token=1")
    assert configured.webhook_secret == SECRET
    from_file = load_settings(environ={}, overrides={"cameras": {}, "webhook_url": ["http://[::1]:9000/"]})
    assert from_file.webhook_url == ("http://[::1]:9000/",)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "webhook_url",
            "ftp://host/x",
            "LIVECAM_WEBHOOK_URL: 'ftp://host/***' is not an http:// or https:// URL",
        ),
        ("webhook_url", "host/x", "is not an http:// or https:// URL"),
        ("webhook_url", "http://", "names no valid host and port"),
        ("webhook_url", "http://host:99999/x", "names no valid host and port"),
        ("webhook_url", "http://host:0/x", "names no valid host and port"),
        ("webhook_url", "http://host:8o/x", "names no valid host and port"),
        ("webhook_url", "http://user:pa/ss@host/x", "http://user:***@host/*** names no valid host"),
        ("webhook_url", "http://user:pa#ss@host/x", "http://user:***@host/*** holds a '#'"),
        ("webhook_url", "http://host/a b", "holds a space or control character"),
        ("webhook_url", "http://host/a\tb", "holds a space or control character"),
        ("webhook_url", " , ", "LIVECAM_WEBHOOK_URL: names no URL"),
        ("webhook_url", "http://a/x,http://a/x", "http://a/*** is named twice"),
        ("webhook_url", ",".join(f"http://h{n}/" for n in range(17)), "at most 16 URLs, got 17"),
        ("webhook_secret", "short", "LIVECAM_WEBHOOK_SECRET: must be at least 8 characters"),
        ("webhook_secret", "   ", "LIVECAM_WEBHOOK_SECRET: must be a non-empty string"),
    ],
)
def test_bad_settings_are_one_line_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"LIVECAM_CAMERAS": "0", f"LIVECAM_{key.upper()}": value})
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    for secret in ("pa/ss", "pa#ss", "short"):
        assert secret not in text


@pytest.mark.parametrize(
    ("value", "message"),
    [(5, "webhook_url: must be a comma list or an array"), ([1], "webhook_url: 1 is not an http(s) URL")],
)
def test_bad_file_values_are_one_line_errors(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(environ={}, overrides={"cameras": {}, "webhook_url": value})
