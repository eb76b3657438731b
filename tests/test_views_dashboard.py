"""The dashboard page, the camera list and the health check."""

from __future__ import annotations

from html.parser import HTMLParser


class Tags(HTMLParser):
    """Collect every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


def test_dashboard_shows_every_camera_with_a_working_form(client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Bench" in html and "Door" in html
    tags = parse(html)
    forms = [attrs for tag, attrs in tags if tag == "form"]
    assert [f["action"] for f in forms] == ["/cameras/0/toggle", "/cameras/1/toggle"]
    assert all(f["method"] == "post" for f in forms)
    images = [attrs["src"] for tag, attrs in tags if tag == "img"]
    assert images == ["/cameras/0/stream.mjpg"]  # only the camera that is on streams
    assert html.count("test pattern") == 2
    scripts = [attrs["src"] for tag, attrs in tags if tag == "script"]
    assert scripts == ["/static/dashboard.js"]
    with client.get(scripts[0]) as script:
        assert script.status_code == 200


def test_dashboard_without_javascript_toggles_by_form_post(client) -> None:
    response = client.post("/cameras/1/toggle", headers={"Accept": "text/html"}, follow_redirects=True)
    assert response.status_code == 200
    images = [attrs["src"] for tag, attrs in parse(response.get_data(as_text=True)) if tag == "img"]
    assert "/cameras/1/stream.mjpg" in images


def test_camera_list(client) -> None:
    records = client.get("/cameras").json
    assert [r["id"] for r in records] == [0, 1]
    assert records[1]["state"] == "off"


def test_healthz(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"


def test_every_url_follows_the_proxy_sub_path(make_app) -> None:
    app = make_app({"proxy_hops": 1, "cameras": {"0": {"source": "testsrc:32x24@5", "autostart": True}}})
    client = app.test_client()
    proxy = {
        "X-Forwarded-Prefix": "/livecam",
        "X-Forwarded-Host": "cams.example",
        "X-Forwarded-Proto": "https",
    }
    tags = parse(client.get("/", headers=proxy).get_data(as_text=True))
    urls = [attrs.get("href") or attrs.get("src") or attrs.get("action") for _, attrs in tags]
    urls = [url for url in urls if url]
    assert urls and all(url.startswith("/livecam/") for url in urls), urls
    response = client.post("/cameras/0/toggle", headers={**proxy, "Accept": "text/html"})
    assert response.headers["Location"] == "/livecam/#camera-0"
    assert client.get("/cameras/0", headers=proxy).json["urls"]["stream"] == "/livecam/cameras/0/stream.mjpg"


def test_forwarded_headers_are_ignored_without_a_proxy(client) -> None:
    html = client.get("/", headers={"X-Forwarded-Prefix": "/evil"}).get_data(as_text=True)
    assert "/evil" not in html
