"""The dashboard page, the camera list and the health check."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, jsonify, render_template, request, url_for
from werkzeug.exceptions import BadRequest, NotFound

from .. import streams
from ..access import public, requires
from ..appstate import get_registry
from ..auth import browser_may_control
from ..config import FULL
from ..errors import json_error
from ..integers import parse_int
from .camera import profile_of, record
from .streaming import headers_only, stream_response, too_many_viewers

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@requires("view")
def index() -> str:
    """Every camera with its picture, state and on/off button.

    With JavaScript every tile in view plays live through one multiplexed stream (see
    dashboard.js). Without it the first camera on streams and the others show a snapshot:
    each MJPEG <img> holds one of the six connections an HTTP/1.1 browser opens to a site.

    A browser that may control sees the controls that add, change and remove cameras (in
    bus mode too: a capture process makes the change); they need JavaScript.
    """
    registry = get_registry()
    records = [record(camera) for camera in registry]
    focus = next((r["id"] for r in records if r["state"] != "off"), None)
    # Where to log in, when there is something to log in for (to watch, or only to switch).
    login = None
    if registry.settings.view_token or registry.settings.control_token:
        login = url_for("auth.login", next=request.full_path.rstrip("?"))
    manage = browser_may_control()
    return render_template("dashboard.html", cameras=records, focus=focus, login=login, manage=manage)


@bp.get("/cameras")
@requires("view")
def cameras() -> Response:
    """Every camera's JSON record."""
    return jsonify([record(camera) for camera in get_registry()])


MAX_TRACKS = 64  # cameras in one multiplexed stream


def _tracks(text: str) -> list[tuple[int, str]]:
    """Parse ``cameras=0:preview,3:full`` (no profile: full) into (camera, profile) pairs.

    :raise BadRequest: malformed, repeated, or too many.
    :raise NotFound: a camera that does not exist.
    """
    registry = get_registry()
    entries = [item.strip() for item in text.split(",") if item.strip()]
    if len(entries) > MAX_TRACKS:
        raise BadRequest(f"cameras: at most {MAX_TRACKS} in one stream")
    chosen: list[tuple[int, str]] = []
    for entry in entries:
        raw_id, _, profile = entry.partition(":")
        cam_id = parse_int(raw_id, 6)
        if cam_id is None:
            raise BadRequest(f"cameras: expected ID or ID:PROFILE items, got {entry[:40]!r}")
        camera = registry.get(cam_id)
        if camera is None:
            raise NotFound(f"no camera {cam_id}")
        profile = profile_of(camera, profile or FULL)
        if (camera.id, profile) in chosen:
            raise BadRequest(f"cameras: {camera.id}:{profile} is named twice")
        chosen.append((camera.id, profile))
    if not chosen:
        raise BadRequest("cameras: name at least one camera, as ID or ID:PROFILE")
    return chosen


@bp.get("/streams.mjpg")
@requires("view", embeddable=True)
def multiplexed() -> Response:
    """Several cameras' streams in one response (``?cameras=0:preview,3:full``): the
    dashboard's way to keep every tile live on one HTTP/1.1 connection.

    Each part carries ``X-Camera`` and ``X-Profile``; cameras that are off are left out, and
    one that stops leaves the stream. Each camera counts it as one viewer of that profile.

    :raise 400: a malformed list or an unknown profile. :raise 404: an unknown camera.
    :raise 503: none of the cameras is on, or no viewer slot is left.
    """
    registry = get_registry()
    chosen = _tracks(request.args.get("cameras", ""))
    tracks = []
    for cam_id, profile in chosen:
        camera = registry.get(cam_id)
        if camera is not None and camera.is_on:
            tracks.append(
                streams.Track(cam_id, profile, camera.feeds[profile], camera.profile_sends[profile].sent)
            )
    if not tracks:
        return json_error(503, "none of these cameras is on")
    if request.method == "HEAD":
        return headers_only()
    body = streams.open_multiplexed(
        tracks, request.environ, registry.viewer_slots, registry.settings.send_timeout
    )
    if body is None:
        return too_many_viewers()
    return stream_response(body)


@bp.get("/healthz")
@public
def healthz() -> Response:
    """Answer 200 while the app is up, with a count of cameras by state."""
    registry = get_registry()
    states: dict[str, int] = {}
    for camera in registry:
        states[camera.state] = states.get(camera.state, 0) + 1
    slots, sender = registry.viewer_slots, registry.sender
    # Streams that keep a request thread, and those the sender owns alone (livecam's worker);
    # event streams (/events) take the same places, and are counted apart.
    (threads, subscribed), (owned, subscribers) = slots.census(), sender.census()
    return jsonify(
        status="ok",
        cameras=states,
        streams=threads + owned,
        event_streams=subscribed + subscribers,
        max_streams=slots.capacity + sender.capacity,
    )


@bp.get("/openapi.yaml")
@requires("view")
def openapi() -> Response:
    """The OpenAPI document describing every route, with its base URL under any sub-path."""
    with current_app.open_resource("openapi.yaml") as handle:
        document = handle.read()
    # JSON strings are YAML strings: the prefix a proxy set cannot break the document.
    server = json.dumps(request.script_root or "/").encode()
    return Response(document + b"servers:\n  - url: " + server + b"\n", content_type="application/yaml")
