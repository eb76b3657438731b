"""The dashboard page, the camera list and the health check."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, jsonify, render_template, request, url_for

from ..appstate import get_registry
from ..security import public, requires
from .camera import record

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@requires("view")
def index() -> str:
    """Every camera with its picture, state and on/off button; the first one on streams live.

    Only one camera streams: each stream holds one of the six connections an HTTP/1.1
    browser opens to a site, and the page needs some for its buttons (see dashboard.js).
    """
    registry = get_registry()
    records = [record(camera) for camera in registry]
    focus = next((r["id"] for r in records if r["state"] != "off"), None)
    # Where to log in, when there is something to log in for (to watch, or only to switch).
    login = None
    if registry.settings.view_token or registry.settings.control_token:
        login = url_for("auth.login", next=request.full_path.rstrip("?"))
    return render_template("dashboard.html", cameras=records, focus=focus, login=login)


@bp.get("/cameras")
@requires("view")
def cameras() -> Response:
    """Every camera's JSON record."""
    return jsonify([record(camera) for camera in get_registry()])


@bp.get("/healthz")
@public
def healthz() -> Response:
    """Answer 200 while the app is up, with a count of cameras by state."""
    registry = get_registry()
    states: dict[str, int] = {}
    for camera in registry:
        states[camera.state] = states.get(camera.state, 0) + 1
    slots = registry.viewer_slots
    return jsonify(status="ok", cameras=states, streams=slots.taken, max_streams=slots.capacity)


@bp.get("/openapi.yaml")
@requires("view")
def openapi() -> Response:
    """The OpenAPI document describing every route, with its base URL under any sub-path."""
    with current_app.open_resource("openapi.yaml") as handle:
        document = handle.read()
    # JSON strings are YAML strings: the prefix a proxy set cannot break the document.
    server = json.dumps(request.script_root or "/").encode()
    return Response(document + b"servers:\n  - url: " + server + b"\n", content_type="application/yaml")
