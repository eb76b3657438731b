"""Integers written by the outside world: settings, query parameters, camera headers, files.

``int()`` accepts far more than the number a person or a camera means: Unicode digits
(``int("٣") == 3``), signs, spaces and underscores (``int(" +1_0 ") == 10``); and
``str.isdigit()``, the usual guard, passes ``"²"``, which ``int()`` then refuses with a
ValueError (a 500 where a 400 was due). Every integer from outside is parsed here instead:
ASCII digits and nothing else.
"""

from __future__ import annotations


def parse_int(text: str | bytes, max_digits: int = 18) -> int | None:
    """The integer ``text`` writes in ASCII digits alone (1 to ``max_digits`` of them), else None."""
    # isascii() first: for str, isdigit() alone is true of "²" and "٣".
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None
