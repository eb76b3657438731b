"""Who you are: tokens, the login session, the throttle and the session key."""

from __future__ import annotations

import base64
import logging
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from helpers import call
from livecam.access import access_of
from livecam.auth import check_session_key
from livecam.config import ConfigError, load_settings

VIEW, CONTROL = "view-secret-123", "control-secret-456"
CAMERAS = {"0": {"source": "testsrc:32x24@10", "autostart": True}}


@pytest.fixture
def secured(make_app: Callable[..., Flask]) -> Flask:
    return make_app({"view_token": VIEW, "control_token": CONTROL, "cameras": CAMERAS})


def guarded_routes(app: Flask) -> list[tuple[str, str, str]]:
    """(method, path, role needed) for every route of the app that is not public, as declared."""
    routes = []
    for rule in app.url_map.iter_rules():
        access = access_of(app, rule.endpoint)
        assert access in ("public", "view", "control"), f"{rule.endpoint} declares no access"
        if access == "public":
            continue
        method = next((m for m in ("POST", "PATCH", "DELETE", "PUT") if m in rule.methods), "GET")
        # A path parameter filled with a number: a rule's placeholder is no URL.
        routes.append((method, re.sub(r"<(?:int:)?\w+>", "1", rule.rule), access))
    return sorted(routes, key=lambda route: route[0] == "DELETE")  # a removal last: it is allowed


def test_every_route_is_guarded(secured: Flask) -> None:
    client = secured.test_client()
    routes = guarded_routes(secured)
    assert len(routes) >= 10  # the table really comes from the app
    for number, (method, path, needed) in enumerate(routes):
        assert call(client, method, path).status_code == 401, path
        # Each guess from its own address, so that the throttle does not answer instead.
        assert call(client, method, path, "wrong-token-0", address=f"10.0.0.{number}").status_code == 403, (
            path
        )
        if needed == "control":
            assert call(client, method, path, VIEW).status_code == 403, path
        allowed = call(client, method, path, CONTROL if needed == "control" else VIEW)
        assert allowed.status_code not in (401, 403), path


def test_missing_credentials_are_401_with_a_challenge(secured: Flask) -> None:
    response = call(secured.test_client(), "GET", "/cameras")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json == {"error": "credentials required"}


def test_wrong_credentials_get_no_hint(secured: Flask) -> None:
    client = secured.test_client()
    bodies = {call(client, "GET", "/cameras", token).get_data() for token in ("x" * 15, VIEW[:-1])}
    bodies.add(call(client, "GET", "/cameras", **{"Authorization": "Basic dXNlcjpwYXNz"}).get_data())
    assert bodies == {b'{"error":"not allowed"}\n'}


def test_control_token_alone_leaves_viewing_open(make_app: Callable[..., Flask]) -> None:
    app = make_app({"control_token": CONTROL, "cameras": CAMERAS})
    client = app.test_client()
    assert call(client, "GET", "/cameras/0").status_code == 200
    assert call(client, "POST", "/cameras/0/stop").status_code == 401
    assert call(client, "POST", "/cameras/0/stop", CONTROL).status_code == 200


def test_login_flow(secured: Flask) -> None:
    client = secured.test_client()
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and b'name="token"' in page.data  # the login form
    assert client.post("/login", data={"token": "nope-nope"}).status_code == 403
    response = client.post("/login", data={"token": VIEW, "next": "/cameras/0"})
    assert response.status_code == 303 and response.headers["Location"] == "/cameras/0"
    cookie = client.get_cookie("livecam_session")
    assert cookie.http_only and cookie.same_site == "Lax"
    assert client.get("/").status_code == 200
    stream = client.get("/cameras/0/stream.mjpg")
    assert stream.status_code == 200
    stream.close()
    assert client.post("/cameras/0/stop").status_code == 403  # a viewer may not switch
    client.post("/logout")
    assert call(client, "GET", "/cameras").status_code == 401


def test_control_login_may_switch(secured: Flask) -> None:
    client = secured.test_client()
    client.post("/login", data={"token": CONTROL})
    assert client.post("/cameras/0/toggle", headers={"Accept": "application/json"}).status_code == 200


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "/\t/evil.example", "/\n/x"]
)
def test_login_never_redirects_off_site(secured: Flask, target: str) -> None:
    response = secured.test_client().post("/login", data={"token": VIEW, "next": target})
    assert response.headers["Location"] == "/"


def test_changing_a_token_ends_its_sessions(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    first = make_app({"view_token": VIEW, "cameras": CAMERAS, "secret_key": "k" * 40})
    client = first.test_client()
    client.post("/login", data={"token": VIEW})
    cookie = client.get_cookie("livecam_session").value
    second = make_app({"view_token": "another-view-token", "cameras": CAMERAS, "secret_key": "k" * 40})
    other = second.test_client()
    other.set_cookie("livecam_session", cookie)
    assert call(other, "GET", "/cameras").status_code == 401


def test_repeated_failures_are_slowed_down(secured: Flask) -> None:
    client = secured.test_client()
    statuses = [client.post("/login", data={"token": f"guess-{i:04d}"}).status_code for i in range(7)]
    assert statuses[:5] == [403] * 5 and statuses[5:] == [429, 429]
    blocked = client.post("/login", data={"token": VIEW})  # even the right token must wait
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert call(client, "GET", "/cameras", "guess-again").status_code == 429


def test_the_session_cookie_is_secure_over_https(make_app: Callable[..., Flask]) -> None:
    direct = make_app({"cameras": CAMERAS, "view_token": VIEW}).test_client()
    direct.post("/login", data={"token": VIEW})
    assert not direct.get_cookie("livecam_session").secure  # plain HTTP on loopback
    tls = make_app({"cameras": CAMERAS, "view_token": VIEW}).test_client()
    tls.post("/login", data={"token": VIEW}, base_url="https://localhost")
    assert tls.get_cookie("livecam_session", domain="localhost").secure
    proxied = make_app({"cameras": CAMERAS, "view_token": VIEW, "proxy_hops": 1}).test_client()
    proxied.post("/login", data={"token": VIEW}, headers={"X-Forwarded-Proto": "https"})
    assert proxied.get_cookie("livecam_session").secure


def test_a_parallel_burst_of_guesses_gets_five_answers(secured: Flask) -> None:
    barrier = threading.Barrier(24)
    statuses: list[int] = []

    def guess(number: int) -> None:
        client = secured.test_client()
        barrier.wait(10)
        statuses.append(client.post("/login", data={"token": f"guess-{number:04d}"}).status_code)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [403] * 5 + [429] * 19


def test_secret_key_is_made_once_and_kept_private(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    first = make_app({"cameras": CAMERAS})
    key_file = tmp_path / "state" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert make_app({"cameras": CAMERAS}).secret_key == first.secret_key


def test_secrets_never_reach_the_logs(secured: Flask, caplog: pytest.LogCaptureFixture) -> None:
    client = secured.test_client()
    with caplog.at_level(logging.DEBUG):
        call(client, "GET", "/cameras", VIEW)
        call(client, "POST", "/cameras/0/toggle", CONTROL)
        call(client, "GET", "/cameras", "wrong-token-9")
        client.post("/login", data={"token": CONTROL})
        client.post("/login", data={"token": "wrong-login-1"})
    assert caplog.records  # the session did log
    for secret in (VIEW, CONTROL, "wrong-token-9", "wrong-login-1", secured.secret_key):
        assert secret not in caplog.text


def test_a_form_switch_without_the_right_login_goes_to_the_login_page(make_app: Callable[..., Flask]) -> None:
    client = make_app({"control_token": CONTROL, "cameras": CAMERAS}).test_client()
    response = client.post("/cameras/0/toggle", headers={"Accept": "text/html"})
    assert (response.status_code, response.headers["Location"]) == (303, "/login?next=/")
    assert client.get("/cameras/0").json["state"] != "off"  # nothing was switched


def test_a_locked_out_address_learns_nothing_from_bearer_tokens(secured: Flask) -> None:
    client = secured.test_client()
    statuses = [call(client, "GET", "/cameras", f"guess-{i:04d}").status_code for i in range(6)]
    assert statuses == [403] * 5 + [429]
    assert call(client, "GET", "/cameras", VIEW).status_code == 429  # the right token waits too


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({"bus": "nats://127.0.0.1:4222", "view_token": VIEW}, True),
        ({"bus": "nats://127.0.0.1:4222", "control_token": CONTROL, "workers": "1"}, True),
        ({"bus": "nats://127.0.0.1:4222", "view_token": VIEW, "secret_key": "s" * 32}, False),
        ({"bus": "nats://127.0.0.1:4222"}, False),  # no token, no login: nothing to sign
        ({"view_token": VIEW}, False),  # one process: its key in the state directory
    ],
)
def test_bus_mode_with_a_token_needs_the_session_key(settings: dict[str, str], refused: bool) -> None:
    loaded = load_settings(environ={}, overrides={"cameras": "0=testsrc", **settings})
    if not refused:
        check_session_key(loaded)
        return
    with pytest.raises(ConfigError) as error:
        check_session_key(loaded)
    message = str(error.value)
    assert message.startswith("LIVECAM_SECRET_KEY: bus mode with a token needs it, the same on every")
    assert "\n" not in message


def test_an_app_in_bus_mode_without_the_session_key_is_not_built(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigError, match="LIVECAM_SECRET_KEY"):
        make_app({"bus": "nats://127.0.0.1:4222", "view_token": VIEW, "cameras": CAMERAS})


def basic(user: str, password: str) -> str:
    """An HTTP Basic Authorization header, as Home Assistant, Motion or VLC send it."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_token_as_the_basic_password_is_accepted_with_any_user_name(secured: Flask) -> None:
    client = secured.test_client()
    for user in ("homeassistant", "", "élan"):  # a user name holds no colon (RFC 7617)
        assert call(client, "GET", "/cameras", Authorization=basic(user, VIEW)).status_code == 200
        stream = call(client, "GET", "/cameras/0/stream.mjpg", Authorization=basic(user, VIEW))
        assert stream.status_code == 200
    assert call(client, "POST", "/cameras/0/toggle", Authorization=basic("x", VIEW)).status_code == 403
    assert call(client, "POST", "/cameras/0/toggle", Authorization=basic("x", CONTROL)).status_code == 200
    # The token is the password, never the user name.
    assert call(client, "GET", "/cameras", Authorization=basic(VIEW, "")).status_code == 403


def test_every_route_takes_basic_as_it_takes_bearer(secured: Flask) -> None:
    client = secured.test_client()
    for number, (method, path, needed) in enumerate(guarded_routes(secured)):
        wrong = call(client, method, path, address=f"10.0.1.{number}", Authorization=basic("u", "wrong-0"))
        assert wrong.status_code == 403, path
        allowed = call(
            client, method, path, Authorization=basic("u", CONTROL if needed == "control" else VIEW)
        )
        assert allowed.status_code not in (401, 403), path
        refused = allowed.status_code == 400 and allowed.is_json and "malformed" in allowed.json["error"]
        assert not refused, path


def test_wrong_basic_passwords_are_throttled_with_bearer_guesses(secured: Flask) -> None:
    client = secured.test_client()
    statuses = [call(client, "GET", "/cameras", f"guess-{i:04d}").status_code for i in range(3)]
    statuses += [
        call(client, "GET", "/cameras", Authorization=basic("u", f"guess-{i}")).status_code for i in range(3)
    ]
    assert statuses == [403] * 5 + [429]
    locked = call(client, "GET", "/cameras/0/snapshot.jpg", Authorization=basic("u", VIEW))
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0  # the right one waits too


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no colon at all").decode(),
        "Basic " + base64.b64encode(b"user:\xff\xfe not utf-8").decode(),
        "Basic " + base64.b64encode(b"user:" + b"x" * 5000).decode(),
        "Basic " + "A" * 100_000,
        "Basic \u00e9l\u00e8ve",  # not ASCII at all (Werkzeug reads headers as Latin-1)
        "Basic",
    ],
)
def test_a_malformed_basic_header_is_a_clean_400(secured: Flask, header: str) -> None:
    client = secured.test_client()
    for path in ("/cameras", "/cameras/0/stream.mjpg", "/cameras/0/toggle"):
        method = "POST" if path.endswith("toggle") else "GET"
        response = call(client, method, path, Authorization=header)
        assert response.status_code == 400, (path, header[:40])
        assert response.json["error"].startswith("malformed Authorization header")
    # Not counted as guesses: the right token is still answered at once.
    assert call(client, "GET", "/cameras", VIEW).status_code == 200


def test_odd_headers_of_other_schemes_are_wrong_tokens_or_a_400_never_a_500(secured: Flask) -> None:
    client = secured.test_client()
    headers = ["Bearer", "Bearer \u00e9\u00e8\u00ff", "Digest username=x", "Bearer " + "t" * 5000]
    statuses = [
        call(client, "GET", "/cameras", address=f"10.0.2.{n}", Authorization=header).status_code
        for n, header in enumerate(headers)
    ]
    assert statuses == [403, 403, 403, 400]


def test_pictures_opened_by_a_program_are_challenged_for_basic(secured: Flask) -> None:
    client = secured.test_client()
    for path in ("/cameras/0/stream.mjpg", "/cameras/0/snapshot.jpg", "/streams.mjpg?cameras=0"):
        response = call(client, "GET", path, Accept="*/*")
        assert response.status_code == 401
        assert response.headers.getlist("WWW-Authenticate") == [
            'Basic realm="livecam"',
            'Bearer realm="livecam"',
        ]


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/cameras", {}),  # the dashboard's own JSON calls: a dialog would pop over the page
        ("/cameras/0/events", {}),
        ("/cameras/0/stream.mjpg", {"Referer": "http://localhost/"}),  # a dashboard tile
        ("/cameras/0/snapshot.jpg", {"Origin": "http://localhost"}),
        ("/cameras/0/stream.mjpg", {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}),
    ],
)
def test_json_routes_and_pictures_in_pages_are_never_challenged_for_basic(
    secured: Flask, path: str, headers: dict[str, str]
) -> None:
    response = call(secured.test_client(), "GET", path, **headers)
    assert response.status_code == 401
    assert response.headers.getlist("WWW-Authenticate") == ['Bearer realm="livecam"']


def test_a_browser_opening_a_stream_url_gets_the_login_page_not_a_dialog(secured: Flask) -> None:
    response = secured.test_client().get("/cameras/0/stream.mjpg", headers={"Accept": "text/html,*/*;q=0.8"})
    assert response.status_code == 401 and b'name="token"' in response.data
    assert response.headers.getlist("WWW-Authenticate") == ['Bearer realm="livecam"']
