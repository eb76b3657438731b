"""What livecam noticed, over HTTP: the recent events as JSON, each with its picture's URL.

The camera Blueprint serves one camera's events (``/cameras/ID/events``) and their pictures;
this Blueprint serves every camera's (``/events/recent``) and the live stream of events.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from werkzeug.exceptions import BadRequest

from ..access import requires
from ..appstate import get_registry
from ..events import Event
from ..integers import parse_int

bp = Blueprint("events", __name__)

MAX_LISTED = 1000  # events in one answer


def event_json(event: Event, picture: bool) -> dict[str, Any]:
    """An event as JSON, with the URL of its picture while one is kept (else null)."""
    data = event.json()
    data["snapshot"] = url_for(f"camera{event.camera}.event_snapshot", event_id=event.id) if picture else None
    return data


def listed(camera: int | None) -> Response:
    """The kept events (of one camera, or all), newest first; ``?limit=N`` (default 100).

    :raise BadRequest: a limit that is not a whole number from 1 to 1000.
    """
    text = request.args.get("limit", "100")
    limit = parse_int(text, 4)
    if limit is None or not 1 <= limit <= MAX_LISTED:
        raise BadRequest(f"limit: expected a whole number from 1 to {MAX_LISTED}, got {text[:20]!r}")
    log = get_registry().events
    known = {c.id for c in get_registry()}
    events = [e for e in log.newest(camera, limit) if e.camera in known]
    return jsonify([event_json(e, log.snapshot(e.id) is not None) for e in events])


@bp.get("/events/recent")
@requires("view")
def recent() -> Response:
    """Every camera's kept events as JSON, newest first (``?limit=N``, default 100)."""
    return listed(None)
