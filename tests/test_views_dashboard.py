"""The dashboard page, the camera list and the health check."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from helpers import ChunkReader, decode, read_parts, wait_for
from livecam.appstate import get_registry


class Tags(HTMLParser):
    """Collect every start tag of the page with its attributes; a <template>'s content is
    not part of the page (a browser leaves it inert), so its tags are kept apart."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.templates: list[tuple[str, dict[str, str | None]]] = []
        self._in_template = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        (self.templates if self._in_template else self.tags).append((tag, dict(attrs)))
        if tag == "template":
            self._in_template += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self._in_template -= 1


def parse(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


def pictures(tags: list[tuple[str, dict[str, str | None]]]) -> list[str | None]:
    """The source of every camera tile's picture, in page order."""
    return [attrs["src"] for tag, attrs in tags if tag == "img" and "Picture" in (attrs.get("alt") or "")]


def test_dashboard_shows_every_camera_with_a_working_form(client) -> None:
    assert wait_for(lambda: client.get("/cameras/0").json["state"] == "on")
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Bench" in html and "Door" in html
    tags = parse(html)
    # The tiles' forms post; the dialogs' (adding, removing a camera) are the script's.
    forms = [attrs for tag, attrs in tags if tag == "form" and "action" in attrs]
    assert [f["action"] for f in forms] == ["/cameras/0/toggle", "/cameras/1/toggle"]
    assert all(f["method"] == "post" for f in forms)
    # Only the camera that is on streams; the one that is off shows the no-picture icon.
    assert pictures(tags) == ["/cameras/0/stream.mjpg", "/static/no-picture.svg"]
    links = {attrs["href"]: attrs for tag, attrs in tags if tag == "a"}
    assert {"/cameras/0/stream.mjpg", "/cameras/1/stream.mjpg"} <= links.keys()
    # A snapshot to download, offered only while there is a picture.
    assert "download" in links["/cameras/0/snapshot.jpg"] and "hidden" not in links["/cameras/0/snapshot.jpg"]
    assert "hidden" in links["/cameras/1/snapshot.jpg"]
    assert html.count('<span class="label">test pattern</span>') == 2
    scripts = [attrs["src"] for tag, attrs in tags if tag == "script"]
    assert scripts == ["/static/dashboard.js"]
    # Nothing from a CDN: every file the page and its style sheet use is livecam's.
    used = {attrs.get("src") or attrs.get("href") for tag, attrs in tags if tag in ("link", "script", "img")}
    used.discard(None)  # the picture a tried source shows, set by the script
    assert all(url.startswith(("/static/", "/cameras/")) for url in used), used
    icons = {"/static/download.svg", "/static/fullscreen.svg"}
    for url in {url for url in used if url.startswith("/static/")} | icons:
        with client.get(url) as asset:
            assert asset.status_code == 200, url


def test_only_the_first_camera_on_streams(make_app) -> None:
    cameras = {str(i): {"source": "testsrc:32x24@10", "autostart": i > 0} for i in range(4)}
    client = make_app({"cameras": cameras}).test_client()
    assert wait_for(lambda: all(client.get(f"/cameras/{i}").json["state"] == "on" for i in (1, 2, 3)))
    tags = parse(client.get("/").get_data(as_text=True))
    on = ["/cameras/1/stream.mjpg", "/cameras/2/snapshot.jpg", "/cameras/3/snapshot.jpg"]
    assert pictures(tags) == ["/static/no-picture.svg", *on]
    assert [attrs["id"] for tag, attrs in tags if "focused" in (attrs.get("class") or "")] == ["camera-1"]


def test_dashboard_without_javascript_toggles_by_form_post(client) -> None:
    response = client.post("/cameras/1/toggle", headers={"Accept": "text/html"}, follow_redirects=True)
    assert response.status_code == 200
    tiles = {attrs["id"]: attrs for tag, attrs in parse(response.get_data(as_text=True)) if tag == "article"}
    assert tiles["camera-1"]["data-state"] in ("starting", "on")
    assert "Turn off" in response.get_data(as_text=True).split('id="camera-1"')[1]


def test_login_link_when_switching_needs_a_token(make_app) -> None:
    client = make_app(
        {"control_token": "switch-cameras", "cameras": {"0": {"source": "testsrc:32x24@5"}}}
    ).test_client()
    tags = parse(client.get("/").get_data(as_text=True))
    assert ("a", "/login?next=/") in [(tag, attrs.get("href")) for tag, attrs in tags]
    # Where the script sends the browser when a toggle answers 401.
    assert dict(tags)["body"]["data-login-url"] == "/login?next=/"


CONTROLS = ("add-button", "edit", "remove")  # the classes of the controls that change cameras


def controls(html: str) -> dict[str, int]:
    """How many of each control that changes cameras the page has, and its dialogs."""
    tags = parse(html)
    classes = [set((attrs.get("class") or "").split()) for _, attrs in tags]
    found = {name: sum(name in c for c in classes) for name in CONTROLS}
    found["dialogs"] = sum(tag == "dialog" for tag, _ in tags)
    return found


@pytest.mark.parametrize(
    ("tokens", "login", "may"),
    [
        ({}, None, True),  # no token: anyone may control
        ({"view_token": "watch-only-1"}, "watch-only-1", True),  # control routes need only the view token
        ({"control_token": "switch-cameras"}, None, False),
        ({"control_token": "switch-cameras"}, "switch-cameras", True),
        ({"control_token": "switch-cameras", "view_token": "watch-only-1"}, "watch-only-1", False),
        ({"control_token": "switch-cameras", "view_token": "watch-only-1"}, "switch-cameras", True),
    ],
)
def test_the_controls_that_change_cameras_are_for_those_who_may_control(
    make_app, tokens: dict[str, str], login: str | None, may: bool
) -> None:
    cameras = {"0": {"source": "testsrc:32x24@5"}, "1": {"source": "testsrc:32x24@5"}}
    client = make_app({**tokens, "cameras": cameras}).test_client()
    if login:
        assert client.post("/login", data={"token": login}).status_code == 303
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    body = dict(parse(html))["body"]
    if may:
        # The header's button, each tile's Edit and Remove (hidden until the script shows
        # them), the two dialogs, and the URLs the script sends to.
        assert controls(html) == {"add-button": 1, "edit": 2, "remove": 2, "dialogs": 2}
        assert (body["data-add-url"], body["data-probe-url"]) == ("/cameras", "/cameras/probe")
        assert all("hidden" in attrs for _, attrs in parse(html) if (attrs.get("class") or "") in CONTROLS)
    else:
        assert controls(html) == {"add-button": 0, "edit": 0, "remove": 0, "dialogs": 0}
        assert "data-add-url" not in body and "data-probe-url" not in body


def test_a_bearer_token_on_the_page_does_not_show_the_controls(make_app) -> None:
    # Only the login session counts: the page never tells whether a guessed token is right.
    client = make_app(
        {"control_token": "switch-cameras", "cameras": {"0": {"source": "testsrc"}}}
    ).test_client()
    html = client.get("/", headers={"Authorization": "Bearer switch-cameras"}).get_data(as_text=True)
    assert controls(html)["add-button"] == 0


def test_the_tile_template_is_blank_and_a_camera_s_name_is_escaped(make_app) -> None:
    name = '<img src=x onerror=alert(1)> & "quotes"'
    client = make_app({"cameras": {"0": {"source": "testsrc:32x24@5", "name": name}}}).test_client()
    html = client.get("/").get_data(as_text=True)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt; &amp; &#34;quotes&#34;" in html
    parser = Tags()
    parser.feed(html)
    # The tile the script fills in for a camera added later: no camera's id, name or URL.
    articles = [attrs for tag, attrs in parser.templates if tag == "article"]
    assert len(articles) == 1 and articles[0]["data-id"] == "" and "id" not in articles[0]
    urls = [v for _, attrs in parser.templates for k, v in attrs.items() if k in ("href", "src", "action")]
    assert urls and not any(urls)
    assert all(tag != "img" for tag, _ in parser.templates)


def test_camera_list(client) -> None:
    records = client.get("/cameras").json
    assert [r["id"] for r in records] == [0, 1]
    assert records[1]["state"] == "off"


def test_healthz(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"


def test_every_url_follows_the_proxy_sub_path(make_app) -> None:
    app = make_app(
        {
            "proxy_hops": 1,
            "trusted_hosts": "cams.example",
            "cameras": {"0": {"source": "testsrc:32x24@5", "autostart": True}},
        }
    )
    client = app.test_client()
    proxy = {
        "X-Forwarded-Prefix": "/livecam",
        "X-Forwarded-Host": "cams.example",
        "X-Forwarded-Proto": "https",
    }
    tags = parse(client.get("/", headers=proxy).get_data(as_text=True))
    urls = [
        value
        for _, attrs in tags
        for name, value in attrs.items()
        if value and (name in ("href", "src", "action") or name.endswith("-url"))
    ]
    assert urls and all(url.startswith("/livecam/") for url in urls), urls
    response = client.post("/cameras/0/toggle", headers={**proxy, "Accept": "text/html"})
    assert response.headers["Location"] == "/livecam/#camera-0"
    assert client.get("/cameras/0", headers=proxy).json["urls"]["stream"] == "/livecam/cameras/0/stream.mjpg"


def test_forwarded_headers_are_ignored_without_a_proxy(client) -> None:
    html = client.get("/", headers={"X-Forwarded-Prefix": "/evil"}).get_data(as_text=True)
    assert "/evil" not in html


def test_the_multiplexed_stream_carries_each_camera_named_and_counts_its_viewers(make_app) -> None:
    cameras = {str(i): {"source": "testsrc:320x240@20", "autostart": i < 2} for i in range(3)}
    client = make_app({"cameras": cameras}).test_client()
    assert wait_for(lambda: all(client.get(f"/cameras/{i}").json["state"] == "on" for i in (0, 1)))
    response = client.get("/streams.mjpg?cameras=0:preview,1:full,2:preview")  # 2 is off: left out
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
    assert response.headers["X-Accel-Buffering"] == "no"
    parts = read_parts(ChunkReader(response.response))
    seen = {}
    while len(seen) < 2:
        part = next(parts)
        seen[(part.headers["x-camera"], part.headers["x-profile"])] = decode(part.body).shape
    records = [client.get(f"/cameras/{i}").json for i in (0, 1)]
    response.close()
    assert seen == {("0", "preview"): (240, 320, 3), ("1", "full"): (240, 320, 3)}
    assert records[0]["profiles"]["preview"]["viewers"] == 1 and records[0]["viewers"] == 1
    assert records[1]["profiles"]["full"]["viewers"] == 1
    assert wait_for(lambda: client.get("/cameras/0").json["viewers"] == 0)


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("", 400, "cameras: name at least one camera, as ID or ID:PROFILE"),
        ("?cameras=0:nope", 400, "camera 0 has no stream profile 'nope': expected one of full, preview"),
        ("?cameras=0,0:full", 400, "cameras: 0:full is named twice"),
        ("?cameras=zero", 400, "cameras: expected ID or ID:PROFILE items, got 'zero'"),
        # Unicode digits are no camera id: "²" made int() fail (a 500), "٣" was camera 3.
        ("?cameras=%C2%B2", 400, "cameras: expected ID or ID:PROFILE items, got '²'"),
        ("?cameras=%D9%A3", 400, "cameras: expected ID or ID:PROFILE items, got '٣'"),
        ("?cameras=%2B0", 400, "cameras: expected ID or ID:PROFILE items, got '+0'"),
        ("?cameras=" + "9," * 65, 400, "cameras: at most 64 in one stream"),
        ("?cameras=9", 404, "no camera 9"),
        ("?cameras=1", 503, "none of these cameras is on"),
    ],
)
def test_a_bad_multiplexed_stream_request_is_a_clear_error(
    client, query: str, status: int, error: str
) -> None:
    response = client.get(f"/streams.mjpg{query}")
    assert response.status_code == status
    assert error in response.json["error"]


@pytest.mark.parametrize(
    ("allow_origins", "referer", "policy"),
    [
        ("", "https://other.example/wall", "same-origin"),
        ("https://other.example", "https://other.example/wall", "cross-origin"),
        ("https://other.example", "https://elsewhere.example/", "same-origin"),
    ],
)
def test_the_multiplexed_stream_carries_a_resource_policy_like_a_camera_s_stream(
    make_app, allow_origins: str, referer: str, policy: str
) -> None:
    cameras = {"0": {"source": "testsrc:32x24@10", "autostart": True}}
    allowed = {"allow_origins": allow_origins} if allow_origins else {}
    client = make_app({"cameras": cameras, **allowed}).test_client()
    assert wait_for(lambda: client.get("/cameras/0").json["state"] == "on")
    headers = {"Referer": referer, "Sec-Fetch-Site": "cross-site"}
    for path in ("/streams.mjpg?cameras=0", "/cameras/0/stream.mjpg"):
        with client.get(path, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["Cross-Origin-Resource-Policy"] == policy, path


def test_a_multiplexed_stream_whose_response_fails_after_the_view_holds_no_slot(make_app) -> None:
    cameras = {"0": {"source": "testsrc:32x24@10", "autostart": True}}
    app = make_app({"PROPAGATE_EXCEPTIONS": False, "cameras": cameras})

    @app.after_request
    def broken(response):  # any failure between the view and the server
        raise RuntimeError("a hook failed")

    client = app.test_client()
    assert wait_for(lambda: get_registry(app).get(0).is_on)
    for _ in range(5):
        with client.get("/streams.mjpg?cameras=0") as response:
            assert response.status_code == 500
    assert get_registry(app).viewer_slots.taken == 0
