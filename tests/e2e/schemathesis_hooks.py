"""schemathesis hooks for the fuzzing run (SCHEMATHESIS_HOOKS): bodies stay on this machine."""

from __future__ import annotations

from typing import Any

import schemathesis

LOOPBACK = "http://127.0.0.1:9/cam.mjpg"  # the discard port: nothing listens, refused at once


@schemathesis.hook
def map_body(_context: Any, body: Any) -> Any:
    """A camera source that is a URL goes to a closed loopback port, and a camera added by
    fuzzing starts off: never a connection beyond this machine, never a crowd of busy cameras.
    An ignored area gets its corners in order (the one rule JSON Schema cannot say). A value
    of the wrong type is left as drawn: a body meant to be refused must stay refused."""
    if isinstance(body, dict):
        source = body.get("source")
        if isinstance(source, str) and "://" in source:
            body["source"] = LOOPBACK
        if "source" in body and isinstance(body.get("autostart", False), bool):
            body["autostart"] = False  # an autostart of the wrong type is left for a 400
        motion = body.get("motion")
        areas = motion.get("ignore") if isinstance(motion, dict) else None
        if isinstance(areas, list) and all(_box(area) for area in areas):
            motion["ignore"] = [_ordered(area) for area in areas if _ordered(area)]
    return body


def _box(area: Any) -> bool:
    """Whether ``area`` has the schema's shape: four numbers from 0 to 1."""
    return (
        isinstance(area, list)
        and len(area) == 4
        and all(isinstance(n, int | float) and not isinstance(n, bool) and 0 <= n <= 1 for n in area)
    )


def _ordered(area: list[float]) -> list[float] | None:
    """[x0, y0, x1, y1] with x0 < x1 and y0 < y1, or None for an area of no size."""
    x0, x1 = sorted((area[0], area[2]))
    y0, y1 = sorted((area[1], area[3]))
    return [x0, y0, x1, y1] if x0 < x1 and y0 < y1 else None
