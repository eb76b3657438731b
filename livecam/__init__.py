"""livecam: live MJPEG streams from several cameras, served by Flask."""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import appstate, auth, errors, hotplug, metrics, origin
from .config import load_settings
from .registry import Registry
from .views import camera, dashboard, events, manage, streaming

__all__ = ["create_app"]


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, the camera registry, one camera Blueprint per camera.

    ``test_config`` keys in upper case are Flask settings; lower-case keys override livecam
    settings (``cameras``, ``view_token``...) after the file and the environment.
    """
    test_config = dict(test_config or {})
    flask_config = {k: v for k, v in test_config.items() if k.isupper()}
    overrides = {k: v for k, v in test_config.items() if not k.isupper()}
    logger = logging.getLogger(__name__)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)

    settings = load_settings(overrides=overrides)
    auth.check_session_key(settings)  # before any camera or connection starts
    # With a frame bus, this is a web worker: its cameras are captured by `livecam capture`.
    registry = Registry(settings, remote=settings.bus is not None)
    if registry.settings.discovered and all(c.config.source.kind == "testsrc" for c in registry):
        logger.warning("no camera configured and no V4L2 capture device found: serving a test pattern")
    app = _generation(registry, flask_config)
    lock = threading.Lock()
    # The newest generation's WSGI callable, called through one that stays app.wsgi_app: what
    # wraps app.wsgi_app (livecam's gunicorn worker: Connection: close, a stream handed to the
    # sender) wraps every generation, not the first one alone.
    serving = app.wsgi_app

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        return serving(environ, start_response)

    app.wsgi_app = dispatch  # type: ignore[method-assign]

    def rebuild() -> None:
        """A camera comes or went: build the app's next generation and swap it in at once."""
        nonlocal serving
        with lock:
            new = _generation(registry, flask_config)
            new.extensions = app.extensions  # one registry, throttle, metrics for all generations
            appstate.set_generation(app, new)
            serving = new.wsgi_app

    registry.listen_routes(rebuild)
    registry.restore()
    hotplug.start(registry)  # zero configuration, one process: webcams plugged in later join
    # Release devices at interpreter exit too (the dev server); gunicorn's hooks do it sooner.
    ref = weakref.ref(registry)
    atexit.register(lambda: (r := ref()) is not None and r.shutdown())
    return app


def _generation(registry: Registry, flask_config: Mapping[str, Any]) -> Flask:
    """One generation of the app: hooks and Blueprints, one per camera the registry has now.

    Flask refuses a Blueprint once an app has served a request, so a camera added at run time
    gets a new generation built beside the running one. The registry and everything it runs
    (cameras, streams, the sender) belong to no generation: swapping one interrupts nothing,
    and a request under way finishes on the generation that took it.
    """
    app = Flask(__name__)
    app.json.sort_keys = False  # keep records in their documented order
    app.config.update(flask_config)
    appstate.init_app(app, registry)
    errors.init_app(app)
    # Where a request comes from is checked before who sent it: a request to a host or from a
    # page refused is never counted as a wrong guess.
    origin.init_app(app)
    auth.init_app(app)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(manage.bp)
    streaming.init_app(app)
    metrics.init_app(app, registry)
    for cam_id in registry.routed():
        # One Blueprint object, registered once per camera under its own name and prefix.
        app.register_blueprint(
            camera.bp,
            name=f"camera{cam_id}",
            url_prefix=f"/cameras/{cam_id}",
            url_defaults={"camera_id": cam_id},
        )
    hops = registry.settings.proxy_hops
    if hops:
        # Trust X-Forwarded-For/Proto/Host/Port/Prefix only from the proxies really there, so
        # every URL livecam builds is right under the proxy's host and sub-path.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
    appstate.set_generation(app, app)
    return app
