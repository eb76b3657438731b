"""The dashboard in a real browser: headless Chromium, over HTTP/1.1 to gunicorn and HTTP/2 through nginx."""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from helpers import ROOT, Server, decode, free_port, read_messages, wait_for
from hostile_camera import HostileCamera
from nginx_proxy import Nginx

CHROMIUM = "/usr/bin/chromium"  # Debian's: nothing is downloaded at test time
# Playwright adds --headless and a fresh temporary --user-data-dir. The machine has no
# outside network: without the rest Chromium keeps trying to reach its update and sync services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NAMES = ["Front door", "Garden", "Garage", "Driveway", "Workshop", "Hall", "Kitchen", "Back yard"]
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "let-me-watch"
# Each tile's picture: the canvas the page draws frames on, or an <img> without JavaScript.
PICTURES = ".view canvas, .view img"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module, closed at the end."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def start_eight_cameras(serve: Callable[..., Server], directory: Path, **env: str) -> Server:
    """gunicorn with eight named test-pattern cameras."""
    config = directory / "livecam.toml"
    config.write_text("".join(f'[cameras.{i}]\nname = "{name}"\n' for i, name in enumerate(NAMES)))
    cameras = ",".join(f"{i}=testsrc:320x240@10" for i in range(len(NAMES)))
    return serve({"LIVECAM_CAMERAS": cameras, "LIVECAM_CONFIG": str(config), **env})


def all_eight_on(server: Server) -> Server:
    """Every one of the eight cameras switched on, and no stream left from an earlier page."""
    for cam_id in range(len(NAMES)):
        assert server.request("POST", f"/cameras/{cam_id}/start")[0] == 200
    assert wait_for(lambda: all(server.record(i)["state"] == "on" for i in range(len(NAMES))))
    assert wait_for(lambda: streams(server) == 0)
    return server


@pytest.fixture(autouse=True)
def close_pages(browser: Browser) -> Iterator[None]:
    """Close what a test left open, even when it failed: the next test counts streams afresh."""
    yield
    for context in browser.contexts:
        context.close()


@pytest.fixture(scope="module")
def eight_camera_site(
    serve_module: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory
) -> Server:
    """One gunicorn with eight cameras for the tests that switch them back on first."""
    return start_eight_cameras(serve_module, tmp_path_factory.mktemp("eight"))


@pytest.fixture
def eight_cameras(eight_camera_site: Server) -> Server:
    """Eight cameras on, served straight to the browser."""
    return all_eight_on(eight_camera_site)


@pytest.fixture(scope="module")
def nginx_site(
    serve_module: Callable[..., Server],
    tmp_path_factory: pytest.TempPathFactory,
    certificate: tuple[Path, Path],
) -> Iterator[tuple[Server, Nginx]]:
    """Eight cameras behind the shipped nginx configuration with a self-signed certificate."""
    directory = tmp_path_factory.mktemp("behind-nginx")
    server = start_eight_cameras(serve_module, directory, LIVECAM_PROXY_HOPS="1")
    nginx = Nginx(directory / "nginx", server.port, *certificate)
    try:
        nginx.wait_ready()
        yield server, nginx
    finally:
        nginx.stop()


@pytest.fixture
def behind_nginx(nginx_site: tuple[Server, Nginx]) -> tuple[Server, Nginx]:
    """Eight cameras on, behind nginx."""
    all_eight_on(nginx_site[0])
    return nginx_site


def open_page(browser: Browser, url: str, init_script: str = "", **options: object) -> tuple[Page, list[str]]:
    """A new page on ``url``, and the list its script errors and CSP refusals go to;
    ``init_script`` runs in the page before its own scripts."""
    page = browser.new_context(viewport={"width": 1360, "height": 1500}, **options).new_page()
    if init_script:
        page.add_init_script(init_script)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda msg: "Content Security Policy" in msg.text and problems.append(msg.text))
    page.goto(url, wait_until="domcontentloaded")
    return page, problems


def address(server: Server) -> str:
    """The dashboard's address on ``server``, over plain HTTP/1.1."""
    return f"http://127.0.0.1:{server.port}/"


def shows(page: Page, condition: str, timeout: float = 10.0) -> bool:
    """Wait until a JavaScript expression is true in the page, polling from here.

    Not Playwright's wait_for_function: its polling runs no more once the page's own
    scripts are disabled, and it eval()s expressions, which the page's CSP forbids.
    """
    return wait_for(lambda: page.evaluate(condition), timeout=timeout, every=0.1)


def wait_for_pictures(page: Page) -> None:
    """Wait until every tile shows a picture from its camera (not the no-picture icon)."""
    pictures = f"[...document.querySelectorAll('{PICTURES}')]"
    # A canvas the page draws frames on (has a size once drawn on), or an <img> without JavaScript.
    shown = "p => (p.naturalWidth ?? p.width) > 0 && !/svg$/.test(p.src || '')"
    assert shows(page, f"{pictures}.length > 0 && {pictures}.every({shown})")


# Where each tile's picture is in the viewport, all in one call (one for each picture took most
# of the time of a look); null for a picture not rendered, as Playwright's bounding_box() says.
PICTURE_BOXES = f"""[...document.querySelectorAll('{PICTURES}')].map(picture => {{
    if (picture.getClientRects().length === 0) return null;
    const box = picture.getBoundingClientRect();
    return {{x: box.x, y: box.y, width: box.width, height: box.height}};
}})"""


def tile_pictures(page: Page) -> list[np.ndarray | None]:
    """What the page shows of every tile's picture, cut from one screenshot of the viewport;
    None for a tile out of view."""
    shot = decode(page.screenshot())
    pictures: list[np.ndarray | None] = []
    for box in page.evaluate(PICTURE_BOXES):
        assert box is not None
        x, y, width, height = (int(box[key]) for key in ("x", "y", "width", "height"))
        inside = x >= 0 and y >= 0 and x + width <= shot.shape[1] and y + height <= shot.shape[0]
        pictures.append(shot[y : y + height, x : x + width] if inside and width and height else None)
    return pictures


def wait_until_every_tile_moves(page: Page, changes: int = 3, timeout: float = 10.0) -> None:
    """Every tile in view changes its picture at least ``changes`` times within ``timeout`` s."""
    previous = tile_pictures(page)
    counts = [0 if picture is not None else changes for picture in previous]

    def moved() -> bool:
        for i, picture in enumerate(tile_pictures(page)):
            if picture is not None and previous[i] is not None and not np.array_equal(picture, previous[i]):
                counts[i] += 1
            previous[i] = picture
        return min(counts) >= changes

    assert wait_for(moved, timeout=timeout, every=0.1), f"changes per tile: {counts}"


def streams(server: Server) -> int:
    """How many MJPEG streams the server is sending."""
    return server.request("GET", "/healthz")[1]["streams"]


def profile_viewers(server: Server, cam_id: int, profile: str) -> int:
    """How many viewers a camera's profile has."""
    return server.record(cam_id)["profiles"][profile]["viewers"]


def test_every_tile_moves_and_every_button_answers_over_http1(
    eight_cameras: Server, browser: Browser
) -> None:
    page, problems = open_page(browser, address(eight_cameras))
    assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "http/1.1"
    expect(page.locator(".tile")).to_have_count(len(NAMES))
    wait_for_pictures(page)
    wait_until_every_tile_moves(page)
    # Every tile plays live, all through one multiplexed stream: the focused camera's full
    # profile, every other one's preview.
    expect(page.locator(".tile.live")).to_have_count(len(NAMES))
    assert wait_for(lambda: streams(eight_cameras) == 1)
    assert (
        profile_viewers(eight_cameras, 0, "full") == 1 and profile_viewers(eight_cameras, 0, "preview") == 0
    )
    assert all(profile_viewers(eight_cameras, i, "preview") == 1 for i in range(1, len(NAMES)))

    # While every tile streams, a button still answers at once: a connection is free.
    tile = page.locator("#camera-3")
    tile.locator(".toggle").click()
    expect(tile.locator(".badge")).to_have_text("off", timeout=1000)
    assert eight_cameras.record(3)["state"] == "off"
    expect(tile.locator(".toggle")).to_have_text("Turn on")
    expect(tile.locator(".snapshot")).to_be_hidden()
    expect(tile).not_to_have_class(re.compile(r"\blive\b"))
    tile.locator(".toggle").click()
    expect(tile.locator(".badge")).to_have_text(re.compile("starting|live"), timeout=1000)
    assert eight_cameras.record(3)["state"] in ("starting", "on")
    expect(tile.locator(".badge")).to_have_text("live", timeout=5000)
    expect(tile).to_have_class(re.compile(r"\blive\b"))

    # Focus moves the full profile: the new camera plays full, the old one its preview.
    page.locator("#camera-5 .view").click()
    expect(page.locator("#camera-5")).to_have_class(re.compile(r"\bfocused\b"))
    assert page.url.endswith("/#camera-5")  # a reload keeps the focus
    assert wait_for(lambda: profile_viewers(eight_cameras, 5, "full") == 1)
    assert wait_for(lambda: profile_viewers(eight_cameras, 0, "preview") == 1)
    assert wait_for(lambda: profile_viewers(eight_cameras, 0, "full") == 0)
    assert shows(page, "document.querySelector('#camera-5 .view canvas').width === 320")
    wait_until_every_tile_moves(page, changes=2)
    assert wait_for(lambda: streams(eight_cameras) == 1)

    # The camera in focus switched off and on again streams again.
    tile = page.locator("#camera-5")
    tile.locator(".toggle").click()
    expect(tile.locator(".badge")).to_have_text("off", timeout=2000)
    tile.locator(".toggle").click()
    expect(tile.locator(".badge")).to_have_text("live", timeout=5000)
    wait_until_every_tile_moves(page, changes=2)
    assert wait_for(lambda: profile_viewers(eight_cameras, 5, "full") == 1)

    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)
    assert problems == []
    page.context.close()


def tiles_in_view(page: Page) -> list[int]:
    """The ids of the tiles at least partly in the viewport."""
    return page.evaluate(
        "[...document.querySelectorAll('.tile')].filter(t => { const r = t.getBoundingClientRect();"
        " return r.bottom > 0 && r.top < innerHeight; }).map(t => Number(t.dataset.id))"
    )


def viewers(server: Server, count: int) -> list[int]:
    """Each camera's viewers, as its record tells them."""
    return [server.record(i)["viewers"] for i in range(count)]


def test_sixteen_cameras_all_live_over_one_connection_and_only_those_in_view(
    serve: Callable[..., Server], browser: Browser
) -> None:
    count = 16
    cameras = ",".join(f"{i}=testsrc:160x120@10" for i in range(count))
    server = serve({"LIVECAM_CAMERAS": cameras})
    for cam_id in range(count):
        assert server.request("POST", f"/cameras/{cam_id}/start")[0] == 200
    page, problems = open_page(browser, address(server))
    page.set_viewport_size({"width": 1360, "height": 800})
    expect(page.locator(".tile.live").first).to_be_visible()
    # Every tile in view moves within two seconds of the next; one stream carries them all.
    assert shows(
        page,
        "[...document.querySelectorAll('.tile')].filter(t => t.getBoundingClientRect().top < innerHeight)"
        ".every(t => t.querySelector('.view canvas').width)",
    )
    wait_until_every_tile_moves(page, changes=1, timeout=2.0)
    assert streams(server) == 1
    # Tiles out of view receive nothing: the server counts no viewer of them.
    top = tiles_in_view(page)
    assert 0 < len(top) < count
    assert wait_for(lambda: viewers(server, count) == [int(i in top) for i in range(count)])

    # Scrolled to the end, the tiles at the top leave the stream and the last ones join it.
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert wait_for(lambda: tiles_in_view(page) != top)
    bottom = tiles_in_view(page)
    assert count - 1 in bottom and 0 not in bottom
    assert wait_for(lambda: viewers(server, count) == [int(i in bottom) for i in range(count)])
    wait_until_every_tile_moves(page, changes=1, timeout=2.0)
    assert streams(server) == 1

    # A tile whose camera stops shows it, and a toggle answers within a second.
    last = page.locator(f"#camera-{count - 1}")
    last.locator(".toggle").click()
    expect(last.locator(".badge")).to_have_text("off", timeout=1000)
    server.request("POST", f"/cameras/{count - 2}/stop")  # stopped elsewhere
    expect(page.locator(f"#camera-{count - 2} .badge")).to_have_text("off", timeout=5000)
    expect(page.locator(f"#camera-{count - 2}")).not_to_have_class(re.compile(r"\blive\b"))
    # A hidden tab receives nothing at all (headless Chromium never hides a page: the test
    # tells the page its tab went to the background as the browser would).
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    assert wait_for(lambda: streams(server) == 0)
    assert all(server.record(i)["viewers"] == 0 for i in range(count))
    assert problems == []
    page.context.close()


def test_every_tile_streams_over_http2(behind_nginx: tuple[Server, Nginx], browser: Browser) -> None:
    server, nginx = behind_nginx
    url = f"https://127.0.0.1:{nginx.ports['tls']}/"
    page, problems = open_page(browser, url, ignore_https_errors=True)
    assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
    expect(page.locator(".tile.live")).to_have_count(len(NAMES))
    wait_for_pictures(page)
    wait_until_every_tile_moves(page)
    assert wait_for(lambda: streams(server) == 1)
    tile = page.locator("#camera-6")
    tile.locator(".toggle").click()
    expect(tile.locator(".badge")).to_have_text("off", timeout=2000)
    page.screenshot(path=ARTIFACTS / "dashboard-http2.png", full_page=True)
    assert problems == []
    page.context.close()


def test_every_tile_moves_behind_the_nginx_sub_path_on_a_desktop_and_a_phone(
    behind_nginx: tuple[Server, Nginx], browser: Browser
) -> None:
    server, nginx = behind_nginx
    url = f"http://127.0.0.1:{nginx.ports['subpath']}/livecam/"
    page, problems = open_page(browser, url)
    assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "http/1.1"
    expect(page.locator(".tile.live")).to_have_count(len(NAMES))
    wait_for_pictures(page)
    wait_until_every_tile_moves(page)
    assert streams(server) == 1
    page.context.close()

    phone, problems_on_phone = open_page(browser, url, is_mobile=True, has_touch=True)
    phone.set_viewport_size({"width": 390, "height": 844})
    in_view = tiles_in_view(phone)
    assert 0 < len(in_view) < len(NAMES)
    assert shows(phone, f"document.querySelectorAll('.tile.live').length === {len(in_view)}")
    wait_until_every_tile_moves(phone, changes=2)
    assert wait_for(lambda: viewers(server, len(NAMES)) == [int(i in in_view) for i in range(len(NAMES))])
    phone.screenshot(path=ARTIFACTS / "dashboard-phone-subpath.png")
    assert problems == problems_on_phone == []
    phone.context.close()


ASKS_WHILE_STALLED = """
window.askedWhileStalled = 0;
const plainFetch = window.fetch;
window.fetch = (url, options) => {
  const stalled = document.querySelector("#camera-0.stalled");
  if (stalled && String(url).includes("streams.mjpg")) window.askedWhileStalled++;
  return plainFetch(url, options);
};
"""


def test_a_tile_without_new_frames_says_stalled_and_the_page_asks_again(
    serve: Callable[..., Server], browser: Browser
) -> None:
    camera = HostileCamera().start()
    try:
        # Camera 0 sends one frame, then one that trickles in for longer than livecam waits:
        # 7 s here rather than livecam's 10 (httpcam.FRAME_TIMEOUT, tests/shortened.py), still
        # well past the page's 3 s without a new frame.
        cameras = f"0={camera.url('/trickle.mjpg')},1=testsrc:160x120@10"
        server = serve({"LIVECAM_CAMERAS": cameras}, shortened={"livecam.httpcam.FRAME_TIMEOUT": 7.0})
        for cam_id in (0, 1):
            server.request("POST", f"/cameras/{cam_id}/start")
        assert wait_for(lambda: server.record(0)["state"] == "on")
        # Count the page's requests for the stream made while the tile says stalled, from
        # before the page's own script runs: an ask is never missed, however slow the machine.
        page, problems = open_page(browser, address(server), init_script=ASKS_WHILE_STALLED)
        stalled = page.locator("#camera-0")
        expect(stalled.locator(".badge")).to_have_text("live")
        expect(stalled).to_have_class(re.compile(r"\bstalled\b"), timeout=8000)
        expect(stalled.locator(".badge")).to_have_text("stalled")
        assert shows(page, "window.askedWhileStalled >= 1")  # asked again, by itself
        expect(page.locator("#camera-1")).not_to_have_class(re.compile(r"\bstalled\b"))
        # When livecam gives up on the camera, the tile says why instead.
        expect(stalled.locator(".badge")).to_have_text("no signal", timeout=15000)
        expect(stalled).not_to_have_class(re.compile(r"\bstalled\b"))
        assert problems == []
        page.context.close()
    finally:
        camera.stop()


def test_phone_layout(eight_cameras: Server, browser: Browser) -> None:
    page, problems = open_page(browser, address(eight_cameras), is_mobile=True, has_touch=True)
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator(".tile")).to_have_count(len(NAMES))
    # One column, nothing wider than the screen, buttons big enough for a finger.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    boxes = [tile.bounding_box() for tile in page.locator(".tile").all()]
    assert len({box["x"] for box in boxes if box}) == 1
    assert all(
        box["height"] >= 44 for box in (b.bounding_box() for b in page.locator(".toggle").all()) if box
    )
    expect(page.locator("#camera-0")).to_have_class(re.compile(r"\blive\b"))
    assert shows(page, "document.querySelector('#camera-0 .view canvas').width > 0")  # drawn on
    page.screenshot(path=ARTIFACTS / "dashboard-phone.png")
    assert problems == []
    page.context.close()


def test_dashboard_without_javascript(eight_cameras: Server, browser: Browser) -> None:
    page, _ = open_page(browser, address(eight_cameras), java_script_enabled=False)
    expect(page.locator(".events-button")).to_be_hidden()  # the list of events needs JavaScript
    expect(page.locator(".motion-label").first).to_be_hidden()
    # Adding, changing and removing cameras need JavaScript: their controls stay hidden.
    for control in (".add-button", "#camera-0 .edit", "#camera-0 .remove", "#camera-dialog"):
        expect(page.locator(control)).to_be_hidden()
    # Every camera shows a picture: a snapshot, and the one in focus its live stream.
    wait_for_pictures(page)
    sources = [img.get_attribute("src") for img in page.locator(".view img").all()]
    assert sources == [
        f"/cameras/{i}/{'stream.mjpg' if i == 0 else 'snapshot.jpg'}" for i in range(len(NAMES))
    ]

    # The button is a plain form: POST, then the server's 303 back to the dashboard.
    tile = page.locator("#camera-2")
    tile.locator(".toggle").click()
    page.wait_for_url("**/#camera-2")
    expect(tile.locator(".badge")).to_have_text("off")
    assert eight_cameras.record(2)["state"] == "off"
    tile.locator(".toggle").click()
    page.wait_for_url("**/#camera-2")
    assert eight_cameras.record(2)["state"] in ("starting", "on")

    page.screenshot(path=ARTIFACTS / "dashboard-nojs.png", full_page=True)

    # The picture is a link to the live stream, which the browser shows on its own page.
    page.locator("#camera-4 .view").click()
    page.wait_for_url("**/cameras/4/stream.mjpg", wait_until="commit")
    assert shows(page, "document.images[0]?.naturalWidth === 320")
    page.context.close()


def test_login_then_live_view(serve: Callable[..., Server], browser: Browser) -> None:
    server = serve({"LIVECAM_CAMERAS": "0=testsrc:320x240@10", "LIVECAM_VIEW_TOKEN": TOKEN})
    status, _ = server.request(
        "POST", "/cameras/0/start", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    )
    assert status == 200
    page, problems = open_page(browser, address(server))
    expect(page.locator("input[name=token]")).to_be_visible()
    page.locator("input[name=token]").fill(TOKEN)
    page.locator("button[type=submit]").click()
    page.wait_for_url(address(server))
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    assert shows(page, "document.querySelector('#camera-0 .view canvas').width === 320")

    # When the session ends, the next status refresh goes to the login form.
    page.context.clear_cookies()
    page.wait_for_url(re.compile(r"/login\?next=/$"), timeout=5000)
    expect(page.locator("input[name=token]")).to_be_visible()
    expect(page.locator("input[name=next]")).to_have_value("/")
    assert problems == []
    page.context.close()


CONTROL = "switch-cameras-1"


def api(server: Server, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
    """A plain HTTP request with the control token, as curl sends it; the status and the JSON."""
    return server.send_json(method, path, body, CONTROL)


def log_in(browser: Browser, url: str, token: str) -> tuple[Page, list[str]]:
    """The dashboard at ``url``, reached through its login form with ``token``."""
    page, problems = open_page(browser, f"{url}login?next=/")
    page.locator("input[name=token]").fill(token)
    page.locator("button[type=submit]").click()
    page.wait_for_url(url)
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    page.evaluate("window.sameDocument = true")  # gone if the page is ever loaded again
    return page, problems


@pytest.fixture(params=["direct", "subpath"])
def control_site(
    request: pytest.FixtureRequest,
    serve: Callable[..., Server],
    tmp_path: Path,
    certificate: tuple[Path, Path],
) -> Iterator[tuple[Server, str]]:
    """One camera on, with a control token; the dashboard's address straight to gunicorn, or
    under nginx's /livecam/ sub-path (every URL the dialog sends to comes from the server)."""
    env = {"LIVECAM_CAMERAS": "0=testsrc:320x240@10", "LIVECAM_CONTROL_TOKEN": CONTROL}
    subpath = request.param == "subpath"
    server = serve({**env, "LIVECAM_PROXY_HOPS": "1"} if subpath else env)
    assert api(server, "POST", "/cameras/0/start")[0] == 200
    if not subpath:
        yield server, address(server)
        return
    nginx = Nginx(tmp_path / "nginx", server.port, *certificate)
    try:
        nginx.wait_ready()
        yield server, f"http://127.0.0.1:{nginx.ports['subpath']}/livecam/"
    finally:
        nginx.stop()


def test_a_camera_added_in_the_dialog_plays_beside_the_others_then_is_renamed_and_removed(
    control_site: tuple[Server, str], browser: Browser
) -> None:
    server, url = control_site
    page, problems = log_in(browser, url, CONTROL)
    expect(page.locator("#camera-0 .badge")).to_have_text("live")
    dialog = page.locator("#camera-dialog")
    page.get_by_role("button", name="Add camera").click()
    expect(dialog).to_be_visible()
    source = dialog.get_by_label("Source")
    expect(source).to_be_focused()

    # A source livecam refuses: its one-line message, from Try and from Save, beside the form.
    bad = {"source": "ftp://192.0.2.7/cam"}
    status, refused = api(server, "POST", "/cameras", bad)
    assert status == 400 and refused["error"].startswith("source: ")
    source.fill(bad["source"])
    dialog.get_by_role("button", name="Try").click()
    expect(dialog.locator(".probe-failed")).to_have_text(refused["error"])
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator(".form-error")).to_have_text(refused["error"])
    expect(source).to_have_attribute("aria-invalid", "true")
    # One that cannot be read: Try says why.
    source.fill(f"http://127.0.0.1:{free_port()}/video.mjpg")
    dialog.get_by_role("button", name="Try").click()
    expect(dialog.locator(".probe-failed")).not_to_be_empty(timeout=12_000)
    expect(dialog.locator(".probe-picture")).to_be_hidden()

    # A second test pattern: Try shows what it is and its picture; Save adds it.
    source.fill("testsrc:160x120@10")
    dialog.get_by_role("button", name="Try").click()
    expect(dialog.locator(".probe-picture")).to_be_visible(timeout=12_000)
    assert shows(page, "document.querySelector('.probe-picture').naturalWidth === 320")  # the 320 px snapshot
    expect(dialog.locator(".probe-failed")).to_be_empty()
    expect(dialog.locator('[data-field="probe-size"]')).to_have_text("160 × 120")
    expect(dialog.locator('[data-field="probe-kind"]')).to_have_text("video")
    expect(dialog.locator('[data-field="probe-passthrough"]')).to_contain_text("no")
    page.screenshot(path=ARTIFACTS / "dashboard-add-camera.png")
    dialog.get_by_label("Name").fill("Porch")
    dialog.get_by_label("JPEG quality").fill("70")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    tile = page.locator("#camera-1")
    expect(tile.locator("h2")).to_have_text("Porch")
    expect(page.locator(".count")).to_have_text("2 cameras")
    added = api(server, "GET", "/cameras/1")[1]
    assert added["name"] == "Porch" and added["profiles"]["full"]["quality"] == 70
    prefix = "/livecam" if "/livecam/" in url else ""
    assert tile.locator(".view").get_attribute("href") == f"{prefix}/cameras/1/stream.mjpg"
    # It plays beside the other, through the one multiplexed stream, with no reload.
    expect(tile).to_have_class(re.compile(r"\blive\b"))
    expect(tile.locator(".badge")).to_have_text("live", timeout=5000)
    wait_for_pictures(page)
    wait_until_every_tile_moves(page)
    assert wait_for(lambda: streams(server) == 1)
    assert api(server, "GET", "/cameras/1")[1]["viewers"] == 1
    page.screenshot(path=ARTIFACTS / f"dashboard-added-{'subpath' if prefix else 'direct'}.png")

    # Edit renames it, here and for livecam; a new quality reopens the camera, and its tile
    # plays again at once (the page asks for the stream again rather than wait for a stall).
    changed_from = api(server, "GET", "/cameras/1")[1]
    tile.get_by_role("button", name="Edit").click()
    expect(dialog.locator("h2")).to_have_text("Edit Porch")
    expect(dialog.get_by_label("Source")).to_be_hidden()
    expect(dialog.get_by_label("Name")).to_have_value("Porch")
    # An empty setting keeps what the camera does now, shown as the field's hint.
    expect(dialog.get_by_label("Width")).to_have_attribute("placeholder", str(changed_from["width"]))
    dialog.get_by_label("Name").fill("Back porch")
    dialog.get_by_label("JPEG quality").fill("50")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(tile.locator("h2")).to_have_text("Back porch")
    changed = api(server, "GET", "/cameras/1")[1]
    assert changed["name"] == "Back porch" and changed["profiles"]["full"]["quality"] == 50
    wait_until_every_tile_moves(page, changes=2, timeout=2.5)
    expect(tile).not_to_have_class(re.compile(r"\bstalled\b"))

    # Remove asks first; Cancel keeps it, Remove removes it.
    confirm = page.locator("#remove-dialog")
    tile.get_by_role("button", name="Remove").click()
    expect(confirm).to_contain_text("Remove Back porch?")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(tile).to_be_visible()
    tile.get_by_role("button", name="Remove").click()
    confirm.get_by_role("button", name="Remove").click()
    expect(tile).to_have_count(0)
    assert api(server, "GET", "/cameras/1")[0] == 404
    expect(page.locator(".count")).to_have_text("1 camera")
    wait_until_every_tile_moves(page, changes=2)  # the other tile still plays
    assert page.evaluate("window.sameDocument") is True
    assert problems == []
    page.context.close()


def test_cameras_added_and_removed_elsewhere_come_and_go_on_an_open_page_without_the_controls(
    serve: Callable[..., Server], browser: Browser
) -> None:
    env = {
        "LIVECAM_CAMERAS": "0=testsrc:320x240@10",
        "LIVECAM_CONTROL_TOKEN": CONTROL,
        "LIVECAM_VIEW_TOKEN": TOKEN,
    }
    server = serve(env)
    assert api(server, "POST", "/cameras/0/start")[0] == 200
    page, problems = log_in(browser, address(server), TOKEN)  # may watch, not control
    expect(page.locator("#camera-0 .badge")).to_have_text("live")
    # No control right: none of the controls that change cameras, nor their dialogs.
    for control in (".add-button", ".edit", ".remove", "dialog"):
        expect(page.locator(control)).to_have_count(0)

    # Added with a plain HTTP request: its tile comes within a few seconds and plays.
    status, added = api(server, "POST", "/cameras", {"source": "testsrc:160x120@10", "name": "Shed"})
    assert status == 201
    tile = page.locator(f"#camera-{added['id']}")
    expect(tile.locator("h2")).to_have_text("Shed", timeout=3000)
    expect(tile.locator(".edit")).to_have_count(0)
    expect(tile.locator(".badge")).to_have_text("live", timeout=5000)
    wait_for_pictures(page)
    wait_until_every_tile_moves(page)
    # Renamed elsewhere: the tile follows.
    assert api(server, "PATCH", f"/cameras/{added['id']}", {"name": "Tool shed"})[0] == 200
    expect(tile.locator("h2")).to_have_text("Tool shed", timeout=3000)
    # Removed with a plain HTTP request: its tile goes, and the other one plays on.
    assert api(server, "DELETE", f"/cameras/{added['id']}")[0] == 204
    expect(tile).to_have_count(0, timeout=3000)
    expect(page.locator(".tile")).to_have_count(1)
    wait_until_every_tile_moves(page, changes=2)
    assert wait_for(lambda: streams(server) == 1)
    assert page.evaluate("window.sameDocument") is True
    assert problems == []
    page.context.close()


class EmbeddingSite:
    """Another web site on loopback whose page embeds a livecam snapshot and stream."""

    def __init__(self, host: str) -> None:
        self.livecam = ""  # livecam's address, set once it runs
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                page = (
                    "<!doctype html><title>wall</title>"
                    f'<img id="snapshot" src="{site.livecam}/cameras/0/snapshot.jpg">'
                    f'<img id="stream" src="{site.livecam}/cameras/0/stream.mjpg">'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

        self._server = ThreadingHTTPServer((host, 0), Handler)
        # 127.0.0.1 is reached by the name localhost: a site other than livecam's 127.0.0.1.
        name = "localhost" if host == "127.0.0.1" else host
        self.origin = f"http://{name}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def test_only_an_allowed_site_may_embed_streams_and_snapshots(
    browser: Browser, serve: Callable[..., Server]
) -> None:
    allowed, other = EmbeddingSite("127.0.0.1"), EmbeddingSite("127.0.0.2")
    try:
        livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:160x120@10", "LIVECAM_ALLOW_ORIGINS": allowed.origin})
        livecam.request("POST", "/cameras/0/start")
        allowed.livecam = other.livecam = f"http://127.0.0.1:{livecam.port}"
        for site, embeds in ((allowed, True), (other, False)):
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{site.origin}/", wait_until="domcontentloaded")
            for image in ("#snapshot", "#stream"):
                width = f"document.querySelector('{image}').naturalWidth"
                if embeds:
                    page.wait_for_function(f"{width} === 160", timeout=10_000)
                else:
                    # The browser refuses the answer (Cross-Origin-Resource-Policy: same-origin).
                    page.wait_for_function(f"document.querySelector('{image}').complete", timeout=10_000)
                    assert page.evaluate(width) == 0, image
            context.close()
        # A site allowed to embed still may not switch.
        assert livecam.request("POST", "/cameras/0/stop", {"Origin": allowed.origin})[0] == 403
    finally:
        allowed.stop()
        other.stop()


# Camera 0's test pattern has a block sweeping along its bottom: motion, with the name and the
# clock at the top left out.
MOTION = "\n[cameras.0.motion]\nenabled = true\narea = 0.002\nduration = 0.2\nignore = [[0, 0, 1, 0.6]]\n"


@pytest.fixture(params=["direct", "subpath"])
def motion_site(
    request: pytest.FixtureRequest,
    serve: Callable[..., Server],
    tmp_path: Path,
    certificate: tuple[Path, Path],
) -> Iterator[tuple[Server, str]]:
    """A camera that sees motion (0, off) beside one that does not (1, on); the dashboard's
    address straight to gunicorn, or under nginx's /livecam/ sub-path."""
    config = tmp_path / "livecam.toml"
    config.write_text('[cameras.0]\nname = "Driveway"\n[cameras.1]\nname = "Garden"\n' + MOTION)
    env = {"LIVECAM_CAMERAS": "0=testsrc:320x240@10,1=testsrc:320x240@10", "LIVECAM_CONFIG": str(config)}
    subpath = request.param == "subpath"
    server = serve({**env, "LIVECAM_PROXY_HOPS": "1"} if subpath else env)
    assert server.request("POST", "/cameras/1/start")[0] == 200
    if not subpath:
        yield server, address(server)
        return
    nginx = Nginx(tmp_path / "nginx", server.port, *certificate)
    try:
        nginx.wait_ready()
        yield server, f"http://127.0.0.1:{nginx.ports['subpath']}/livecam/"
    finally:
        nginx.stop()


class EventReader:
    """The test's own subscriber to /events: each event with when it arrived here."""

    def __init__(self, server: Server) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self._conn.request("GET", "/events")
        response = self._conn.getresponse()
        assert response.status == 200
        self.events: list[tuple[float, dict]] = []
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()

    def _read(self, response: http.client.HTTPResponse) -> None:
        try:
            for message in read_messages(response):
                if "data" in message.fields:
                    with self._arrived:
                        self.events.append((time.monotonic(), message.json))
                        self._arrived.notify_all()
        except OSError:
            pass  # closed by the test

    def wait(self, matches: Callable[[dict], bool], timeout: float = 15.0) -> tuple[float, dict]:
        """The first event ``matches`` accepts, and when it arrived (waits for it, bounded)."""
        with self._arrived:
            found = lambda: next(((t, e) for t, e in self.events if matches(e)), None)  # noqa: E731
            assert self._arrived.wait_for(found, timeout), f"no such event in {[e for _, e in self.events]}"
            return found()

    def close(self) -> None:
        self._conn.sock and self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()


def within_a_second_of(arrived: float) -> float:
    """What is left of the second after an event arrived here (at least a moment)."""
    return max(100.0, 1000 * (arrived + 1.0 - time.monotonic()))


def test_motion_marks_its_tile_state_changes_come_at_once_and_the_list_shows_events(
    motion_site: tuple[Server, str], browser: Browser
) -> None:
    server, url = motion_site
    events = EventReader(server)
    try:
        page, problems = open_page(browser, url)
        button = page.locator(".events-button")
        expect(button).to_be_visible()
        expect(page.locator("#camera-1 .badge")).to_have_text("live")
        # From here on the status refresh never answers: every change shown comes from /events.
        page.evaluate(
            "const plain = window.fetch, cameras = new URL(document.body.dataset.camerasUrl, location.href);"
            "window.fetch = (url, options) => new URL(url, location.href).href === cameras.href"
            " ? new Promise(() => {}) : plain(url, options)"
        )

        assert server.request("POST", "/cameras/0/start")[0] == 200
        arrived, start = events.wait(lambda e: e["type"] == "motion.start" and e["camera"] == 0)
        tile = page.locator("#camera-0")
        expect(tile).to_have_class(re.compile(r"\bmotion\b"), timeout=within_a_second_of(arrived))
        expect(tile.locator(".motion-label")).to_be_visible()
        # The box is drawn where the event says, over the picture (320x240 in its canvas).
        box = tile.locator(".motion-box")
        expect(box).to_be_visible(timeout=within_a_second_of(arrived))
        canvas = tile.locator(".view canvas").bounding_box()
        scale = min(canvas["width"] / 320, canvas["height"] / 240)
        left = canvas["x"] + (canvas["width"] - 320 * scale) / 2
        top = canvas["y"] + (canvas["height"] - 240 * scale) / 2
        x0, y0, x1, y1 = start["box"]
        shown = box.bounding_box()
        assert shown["x"] == pytest.approx(left + x0 * 320 * scale, abs=3)
        assert shown["y"] == pytest.approx(top + y0 * 240 * scale, abs=3)
        assert shown["width"] == pytest.approx((x1 - x0) * 320 * scale, abs=3)
        assert shown["height"] == pytest.approx((y1 - y0) * 240 * scale, abs=3)
        assert y0 >= 0.6  # the sweeping block, below the area left out
        page.screenshot(path=ARTIFACTS / "dashboard-motion.png")

        # Switched off from another client: the tile says so within a second, no poll needed.
        assert server.request("POST", "/cameras/1/stop")[0] == 200
        arrived, _ = events.wait(lambda e: e.get("state") == "off" and e["camera"] == 1)
        expect(page.locator("#camera-1 .badge")).to_have_text("off", timeout=within_a_second_of(arrived))
        expect(page.locator("#camera-1 .toggle")).to_have_text("Turn on")

        # The motion ends with its camera: the mark and the box go.
        assert server.request("POST", "/cameras/0/stop")[0] == 200
        arrived, _ = events.wait(lambda e: e["type"] == "motion.end" and e["camera"] == 0)
        expect(tile).not_to_have_class(re.compile(r"\bmotion\b"), timeout=within_a_second_of(arrived))
        expect(box).to_be_hidden()
        expect(tile.locator(".badge")).to_have_text("off", timeout=1000)

        # The list opens from the header: what came before the page (from /events/recent) and
        # after (from the stream), newest first, each motion event with its picture.
        expect(button.locator(".unseen")).not_to_have_text("")
        button.click()
        panel = page.locator("#events")
        expect(panel).to_be_visible()
        expect(button.locator(".unseen")).to_have_text("")
        item = panel.locator(f'.event[data-id="{start["id"]}"]')
        expect(item).to_contain_text("Driveway")
        expect(item).to_contain_text("motion")
        picture = item.locator("img")
        assert shows(
            page, f"document.querySelector('.event[data-id=\"{start['id']}\"] img').naturalWidth === 320"
        )
        prefix = "/livecam" if "/livecam/" in url else ""
        assert picture.get_attribute("src") == f"{prefix}/cameras/0/events/{start['id']}.jpg"
        garden = panel.locator('.event[data-camera="1"]')
        expect(garden.first).to_contain_text("off")  # the newest of camera 1's, from the stream
        expect(garden.last).to_contain_text("starting")  # switched on before the page opened
        ids = [int(i.get_attribute("data-id")) for i in panel.locator(".event").all()]
        assert ids == sorted(ids, reverse=True) and len(ids) >= 6  # newest first
        page.screenshot(path=ARTIFACTS / "dashboard-events.png")
        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        expect(button).to_have_attribute("aria-expanded", "false")
        assert problems == []
        page.context.close()
    finally:
        events.close()
