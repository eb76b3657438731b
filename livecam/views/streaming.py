"""A stream's answer, whatever it carries (MJPEG or events): its headers, the 503 when no place
is left, and its place given back when the answer fails after its view."""

from __future__ import annotations

from flask import Flask, Response, g, request

from .. import streams
from ..errors import json_error
from ..mjpeg import CONTENT_TYPE

_OPENED = "livecam_stream"  # the flask.g attribute naming the stream body a request opened


def too_many_viewers() -> Response:
    """The answer to a stream beyond what livecam serves at once."""
    return json_error(503, "too many viewers: livecam serves no more streams now", **{"Retry-After": "5"})


def headers_only(content_type: str = CONTENT_TYPE) -> Response:
    """A stream's answer to HEAD: no body to stream, so no viewer, thread or place to hold;
    and no Content-Length, which a GET of an endless stream would not have either."""
    return Response(iter(()), content_type=content_type, headers=streams.headers(request.environ))


def stream_response(body: streams.Held, content_type: str = CONTENT_TYPE) -> Response:
    """The 200 answer carrying a stream ``body`` that holds its place."""
    setattr(g, _OPENED, body)
    headers = streams.headers(request.environ)
    return Response(body, content_type=content_type, headers=headers, direct_passthrough=True)


def close_unsent_stream(error: BaseException | None) -> None:
    """Give back the place of a stream whose answer failed after its view (a hook raised)."""
    body = g.pop(_OPENED, None)
    # The failure's traceback keeps the discarded response alive for as long as anything
    # (a log handler) keeps the exception: without this its place would be held as long.
    if body is not None and error is not None:
        body.close()


def init_app(app: Flask) -> None:
    """Close the body of every stream whose answer failed after its view."""
    app.teardown_request(close_unsent_stream)
