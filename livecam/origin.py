"""Where a request comes from: the host it names, the page that sent it, the headers of the answer.

Requests naming a host livecam does not answer to are refused before anything else, so a web
page cannot reach livecam through a name it rebinds to this machine. A switch sent from
another site's page is refused, so that page cannot use a logged-in browser; and pictures are
embeddable only by the sites in LIVECAM_ALLOW_ORIGINS. Who the client is (tokens, the login)
is ``auth.py``'s question, asked after these.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request

from .access import ROLES, access_of, embeddable
from .appstate import get_registry
from .config import MAX_REQUEST_BODY, Settings
from .errors import json_error

log = logging.getLogger(__name__)

HOSTS = "livecam.hosts"  # this module's own app.extensions
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
EMBEDDING_VARY = ("Origin", "Referer")  # what a picture's embedding headers depend on
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)


def _settings() -> Settings:
    return get_registry().settings


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


def check_request() -> Response | None:
    """Refuse a request with a body too large, to an untrusted host, or a switch from another site."""
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
    # 404 and 405 are left to the routing error, and a route that declares no access to
    # auth.py, which refuses it whoever sends it.
    if endpoint is None or access_of(current_app, endpoint) not in ROLES:
        return None
    if request.method == "POST" and _cross_site():
        # A page elsewhere must not switch cameras through a logged-in browser.
        return json_error(403, "cross-site request refused")
    return None


def embedding(page: str | None, origin_sent: bool, allowed: tuple[str, ...]) -> dict[str, str]:
    """The headers saying which pages may embed a picture asked for from ``page`` (None: no page
    named itself); ``origin_sent``: the request carried an Origin header (fetch())."""
    if page is not None and page in allowed:
        headers = {"Cross-Origin-Resource-Policy": "cross-origin"}
        if origin_sent:
            headers["Access-Control-Allow-Origin"] = page
        return headers
    # Pictures of people's homes are not for other sites' pages to embed.
    return {"Cross-Origin-Resource-Policy": "same-origin"}


def add_headers(response: Response) -> Response:
    """Security headers on every answer; a content policy on pages."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    if embeddable(current_app, request.endpoint or ""):
        # An <img> sends no Origin: the embedding page is known from its Referer (and Origin
        # for fetch()). Sec-Fetch-Site "same-origin" needs no permission.
        page = _page_origin()
        sent = bool(request.headers.get("Origin"))
        response.headers.update(embedding(page, sent, _settings().allow_origins))
        response.vary.update(EMBEDDING_VARY)
    return response


def init_app(app: Flask) -> None:
    """Check where every request comes from, before ``auth.init_app``'s check of who sent it."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BODY
    app.extensions[HOSTS] = TrustedHosts(get_registry(app).settings)
    app.before_request(check_request)
    app.after_request(add_headers)
