"""Who may watch and who may switch: tokens, the login session, cross-site checks, headers.

Two optional secrets: the view token guards everything but the health check and the login
page; the control token guards start/stop/toggle (and, holding more power, lets its owner
watch too). API clients send ``Authorization: Bearer TOKEN``; browsers log in once and
carry a signed session cookie, so ``<img>`` streams need no token in their URL.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from .errors import json_error
from .state import write_atomically

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

PUBLIC = {"dashboard.healthz", "auth.login", "auth.logout", "static"}
CONTROL_ACTIONS = {"toggle", "start", "stop"}
FAILURES_ALLOWED = 5  # wrong credentials from one address within FAILURE_WINDOW
FAILURE_WINDOW = 300.0
SECRET_FILE = "secret_key"
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)


class Throttle:
    """Counts wrong credentials per client address and slows down the persistent ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(address, deque(maxlen=FAILURES_ALLOWED))
        while failures and now - failures[0] > FAILURE_WINDOW:
            failures.popleft()
        return failures

    def retry_after(self, address: str) -> int:
        """Seconds the address must wait before trying again; 0 when it may try now."""
        now = time.monotonic()
        with self._lock:
            if address not in self._failures:  # every good request asks: keep no entry for it
                return 0
            failures = self._recent(address, now)
            if len(failures) < FAILURES_ALLOWED:
                return 0
            return max(1, int(FAILURE_WINDOW - (now - failures[0])) + 1)

    def failed(self, address: str) -> None:
        """Record one wrong credential."""
        now = time.monotonic()
        with self._lock:
            self._recent(address, now).append(now)
            if len(self._failures) > 10000:
                # A flood of addresses must not grow memory: forget the oldest ones, never all.
                for stale in list(self._failures)[:1000]:
                    del self._failures[stale]


def _matches(given: str, secret: str | None) -> bool:
    """Compare a credential with a secret in constant time."""
    return secret is not None and hmac.compare_digest(given.encode(), secret.encode())


def _role_of(token: str) -> str | None:
    """The role a token grants: "control", "view", or None if it is wrong."""
    settings = current_app.extensions["livecam"].settings
    if _matches(token, settings.control_token):
        return "control"
    if _matches(token, settings.view_token):
        return "view"
    return None


def _proof(role: str) -> str:
    """A fingerprint of the role's current token: changing a token ends its sessions."""
    settings = current_app.extensions["livecam"].settings
    token = settings.control_token if role == "control" else settings.view_token
    return hmac.new(current_app.secret_key.encode(), (token or "").encode(), "sha256").hexdigest()[:32]


def _session_role() -> str | None:
    """The role of a logged-in browser, if its session is still valid."""
    role = session.get("role")
    if role not in ("control", "view") or not hmac.compare_digest(session.get("proof", ""), _proof(role)):
        return None
    return role


def _needed(endpoint: str) -> str | None:
    """The role a route needs, or None if it is open to anyone."""
    settings = current_app.extensions["livecam"].settings
    if endpoint in PUBLIC:
        return None
    if endpoint.rpartition(".")[2] in CONTROL_ACTIONS and settings.control_token:
        return "control"
    return "view" if settings.view_token else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _cross_site() -> bool:
    """Whether a browser sent this request from a page of another origin."""
    own = _origin(request.host_url)
    allowed = {own, *current_app.extensions["livecam"].settings.allow_origins}
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin:
        return _origin(origin) not in allowed
    # No Origin or Referer: not a browser page (curl, scripts), or one that hides them.
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def _unauthorised(status: int) -> Response:
    """401 (no credentials) or 403 (wrong ones): a login page for browsers, JSON otherwise."""
    browser = "text/html" in request.headers.get("Accept", "") and "Authorization" not in request.headers
    if browser and request.method == "POST":
        # A dashboard form without JavaScript: log in (with a token that may switch), then back.
        return redirect(url_for("auth.login", next="/"), code=303)
    if status == 401 and browser:
        page = render_template("login.html", next=request.full_path.rstrip("?"), failed=False)
        return Response(page, status=401, headers={"WWW-Authenticate": 'Bearer realm="livecam"'})
    message = "credentials required" if status == 401 else "not allowed"
    response = json_error(status, message)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="livecam"'
    return response


def check_request() -> Response | None:
    """Refuse a request that lacks the credentials or the origin its route needs."""
    endpoint = request.endpoint
    if endpoint is None:  # 404 and 405: let the routing error answer
        return None
    if request.method == "POST" and _cross_site():
        # A page elsewhere must not switch cameras through a logged-in browser.
        return json_error(403, "cross-site request refused")
    needed = _needed(endpoint)
    if needed is None:
        return None
    address = request.remote_addr or "?"
    header = request.headers.get("Authorization", "")
    if header:
        wait = current_app.extensions["livecam.throttle"].retry_after(address)
        if wait:
            # Checked before the token, so a locked-out guesser learns nothing from the answer.
            return json_error(429, "too many failed attempts; try again later", **{"Retry-After": str(wait)})
        scheme, _, token = header.partition(" ")
        role = _role_of(token.strip()) if scheme.lower() == "bearer" else None
        if role is None:
            return _refuse(address)
    else:
        role = _session_role()
        if role is None:
            return _unauthorised(401)
    if needed == "control" and role != "control":
        return _unauthorised(403)
    return None


def _refuse(address: str) -> Response:
    """Answer a wrong credential, counting it against the address."""
    current_app.extensions["livecam.throttle"].failed(address)
    return _unauthorised(403)


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only, never another host."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        # Browsers drop tabs and newlines and read "\\" as "/": "/\t/evil.example" is "//evil".
        or any(ord(c) < 0x21 or c in "\\\x7f" for c in target)
        or urlsplit(target).netloc
    ):
        return url_for("dashboard.index")
    return request.script_root + target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    """The login form; a right token sets the session cookie and goes back where it came from."""
    target = request.values.get("next")
    if request.method == "GET":
        return render_template("login.html", next=target, failed=False)
    address = request.remote_addr or "?"
    throttle: Throttle = current_app.extensions["livecam.throttle"]
    wait = throttle.retry_after(address)
    if wait:
        page = render_template("login.html", next=target, failed=True, wait=wait)
        return Response(page, status=429, headers={"Retry-After": str(wait)})
    role = _role_of(request.form.get("token", ""))
    if role is None:
        throttle.failed(address)
        return Response(render_template("login.html", next=target, failed=True), status=403)
    session.clear()
    session["role"] = role
    session["proof"] = _proof(role)
    session.permanent = True
    log.info("login from %s (%s)", address, role)
    return redirect(_safe_next(target), code=303)


@bp.post("/logout")
def logout() -> Response:
    """Forget the session."""
    session.clear()
    return redirect(url_for("auth.login"), code=303)


def add_headers(response: Response) -> Response:
    """Security headers on every answer; a content policy on pages."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    if request.endpoint and request.endpoint.rpartition(".")[2] in ("stream", "snapshot"):
        origin = request.headers.get("Origin")
        if origin and _origin(origin) in current_app.extensions["livecam"].settings.allow_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        else:
            # Pictures of people's homes are not for other sites' pages to embed.
            response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


def secret_key(configured: str | None, state_dir: Path) -> str:
    """The session signing key: configured, else made once and kept in the state directory."""
    if configured:
        return configured
    path = state_dir / SECRET_FILE
    try:
        existing = path.read_text(encoding="utf-8").strip()
        if len(existing) >= 32:
            return existing
    except OSError:
        pass
    key = secrets.token_hex(32)
    if not write_atomically(path, key + "\n", mode=0o600):
        log.warning("session key kept in memory only: logins end when livecam restarts")
    return key


def init_app(app: Flask) -> None:
    """Guard every route, add the headers, and set up the login session."""
    registry = app.extensions["livecam"]
    settings = registry.settings
    app.secret_key = secret_key(settings.secret_key, registry.state_dir)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="livecam_session",
    )
    app.extensions["livecam.throttle"] = Throttle()
    app.register_blueprint(bp)
    app.before_request(check_request)
    app.after_request(add_headers)
