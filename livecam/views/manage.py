"""Cameras managed at run time: added, tried, changed and removed, with no restart.

Each answer is built by the app generation that knows the camera's routes (see
``create_app``): a camera added by this request has its Blueprint in the next generation.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import cv2
from flask import Blueprint, Response, jsonify

from ..access import requires
from ..appstate import get_registry
from ..catalog import runtime_source
from ..config import ConfigError
from ..errors import json_error
from ..frames import encode
from ..source_base import SourceError
from ..sources import open_source
from .camera import MANAGE_ERRORS, json_table, record, refused

bp = Blueprint("manage", __name__)

PROBE_BUDGET = 10.0  # seconds a probe may take in all, open and first frames
PROBE_FRAMES = 10  # frames read to tell the rate, within about a second
MAX_PROBES = 4  # probes at once: each opens a camera
PROBE_WIDTH = 320  # the preview snapshot's width


@bp.post("/cameras")
@requires("control")
def add() -> Response:
    """Add a camera (the keys of a ``[cameras.ID]`` table; ``id`` optional, else the lowest
    free one). It is switched on unless ``autostart`` is false; 201 with its record.

    In bus mode, a capture process adds it: the one ``capture`` names (its owner name, or
    its host), else the only one.

    :raise 400: a bad key or value, or a source a run-time camera may not read.
    :raise 409: the id or the device is another camera's.
    :raise 503: in bus mode, no capture process answered.
    """
    registry = get_registry()
    table = json_table()
    if "id" not in table:
        cam_id = None
    elif (
        isinstance(raw_id := table.pop("id"), int) and not isinstance(raw_id, bool) and 0 <= raw_id <= 999_999
    ):
        cam_id = raw_id
    else:
        # A string is refused, not read as a number: say what was sent in JSON's terms.
        got = f"the string {raw_id[:20]!r}" if isinstance(raw_id, str) else json.dumps(raw_id)[:20]
        return json_error(400, f"id: expected a JSON number (a whole number from 0 to 999999), got {got}")
    capture = table.pop("capture", None)
    if capture is not None and not (
        isinstance(capture, str) and 0 < len(capture) <= 200 and capture.isprintable()
    ):
        return json_error(400, "capture: expected the name of a capture process (host, or host:pid)")
    try:
        camera = registry.create(table, cam_id, capture)
    except MANAGE_ERRORS as exc:
        return refused(exc)
    data = record(camera)
    response = jsonify(data)
    response.status_code = 201
    response.headers["Location"] = data["urls"]["status"]
    return response


_probing = threading.BoundedSemaphore(MAX_PROBES)


@bp.post("/cameras/probe")
@requires("control")
def probe() -> Response:
    """Open a source without adding it: what it is (kind, size, fps, whether its JPEGs pass
    through) and a snapshot, or why not, within PROBE_BUDGET seconds.

    A source that cannot be read is still an answer: ``ok`` false and the reason.

    :raise 400: no source, or one a run-time camera may not read.
    """
    settings = get_registry().settings
    try:
        spec = runtime_source(json_table(), settings.media_dir)  # checked as an add's
    except ConfigError as exc:
        return json_error(400, str(exc))
    if not _probing.acquire(blocking=False):
        return json_error(503, "too many probes at once: try again shortly", **{"Retry-After": "2"})
    try:
        found = _probe(spec, settings.max_frame_mb * 2**20)
    finally:
        _probing.release()
    return jsonify({"ok": "error" not in found, **found})


def _probe(spec: Any, max_frame: int) -> dict[str, Any]:
    """Open, read a few frames and release ``spec`` in a thread of its own, bounded in time."""
    stop, result = threading.Event(), {"error": f"no answer within {PROBE_BUDGET:g} s"}

    def run() -> None:
        try:
            source = open_source(spec, "probe", stop, max_frame=max_frame)
        except SourceError as exc:
            result.update(error=str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - whatever fails, the asker hears why
            result.update(error=f"cannot open: {exc}")
            return
        try:
            result.clear()
            result.update(_read(source, stop))
        finally:
            source.release()

    thread = threading.Thread(target=run, name="livecam-probe", daemon=True)
    thread.start()
    thread.join(PROBE_BUDGET)
    stop.set()  # a source still opening gives up; the thread releases what it opened
    if thread.is_alive():
        return {"error": f"no answer within {PROBE_BUDGET:g} s"}
    return dict(result)


def _read(source: Any, stop: threading.Event) -> dict[str, Any]:
    """What a few frames of an open source tell."""
    started, grabbed = time.monotonic(), 0
    image = None
    while grabbed < PROBE_FRAMES and time.monotonic() - started < 1.5 and not stop.is_set():
        if not source.grab():
            break
        grabbed += 1
        if image is None:
            image = source.retrieve()
    if image is None:
        return {"error": "the source opened but sent no picture"}
    elapsed = time.monotonic() - started
    fps = round((grabbed - 1) / elapsed, 1) if grabbed > 1 and elapsed > 0 else None
    small = cv2.resize(image, (PROBE_WIDTH, max(1, image.shape[0] * PROBE_WIDTH // image.shape[1])))
    jpeg = encode(small, 70) or b""
    return {
        "kind": "jpeg" if source.compressed else "video",
        "width": source.width or image.shape[1],
        "height": source.height or image.shape[0],
        "fps": fps,
        "passthrough": bool(source.compressed),
        "snapshot": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode(),
    }
