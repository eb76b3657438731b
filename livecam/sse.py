"""Server-Sent Events (``text/event-stream``): the framing of one event, and nothing else.

A message is a few ``field: value`` lines ended by a blank line; a line starting with ``:`` is
a comment, which clients ignore (a keepalive). The data is JSON on one line: ``json.dumps``
escapes every line break, so nothing in an event (a camera's name, an error text) can end a
field or the message early. This module imports nothing from livecam.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

CONTENT_TYPE = "text/event-stream"
RETRY_MS = 2000  # how long a client waits before it reconnects after losing the stream
# The body's first bytes: the reconnection delay, so a client knows it before any event.
OPENING = b"retry: %d\n\n" % RETRY_MS
KEEPALIVE = b": keepalive\n\n"
# Seconds without anything sent before a keepalive: proxies keep the connection open
# (nginx's default proxy_read_timeout is 60 s) and a client that vanished fails a write.
KEEPALIVE_INTERVAL = 15.0


def message(kind: str, event_id: int, data: Mapping[str, Any]) -> bytes:
    """One event as a message: ``event:`` its type, ``id:`` its id, ``data:`` its JSON on one line.

    :raise ValueError: a type that would break the framing (empty, or holding a line break).
    """
    if not kind or any(c in kind for c in "\r\n"):
        raise ValueError(f"event type {kind!r} cannot be sent as an SSE event name")
    body = json.dumps(data, separators=(",", ":"))  # ASCII: every line break escaped
    return b"event: %s\nid: %d\ndata: %s\n\n" % (kind.encode(), event_id, body.encode())
