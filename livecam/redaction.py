"""Hide camera credentials in anything livecam shows or logs, whatever the URL's shape.

Cameras carry passwords in a URL's userinfo (``rtsp://admin:secret@host``) and, on many
cheap IP cameras, in its query string (``?user=admin&pwd=secret``). Passwords hold any
character, brackets included, so no URL parser is trusted here: plain patterns find the
secrets in a URL or in any text that contains one (an error message, a log line).
"""

from __future__ import annotations

import re
from typing import NamedTuple

MASK = "***"
# scheme://userinfo@ — up to the last "@" of the URL: a password may hold "@", "/", "?" or
# "#" unescaped, and cameras accept it; an "@" later in a path masks a little too much.
# Spaces and tabs count too: cameras accept them unescaped. A line's later "@" masks more.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\r\n]*)@")
# A query or fragment value whose key looks like a credential (user, pwd, loginpas, token...).
_QUERY = re.compile(
    r"(?i)([?&;#])((?:[a-z0-9_.\-]*)(?:user|usr|login|account|pw|pass|psw|secret|token|auth|key|sig|cred)"
    r"[a-z0-9_.\-]*|u|p)=([^&;#\s]*)"
)


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match[2].partition(":")
    # Keep a user name for diagnosis; a bare token (https://TOKEN@host) is all secret.
    return f"{match[1]}{user}:{MASK}@" if colon else f"{match[1]}{MASK}@"


def redact(text: str) -> str:
    """``text`` with every URL password, and every credential-looking query value, masked."""
    text = _USERINFO.sub(_userinfo, text)
    return _QUERY.sub(lambda m: f"{m[1]}{m[2]}={MASK}", text)


class UrlParts(NamedTuple):
    """A URL cut into the pieces that matter for credentials, each as written."""

    scheme: str
    userinfo: str | None  # None when the URL has no "@" before its host
    host: str  # the host and any port: "cam:554", "[::1]:8080"
    rest: str  # the path, query and fragment, from their first "/", "?" or "#"


def split_url(url: str) -> UrlParts | None:
    """Cut ``url`` where FFmpeg (av_url_split) and VLC cut it; None if it has no "://".

    The host part ends at the first "/", "?" or "#" after "://", and the userinfo at the last
    "@" before that: a password may hold "@", "[" or ":" as typed, not "/", "?" or "#"
    (config.py refuses those, since no reader can tell them from a path).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    return UrlParts(scheme, userinfo if at else None, host, rest[end:])


def url_port(url: str) -> str | None:
    """The port a URL names, as written (None if it names none), found without a URL parser."""
    parts = split_url(url)
    if parts is None:
        return None
    if parts.host.startswith("["):
        after = parts.host.partition("]")[2]
        return after[1:] if after.startswith(":") else None
    _, colon, port = parts.host.rpartition(":")
    return port if colon else None
