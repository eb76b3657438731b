"""livecam's gunicorn worker: when a request has arrived whole (see e2e/test_slow_clients.py)."""

from __future__ import annotations

import gunicorn
import pytest
from gunicorn.http.unreader import Unreader
from gunicorn.workers import gthread

from livecam.config import MAX_REQUEST_BODY
from livecam.worker import (
    MAX_REQUEST_HEAD,
    IncompatibleGunicorn,
    check_gunicorn,
    expects_continue,
    head_too_large,
    missing_internals,
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
