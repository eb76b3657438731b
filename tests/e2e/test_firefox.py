"""The dashboard in Firefox ESR (headless, over Marionette), served by real gunicorn on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from firefox import Firefox, firefox_fixture  # noqa: F401  (the firefox fixture)
from helpers import Server, free_port, wait_for

CAMERAS = 8

# Each tile's picture (``article.tile``, a canvas or an ``img`` inside ``.view``) drawn into a canvas and its
# pixels hashed (FNV-1a over 32-bit words), read from the element whatever set its source (an
# MJPEG stream, a snapshot, a blob: URL). null for a tile not wholly in view, "" for one
# with no decoded picture yet. Drawing ignores the tile's CSS (opacity, object-fit).
TILE_HASHES = """
const canvas = document.createElement("canvas");
const context = canvas.getContext("2d", { willReadFrequently: true });
return [...document.querySelectorAll("article.tile")].map((tile) => {
  // The canvas the dashboard draws frames on, or an <img> (a page without JavaScript).
  const img = tile.querySelector(".view canvas") || tile.querySelector(".view img");
  if (!img) return "";
  const box = img.getBoundingClientRect();
  const inView = box.width > 0 && box.height > 0 && box.top >= 0 && box.left >= 0 &&
    box.bottom <= innerHeight && box.right <= innerWidth;
  if (!inView) return null;
  const width = img.naturalWidth ?? img.width, height = img.naturalHeight ?? img.height;
  if (img.complete === false || !width) return "";
  canvas.width = width;
  canvas.height = height;
  context.drawImage(img, 0, 0);
  const words = new Uint32Array(context.getImageData(0, 0, canvas.width, canvas.height).data.buffer);
  let hash = 0x811c9dc5;
  for (let i = 0; i < words.length; i++) hash = Math.imul(hash ^ words[i], 0x01000193);
  return `${canvas.width}x${canvas.height}:${(hash >>> 0).toString(16)}`;
});
"""


def tile_hashes(firefox: Firefox) -> list[str | None]:
    """Every tile's picture hash, None for a tile out of view (see TILE_HASHES)."""
    return firefox.run(TILE_HASHES)


def wait_until_every_tile_moves(firefox: Firefox, pictures: int = 3, timeout: float = 10.0) -> int:
    """Every tile in view shows at least ``pictures`` different pictures within ``timeout`` s
    (three, so that a placeholder before the first frame cannot count as motion); returns
    how many tiles were in view."""
    seen: list[set[str]] | None = None
    in_view: list[bool] = []

    def moved() -> bool:
        nonlocal seen, in_view
        hashes = tile_hashes(firefox)
        if seen is None:
            seen = [set() for _ in hashes]
            in_view = [h is not None for h in hashes]
        for i, picture in enumerate(hashes):
            if picture:
                seen[i].add(picture)
            elif picture is None:
                in_view[i] = False  # scrolled out of view meanwhile: skipped
        return all(len(s) >= pictures for s, shown in zip(seen, in_view, strict=True) if shown)

    assert wait_for(moved, timeout=timeout, every=0.2), f"pictures per tile: {[len(s) for s in seen or []]}"
    return sum(in_view)


@pytest.fixture
def page(firefox: Firefox, serve: Callable[..., Server]) -> Iterator[Firefox]:
    """The browser, left for about:blank after the test and before its servers stop."""
    yield firefox
    firefox.navigate("about:blank")


def test_every_tile_in_view_moves_in_firefox(page: Firefox, serve: Callable[..., Server]) -> None:
    cameras = ",".join(f"{i}=testsrc:320x240@10" for i in range(CAMERAS))
    server = serve({"LIVECAM_CAMERAS": cameras})
    for cam_id in range(CAMERAS):
        assert server.request("POST", f"/cameras/{cam_id}/start")[0] == 200
    assert wait_for(lambda: all(server.record(i)["state"] == "on" for i in range(CAMERAS)))

    page.navigate(f"http://127.0.0.1:{server.port}/")
    assert page.run("return document.querySelectorAll('article.tile').length") == CAMERAS
    in_view = wait_until_every_tile_moves(page)
    assert in_view >= 1, "no tile in view"


PICTURE_BOX = """
const box = document.querySelector("article.tile .picture").getBoundingClientRect();
return [box.width, box.height];
"""


def test_a_tile_keeps_its_aspect_ratio_before_the_first_frame(
    page: Firefox, serve: Callable[..., Server]
) -> None:
    # A camera switched on whose source never answers (nobody listens on that port): its
    # size is unknown and no frame ever arrives.
    server = serve({"LIVECAM_CAMERAS": f"0=http://127.0.0.1:{free_port()}/cam.mjpg"})
    assert server.request("POST", "/cameras/0/start")[0] == 200

    page.navigate(f"http://127.0.0.1:{server.port}/")
    # From the load event on, and while the camera fails and the page refreshes its status.
    deadline = time.monotonic() + 3
    while True:
        width, height = page.run(PICTURE_BOX)
        assert width > 0
        assert height == pytest.approx(width * 3 / 4, abs=2), f"picture box {width}x{height}"
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert server.record(0)["state"] in ("starting", "error")  # so no frame arrived meanwhile
