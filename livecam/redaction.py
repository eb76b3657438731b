"""Hide camera credentials in anything livecam shows or logs, whatever the URL's shape.

Cameras carry passwords in a URL's userinfo (``rtsp://admin:secret@host``) and, on many
cheap IP cameras, in its query string (``?user=admin&pwd=secret``). Passwords hold any
character, brackets included, so no URL parser is trusted here: plain patterns find the
secrets in a URL or in any text that contains one (an error message, a log line).
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote

MASK = "***"
# scheme://userinfo@ — up to the last "@" of the URL: a password may hold "@", "/", "?" or
# "#" unescaped, and cameras accept it; an "@" later in a path masks a little too much.
# Spaces and tabs count too: cameras accept them unescaped. A line's later "@" masks more.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\r\n]*)@")
# A query or fragment key: after "?", "&", ";", "#" or a space (cameras take unescaped ones,
# so "?user=admin pwd=x" is two pairs to them), up to its "=".
_KEY = re.compile(r"[?&;#\s]([^=?&;#\s]{1,64})\s*=")
# Keys that hold credentials once percent-decoded (pw%64 is pwd): user, pwd, loginpas,
# token, code, authcode...; and "u" and "p" alone.
_SECRET_KEY = re.compile(
    r"(?is).*(?:user|usr|login|account|pw|pass|psw|secret|token|auth|key|sig|cred).*|u|p|.*code"
)
# A secret value runs to the next "&", ";" or "#", over spaces (a password may hold one
# unescaped), to the end of the line or to ": ", the way livecam's messages put a reason
# after a URL (so a URL masked once keeps its reason when its message is masked again).
_VALUE = re.compile(r"(?:(?!: )[^&;#\r\n])*")


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match[2].partition(":")
    # Keep a user name for diagnosis; a bare token (https://TOKEN@host) is all secret.
    return f"{match[1]}{user}:{MASK}@" if colon else f"{match[1]}{MASK}@"


def _query(text: str) -> str:
    """``text`` with the value of every credential-looking query or fragment key masked."""
    pieces, done = [], 0
    for key in _KEY.finditer(text):
        if key.start() < done or not _SECRET_KEY.fullmatch(unquote(key[1]).strip()):
            continue  # inside a value already masked, or not a credential's key
        value = _VALUE.match(text, key.end())
        assert value is not None  # it matches the empty string at least
        pieces += [text[done : key.end()], MASK]
        done = value.end()
    return "".join(pieces) + text[done:]


def redact(text: str) -> str:
    """``text`` with every URL password, and every credential-looking query value, masked."""
    return _query(_USERINFO.sub(_userinfo, text))


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


def redact_endpoint(url: str) -> str:
    """``url`` with its credentials and its whole path and query masked: receivers such as
    Home Assistant's, Slack's and Discord's webhooks take their secret in the path."""
    shown = redact(url)  # first: a password holding "/" must not be taken for a host
    parts = split_url(shown)
    if parts is None or parts.rest in ("", "/"):
        return shown
    userinfo = "" if parts.userinfo is None else f"{parts.userinfo}@"
    return f"{parts.scheme}://{userinfo}{parts.host}/{MASK}"
