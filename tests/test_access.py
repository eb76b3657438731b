"""Each route's declared access: the table of who may use what, and denial by default."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from helpers import call
from livecam.access import access_of, embeddable, public, requires

VIEW, CONTROL = "view-secret-123", "control-secret-456"
CAMERAS = {"0": {"source": "testsrc:32x24@10", "autostart": True}}


@pytest.fixture
def secured(make_app: Callable[..., Flask]) -> Flask:
    return make_app({"view_token": VIEW, "control_token": CONTROL, "cameras": CAMERAS})


def test_switches_and_changes_need_control_and_only_health_and_login_are_public(secured: Flask) -> None:
    declared = {rule.endpoint: access_of(secured, rule.endpoint) for rule in secured.url_map.iter_rules()}
    assert {e for e, a in declared.items() if a == "control"} == {
        "camera0.toggle",
        "camera0.start",
        "camera0.stop",
        "camera0.change",
        "camera0.remove",
        "manage.add",
        "manage.probe",
    }
    assert {e for e, a in declared.items() if a == "public"} == {
        "dashboard.healthz",
        "auth.login",
        "auth.logout",
        "static",
    }


def test_a_route_that_declares_no_access_is_refused(make_app: Callable[..., Flask]) -> None:
    app = make_app({"cameras": CAMERAS})  # no token at all: everything declared is open
    app.add_url_rule("/forgotten", "forgotten", lambda: "secret", methods=["GET", "POST"])
    client = app.test_client()
    assert call(client, "GET", "/forgotten").status_code == 403
    assert call(client, "POST", "/forgotten").status_code == 403
    assert call(client, "GET", "/cameras").status_code == 200


def test_only_pictures_are_embeddable(secured: Flask) -> None:
    declared = {rule.endpoint for rule in secured.url_map.iter_rules() if embeddable(secured, rule.endpoint)}
    assert declared == {
        "camera0.snapshot",
        "camera0.stream",
        "camera0.event_snapshot",
        "dashboard.multiplexed",
    }


def test_declarations_name_a_known_role() -> None:
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        requires("admin")
    view = public(requires("view")(lambda: "x"))  # the last declaration wins
    app = Flask(__name__)
    app.add_url_rule("/x", "x", view)
    assert (access_of(app, "x"), access_of(app, "nowhere")) == ("public", None)
