"""Where a request comes from: trusted hosts, cross-site switches, embedding, headers, bodies."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from flask import Flask

from helpers import call

CONTROL = "control-secret-456"
CAMERAS = {"0": {"source": "testsrc:32x24@10", "autostart": True}}


@pytest.fixture
def secured(make_app: Callable[..., Flask]) -> Flask:
    return make_app({"view_token": "view-secret-123", "control_token": CONTROL, "cameras": CAMERAS})


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "http://evil.example"}, 403),
        ({"Referer": "http://evil.example/page"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "http://localhost"}, 200),  # the dashboard itself
        ({}, 200),  # curl and scripts send no Origin
    ],
)
def test_cross_site_switches_are_refused(secured: Flask, headers: dict[str, str], status: int) -> None:
    client = secured.test_client()
    assert call(client, "POST", "/cameras/0/start", CONTROL, **headers).status_code == status


def test_streams_are_not_embeddable_elsewhere_unless_allowed(make_app: Callable[..., Flask]) -> None:
    client = make_app({"cameras": CAMERAS}).test_client()
    response = call(client, "GET", "/cameras/0/snapshot.jpg", Origin="https://other.example")
    assert response.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert "Access-Control-Allow-Origin" not in response.headers
    allowed = make_app({"cameras": CAMERAS, "allow_origins": "https://other.example"}).test_client()
    response = call(allowed, "GET", "/cameras/0/snapshot.jpg", Origin="https://other.example")
    assert response.headers["Access-Control-Allow-Origin"] == "https://other.example"
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


@pytest.mark.parametrize(
    ("headers", "policy"),
    [
        # An <img> on the allowed site: no Origin, the page in the Referer.
        ({"Referer": "https://other.example/wall", "Sec-Fetch-Site": "cross-site"}, "cross-origin"),
        ({"Referer": "https://elsewhere.example/", "Sec-Fetch-Site": "cross-site"}, "same-origin"),
        ({"Sec-Fetch-Site": "cross-site"}, "same-origin"),  # a page that hides where it is
        ({"Referer": "http://[", "Sec-Fetch-Site": "cross-site"}, "same-origin"),
        ({"Referer": "http://localhost/", "Sec-Fetch-Site": "same-origin"}, "same-origin"),
    ],
)
def test_embedding_is_decided_from_what_an_img_sends(
    make_app: Callable[..., Flask], headers: dict[str, str], policy: str
) -> None:
    client = make_app({"cameras": CAMERAS, "allow_origins": "https://other.example"}).test_client()
    for path in ("/cameras/0/snapshot.jpg", "/cameras/0/stream.mjpg"):
        response = call(client, "GET", path, **headers)
        assert response.status_code == 200
        assert response.headers["Cross-Origin-Resource-Policy"] == policy
        assert "Access-Control-Allow-Origin" not in response.headers


def test_a_site_allowed_to_embed_may_not_switch(make_app: Callable[..., Flask]) -> None:
    client = make_app({"cameras": CAMERAS, "allow_origins": "https://other.example"}).test_client()
    for header in ("Origin", "Referer"):
        response = call(client, "POST", "/cameras/0/stop", **{header: "https://other.example"})
        assert response.status_code == 403
    assert client.get("/cameras/0").json["state"] != "off"


@pytest.mark.parametrize("value", ["http://[", "http://host:99999", "javascript:x", "null", "\x00"])
def test_mangled_origins_are_simply_not_this_site(client, value: str) -> None:
    for header in ("Origin", "Referer"):
        assert call(client, "POST", "/cameras/0/start", **{header: value}).status_code == 403
        stream = call(client, "GET", "/cameras/0/stream.mjpg", **{header: value})
        assert stream.status_code == 200
        assert stream.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert client.get("/healthz").json["streams"] == 0


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "192.168.1.20", "cams.localhost"],
)
def test_local_names_and_addresses_are_trusted_hosts(client, host: str) -> None:
    assert client.get("/cameras", headers={"Host": host}).status_code == 200


def test_this_machines_own_names_are_trusted(client) -> None:
    name = socket.gethostname()
    for host in (name, f"{name.split('.')[0]}.local:8000"):
        assert client.get("/cameras", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil"]
)
def test_a_rebound_name_is_refused(client, host: str) -> None:
    for method, path in (("GET", "/cameras/0/stream.mjpg"), ("POST", "/cameras/0/stop"), ("GET", "/")):
        response = call(client, method, path, Host=host)
        assert response.status_code == 400, (method, path)
        assert "LIVECAM_TRUSTED_HOSTS" in response.json["error"]
    assert client.get("/cameras/0").json["state"] != "off"


def test_trusted_hosts_setting(make_app: Callable[..., Flask]) -> None:
    client = make_app({"cameras": CAMERAS, "trusted_hosts": "cams.example,.home.arpa"}).test_client()
    for host, status in (("cams.example", 200), ("door.home.arpa:8443", 200), ("evil.example", 400)):
        assert client.get("/cameras", headers={"Host": host}).status_code == status, host
    anything = make_app({"cameras": CAMERAS, "trusted_hosts": "*"}).test_client()
    assert anything.get("/cameras", headers={"Host": "evil.example"}).status_code == 200


def test_request_bodies_are_limited(client) -> None:
    response = client.post("/login", data={"token": "x" * 100_000})
    assert response.status_code == 413
    assert "too large" in response.json["error"]


def test_security_headers(client) -> None:
    page = client.get("/")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert client.get("/cameras").headers["X-Content-Type-Options"] == "nosniff"


def test_an_absolute_form_target_names_the_host_that_counts(client) -> None:
    response = client.get("/cameras", environ_overrides={"RAW_URI": "http://evil.example/cameras"})
    assert response.status_code == 400 and "evil.example" in response.json["error"]
    assert (
        client.get("/cameras", environ_overrides={"RAW_URI": "http://localhost/cameras"}).status_code == 200
    )


def test_the_refusal_names_the_host_that_was_sent(client) -> None:
    response = client.get("/cameras", headers={"Host": "evil@127.0.0.1"})
    assert response.status_code == 400 and "'evil@127.0.0.1'" in response.json["error"]


def test_a_body_too_large_is_refused_before_the_host_is_looked_at(client) -> None:
    response = client.post("/login", data={"token": "x" * 100_000}, headers={"Host": "evil.example"})
    assert response.status_code == 413 and response.headers["Connection"] == "close"


def test_where_a_request_comes_from_is_judged_before_who_sent_it(secured: Flask) -> None:
    client = secured.test_client()
    for number in range(6):
        cross = call(client, "POST", "/cameras/0/stop", f"guess-{number:04d}", Origin="http://evil.example")
        assert (cross.status_code, cross.json) == (403, {"error": "cross-site request refused"})
        rebound = call(client, "GET", "/cameras", f"guess-{number:04d}", Host="evil.example")
        assert rebound.status_code == 400
    # None of those wrong tokens was counted: the address is not locked out.
    assert call(client, "GET", "/cameras", "view-secret-123").status_code == 200


def test_an_undeclared_route_is_refused_as_such_from_anywhere(make_app: Callable[..., Flask]) -> None:
    app = make_app({"cameras": CAMERAS})
    app.add_url_rule("/forgotten", "forgotten", lambda: "secret", methods=["POST"])
    response = call(app.test_client(), "POST", "/forgotten", Origin="http://evil.example")
    assert (response.status_code, response.json) == (403, {"error": "not allowed"})
