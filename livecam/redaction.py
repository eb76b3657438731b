"""Hide camera credentials in anything livecam shows or logs, whatever the URL's shape.

Cameras carry passwords in a URL's userinfo (``rtsp://admin:secret@host``) and, on many
cheap IP cameras, in its query string (``?user=admin&pwd=secret``). Passwords hold any
character, brackets included, so no URL parser is trusted here: plain patterns find the
secrets in a URL or in any text that contains one (an error message, a log line).
"""

from __future__ import annotations

import re

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


def url_port(url: str) -> str | None:
    """The port a URL names, as written (None if it names none), found without a URL parser."""
    authority = url.partition("://")[2].rpartition("@")[2]  # after any userinfo, as above
    authority = re.split(r"[/?#]", authority, maxsplit=1)[0]
    if authority.startswith("["):
        rest = authority.partition("]")[2]
        return rest[1:] if rest.startswith(":") else None
    host, colon, port = authority.rpartition(":")
    return port if colon else None
