"""Who may watch and who may switch: tokens, the login session, hosts, cross-site checks, headers.

Each route declares its access where it is declared: ``@public``, ``@requires("view")`` or
``@requires("control")``; a route that declares nothing is refused. Two optional secrets: the
view token guards every "view" route; the control token guards "control" routes (and, holding
more power, lets its owner watch too). API clients send ``Authorization: Bearer TOKEN``;
browsers log in once and carry a signed session cookie, so ``<img>`` streams need no token in
their URL. Requests naming a host livecam does not answer to are refused before anything else,
so a web page cannot reach livecam through a name it rebinds to this machine.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
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
from flask.sessions import SecureCookieSessionInterface

from .appstate import get_registry
from .config import MAX_REQUEST_BODY, Settings
from .errors import json_error
from .state import write_atomically

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

THROTTLE, HOSTS = "livecam.throttle", "livecam.hosts"  # this module's own app.extensions
ACCESS = "livecam_access"  # the attribute a view function's access is declared in
EMBEDDABLE = "livecam_embeddable"
ROLES = ("public", "view", "control")
FAILURES_ALLOWED = 5  # wrong credentials from one address within FAILURE_WINDOW
FAILURE_WINDOW = 300.0
SECRET_FILE = "secret_key"
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)


View = TypeVar("View", bound=Callable[..., Any])


def requires(role: str, embeddable: bool = False) -> Callable[[View], View]:
    """Declare who may use a route: "view" (the view token) or "control" (the control token).

    ``embeddable``: its answer is a picture that the sites in LIVECAM_ALLOW_ORIGINS may embed.
    """
    if role not in ("view", "control"):
        raise ValueError(f"unknown role {role!r}")

    def declare(view: View) -> View:
        setattr(view, ACCESS, role)
        setattr(view, EMBEDDABLE, embeddable)
        return view

    return declare


def public(view: View) -> View:
    """Declare a route open to anyone, whatever the tokens."""
    setattr(view, ACCESS, "public")
    return view


def access_of(app: Flask, endpoint: str) -> str | None:
    """The access a route declared ("public", "view", "control"), or None if it declared none."""
    view = app.view_functions.get(endpoint)
    return getattr(view, ACCESS, None)


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


def _needed(access: str) -> str | None:
    """The token a route's declared access calls for with the tokens set, or None for none."""
    settings = _settings()
    if access == "control" and settings.control_token:
        return "control"
    if access in ("view", "control") and settings.view_token:
        return "view"
    return None


def _origin(url: str) -> str | None:
    """The origin (``scheme://host:port``) of a URL a client sent, or None if it is not one."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _page_origin() -> str | None:
    """The origin of the page a browser sent this request from, if it told (Origin, Referer)."""
    sent = request.headers.get("Origin") or request.headers.get("Referer")
    return _origin(sent) if sent else None


def _cross_site() -> bool:
    """Whether a browser sent this request from a page of another origin (or a mangled one)."""
    if request.headers.get("Origin") or request.headers.get("Referer"):
        return _page_origin() != _origin(request.host_url)
    # No Origin or Referer: not a browser page (curl, scripts), or one that hides them.
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def _absolute_target_host(target: str) -> str | None:
    """The host of an absolute-form request target (``GET http://host/path``), which wins over Host."""
    if not target.lower().startswith(("http://", "https://")):
        return None
    return target.partition("://")[2].split("/", 1)[0].rpartition("@")[2]


class TrustedHosts:
    """The host names livecam answers to: a page cannot reach it through a name it rebinds here.

    Any IP address is trusted (a browser's page at an IP address is that address's own origin,
    out of a rebinding attacker's reach), and so are ``localhost``, this machine's name, its
    ``.local`` name, the bind address and the names in LIVECAM_TRUSTED_HOSTS (``.example``
    for every subdomain, ``*`` for any).
    """

    def __init__(self, settings: Settings) -> None:
        machine = socket.gethostname().lower()
        bind_host = settings.bind.rpartition(":")[0].strip("[]").lower()
        self.names = {"localhost", machine, machine.split(".")[0] + ".local", bind_host}
        self.names.update(settings.trusted_hosts)
        self.any = "*" in self.names

    def allows(self, host: str) -> bool:
        """Whether a request's ``Host`` (as the client or the trusted proxy gave it) is trusted."""
        if self.any:
            return True
        name = host.lower()
        if name.startswith("["):
            name = name[1 : name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        name = name.rstrip(".")
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        if name in self.names or name.endswith(".localhost"):
            return True
        return any(t.startswith(".") and (name.endswith(t) or name == t[1:]) for t in self.names)


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
    """Refuse a request with a body too large, to an untrusted host, or lacking what its route needs."""
    if request.content_length is not None and request.content_length > MAX_REQUEST_BODY:
        # Refused unread, and the connection closed rather than drained.
        limit = MAX_REQUEST_BODY // 1024
        return json_error(413, f"request body too large (at most {limit} KB)", Connection="close")
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        return json_error(411, "a request body needs a Content-Length", Connection="close")
    hosts: TrustedHosts = current_app.extensions[HOSTS]
    target = _absolute_target_host(request.environ.get("RAW_URI", ""))
    # The Host header as sent (or as the trusted proxy gave it): werkzeug's own reading of an
    # odd one is "", which would name the wrong host in the answer.
    for host in (request.headers.get("Host") or request.host, target):
        if host is not None and not hosts.allows(host):
            shown = host[:100]
            log.warning("refused host %r: add it to LIVECAM_TRUSTED_HOSTS if it is yours", shown)
            return json_error(400, f"host {shown!r} is not trusted: add it to LIVECAM_TRUSTED_HOSTS")
    endpoint = request.endpoint
    if endpoint is None:  # 404 and 405: let the routing error answer
        return None
    access = access_of(current_app, endpoint)
    if access not in ROLES:
        # Denied by default: a route that forgot to say who may use it is used by nobody.
        log.error("route %s declares no access: refused", endpoint)
        return json_error(403, "not allowed")
    if request.method == "POST" and _cross_site():
        # A page elsewhere must not switch cameras through a logged-in browser.
        return json_error(403, "cross-site request refused")
    needed = _needed(access)
    if needed is None:
        return None
    address = request.remote_addr or "?"
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        role = _role_of(token.strip()) if scheme.lower() == "bearer" else None
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


def add_headers(response: Response) -> Response:
    """Security headers on every answer; a content policy on pages."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, EMBEDDABLE, False):
        # An <img> sends no Origin: the embedding page is known from its Referer (and Origin
        # for fetch()). Sec-Fetch-Site "same-origin" needs no permission.
        page = _page_origin()
        if page is not None and page in _settings().allow_origins:
            response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
            if request.headers.get("Origin"):
                response.headers["Access-Control-Allow-Origin"] = page
        else:
            # Pictures of people's homes are not for other sites' pages to embed.
            response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.vary.update(("Origin", "Referer"))
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


class SessionInterface(SecureCookieSessionInterface):
    """The signed cookie session, marked ``Secure`` whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure over HTTPS, straight or through a trusted proxy's X-Forwarded-Proto."""
        return request.scheme == "https" or super().get_cookie_secure(app)


def init_app(app: Flask) -> None:
    """Guard every route, add the headers, and set up the login session."""
    registry = get_registry(app)
    settings = registry.settings
    app.secret_key = secret_key(settings.secret_key, registry.state_dir)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="livecam_session",
        MAX_CONTENT_LENGTH=MAX_REQUEST_BODY,
    )
    app.session_interface = SessionInterface()
    static = app.view_functions.get("static")
    if static is not None:
        # Flask's own route: livecam's stylesheet and script are for anyone.
        app.view_functions["static"] = public(lambda **kwargs: static(**kwargs))
    app.extensions[THROTTLE] = Throttle()
    app.extensions[HOSTS] = TrustedHosts(settings)
    app.register_blueprint(bp)
    app.before_request(check_request)
    app.after_request(add_headers)
