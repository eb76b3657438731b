"""The frame bus against a nats-server that wants credentials: a user nkey seed file, a .creds
file of decentralised auth (operator, account and user JWTs), a user and password in the URL.
Each is let in, anyone else is refused, and no secret ever reaches a log."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nkeys
import pytest

from helpers import Server, decode, read_parts, wait_for
from livecam import bus as bus_module
from livecam.bus import FrameBus
from nats_keys import Key, Operator
from nats_server import Inbox, NatsServer

CAMERAS = "0=testsrc:160x120@20"
REFUSED = "refused livecam's credentials"


# How often a refused bus tries again in these tests: livecam's 0.5 s (bus.RECONNECT_WAIT),
# shortened so that a test watches several retries in less time.
RETRY = 0.125


@pytest.fixture
def make_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FrameBus]]:
    """Buses that are closed, and their threads joined, at teardown; they retry every RETRY."""
    monkeypatch.setattr(bus_module, "RECONNECT_WAIT", RETRY)
    buses: list[FrameBus] = []

    def factory(url: str, creds: Path | None = None) -> FrameBus:
        buses.append(FrameBus(url, prefix="site1", creds=str(creds) if creds else None).start())
        return buses[-1]

    yield factory
    for bus in buses:
        bus.close()
    assert not [t for t in threading.enumerate() if t.name in ("livecam-bus", "livecam-frames")]


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Callable[[str], NatsServer]]:
    """nats-servers started with a configuration file (its authorization), killed at teardown."""
    servers: list[NatsServer] = []

    def start(config: str) -> NatsServer:
        path = tmp_path / f"nats{len(servers)}.conf"
        path.write_text(config)
        servers.append(NatsServer(None, "-c", str(path)).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def nkey_server(secured: Callable[[str], NatsServer], *users: Key) -> NatsServer:
    listed = ", ".join(f"{{ nkey: {user.public} }}" for user in users)
    return secured(f"authorization {{ users = [ {listed} ] }}\n")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def frames_cross(sender: FrameBus, receiver: FrameBus) -> bool:
    """A message crosses on the bus's connection, and a frame on its frame link: both let in."""
    messages, frames = Inbox(), Inbox()
    state, frame = receiver.subject("camera", 0, "state"), receiver.subject("camera", 0, "frame", "full")
    receiver.subscribe(state, messages)
    receiver.subscribe_frames(frame, frames)
    # A subscription takes effect with the server's next round trip: publish until one lands.
    return wait_for(lambda: sender.publish(state, b"{}") and messages.wait(1, 0.1)) and wait_for(
        lambda: sender.publish_frame(frame, b"\xff\xd8jpeg", {"seq": "1"}) and frames.wait(1, 0.1)
    )


def refused_once(bus: FrameBus, caplog: pytest.LogCaptureFixture) -> None:
    """``bus`` is refused: it says so once, and stays out over several retries (RETRY apart)."""
    assert wait_for(lambda: REFUSED in caplog.text)
    time.sleep(3.2 * RETRY)  # a window to watch, not a wait for something to happen
    assert not bus.connected
    assert not bus.publish(bus.subject("x"), b"lost")
    assert not bus.publish_frame(bus.subject("x"), b"lost", {})
    assert caplog.text.count(REFUSED) == 1


def test_a_user_nkey_seed_file_lets_the_bus_in_and_is_never_logged(
    secured, make_bus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything livecam and nats-py say, to look for the seed
    user = Key()
    server = nkey_server(secured, user)
    seed = write(tmp_path / "livecam.nk", user.seed + "\n")
    capture, web = make_bus(server.url, seed), make_bus(server.url, seed)
    assert capture.wait_connected(5) and web.wait_connected(5)
    assert frames_cross(capture, web)
    assert f"connected to {server.url}" in caplog.text

    stranger = make_bus(server.url, write(tmp_path / "other.nk", Key().seed))  # a key it does not list
    refused_once(stranger, caplog)
    assert f"LIVECAM_BUS_CREDS {tmp_path / 'other.nk'}" in caplog.text  # which file, not what is in it
    assert user.seed not in caplog.text and user.seed[2:20] not in caplog.text


def test_a_bus_without_credentials_is_refused(secured, make_bus, caplog: pytest.LogCaptureFixture) -> None:
    server = nkey_server(secured, Key())
    bus = make_bus(server.url)
    refused_once(bus, caplog)
    assert "(none given)" in caplog.text


def test_a_creds_file_of_an_operators_user(
    secured, make_bus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    operator = Operator()
    server = secured(operator.server_config())
    (capture_text, capture_user), (web_text, web_user) = (
        operator.user_creds("capture"),
        operator.user_creds("web"),
    )
    capture = make_bus(server.url, write(tmp_path / "capture.creds", capture_text))
    web = make_bus(server.url, write(tmp_path / "web.creds", web_text))
    assert capture.wait_connected(5) and web.wait_connected(5)
    assert frames_cross(capture, web)

    # A user signed by an account the operator never vouched for.
    rogue_text, _ = operator.user_creds("rogue", account=Key(nkeys.PREFIX_BYTE_ACCOUNT))
    rogue = make_bus(server.url, write(tmp_path / "rogue.creds", rogue_text))
    refused_once(rogue, caplog)
    for seed in (capture_user.seed, web_user.seed):
        assert seed not in caplog.text


def test_user_and_password_in_the_url(secured, make_bus, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # An "@" and a ":" in the password: the URL's userinfo ends at its last "@".
    server = secured('authorization { user: cams, password: "pa@ss:w0rd-secret" }\n')
    host = server.url.removeprefix("nats://")
    capture = make_bus(f"nats://cams:pa@ss:w0rd-secret@{host}")
    web = make_bus(f"nats://cams:pa@ss:w0rd-secret@{host}")
    assert capture.wait_connected(5) and web.wait_connected(5)
    assert frames_cross(capture, web)
    assert f"connected to nats://cams:***@{host}" in caplog.text

    wrong = make_bus(f"nats://cams:not-the-secret@{host}")
    refused_once(wrong, caplog)
    assert f"nats://cams:***@{host} {REFUSED} (those in LIVECAM_BUS)" in caplog.text
    assert "w0rd-secret" not in caplog.text and "not-the-secret" not in caplog.text


def test_capture_and_web_roles_with_a_seed_file(
    secured,
    serve: Callable[..., Server],
    start_capture: Callable[..., subprocess.Popen],
    tmp_path: Path,
) -> None:
    user = Key()
    server = nkey_server(secured, user)
    seed = write(tmp_path / "livecam.nk", user.seed + "\n")
    capture = start_capture(CAMERAS, url=server.url, bus_creds=str(seed))
    livecam = serve({"LIVECAM_BUS": server.url, "LIVECAM_CAMERAS": CAMERAS, "LIVECAM_BUS_CREDS": str(seed)})
    outsider = serve({"LIVECAM_BUS": server.url, "LIVECAM_CAMERAS": CAMERAS})
    assert wait_for(lambda: livecam.record(0)["state"] == "off", timeout=15)
    status, body = livecam.request("POST", "/cameras/0/start")
    assert status == 200, body
    conn, response = livecam.open_stream("/cameras/0/stream.mjpg")
    try:
        parts = read_parts(response)
        # The camera's own 160x120 frames (the "no signal" placeholder is 640x480).
        assert next(part for part in parts if decode(part.body).shape == (120, 160, 3))
    finally:
        conn.close()
    record = outsider.record(0)
    assert (record["state"], record["error"]) == ("error", "frame bus unreachable")
    assert wait_for(lambda: REFUSED in outsider.output())

    capture.send_signal(signal.SIGTERM)
    assert capture.wait(10) == 0
    said = capture.stdout.read().decode() + livecam.output() + outsider.output()
    assert f"frame bus: connected to {server.url}" in said  # the logs were read
    assert user.seed not in said and user.seed[2:20] not in said
