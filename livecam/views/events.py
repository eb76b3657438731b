"""What livecam noticed, over HTTP: the recent events as JSON, each with its picture's URL, and
the live stream of them as Server-Sent Events.

The camera Blueprint serves one camera's events (``/cameras/ID/events``) and their pictures;
this Blueprint serves every camera's (``/events/recent``) and the live stream (``/events``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from werkzeug.exceptions import BadRequest, NotFound

from .. import sse, streams
from ..access import requires
from ..appstate import get_registry
from ..errors import json_error
from ..events import Event, EventLog
from ..integers import parse_int
from .streaming import headers_only, stream_response, too_many_viewers

bp = Blueprint("events", __name__)

MAX_LISTED = 1000  # events in one answer
ID_DIGITS = 18  # an event id: microseconds since the epoch, 16 digits for centuries yet


def event_json(event: Event, picture: bool, url: Callable[..., str] = url_for) -> dict[str, Any]:
    """An event as JSON, with the URL of its picture while one is kept (else null); ``url``
    builds it (``url_for``, or a request's own builder outside the request)."""
    data = event.json()
    data["snapshot"] = url(f"camera{event.camera}.event_snapshot", event_id=event.id) if picture else None
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


def _cameras(text: str | None) -> frozenset[int]:
    """The cameras ``?cameras=0,3`` names; every camera when absent.

    :raise BadRequest: not a comma list of camera ids. :raise NotFound: an unknown camera.
    """
    known = frozenset(camera.id for camera in get_registry())
    if text is None:
        return known
    chosen = set()
    for item in text.split(","):
        cam_id = parse_int(item.strip(), 6)
        if cam_id is None:
            raise BadRequest(f"cameras: expected a comma list of camera ids, got {text[:40]!r}")
        if cam_id not in known:
            raise NotFound(f"no camera {cam_id}")
        chosen.add(cam_id)
    return frozenset(chosen)


def _since(log: EventLog) -> int:
    """The last event the client has: ``Last-Event-ID`` (an EventSource reconnecting), else
    ``?since=ID``; neither: the newest now, so only new events come. An id from the future
    (a clock set back) counts as the newest, so that new events are not held back for it.

    :raise BadRequest: an id that is not a whole number.
    """
    for name, text in (
        ("Last-Event-ID", request.headers.get("Last-Event-ID")),
        ("since", request.args.get("since")),
    ):
        if text:  # an EventSource that has had no event sends none; an empty one is none too
            event_id = parse_int(text.strip(), ID_DIGITS)
            if event_id is None:
                raise BadRequest(f"{name}: expected an event id (a whole number), got {text[:40]!r}")
            return min(event_id, log.last_id)
    return log.last_id


def framer(log: EventLog, cameras: Collection[int]) -> Callable[[Event], bytes | None]:
    """How this request's subscriber sees an event, callable from any thread: an SSE message
    whose picture URL is built as this request would build it (under its proxy's sub-path),
    or None for an event of another camera."""
    adapter = current_app.create_url_adapter(request)

    def url(endpoint: str, **values: Any) -> str:
        return adapter.build(endpoint, values)

    def frame(event: Event) -> bytes | None:
        if event.camera not in cameras:
            return None
        return sse.message(event.type, event.id, event_json(event, log.snapshot(event.id) is not None, url))

    return frame


@bp.get("/events")
@requires("view")
def stream() -> Response:
    """Every camera's events as they happen, as Server-Sent Events: one message per event
    (``event:`` its type, ``id:`` its id, ``data:`` its JSON), a keepalive comment every 15 s.

    ``Last-Event-ID`` (sent by a reconnecting EventSource) or ``?since=ID`` first replays the
    kept events after that id, oldest first; ``?cameras=0,3`` keeps to those cameras.

    :raise 400: a malformed camera list or id. :raise 404: an unknown camera.
    :raise 503: no place left for another stream, or livecam is stopping.
    """
    registry = get_registry()
    log = registry.events
    cameras = _cameras(request.args.get("cameras"))
    since = _since(log)
    if request.method == "HEAD":
        return headers_only(sse.CONTENT_TYPE)
    if log.closed:
        return json_error(503, "livecam is stopping", **{"Retry-After": "5"})
    body = streams.open_events(
        log,
        since,
        framer(log, cameras),
        request.environ,
        registry.sender,
        registry.viewer_slots,
        registry.settings.send_timeout,
    )
    if body is None:
        return too_many_viewers()
    return stream_response(body, sse.CONTENT_TYPE)
