"""Who you are: the tokens, the login session, the throttle on wrong guesses, the session key.

Two optional secrets: the view token guards every "view" route; the control token guards
"control" routes (and, holding more power, lets its owner watch too). API clients send
``Authorization: Bearer TOKEN``, or HTTP Basic with the token as the password (any user
name), for clients that know no other way (Home Assistant, Motion, VLC, ffmpeg); browsers
log in once and carry a signed session cookie, so ``<img>`` streams need no token in their
URL. Each route declares which it needs
(``access.py``); a route that declares nothing is refused. Where the request comes from
(host, page, headers) is ``origin.py``'s question, asked before these.
"""

from __future__ import annotations

import binascii
import hmac
import logging
import secrets
import threading
import time
from base64 import b64decode
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from .access import ROLES, access_of, embeddable, public
from .appstate import get_registry
from .config import ConfigError, Settings
from .errors import json_error
from .state import write_atomically

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

THROTTLE = "livecam.throttle"  # this module's own app.extensions
FAILURES_ALLOWED = 5  # wrong credentials from one address within FAILURE_WINDOW
FAILURE_WINDOW = 300.0
SECRET_FILE = "secret_key"
# Longer than any token with a user name could need; a longer header is refused unread.
MAX_AUTHORIZATION = 4096
BEARER = 'Bearer realm="livecam"'
BASIC = 'Basic realm="livecam"'


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

    def judge(self, address: str, correct: bool) -> int:
        """Count a credential from ``address`` and say whether its answer may be given.

        One atomic step: a locked-out address gets no answer about its credential, and a
        parallel burst of guesses gets at most FAILURES_ALLOWED answers.

        :return: seconds the address must wait (0: answer it, right or wrong).
        """
        now = time.monotonic()
        with self._lock:
            if address in self._failures:  # every good request asks: keep no entry for it
                failures = self._recent(address, now)
                if len(failures) >= FAILURES_ALLOWED:
                    return max(1, int(FAILURE_WINDOW - (now - failures[0])) + 1)
            if not correct:
                self._recent(address, now).append(now)
                if len(self._failures) > 10000:
                    # A flood of addresses must not grow memory: forget the oldest ones, never all.
                    for stale in list(self._failures)[:1000]:
                        del self._failures[stale]
            return 0


def _matches(given: str, secret: str | None) -> bool:
    """Compare a credential with a secret in constant time."""
    return secret is not None and hmac.compare_digest(given.encode(), secret.encode())


def _settings() -> Settings:
    return get_registry().settings


def presented_token(header: str) -> str | None:
    """The token an Authorization header presents: ``Bearer TOKEN``, or ``Basic`` with the
    token as the password and any user name; None for another scheme.

    :raise ValueError: the header is malformed (too long, bad base64, no colon, not UTF-8).
    """
    if len(header) > MAX_AUTHORIZATION:
        raise ValueError("too long")
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() != "basic":
        return None
    try:
        decoded = b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text, or bytes not UTF-8
        raise ValueError("Basic credentials are not base64 of UTF-8 text") from None
    user, colon, password = decoded.partition(":")
    if not colon:
        raise ValueError("Basic credentials need user:password")
    return password


def _throttle() -> Throttle:
    return current_app.extensions[THROTTLE]


def _role_of(token: str) -> str | None:
    """The role a token grants: "control", "view", or None if it is wrong."""
    settings = _settings()
    if _matches(token, settings.control_token):
        return "control"
    if _matches(token, settings.view_token):
        return "view"
    return None


def _proof(role: str) -> str:
    """A fingerprint of the role's current token: changing a token ends its sessions."""
    settings = _settings()
    token = settings.control_token if role == "control" else settings.view_token
    return hmac.new(current_app.secret_key.encode(), (token or "").encode(), "sha256").hexdigest()[:32]


def _session_role() -> str | None:
    """The role of a logged-in browser, if its session is still valid."""
    role = session.get("role")
    if role not in ("control", "view") or not hmac.compare_digest(session.get("proof", ""), _proof(role)):
        return None
    return role


def browser_may_control() -> bool:
    """Whether this browser may use "control" routes: no control token is set (a page that
    was shown has passed any view token), or its login session holds the control token.

    Only the session is read: an Authorization header is judged, and counted by the
    throttle, where a route needs it, so what a page shows never tells whether a guessed token is right.
    """
    return not _settings().control_token or _session_role() == "control"


def _needed(access: str) -> str | None:
    """The token a route's declared access calls for with the tokens set, or None for none."""
    return token_needed(_settings(), access)


def token_needed(settings: Settings, access: str) -> str | None:
    """The token a route declaring ``access`` calls for under ``settings``, or None for none."""
    if access == "control" and settings.control_token:
        return "control"
    if access in ("view", "control") and settings.view_token:
        return "view"
    return None


def _asks_for_basic() -> bool:
    """Whether a 401 should also offer Basic: a picture opened by a program, not by a page.

    A player, a recorder or a home-automation server opening a stream or snapshot URL (VLC,
    Motion, ffmpeg) asks for a user name and password only when challenged for them. A
    browser would instead pop up a password dialog: over the dashboard when a tile's login
    has ended, or for a JSON call. So JSON routes never offer Basic, and neither does a
    picture requested from a page (it names the page in Origin or Referer, or sends the
    Sec-Fetch headers browsers add); a browser opening a picture's URL itself asks for
    HTML and gets the login page.
    """
    endpoint = request.endpoint
    if endpoint is None or not embeddable(current_app, endpoint):
        return False
    headers = request.headers
    return not any(name in headers for name in ("Origin", "Referer", "Sec-Fetch-Mode", "Sec-Fetch-Dest"))


def _unauthorised(status: int) -> Response:
    """401 (no credentials) or 403 (wrong ones): a login page for browsers, JSON otherwise."""
    browser = "text/html" in request.headers.get("Accept", "") and "Authorization" not in request.headers
    if browser and request.method == "POST":
        # A dashboard form without JavaScript: log in (with a token that may switch), then back.
        return redirect(url_for("auth.login", next="/"), code=303)
    if status == 401 and browser:
        page = render_template("login.html", next=request.full_path.rstrip("?"), failed=False)
        return Response(page, status=401, headers={"WWW-Authenticate": BEARER})
    message = "credentials required" if status == 401 else "not allowed"
    response = json_error(status, message)
    if status == 401:
        if _asks_for_basic():
            # Basic first, on a line of its own: the scheme such a client can answer leads.
            response.headers.add("WWW-Authenticate", BASIC)
        response.headers.add("WWW-Authenticate", BEARER)
    return response


def check_request() -> Response | None:
    """Refuse a request to a route that declares no access, or lacking the token it needs."""
    endpoint = request.endpoint
    if endpoint is None:  # 404 and 405: let the routing error answer
        return None
    access = access_of(current_app, endpoint)
    if access not in ROLES:
        # Denied by default: a route that forgot to say who may use it is used by nobody.
        log.error("route %s declares no access: refused", endpoint)
        return json_error(403, "not allowed")
    needed = _needed(access)
    if needed is None:
        return None
    address = request.remote_addr or "?"
    header = request.headers.get("Authorization", "")
    if header:
        try:
            token = presented_token(header)
        except ValueError as error:
            # No token could be right in it: a client's mistake to tell, not a guess to count.
            return json_error(400, f"malformed Authorization header: {error}")
        role = _role_of(token) if token is not None else None
        wait = _throttle().judge(address, role is not None)
        if wait:
            # Decided with the count, so a locked-out guesser learns nothing from the answer.
            return json_error(429, "too many failed attempts; try again later", **{"Retry-After": str(wait)})
        if role is None:
            return _unauthorised(403)
    else:
        role = _session_role()
        if role is None:
            return _unauthorised(401)
    if needed == "control" and role != "control":
        return _unauthorised(403)
    return None


def _netloc(target: str) -> str:
    """The host part of a URL, or "?" (unsafe) when it cannot be parsed."""
    try:
        return urlsplit(target).netloc
    except ValueError:
        return "?"


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only, never another host."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        # Browsers drop tabs and newlines and read "\\" as "/": "/\t/evil.example" is "//evil".
        or any(ord(c) < 0x21 or c in "\\\x7f" for c in target)
        or _netloc(target)
    ):
        return url_for("dashboard.index")
    return request.script_root + target


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Response | str:
    """The login form; a right token sets the session cookie and goes back where it came from."""
    target = request.values.get("next")
    if request.method == "GET":
        return render_template("login.html", next=target, failed=False)
    address = request.remote_addr or "?"
    throttle = _throttle()
    role = _role_of(request.form.get("token", ""))
    wait = throttle.judge(address, role is not None)
    if wait:
        page = render_template("login.html", next=target, failed=True, wait=wait)
        return Response(page, status=429, headers={"Retry-After": str(wait)})
    if role is None:
        return Response(render_template("login.html", next=target, failed=True), status=403)
    session.clear()
    session["role"] = role
    session["proof"] = _proof(role)
    session.permanent = True
    log.info("login from %s (%s)", address, role)
    return redirect(_safe_next(target), code=303)


@bp.post("/logout")
@public
def logout() -> Response:
    """Forget the session."""
    session.clear()
    return redirect(url_for("auth.login"), code=303)


def check_session_key(settings: Settings) -> None:
    """Refuse bus mode with a token but no LIVECAM_SECRET_KEY: its logins would not hold.

    A login is a cookie signed with the session key, and in bus mode the next request may
    reach another worker or another web host. A key each one makes and keeps in its own
    state directory differs from host to host (and from worker to worker when they race to
    make it), so the cookie would be refused there. livecam cannot see the other hosts, so
    one worker on one host is refused too.

    :raise ConfigError: the key is missing.
    """
    if settings.bus and (settings.view_token or settings.control_token) and not settings.secret_key:
        raise ConfigError(
            "LIVECAM_SECRET_KEY: bus mode with a token needs it, the same on every web host, so that "
            "a login holds whichever worker answers (make one: python3 -c 'import secrets; "
            "print(secrets.token_hex(32))')"
        )


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


class SessionInterface(SecureCookieSessionInterface):
    """The signed cookie session, marked ``Secure`` whenever the request came over HTTPS."""

    def open_session(self, app: Flask, incoming: Request) -> SecureCookieSession | None:
        """The request's session; with no cookie, an empty one without building the signing
        serializer (most requests: streams opened by programs, a thousand viewers at once)."""
        if app.secret_key and not incoming.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, incoming)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure over HTTPS, straight or through a trusted proxy's X-Forwarded-Proto."""
        return request.scheme == "https" or super().get_cookie_secure(app)


def init_app(app: Flask) -> None:
    """Guard every route by its declared access, and set up the login session."""
    registry = get_registry(app)
    app.secret_key = secret_key(registry.settings.secret_key, registry.state_dir)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="livecam_session",
    )
    app.session_interface = SessionInterface()
    static = app.view_functions.get("static")
    if static is not None:
        # Flask's own route: livecam's stylesheet and script are for anyone.
        app.view_functions["static"] = public(lambda **kwargs: static(**kwargs))
    app.extensions[THROTTLE] = Throttle()
    app.register_blueprint(bp)
    app.before_request(check_request)
