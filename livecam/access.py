"""Who may use a route, declared where the route is declared: ``@public`` or ``@requires``.

A route that declares nothing is refused (see ``auth.py``): access is denied by default, so a
route that forgot to say is used by nobody. A declaration may also say that the route's answer
is a picture other sites may embed (see ``origin.py``). Both modules read the declarations
here, and neither needs the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask

ACCESS = "livecam_access"  # the attribute a view function's access is declared in
EMBEDDABLE = "livecam_embeddable"
ROLES = ("public", "view", "control")

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


def embeddable(app: Flask, endpoint: str) -> bool:
    """Whether a route declared its answer a picture that allowed sites may embed."""
    view = app.view_functions.get(endpoint)
    return getattr(view, EMBEDDABLE, False)
