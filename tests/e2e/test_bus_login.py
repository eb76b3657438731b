"""Logins in bus mode: two web hosts behind nginx share one session key; the throttle's reach.

Each web host is a gunicorn of two workers with a state directory of its own, as on two
machines, serving the cameras of a real capture process through a real nats-server. Which
worker answered each request is read from its access log, which names the worker's PID.
"""

from __future__ import annotations

import http.client
import subprocess
from collections.abc import Callable
from pathlib import Path

from helpers import Server, wait_for
from livecam.auth import FAILURES_ALLOWED
from nats_server import NatsServer
from nginx_proxy import Nginx

VIEW, CONTROL = "view-secret-123", "control-secret-456"
KEY = "one-session-key-for-every-web-host-0123456789"
JSON = {"Accept": "application/json"}
CAMERAS = "0=testsrc:160x120@20,1=testsrc:64x48@10"


class WebHost:
    """A gunicorn of ``workers`` workers in bus mode, with its own state directory and access log."""

    def __init__(self, serve: Callable[..., Server], tmp_path: Path, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.access_log = tmp_path / f"{name}-access.log"
        env = {"LIVECAM_STATE_DIR": str(tmp_path / f"{name}-state"), **env}
        # Each answer as "PID METHOD PATH STATUS": the PID is the worker's.
        log = ("--access-logfile", str(self.access_log), "--access-logformat", "%(p)s %(m)s %(U)s %(s)s")
        self.server = serve(env, "--workers", "2", *log)

    def answers(self) -> list[tuple[str, str, str, int]]:
        """(worker PID, method, path, status) of every request answered so far."""
        if not self.access_log.exists():
            return []
        # A line being written is left for the next read: only whole lines count.
        lines = [
            line.split()
            for line in self.access_log.read_text().splitlines(keepends=True)
            if line.endswith("\n")
        ]
        return [(pid.strip("<>"), method, path, int(status)) for pid, method, path, status in lines]

    def wait_every_worker(self, count: int = 2) -> None:
        """Wait until each of ``count`` workers has answered a request (gunicorn is ready when
        one is; a guess sent before the other runs would always land on the first)."""

        def answering() -> int:
            send(self.server.port, "GET", "/healthz", JSON)
            return len({pid for pid, _, path, _ in self.answers() if path == "/healthz"})

        assert wait_for(lambda: answering() >= count, timeout=30), self.server.output()


def bus_env(url: str, **more: str) -> dict[str, str]:
    """The settings every web host of the site shares."""
    return {"LIVECAM_BUS": url, "LIVECAM_CAMERAS": CAMERAS, **more}


def send(port: int, method: str, path: str, headers: dict[str, str], body: str = "") -> tuple[int, str]:
    """One request on a connection of its own: the status and the Set-Cookie header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body.encode() or None, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Set-Cookie", "")
    finally:
        conn.close()


def test_a_login_through_nginx_holds_on_every_web_host(
    serve: Callable[..., Server],
    start_capture: Callable[..., subprocess.Popen],
    nats_server: NatsServer,
    tmp_path: Path,
    certificate: tuple[Path, Path],
) -> None:
    start_capture(CAMERAS)
    env = bus_env(
        nats_server.url,
        LIVECAM_VIEW_TOKEN=VIEW,
        LIVECAM_CONTROL_TOKEN=CONTROL,
        LIVECAM_SECRET_KEY=KEY,
        LIVECAM_PROXY_HOPS="1",
    )
    hosts = [WebHost(serve, tmp_path, name, env) for name in ("first", "second")]
    bearer = {"Authorization": f"Bearer {VIEW}", **JSON}
    for host in hosts:  # each has heard from the capture process
        assert wait_for(lambda h=host: h.server.request("GET", "/cameras/1", bearer)[1]["state"] == "off", 15)
    nginx = Nginx(tmp_path / "nginx", tuple(host.server.port for host in hosts), *certificate)
    try:
        nginx.wait_ready()
        port = nginx.ports["root"]
        assert send(port, "GET", "/cameras", JSON)[0] == 401
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        status, set_cookie = send(port, "POST", "/login", form, f"token={CONTROL}&next=/")
        assert status == 303 and set_cookie.startswith("livecam_session=")
        cookie = {"Cookie": set_cookie.split(";")[0], **JSON}
        # nginx takes the hosts in turn: these land on both, and only one saw the login.
        statuses = [send(port, "GET", "/cameras", cookie)[0] for _ in range(6)]
        statuses += [send(port, "POST", f"/cameras/1/{switch}", cookie)[0] for switch in ("start", "stop")]
        assert statuses == [200] * 8
    finally:
        nginx.stop()

    def with_the_cookie(host: WebHost) -> list[tuple[str, str, str, int]]:
        """What the host answered to the requests above made with the login's cookie."""
        paths = ("/cameras", "/cameras/1/start", "/cameras/1/stop")
        return [a for a in host.answers() if a[2] in paths and a[3] != 401]

    # The access log is written just after each answer: wait for the last ones.
    assert wait_for(lambda: sum(len(with_the_cookie(host)) for host in hosts) == 8)
    logged_in = [host for host in hosts if any(a[1:3] == ("POST", "/login") for a in host.answers())]
    assert len(logged_in) == 1  # the other host never saw the login, and still let it in
    for host in hosts:
        answered = with_the_cookie(host)
        assert answered and {status for *_, status in answered} == {200}, (host.name, answered)


def test_bus_mode_with_a_token_and_no_session_key_stops_with_one_line(
    serve: Callable[..., Server], nats_server: NatsServer
) -> None:
    server = serve(bus_env(nats_server.url, LIVECAM_VIEW_TOKEN=VIEW), "--workers", "1", ready=False)
    assert server.process.wait(20) != 0
    lines = server.output().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "livecam: configuration error: LIVECAM_SECRET_KEY: bus mode with a token needs it"
    ), lines


def test_the_throttle_answers_five_wrong_guesses_per_worker(
    serve: Callable[..., Server], nats_server: NatsServer, tmp_path: Path
) -> None:
    env = bus_env(nats_server.url, LIVECAM_VIEW_TOKEN=VIEW, LIVECAM_SECRET_KEY=KEY)
    host = WebHost(serve, tmp_path, "web", env)
    host.wait_every_worker()
    port = host.server.port

    def locked_workers() -> set[str]:
        return {pid for pid, _, path, status in host.answers() if path == "/cameras" and status == 429}

    sent = 0
    # Each guess on a connection of its own, so that either worker may take it; until both
    # workers refuse to answer (bounded: which worker accepts is the kernel's choice).
    while len(locked_workers()) < 2 and sent < 400:
        send(port, "GET", "/cameras", {"Authorization": f"Bearer guess-{sent:04d}", **JSON})
        sent += 1
    assert wait_for(lambda: len([a for a in host.answers() if a[2] == "/cameras"]) == sent)
    guesses = [a for a in host.answers() if a[2] == "/cameras"]
    workers = {pid for pid, *_ in guesses}
    assert len(locked_workers()) == len(workers) == 2, f"{sent} guesses did not lock out both workers"
    for worker in workers:
        statuses = [status for pid, *_, status in guesses if pid == worker]
        # Five wrong answers from each worker, then only "try again later".
        assert statuses[:FAILURES_ALLOWED] == [403] * FAILURES_ALLOWED, statuses
        assert set(statuses[FAILURES_ALLOWED:]) == {429}, statuses
    wrong_answers = sum(1 for *_, status in guesses if status == 403)
    assert wrong_answers == FAILURES_ALLOWED * len(workers)  # 5·W on one host
