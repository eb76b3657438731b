"""livecam's gunicorn worker: when a request has arrived whole (see e2e/test_slow_clients.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import gunicorn
import pytest
from gunicorn.http.unreader import Unreader
from gunicorn.workers import gthread

from livecam.config import MAX_REQUEST_BODY
from livecam.worker import (
    MAX_REQUEST_HEAD,
    IncompatibleGunicorn,
    Pool,
    check_gunicorn,
    expects_continue,
    head_too_large,
    missing_internals,
    plain_get,
    request_arrived,
)


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.0\n\n", True),
        (b"POST /login HTTP/1.1\r\nContent-Length: 10\r\n\r\ntoken=", False),
        (b"POST /login HTTP/1.1\r\ncontent-length:10\r\n\r\ntoken=abcd", True),
        (b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_REQUEST_BODY + 1), True),  # refused unread
        (b"G" * (MAX_REQUEST_HEAD + 1), False),  # never whole: refused from the event loop
        (b"POST /login HTTP/1.1\r\nContent-Length: 0000000000000000005\r\n\r\ntok", False),  # 19 digits
        (b"POST /x HTTP/1.1\r\nContent-Length: " + b"9" * 30 + b"\r\n\r\n", True),  # refused unread
    ],
)
def test_a_request_has_arrived_when_its_head_and_small_body_have(data: bytes, whole: bool) -> None:
    assert request_arrived(data) is whole


def test_a_plain_get_is_read_with_its_target_version_and_headers() -> None:
    head = b"GET /cameras/1/stream.mjpg?profile=low HTTP/1.1\r\nHost: cam:8000\r\nUser-Agent:  VLC/3 \r\n\r\n"
    assert plain_get(head) == (
        "/cameras/1/stream.mjpg?profile=low",
        1,
        {"host": "cam:8000", "user-agent": "VLC/3"},
    )
    assert plain_get(b"GET / HTTP/1.0\r\n\r\n") == ("/", 0, {})


@pytest.mark.parametrize(
    "head",
    [
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",  # absolute form: its host wins, Flask checks it
        b"GET / HTTP/1.1\nHost: x\n\n",  # bare line feeds
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHOST: y\r\n\r\n",  # twice
        b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",  # pipelined
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",  # not whole
    ],
)
def test_anything_but_one_plain_get_is_left_to_gunicorns_parser(head: bytes) -> None:
    assert plain_get(head) is None


@pytest.mark.parametrize(
    "head",
    [
        b"GET /" + b"a" * 4094 + b" HTTP/1.1\r\n\r\n",  # gunicorn: 414
        b"GET / HTTP/1.1\r\n" + b"X-H: v\r\n" * 101 + b"\r\n",  # gunicorn: 431, too many
        b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 8190 + b"\r\n\r\n",  # gunicorn: 431, too long
        b"GET / HTTP/1.1\r\nHost: x\r\nSCRIPT_NAME: /cameras/0\r\n\r\n",  # read as the prefix
    ],
)
def test_a_head_beyond_gunicorns_limits_is_left_to_its_parser(head: bytes) -> None:
    assert plain_get(head) is None


@pytest.mark.parametrize(
    "line",
    [b"X: " + b" " * 65400 + b"\x01", b"X: " + b" \t" * 32000 + b"\x7f", b"X" * 65400 + b"\x01: v"],
)
def test_a_hostile_header_line_is_refused_in_time_linear_in_its_length(line: bytes) -> None:
    # A pattern that could match a run of spaces more than one way took 11 s on such a line,
    # in the worker's event loop; one way only, well under a millisecond.
    started = time.perf_counter()
    assert plain_get(b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n") is None
    assert time.perf_counter() - started < 1.0


def test_a_head_too_large_is_one_without_its_end_in_the_limit() -> None:
    assert head_too_large(b"G" * (MAX_REQUEST_HEAD + 1))
    assert not head_too_large(b"G" * MAX_REQUEST_HEAD)
    assert not head_too_large(b"GET / HTTP/1.1\r\n\r\n" + b"x" * MAX_REQUEST_HEAD)  # a body


def test_expect_100_continue_is_read_from_the_head_only() -> None:
    assert expects_continue(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert not expects_continue(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n")  # head not whole
    assert not expects_continue(b"POST / HTTP/1.1\r\nContent-Length: 22\r\n\r\n\nexpect: 100-continue")


class OlderThreadWorker(gthread.ThreadWorker):
    """gunicorn's real gthread worker, as a version without the hook livecam overrides."""

    finish_request = None


class OlderTConn(gthread.TConn):
    """gunicorn's real connection, as a version whose __init__ sets no ``data_ready``."""

    def __init__(self, cfg, sock, client, server) -> None:
        self.cfg, self.sock, self.client, self.server, self.parser = cfg, sock, client, server, None


class OlderUnreader(Unreader):
    """gunicorn's real unreader, as a version without ``take_buffered``."""

    take_buffered = None


def test_the_installed_gunicorn_has_every_internal_the_worker_uses() -> None:
    assert missing_internals() == []
    check_gunicorn()


def test_a_gunicorn_lacking_an_internal_is_refused_in_one_line_naming_it() -> None:
    assert missing_internals(worker=OlderThreadWorker) == ["gthread.ThreadWorker.finish_request"]
    assert missing_internals(conn=OlderTConn) == ["gthread.TConn.data_ready"]
    with pytest.raises(IncompatibleGunicorn) as refused:
        check_gunicorn(worker=OlderThreadWorker, unreader=OlderUnreader)
    message = str(refused.value)
    assert message == (
        f"livecam's worker needs gunicorn 27.x, found gunicorn {gunicorn.__version__}, which lacks "
        "gthread.ThreadWorker.finish_request, http.unreader.Unreader.take_buffered "
        "(pip install 'gunicorn>=27,<28')"
    )
    assert refused.value.name == "gunicorn"  # what gunicorn.conf.py turns into its one line


def _until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``check()`` holds within ``timeout`` seconds (looked at every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_pool_runs_work_and_hands_back_results_and_errors() -> None:
    pool = Pool(8)
    try:
        assert [pool.submit(pow, 2, n).result(5) for n in range(5)] == [1, 2, 4, 8, 16]
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(5)
    finally:
        pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(print)


def test_a_burst_of_work_that_never_blocks_is_done_by_the_core_threads() -> None:
    pool = Pool(100, core=2, grow_after=1.0)
    try:
        futures = [pool.submit(sum, range(2000)) for _ in range(500)]
        for _ in range(50):
            pool.tend()  # as the event loop does between events: no thread was stuck, none more
        assert all(future.result(10) == sum(range(2000)) for future in futures)
        assert pool.threads <= 2
    finally:
        pool.shutdown()


def test_work_waiting_behind_blocked_threads_gets_a_new_one() -> None:
    pool = Pool(4, core=1, grow_after=0.05)
    release = threading.Event()
    try:
        blocked = pool.submit(release.wait, 10)
        waiting = pool.submit(threading.get_ident)
        assert pool.threads == 1 and pool.waiting
        assert _until(lambda: (pool.tend(), pool.threads == 2)[1])  # after grow_after without progress
        assert waiting.result(5) != 0 and not blocked.done()
    finally:
        release.set()
        pool.shutdown()
    assert blocked.result(5) is True


def test_the_pool_never_grows_past_its_limit() -> None:
    pool = Pool(2, core=1, grow_after=0.0)
    release = threading.Event()
    try:
        futures = [pool.submit(release.wait, 10) for _ in range(5)]
        for _ in range(20):
            pool.tend()
        assert pool.threads == 2
    finally:
        release.set()
        pool.shutdown()
    assert all(future.result(5) for future in futures)


def test_idle_threads_end_and_the_pool_starts_again_on_new_work() -> None:
    pool = Pool(8, core=4, idle=0.1)
    try:
        assert all(future.result(5) == 3 for future in [pool.submit(len, "abc") for _ in range(20)])
        assert _until(lambda: pool.threads == 0)
        assert pool.submit(len, "ab").result(5) == 2
    finally:
        pool.shutdown()
    assert pool.threads == 0


def test_a_thread_the_system_refuses_is_not_counted_and_work_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread start refused (systemd's TasksMax, pids.max) leaves no phantom thread: the work
    waits for a later start, and with no thread at all its caller is told."""
    pool = Pool(2, core=2, grow_after=0.0)
    refuse = threading.Event()
    refuse.set()
    start = threading.Thread.start

    def limited(thread: threading.Thread) -> None:
        if refuse.is_set() and thread.name == "livecam-request":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", limited)
    try:
        failed = pool.submit(lambda: "never")
        with pytest.raises(RuntimeError, match="can't start new thread"):
            failed.result(1)
        assert pool.threads == 0
        refuse.clear()  # the system has threads again
        assert pool.submit(lambda: "ran").result(5) == "ran"
        assert pool.threads == 1
    finally:
        pool.shutdown()
