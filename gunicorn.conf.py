"""gunicorn settings for livecam: one gthread worker whose threads serve the viewers.

Serve with ``gunicorn -c gunicorn.conf.py wsgi:app``. The configuration is validated here,
in the master, so a bad setting stops startup with one line before any worker boots.
"""

import logging
import signal
import sys
import threading

from livecam.auth import check_session_key
from livecam.config import ConfigError, load_settings, unguarded

try:
    # Discovery is the worker's business; here only the settings' validity matters.
    _settings = load_settings(discover=lambda: [])
    check_session_key(_settings)
except ConfigError as exc:
    sys.exit(f"livecam: configuration error: {exc}")

try:
    # The worker checks, as it is imported, that this gunicorn has the internals it uses.
    import livecam.worker  # noqa: F401
except ImportError as exc:
    if exc.name != "gunicorn":
        raise
    sys.exit(f"livecam: {exc}")

wsgi_app = "wsgi:app"
bind = [_settings.bind]
# livecam's gthread worker commits a thread only to a request that has fully arrived, so slow
# clients cannot take the threads viewers and buttons need, and a plain HTTP viewer gives its
# thread back once its stream is handed to the sender (see livecam/worker.py). ``threads`` is
# the most at once (streams written by their thread hold one each): they are started when
# requests wait for one, and end after a few seconds idle.
worker_class = "livecam.worker.ThreadWorker"
# Connections at once, those still sending their request included (gunicorn's default is
# 1000); near the limit the worker closes the ones that have waited longest for a request.
worker_connections = 4096
# One worker captures every camera itself; in bus mode (LIVECAM_BUS) the workers capture
# nothing and any number of them serve viewers from the frame bus.
workers = _settings.workers
threads = _settings.threads
# Streams never finish on their own; the worker's SIGTERM hook below ends them, so a short
# grace period is enough for every camera to release its source.
graceful_timeout = 5
timeout = 30
keepalive = 5
# gunicorn's control socket can add workers at run time, which a camera cannot survive; it
# would also be one shared path for every gunicorn on the machine.
control_socket_disable = True
# Capture threads must start in the worker: threads do not survive a fork.
preload_app = False


def on_starting(server):
    """Refuse setups livecam cannot serve correctly, with one clear line."""
    if server.cfg.workers != 1 and not _settings.bus:
        sys.exit(
            f"livecam: refusing to start with {server.cfg.workers} workers: a camera can be "
            "opened by one process only, so livecam runs exactly one worker (raise threads instead, "
            "or serve from a frame bus: LIVECAM_BUS)"
        )
    if server.cfg.worker_class_str != worker_class:
        sys.exit(
            f"livecam: refusing the {server.cfg.worker_class_str} worker: streams need livecam's "
            f"own {worker_class}, a gthread worker that slow clients cannot starve"
        )


def when_ready(server):
    """Warn loudly when others may reach livecam with nobody's token required."""
    where = unguarded(_settings, server.cfg.bind)
    if where:
        server.log.warning(
            "livecam: %s with NO access control: anyone who can reach it can watch and switch "
            "every camera, and add cameras. Set LIVECAM_VIEW_TOKEN and LIVECAM_CONTROL_TOKEN.",
            where,
        )


def post_fork(server, worker):
    """Send livecam's log lines to gunicorn's error log."""
    logger = logging.getLogger("livecam")
    logger.handlers = logging.getLogger("gunicorn.error").handlers
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _registry(worker):
    app = getattr(worker, "wsgi", None)
    return getattr(app, "extensions", {}).get("livecam")


def post_worker_init(worker):
    """On SIGTERM, also stop the cameras at once so open streams end and the worker can exit."""
    registry = _registry(worker)
    graceful = signal.getsignal(signal.SIGTERM)

    def handle_term(sig, frame):
        graceful(sig, frame)
        if registry is not None:
            threading.Thread(target=registry.shutdown, name="livecam-shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, handle_term)


def worker_int(worker):
    """SIGINT/SIGQUIT: start releasing every camera; worker_exit waits for it to finish."""
    registry = _registry(worker)
    if registry is not None:
        # Not in the signal handler itself: a second signal would interrupt it mid-shutdown.
        threading.Thread(target=registry.shutdown, name="livecam-shutdown", daemon=True).start()


def worker_exit(server, worker):
    """Release every camera before the worker process ends."""
    registry = _registry(worker)
    if registry is not None:
        registry.shutdown()
