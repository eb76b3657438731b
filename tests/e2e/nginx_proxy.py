"""The shipped nginx configuration, run for real on loopback ports in front of a livecam."""

from __future__ import annotations

import http.client
import selectors
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from helpers import ROOT, end_process, free_port

DEPLOY = ROOT / "deploy"
# nginx lives in /usr/sbin, which is not on every user's PATH.
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# The test's main file around the shipped ones: one process, so its PID is all of nginx and
# it needs no user to switch to; every file it writes is under its prefix directory.
NGINX_CONF = """\
master_process off;
pid nginx.pid;
events {{}}
http {{
    access_log access.log;
    client_body_temp_path client_body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    # A site that compresses everything: livecam's live locations must opt out.
    gzip on;
    gzip_types *;
    include conf.d/*.conf;
    # An existing site that includes the sub-path variant.
    server {{
        listen 127.0.0.1:{port};
        include snippets/livecam-subpath.conf;
    }}
}}
"""


def install(source: str, target: Path, replacements: dict[str, str]) -> None:
    """Copy a file from deploy/ with test values in place of its defaults, each of which must occur."""
    text = (DEPLOY / source).read_text()
    for old, new in replacements.items():
        assert old in text, f"deploy/{source} no longer contains {old!r}"
        text = text.replace(old, new)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


class Nginx:
    """nginx serving the shipped configuration on loopback ports, in front of ``upstream``.

    Several upstream ports are several web hosts, taken in turn (nginx's round robin).
    """

    def __init__(self, prefix: Path, upstream: int | tuple[int, ...], certificate: Path, key: Path) -> None:
        self.ports = {"root": free_port(), "subpath": free_port(), "tls": free_port()}
        servers = (upstream,) if isinstance(upstream, int) else upstream
        install(
            "nginx/conf.d/livecam-upstream.conf",
            prefix / "conf.d/livecam-upstream.conf",
            {"server 127.0.0.1:8000;": "\n    ".join(f"server 127.0.0.1:{port};" for port in servers)},
        )
        install(
            "nginx/conf.d/livecam.conf",
            prefix / "conf.d/livecam.conf",
            {"listen 80;": f"listen 127.0.0.1:{self.ports['root']};"},
        )
        install(
            "nginx/conf.d/livecam-tls.conf",
            prefix / "conf.d/livecam-tls.conf",
            {
                "listen 443 ssl http2;": f"listen 127.0.0.1:{self.ports['tls']} ssl http2;",
                "/etc/ssl/certs/livecam.example.org.pem": str(certificate),
                "/etc/ssl/private/livecam.example.org.key": str(key),
            },
        )
        for snippet in (DEPLOY / "nginx/snippets").iterdir():
            install(f"nginx/snippets/{snippet.name}", prefix / "snippets" / snippet.name, {})
        (prefix / "nginx.conf").write_text(NGINX_CONF.format(port=self.ports["subpath"]))
        self.log = prefix / "error.log"
        command = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(self.log)]
        self.process = subprocess.Popen([*command, "-g", "daemon off;"])

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until livecam answers its health check through nginx (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if fetch(self.ports["root"], "GET", "/healthz")[0].status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("nginx did not become ready:\n" + self.log.read_text())

    def stop(self) -> None:
        """Stop nginx (fast shutdown), killing it if it does not exit."""
        end_process(self.process, 10)


def fetch(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    """One request on its own connection: the response and its body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


class PortMapping:
    """A TCP port forwarded to another, as a router maps 8443 to 443: bytes pass untouched."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="port-mapping", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        pairs: dict[socket.socket, socket.socket] = {}
        while not self._stopping.is_set():
            for key, _ in selector.select(0.1):
                if key.fileobj is self._listener:
                    client, _ = self._listener.accept()
                    upstream = socket.create_connection(("127.0.0.1", self._target), timeout=10)
                    pairs[client], pairs[upstream] = upstream, client
                    selector.register(client, selectors.EVENT_READ)
                    selector.register(upstream, selectors.EVENT_READ)
                    continue
                sock = key.fileobj
                try:
                    data = sock.recv(65536)
                    if data:
                        pairs[sock].sendall(data)
                        continue
                except OSError:
                    pass
                other = pairs.pop(sock)
                pairs.pop(other, None)
                for end in (sock, other):
                    selector.unregister(end)
                    end.close()
        for sock in pairs:
            sock.close()
        selector.close()
        self._listener.close()

    def stop(self) -> None:
        """Stop forwarding and close every connection."""
        self._stopping.set()
        self._thread.join(10)
