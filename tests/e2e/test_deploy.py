"""End to end: the shipped nginx and systemd files, real nginx in front of real gunicorn."""

from __future__ import annotations

import http.client
import io
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import pytest

from helpers import Part, Server, decode, read_parts, wait_for
from nginx_proxy import Nginx, PortMapping, fetch, install

# Where each variant serves livecam: its own site, or under /livecam/ of an existing one.
PREFIXES = {"root": "", "subpath": "/livecam"}


@contextmanager
def open_stream(port: int, path: str) -> Iterator[Iterator[Part]]:
    """Open an MJPEG stream as a browser would (it accepts gzip) and yield its parts."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    response = None
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("Content-Encoding") is None
        yield read_parts(response)
    finally:
        conn.close()
        if response is not None:
            response.close()  # a stream's socket belongs to its response (Connection: close)


class LinkCollector(HTMLParser):
    """The URLs of a page: href, src, form action and the data-*-url its script uses."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._template = 0  # inside a <template>: inert, as a browser reads it

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Keep every (attribute, URL) pair of the tag, outside templates."""
        if tag == "template":
            self._template += 1
        if self._template:
            return
        for name, value in attrs:
            if value is not None and (name in ("href", "src", "action") or name.endswith("-url")):
                self.links.append((name, value))

    def handle_endtag(self, tag: str) -> None:
        """Leave a template."""
        if tag == "template":
            self._template = max(0, self._template - 1)


CAMERAS = range(3)


@pytest.fixture(scope="module")
def shared_livecam(serve_module: Callable[..., Server]) -> Server:
    """livecam behind one proxy: 0 a slow test pattern, 1 and 2 small ones at 15 fps."""
    cameras = "0=testsrc:320x240@2,1=testsrc:160x120@15,2=testsrc:160x120@15"
    return serve_module({"LIVECAM_CAMERAS": cameras, "LIVECAM_PROXY_HOPS": "1"})


@pytest.fixture(scope="module")
def shared_nginx(
    tmp_path_factory: pytest.TempPathFactory, shared_livecam: Server, certificate: tuple[Path, Path]
) -> Iterator[Nginx]:
    """nginx from deploy/nginx in front of ``shared_livecam``, for the module's tests."""
    server = Nginx(tmp_path_factory.mktemp("nginx"), shared_livecam.port, *certificate)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def livecam(shared_livecam: Server) -> Server:
    """The module's livecam with every camera off and no stream left from an earlier test."""
    for camera in CAMERAS:
        assert shared_livecam.request("POST", f"/cameras/{camera}/stop")[0] == 200
    assert wait_for(lambda: all(shared_livecam.record(i)["state"] == "off" for i in CAMERAS))
    assert wait_for(lambda: shared_livecam.request("GET", "/healthz")[1]["streams"] == 0)
    return shared_livecam


@pytest.fixture
def nginx(shared_nginx: Nginx, livecam: Server) -> Nginx:
    """The module's nginx in front of ``livecam``."""
    return shared_nginx


@pytest.mark.parametrize("variant", PREFIXES)
def test_live_views_pass_through_unbuffered_and_uncompressed(
    livecam: Server, nginx: Nginx, variant: str
) -> None:
    port, prefix = nginx.ports[variant], PREFIXES[variant]
    assert livecam.request("POST", "/cameras/0/start")[0] == 200
    # With a query string, as the dashboard's script opens streams.
    with open_stream(port, f"{prefix}/cameras/0/stream.mjpg?t=1") as parts:
        arrivals = [(time.time(), float(part.headers["x-timestamp"])) for part in itertools.islice(parts, 4)]
    # A buffering nginx holds the tail of a part bigger than its 4 KB buffers until more data
    # comes, that is until the next frame, half a second later at 2 fps. Passed through, each
    # part arrives well before the next one is captured.
    for (arrived, captured), (_, next_captured) in itertools.pairwise(arrivals):
        assert arrived < next_captured, f"a part arrived {arrived - captured:.3f} s after its capture"
    # The dashboard's stream of several cameras likewise.
    with open_stream(port, f"{prefix}/streams.mjpg?cameras=0:preview") as parts:
        arrivals = [(time.time(), float(part.headers["x-timestamp"])) for part in itertools.islice(parts, 4)]
    for (arrived, captured), (_, next_captured) in itertools.pairwise(arrivals):
        assert arrived < next_captured, f"a part arrived {arrived - captured:.3f} s after its capture"
    response, body = fetch(port, "GET", f"{prefix}/cameras/0/snapshot.jpg", {"Accept-Encoding": "gzip"})
    assert (response.status, response.getheader("Content-Type")) == (200, "image/jpeg")
    assert response.getheader("Content-Encoding") is None
    assert decode(body).shape == (240, 320, 3)


@pytest.mark.parametrize("variant", PREFIXES)
def test_toggles_through_nginx(livecam: Server, nginx: Nginx, variant: str) -> None:
    port, prefix = nginx.ports[variant], PREFIXES[variant]
    livecam.request("POST", "/cameras/1/start")
    record = json.loads(fetch(port, "GET", f"{prefix}/cameras/1")[1])
    assert all(url.startswith(f"{prefix}/cameras/1") for url in record["urls"].values()), record
    with open_stream(port, record["urls"]["stream"]) as parts:
        next(parts)
        response, body = fetch(port, "POST", record["urls"]["toggle"], {"Accept": "application/json"})
        assert (response.status, json.loads(body)["state"]) == (200, "off")
        # The stream ends through nginx too; a part sent before the switch may still be on its
        # way (another connection answered the switch), never more than that one.
        assert len(list(parts)) <= 1
    response, _ = fetch(port, "POST", record["urls"]["toggle"], {"Accept": "text/html"})
    assert (response.status, response.getheader("Location")) == (303, f"{prefix}/#camera-1")
    assert livecam.record(1)["state"] in ("starting", "on")


@pytest.mark.parametrize("variant", PREFIXES)
def test_every_dashboard_link_works_through_nginx(livecam: Server, nginx: Nginx, variant: str) -> None:
    port, prefix = nginx.ports[variant], PREFIXES[variant]
    for camera in range(3):
        livecam.request("POST", f"/cameras/{camera}/start")
    # A client's own X-Forwarded-Prefix must not move livecam's URLs.
    response, body = fetch(port, "GET", f"{prefix}/", {"X-Forwarded-Prefix": "/elsewhere"})
    assert response.status == 200
    page = LinkCollector()
    page.feed(body.decode())
    assert ("src", f"{prefix}/cameras/0/stream.mjpg") in page.links, page.links
    for attribute, url in page.links:
        assert url.startswith(
            (f"{prefix}/static/", f"{prefix}/cameras", f"{prefix}/streams.mjpg", f"{prefix}/events")
        ), (
            attribute,
            url,
        )
    # Forms and the add and probe URLs are for POST requests, which other tests make.
    posted = ("action", "data-add-url", "data-probe-url")
    for url in {url for attribute, url in page.links if attribute not in posted}:
        if url.endswith("/streams.mjpg"):  # the dashboard's script names the cameras it wants
            url += "?cameras=0:preview,1:full"
        if url.endswith(".mjpg") or "/streams.mjpg?" in url:
            with open_stream(port, url) as parts:
                decode(next(parts).body)
        elif url.endswith("/events"):  # the live events never end: its opening is enough
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", url, headers={"Accept": "text/event-stream"})
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Content-Type").startswith(
                "text/event-stream"
            )
            assert response.readline().startswith(b"retry:")
            conn.close()
        else:
            assert fetch(port, "GET", url)[0].status == 200, url


def upstream_connections(port: int) -> set[int]:
    """The local ports of the established TCP connections to ``port`` on this machine."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if remote.endswith(f":{port:04X}") and state == "01":
            ports.add(int(local.rpartition(":")[2], 16))
    return ports


@pytest.mark.parametrize("variant", PREFIXES)
def test_switches_work_behind_a_port_mapping(livecam: Server, nginx: Nginx, variant: str) -> None:
    mapping = PortMapping(nginx.ports[variant])  # the browser sees another port than nginx's
    try:
        prefix, page = PREFIXES[variant], f"http://127.0.0.1:{mapping.port}"
        headers = {"Accept": "application/json", "Origin": page, "Referer": f"{page}{prefix}/"}
        response, body = fetch(mapping.port, "POST", f"{prefix}/cameras/2/toggle", headers)
        assert response.status == 200, body  # the dashboard's own origin, not a cross-site one
        record = json.loads(body)
        assert record["state"] in ("starting", "on")
        response, _ = fetch(mapping.port, "POST", f"{prefix}/cameras/2/toggle", {"Accept": "text/html"})
        assert response.getheader("Location") == f"{prefix}/#camera-2"
        # A page elsewhere is still refused.
        refused, _ = fetch(
            mapping.port, "POST", f"{prefix}/cameras/2/toggle", {"Origin": "http://evil.example"}
        )
        assert refused.status == 403
    finally:
        mapping.stop()


def test_nginx_reuses_its_connection_to_gunicorn(
    livecam: Server, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    # An nginx of its own: no kept connection left from another test's parallel requests.
    others = upstream_connections(livecam.port)  # the module's nginx's, idle meanwhile
    nginx = Nginx(tmp_path / "nginx", livecam.port, *certificate)
    try:
        nginx.wait_ready()
        seen = []
        for _ in range(3):
            assert fetch(nginx.ports["root"], "GET", "/cameras")[0].status == 200
            seen.append(upstream_connections(livecam.port) - others)
    finally:
        nginx.stop()
    # The same single connection after every request: none opened, none closed.
    assert len(seen[0]) == 1 and seen == [seen[0]] * 3, f"nginx's connections to gunicorn: {seen}"


def test_subpath_without_slash_redirects_to_it(nginx: Nginx) -> None:
    response, _ = fetch(nginx.ports["subpath"], "GET", "/livecam")
    assert response.status == 301
    assert response.getheader("Location") == f"http://127.0.0.1:{nginx.ports['subpath']}/livecam/"


def test_tls_http2_carries_dashboard_and_streams_over_one_connection(
    livecam: Server, nginx: Nginx, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    streams = ["/cameras/1/stream.mjpg", "/cameras/2/stream.mjpg"]
    for camera in (1, 2):
        livecam.request("POST", f"/cameras/{camera}/start")
    urls = [f"https://127.0.0.1:{nginx.ports['tls']}{path}" for path in ["/", *streams]]
    bodies = [tmp_path / f"body{index}" for index in range(len(urls))]
    command = ["curl", "--silent", "--show-error", "--http2", "--cacert", str(certificate[0]), "--parallel"]
    # The streams never end: curl reads them for two seconds, then stops them (exit 28).
    command += ["--max-time", "2", "--write-out", "%{url_effective} %{http_version} %{num_connects}\\n"]
    for url, body in zip(urls, bodies, strict=True):
        command += ["--output", str(body), url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 28, result.stderr
    transfers = [line.split() for line in result.stdout.splitlines()]
    assert sorted(url for url, _, _ in transfers) == sorted(urls), result.stdout
    assert {version for _, version, _ in transfers} == {"2"}, result.stdout
    # curl opened one connection and multiplexed every request on it, as a browser does.
    assert sum(int(connects) for _, _, connects in transfers) == 1, result.stdout
    dashboard = bodies[0].read_text()
    assert all(f'href="{stream}"' in dashboard for stream in streams)  # every picture links its stream
    for body in bodies[1:]:
        assert len(list(itertools.islice(read_parts(io.BytesIO(body.read_bytes())), 2))) == 2


@pytest.mark.parametrize(
    ("name", "program"),
    [
        ("livecam.service", "gunicorn"),
        ("livecam-web.service", "gunicorn"),
        ("livecam-capture.service", "livecam"),
    ],
)
def test_systemd_unit_verifies(tmp_path: Path, name: str, program: str) -> None:
    # verify checks that ExecStart's program exists: point it at this venv's.
    unit = tmp_path / name
    path = Path(sys.executable).with_name(program)
    install(f"systemd/{name}", unit, {f"/opt/livecam/.venv/bin/{program}": str(path)})
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # An unknown key or a bad value is only a warning with exit status 0: any output fails.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


CREDENTIAL_LINES = (
    "LoadCredential=nats.creds:/etc/livecam/nats.creds",
    "Environment=LIVECAM_BUS_CREDS=%d/nats.creds",
)


@pytest.mark.parametrize(
    ("name", "program"), [("livecam-web.service", "gunicorn"), ("livecam-capture.service", "livecam")]
)
def test_systemd_unit_with_nats_credentials_verifies(tmp_path: Path, name: str, program: str) -> None:
    # The bus units' commented lines for a NATS credentials file, as a user uncomments them.
    unit = tmp_path / name
    replacements = {f"/opt/livecam/.venv/bin/{program}": str(Path(sys.executable).with_name(program))}
    replacements |= {f"#{line}": line for line in CREDENTIAL_LINES}
    install(f"systemd/{name}", unit, replacements)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
