"""livecam's state in a Flask app: kept in ``app.extensions``, reached through typed accessors.

Nothing is global: two apps in one process (tests) never share a camera.
"""

from __future__ import annotations

from flask import Flask, current_app

from .registry import Registry

KEY = "livecam"
GENERATION = "livecam.generation"  # the app generation serving new requests (see create_app)


def init_app(app: Flask, registry: Registry) -> None:
    """Keep the app's registry."""
    app.extensions[KEY] = registry


def get_registry(app: Flask | None = None) -> Registry:
    """The cameras of the current app (or of ``app``)."""
    return (app or current_app).extensions[KEY]


def set_generation(app: Flask, generation: Flask) -> None:
    """Note the generation of ``app`` that serves new requests."""
    app.extensions[GENERATION] = generation


def newest(app: Flask | None = None) -> Flask:
    """The app generation serving new requests: the one that knows every camera's routes."""
    return (app or current_app).extensions[GENERATION]
