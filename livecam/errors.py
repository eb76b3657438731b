"""Every error as JSON ``{"error": "..."}`` with its proper status; never a bare 500 page."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)


def json_error(status: int, message: str, **headers: str) -> Response:
    """A JSON error response."""
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers)
    return response


def _http_error(exc: HTTPException) -> Response:
    """Turn an HTTP exception (404, 405...) into JSON, keeping its headers (Allow...)."""
    response = exc.get_response()
    body = jsonify(error=exc.description or exc.name)
    response.set_data(body.get_data())
    response.content_type = "application/json"
    return response


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
