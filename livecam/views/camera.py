"""The camera Blueprint: registered once per camera as ``camera<ID>`` under ``/cameras/<ID>``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, redirect, request, url_for
from werkzeug.exceptions import BadRequest, NotFound

from .. import streams
from ..access import requires
from ..appstate import get_registry, newest
from ..config import FULL, ConfigError
from ..errors import json_error
from ..record import CameraBusy, CameraLike
from ..registry import CameraConflict
from .events import listed
from .streaming import headers_only, stream_response, too_many_viewers

bp = Blueprint("camera", __name__)

ACTIONS = ("status", "toggle", "start", "stop", "stream", "snapshot", "events")


def get_camera(camera_id: int) -> CameraLike:
    """The camera this Blueprint registration serves.

    :raise 404: no such camera (only reachable if the registry changed under the app).
    """
    camera = get_registry().get(camera_id)
    if camera is None:
        raise NotFound(f"no camera {camera_id}")
    return camera


def record(camera: CameraLike) -> dict[str, Any]:
    """The camera's JSON record with the URLs of its routes."""
    data = camera.status()
    data["urls"] = camera_urls(camera.id)
    return data


def camera_urls(camera_id: int) -> dict[str, str]:
    """The URLs of a camera's routes, by action.

    A camera added while this request was under way has its routes in the app's newest
    generation only: they are built there, for this request's host and sub-path.
    """
    if f"camera{camera_id}.status" in current_app.view_functions:
        return {action: url_for(f"camera{camera_id}.{action}") for action in ACTIONS}
    adapter = newest().create_url_adapter(request)
    assert adapter is not None
    return {action: adapter.build(f"camera{camera_id}.{action}") for action in ACTIONS}


def profile_of(camera: CameraLike, name: str) -> str:
    """``name`` if the camera has a stream profile of that name.

    :raise BadRequest: it has not; the message names the valid ones.
    """
    if name not in camera.config.profiles:
        valid = ", ".join(camera.config.profiles)
        raise BadRequest(f"camera {camera.id} has no stream profile {name[:32]!r}: expected one of {valid}")
    return name


def chosen_profile(camera: CameraLike) -> str:
    """The stream profile the request names (``?profile=``; none: full).

    :raise BadRequest: a profile the camera does not have.
    """
    return profile_of(camera, request.args.get("profile", FULL))


def _wants_html() -> bool:
    """Whether the client is a browser form (it names text/html) rather than an API client."""
    return any(mime == "text/html" and q > 0 for mime, q in request.accept_mimetypes)


def _switch(camera: CameraLike, change: Callable[[], None], form: bool = False) -> Response:
    """Apply ``change`` (a camera's start, stop or toggle) and remember the outcome.

    :param form: the dashboard's form button: a browser gets sent back to the dashboard.
    """
    try:
        get_registry().switch(change)
    except CameraBusy as exc:
        return json_error(503, str(exc), **{"Retry-After": "1"})
    if form and _wants_html():
        return redirect(url_for("dashboard.index", _anchor=f"camera-{camera.id}"), code=303)
    return jsonify(record(camera))


@bp.get("")
@requires("view")
def status(camera_id: int) -> Response:
    """The camera's JSON record."""
    return jsonify(record(get_camera(camera_id)))


@bp.post("/toggle")
@requires("control")
def toggle(camera_id: int) -> Response:
    """Flip the camera on or off."""
    camera = get_camera(camera_id)
    return _switch(camera, camera.toggle, form=True)


@bp.post("/start")
@requires("control")
def start(camera_id: int) -> Response:
    """Switch the camera on (idempotent)."""
    camera = get_camera(camera_id)
    return _switch(camera, camera.start)


@bp.post("/stop")
@requires("control")
def stop(camera_id: int) -> Response:
    """Switch the camera off (idempotent); its streams end."""
    camera = get_camera(camera_id)
    return _switch(camera, camera.stop)


@bp.get("/stream.mjpg", endpoint="stream")
@requires("view", embeddable=True)
def stream_mjpg(camera_id: int) -> Response:
    """The live MJPEG stream of a profile (``?profile=NAME``, default full).

    :raise 400: no such profile.
    :raise 503: the camera is off.
    """
    camera = get_camera(camera_id)
    profile = chosen_profile(camera)
    if not camera.is_on:
        return json_error(503, f"camera {camera_id} is off")
    if request.method == "HEAD":
        return headers_only()
    registry = get_registry()
    body = streams.open_stream(
        camera.feeds[profile],
        request.environ,
        registry.sender,
        registry.viewer_slots,
        registry.settings.send_timeout,
        camera.profile_sends[profile].sent,
    )
    if body is None:
        return too_many_viewers()
    return stream_response(body)


@bp.get("/snapshot.jpg")
@requires("view", embeddable=True)
def snapshot(camera_id: int) -> Response:
    """One fresh frame of a profile (``?profile=NAME``, default full) as a JPEG.

    :raise 400: no such profile.
    :raise 503: the camera is off or its source is failing.
    """
    camera = get_camera(camera_id)
    profile = chosen_profile(camera)
    if not camera.is_on:
        return json_error(503, f"camera {camera_id} is off")
    frame = camera.snapshot(profile=profile)
    if frame is None:
        reason = camera.error or "no frame arrived in time"
        return json_error(503, f"camera {camera_id} has no picture: {reason}", **{"Retry-After": "1"})
    response = Response(frame.jpeg, content_type="image/jpeg")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Disposition"] = f'inline; filename="camera{camera_id}.jpg"'
    response.headers["X-Timestamp"] = f"{frame.timestamp:.6f}"
    return response


@bp.get("/events")
@requires("view")
def events(camera_id: int) -> Response:
    """The camera's kept events as JSON, newest first (``?limit=N``, default 100), each with
    the URL of its picture while one is kept."""
    return listed(get_camera(camera_id).id)


@bp.get("/events/<int:event_id>.jpg")
@requires("view", embeddable=True)
def event_snapshot(camera_id: int, event_id: int) -> Response:
    """The picture of one of the camera's motion events (its strongest moment).

    :raise 404: no such event of this camera, or its picture is no longer kept.
    """
    registry = get_registry()
    event = registry.events.get(event_id)
    jpeg = registry.events.snapshot(event_id) if event is not None and event.camera == camera_id else None
    if jpeg is None:
        return json_error(404, f"camera {camera_id} has no kept picture of event {event_id}")
    response = Response(jpeg, content_type="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=86400"  # an event's picture never changes
    response.headers["Content-Disposition"] = f'inline; filename="camera{camera_id}-event{event_id}.jpg"'
    return response


# -- cameras changed at run time ------------------------------------------------------


def json_table() -> dict[str, Any]:
    """The request's JSON object.

    :raise BadRequest: the body is not a JSON object.
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object of camera settings (Content-Type: application/json)")
    return body


def refused(exc: Exception) -> Response:
    """The answer to a camera the registry would not take (in bus mode: its capture
    process, or none answered)."""
    if isinstance(exc, CameraConflict):
        return json_error(409, str(exc))
    if isinstance(exc, CameraBusy):
        return json_error(503, str(exc), **{"Retry-After": "2"})
    if isinstance(exc, KeyError):
        return json_error(404, "no such camera (any more)")
    return json_error(400, str(exc))


MANAGE_ERRORS = (ConfigError, CameraConflict, CameraBusy, KeyError)  # what refused() answers


@bp.patch("")
@requires("control")
def change(camera_id: int) -> Response:
    """Change some of the camera's settings (JSON; null removes a key): a name at once,
    anything else by reopening only this camera.

    :raise 400: a bad key or value. :raise 409: its device is another camera's.
    :raise 503: in bus mode, its capture process did not answer.
    """
    camera = get_camera(camera_id)
    changes = json_table()
    try:
        camera = get_registry().edit(camera.id, changes)
    except MANAGE_ERRORS as exc:
        return refused(exc)
    return jsonify(record(camera))


@bp.delete("")
@requires("control")
def remove(camera_id: int) -> Response:
    """Remove the camera: its streams end, its source is released; 204.

    :raise 503: in bus mode, its capture process did not answer.
    """
    try:
        get_registry().delete(get_camera(camera_id).id)
    except MANAGE_ERRORS as exc:
        return refused(exc)
    return Response(status=204)
