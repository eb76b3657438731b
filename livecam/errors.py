"""Every error as JSON ``{"error": "..."}`` with its proper status; never a bare 500 page."""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError, NotFound

from .appstate import get_registry

log = logging.getLogger(__name__)

# A path under a camera's routes, as its Blueprint is registered: /cameras/7, /cameras/7/...
CAMERA_PATH = re.compile(r"/cameras/(0|[1-9][0-9]{0,5})(?:/|$)")


def json_error(status: int, message: str, **headers: str) -> Response:
    """A JSON error response."""
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers)
    return response


def _http_error(exc: HTTPException) -> Response:
    """Turn an HTTP exception (404, 405...) into JSON, keeping its headers (Allow...)."""
    response = exc.get_response()
    body = jsonify(error=_missing_camera(exc) or exc.description or exc.name)
    response.set_data(body.get_data())
    response.content_type = "application/json"
    return response


def _missing_camera(exc: HTTPException) -> str | None:
    """``no camera ID`` for a path of a camera that does not exist (it has no routes, so no
    view says it), as a view says it of one removed under it; else None."""
    if not isinstance(exc, NotFound) or request.url_rule is not None:
        return None
    match = CAMERA_PATH.match(request.path)
    if match is None or get_registry().get(int(match[1])) is not None:
        return None
    return f"no camera {match[1]}"


def _unexpected(exc: Exception) -> Response:
    """Log an unexpected failure and answer a JSON 500 that gives nothing away."""
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    log.exception("unhandled error")
    return _http_error(InternalServerError())


def init_app(app: Flask) -> None:
    """Register the JSON error handlers."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
