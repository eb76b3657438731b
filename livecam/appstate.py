"""livecam's state in a Flask app: kept in ``app.extensions``, reached through typed accessors.

Nothing is global: two apps in one process (tests) never share a camera.
"""

from __future__ import annotations

from flask import Flask, current_app

from .registry import Registry

KEY = "livecam"


def init_app(app: Flask, registry: Registry) -> None:
    """Keep the app's registry."""
    app.extensions[KEY] = registry


def get_registry(app: Flask | None = None) -> Registry:
    """The cameras of the current app (or of ``app``)."""
    return (app or current_app).extensions[KEY]
