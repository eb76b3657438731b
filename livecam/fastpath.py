"""A plain request for a camera's stream, opened from the worker's event loop: no request
thread, no gunicorn parser, no Flask.

A thousand viewers opening a stream at once each cost a request thread's turn, gunicorn's
parser and Flask's dispatch, over a millisecond of the one core Python runs on: the last
of them waited over a second for its first frame. Most such requests need no decision
beyond what is checked here: a GET of a camera's stream that anyone may watch (the route
exists and declares view access, no token is needed), from a program rather than a page
(no Origin, Referer or Sec-Fetch-*), to a trusted host, with no body, for a profile the
camera has, while it is on and the sender has a place. Those are handed to the same sender,
under the same stream policy, with the same headers as the Flask route would send (a test
compares them). Anything else, or any doubt, is left to Flask: every refusal, every error,
every token is still decided there, in one place.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from flask import Flask

from .access import access_of, embeddable
from .appstate import get_registry, newest
from .auth import token_needed
from .config import FULL
from .cursor import Cursor
from .mjpeg import CONTENT_TYPE, STREAM_HEADERS
from .origin import EMBEDDING_VARY, HOSTS, SECURITY_HEADERS, TrustedHosts, embedding
from .sender import Viewer

# Headers whose presence calls for a decision made in Flask: credentials (judged and counted
# there), a page's origin (which pages may embed the picture), a body, a protocol change, and
# the scheme a trusted proxy names (gunicorn refuses contradicting ones).
FOR_FLASK = frozenset(
    ("authorization", "origin", "referer", "content-length", "transfer-encoding", "expect", "upgrade")
    + ("x-forwarded-proto", "x-forwarded-protocol", "x-forwarded-ssl")
)
_PROFILE_QUERY = re.compile(r"profile=([A-Za-z0-9_.-]{1,64})")


@dataclass(frozen=True)
class Opened:
    """A stream opened for a plain request: the app's header lines to send after the status
    line and the server's own, then ``start(sock)`` hands the connection to the sender; or
    ``abandon()`` if the answer could not be sent."""

    headers: bytes
    start: Callable[[socket.socket], None]
    abandon: Callable[[], None]


def _stream_headers() -> bytes:
    """The header lines the Flask route's answer carries, from the same tables."""
    headers = dict(STREAM_HEADERS)
    headers["Content-Type"] = CONTENT_TYPE
    headers.update(SECURITY_HEADERS)
    headers.update(embedding(None, False, ()))
    headers["Vary"] = ", ".join(EMBEDDING_VARY)
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")


class PlainStreams:
    """Opens the plain stream requests of one app (every generation of it)."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._registry = get_registry(app)
        self._hosts: TrustedHosts = app.extensions[HOSTS]
        self._headers = _stream_headers()
        self._routes: tuple[Flask | None, dict[str, int]] = (None, {})

    def _paths(self) -> dict[str, int]:
        """The stream paths of the newest generation, by camera id (built again after a change)."""
        generation = newest(self._app)
        built, paths = self._routes
        if built is not generation:
            paths = {}
            for rule in generation.url_map.iter_rules():
                camera_id = (rule.defaults or {}).get("camera_id")
                if (
                    rule.endpoint == f"camera{camera_id}.stream"
                    and embeddable(generation, rule.endpoint)
                    and access_of(generation, rule.endpoint) == "view"
                ):
                    paths[rule.rule] = camera_id
            self._routes = (generation, paths)
        return paths

    def open(self, target: str, headers: dict[str, str], chunked: bool) -> Opened | None:
        """Open the stream a GET of ``target`` with ``headers`` (lower-case names) asks for,
        if it needs no decision made in Flask; None leaves the request to Flask. ``chunked``:
        the body is framed in chunks (HTTP/1.1)."""
        settings = self._registry.settings
        if token_needed(settings, "view") is not None or not FOR_FLASK.isdisjoint(headers):
            return None
        if any(name.startswith("sec-fetch-") for name in headers):
            return None
        if settings.proxy_hops and any(name.startswith("x-forwarded-") for name in headers):
            return None  # the host to check is the proxy's word (and port), read in Flask
        host = headers.get("host")
        if not host or not self._hosts.allows(host):
            return None
        path, _, query = target.partition("?")
        profile = FULL
        if query:
            match = _PROFILE_QUERY.fullmatch(query)
            if match is None:
                return None
            profile = match[1]
        camera_id = self._paths().get(path)
        camera = self._registry.get(camera_id) if camera_id is not None else None
        if camera is None or profile not in camera.config.profiles or not camera.is_on:
            return None
        broadcaster = camera.feeds[profile]
        sent = camera.profile_sends[profile].sent
        sender = self._registry.sender
        if not sender.reserve():
            return None
        watching = ExitStack()
        try:
            watching.enter_context(broadcaster.watching())
        except BaseException:
            sender.unreserve()
            raise

        def start(sock: socket.socket) -> None:
            # The sender gives the place back, and ends the watching, when it lets go.
            sender.add(Viewer(sock, Cursor(broadcaster), chunked, sent, ended=watching.close))

        def abandon() -> None:
            watching.close()
            sender.unreserve()

        return Opened(self._headers, start, abandon)
