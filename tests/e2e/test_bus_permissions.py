"""Least privilege on the frame bus: the shipped deploy/nats/livecam.conf, with keys of the
test's own in place of its CHANGE-ME placeholders, run by a real nats-server.

Real livecam processes with their roles' keys have all they need; a plain nats-py client of
either role is denied everything else (and a message it is denied reaches nobody); a site's
account sees nothing of another's; livecam run with the wrong role's key says so once.

"Reaches nobody" is checked without waiting a while: nats-server handles a connection's
messages in order, so once the sender's PING is answered its message has been routed, and
once a listener's PING is answered after that, whatever was routed to it has arrived
(see barrier()).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from helpers import ROOT, Server, decode, free_port, read_parts, wait_for
from livecam.bus import FrameBus
from nats_keys import Key
from nats_server import NatsServer

CONF = ROOT / "deploy" / "nats" / "livecam.conf"
USERS = ("site1-capture", "site1-web", "site2-capture", "site2-web")
CAMERAS = "0=testsrc:160x120@20"
DENIES = "permission to"  # in livecam's line about a permission NATS denies


class Site:
    """The shipped file with a key of its own for each user, served by a real nats-server."""

    def __init__(self, directory: Path) -> None:
        self.keys = {user: Key() for user in USERS}
        text = CONF.read_text()
        for user, key in self.keys.items():
            assert text.count(f"CHANGE-ME-{user}") == 1, user
            text = text.replace(f"CHANGE-ME-{user}", key.public)
        assert "nkey: CHANGE-ME" not in text
        self.conf = directory / "livecam.conf"
        self.conf.write_text(text)
        self.seeds = {user: directory / f"{user}.nk" for user in USERS}  # LIVECAM_BUS_CREDS files
        for user, key in self.keys.items():
            self.seeds[user].write_text(key.seed + "\n")
            self.seeds[user].chmod(0o600)
        self.monitor = free_port()
        # The command line's -a and -p win over the file's port: loopback, a free port.
        self.server = NatsServer(None, "-c", str(self.conf), "-m", str(self.monitor))

    @property
    def url(self) -> str:
        return self.server.url

    def messages_from(self, name: str) -> int:
        """Messages nats-server took from the connection named ``name``, denied ones included."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/connz", timeout=5) as answer:
            connections = json.load(answer)["connections"]
        return sum(c["in_msgs"] for c in connections if c.get("name") == name)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    site = Site(tmp_path)
    site.server.start()
    yield site
    site.server.stop()


async def barrier(client: Client) -> None:
    """Wait until nats-server has handled everything ``client`` sent so far.

    One flush() is not enough: nats-py writes its PING to the socket at once, ahead of the
    commands still queued for its flusher task, so the PONG may come before the server has
    seen them. That flush kicks the flusher, which writes them before the PONG is read; a
    second PING then follows them on the socket.
    """
    await client.flush(timeout=5)
    await client.flush(timeout=5)


class Role:
    """A plain nats-py connection as one user of the shipped file, with the errors it got."""

    def __init__(self, client: Client, errors: list[str]) -> None:
        self.client = client
        self.errors = errors

    async def denied(self, what: str, subject: str) -> bool:
        """Whether nats-server said it denied ``what`` ("publish", "subscription") on ``subject``.
        Its -ERR comes before the answer to a PING sent after the offence; nats-py lowercases it."""
        await barrier(self.client)
        said = f'nats: permissions violation for {what} to "{subject.lower()}"'
        return said in self.errors


async def connect(site: Site, user: str) -> Role:
    errors: list[str] = []

    async def error(exc: Exception) -> None:
        errors.append(str(exc))

    client = await nats.connect(
        site.url,
        nkeys_seed=str(site.seeds[user]),
        inbox_prefix="livecam._INBOX",  # as livecam's bus does
        error_cb=error,
        allow_reconnect=False,
        connect_timeout=5,
    )
    return Role(client, errors)


async def listen(role: Role, subject: str) -> Subscription:
    """A subscription in effect when this returns (the server has answered a PING after it)."""
    subscription = await role.client.subscribe(subject)
    await barrier(role.client)
    return subscription


async def settle(sender: Role, *listeners: Role) -> None:
    """Everything ``sender`` sent so far has been routed, and has reached ``listeners``."""
    await barrier(sender.client)
    for listener in listeners:
        await barrier(listener.client)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run an async scenario, bounded."""

    async def bounded() -> None:
        await asyncio.wait_for(scenario(), 30)

    asyncio.run(bounded())


async def close(*roles: Role) -> None:
    for role in roles:
        await role.client.close()


def send(server: Server, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
    """One JSON request; the status and the parsed body."""
    return server.send_json(method, path, body or None)


def test_the_shipped_file_needs_keys_of_your_own(tmp_path: Path) -> None:
    def check(conf: Path) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).with_name("nats-server")), "-t", "-c", str(conf)]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    shipped = check(CONF)
    assert shipped.returncode != 0 and "Not a valid public nkey for a user" in shipped.stderr, shipped
    assert check(Site(tmp_path).conf).returncode == 0
    for user in USERS:  # any one placeholder left stops it
        text = CONF.read_text()
        for other in USERS:
            if other != user:
                text = text.replace(f"CHANGE-ME-{other}", Key().public)
        conf = tmp_path / f"but-{user}.conf"
        conf.write_text(text)
        assert check(conf).returncode != 0, user


def test_livecam_roles_have_what_they_need(
    site: Site, serve: Callable[..., Server], start_capture: Callable[..., subprocess.Popen]
) -> None:
    capture = start_capture(CAMERAS, url=site.url, bus_creds=str(site.seeds["site1-capture"]))
    web = {"LIVECAM_BUS": site.url, "LIVECAM_CAMERAS": CAMERAS}
    livecam = serve(web | {"LIVECAM_BUS_CREDS": str(site.seeds["site1-web"])})
    # Records reach the web role; its switch reaches the capture process, whose answer
    # (allow_responses) comes back to the web role's inbox.
    assert wait_for(lambda: livecam.record(0)["state"] == "off", timeout=15), livecam.output()
    status, body = livecam.request("POST", "/cameras/0/start")
    assert (status, body["state"]) in ((200, "starting"), (200, "on")), body
    # Interest reaches the capture process, and the camera's frames (160x120; the "no signal"
    # placeholder is 640x480) reach the viewer.
    conn, response = livecam.open_stream("/cameras/0/stream.mjpg")
    try:
        assert next(part for part in read_parts(response) if decode(part.body).shape == (120, 160, 3))
    finally:
        conn.close()
    status, body = livecam.request("POST", "/cameras/0/stop")
    assert (status, body["state"]) == (200, "off"), body
    # A camera added, changed and removed through the web role is done by the capture
    # process (its catalog heard by every web worker), none of it denied (below).
    status, body = send(livecam, "POST", "/cameras", {"source": "testsrc:64x48@5", "autostart": False})
    assert status == 201 and body["id"] == 1, (status, body)
    status, body = send(livecam, "PATCH", "/cameras/1", {"name": "Yard"})
    assert (status, body["name"]) == (200, "Yard"), body
    assert send(livecam, "DELETE", "/cameras/1")[0] == 204

    # A second capture process asks who owns the camera, and the first one answers it.
    second = start_capture(CAMERAS, url=site.url, bus_creds=str(site.seeds["site1-capture"]))
    assert second.wait(20) == 2
    assert "camera 0 is already captured by" in second.stdout.read().decode()

    capture.send_signal(signal.SIGTERM)
    assert capture.wait(10) == 0
    said = capture.stdout.read().decode()
    assert f"frame bus: connected to {site.url}" in said  # the log was read
    # Nothing the roles did was denied.
    assert DENIES not in said and DENIES not in livecam.output()


# What each role must never do (under the prefix or outside it), one connection per role.
DENIED = {
    "site1-web": [
        ("publish", "livecam.camera.0.frame.full"),
        ("publish", "livecam.camera.0.state"),
        ("publish", "livecam.camera.0.owner"),
        ("publish", "livecam.camera.0.event"),  # a forged event
        ("publish", "livecam._INBOX.forged.1"),  # a forged answer to someone's request
        ("publish", "_INBOX.forged.1"),
        ("publish", "other.camera.0.control"),
        ("subscription", "livecam.camera.0.control"),  # to answer switches itself
        ("subscription", "livecam.camera.0.latest"),
        ("subscription", "livecam.camera.0.owner"),
        ("subscription", "livecam.camera.0.interest"),
        ("publish", "livecam.capture.catalog"),  # a forged catalog: cameras gone from every worker
        ("subscription", "livecam.cameras.add"),  # to answer adds itself
        ("subscription", "livecam.camera.0.manage"),
        ("subscription", "livecam.>"),
        ("subscription", "_INBOX.>"),
        ("subscription", ">"),
    ],
    "site1-capture": [
        ("publish", "livecam.camera.0.control"),  # switch a camera
        ("publish", "livecam.camera.0.latest"),
        ("publish", "livecam.camera.0.interest"),
        ("publish", "livecam.cameras.add"),  # add a camera
        ("publish", "livecam.camera.0.manage"),  # change or remove one
        ("publish", "livecam._INBOX.forged.1"),
        ("publish", "other.camera.0.state"),
        ("publish", "other.capture.catalog"),
        ("subscription", "livecam.camera.0.frame.full"),
        ("subscription", "livecam.camera.0.event"),
        ("subscription", "livecam.>"),
        ("subscription", "_INBOX.>"),
        ("subscription", ">"),
    ],
}


def test_each_role_is_denied_everything_else(site: Site) -> None:
    async def scenario() -> None:
        allowed = []
        for user, offences in DENIED.items():
            role = await connect(site, user)
            for what, subject in offences:
                if what == "publish":
                    await role.client.publish(subject, b"x")
                else:
                    await role.client.subscribe(subject)
                if not await role.denied(what, subject):
                    allowed.append((user, what, subject))
            # nats-py keeps a connection the server denied something on: the server keeps it.
            assert role.client.is_connected
            await close(role)
        assert not allowed

    run(scenario)


def test_what_the_web_role_is_denied_reaches_nobody(site: Site) -> None:
    async def scenario() -> None:
        capture, viewer, intruder = (
            await connect(site, "site1-capture"),
            await connect(site, "site1-web"),
            await connect(site, "site1-web"),
        )
        frames = await listen(viewer, "livecam.camera.0.frame.full")
        records = await listen(viewer, "livecam.camera.0.state")
        records_seen_by_capture = await listen(capture, "livecam.camera.0.state")
        events = await listen(viewer, "livecam.camera.*.event")

        # The capture role's frame, record and event reach the viewer: the check
        # below would see a message.
        await capture.client.publish("livecam.camera.0.frame.full", b"\xff\xd8real")
        await capture.client.publish("livecam.camera.0.state", b'{"state": "on"}')
        await capture.client.publish("livecam.camera.0.event", b"{}")
        await settle(capture, viewer)
        assert (frames.pending_msgs, records.pending_msgs, events.pending_msgs) == (1, 1, 1)
        await asyncio.gather(frames.next_msg(), records.next_msg(), events.next_msg())
        await records_seen_by_capture.next_msg(timeout=5)

        # Another web-role client's picture and record reach no viewer and no capture process.
        await intruder.client.publish("livecam.camera.0.frame.full", b"\xff\xd8forged")
        await intruder.client.publish("livecam.camera.0.state", b'{"state": "off", "owner": "me"}')
        await settle(intruder, viewer, capture)
        assert await intruder.denied("publish", "livecam.camera.0.frame.full")
        assert await intruder.denied("publish", "livecam.camera.0.state")
        assert (frames.pending_msgs, records.pending_msgs, records_seen_by_capture.pending_msgs) == (0, 0, 0)

        # Its subscription to switches is refused: a switch finds no one to answer it (nats-py
        # still lists the subscription as its own).
        await intruder.client.subscribe("livecam.camera.0.control")
        assert await intruder.denied("subscription", "livecam.camera.0.control")
        with pytest.raises(nats.errors.NoRespondersError):
            await viewer.client.request("livecam.camera.0.control", b"stop", timeout=5)
        await close(capture, viewer, intruder)

    run(scenario)


def test_a_site_sees_nothing_of_another(site: Site) -> None:
    async def scenario() -> None:
        capture, viewer = await connect(site, "site1-capture"), await connect(site, "site1-web")
        other_capture, other_viewer = await connect(site, "site2-capture"), await connect(site, "site2-web")
        subjects = ("livecam.camera.0.frame.full", "livecam.camera.0.state", "livecam.camera.0.event")
        ours = [await listen(viewer, subject) for subject in subjects]
        theirs = [await listen(other_viewer, subject) for subject in subjects]

        # The same subjects, under the same prefix, in two accounts.
        for subject in subjects:
            await capture.client.publish(subject, b"site1")
        await settle(capture, viewer, other_viewer)
        assert [s.pending_msgs for s in ours] == [1, 1, 1]
        assert [s.pending_msgs for s in theirs] == [0, 0, 0]
        for subscription in ours:
            await subscription.next_msg()
        for subject in subjects:
            await other_capture.client.publish(subject, b"site2")
        await settle(other_capture, viewer, other_viewer)
        assert [s.pending_msgs for s in ours] == [0, 0, 0]
        assert [s.pending_msgs for s in theirs] == [1, 1, 1]

        # Site 1's capture process answers site 1's switches, and never hears site 2's.
        async def answer(msg: Msg) -> None:
            await msg.respond(b"site1 switched")

        await capture.client.subscribe("livecam.camera.0.control", cb=answer)
        await barrier(capture.client)
        assert (await viewer.client.request("livecam.camera.0.control", b"stop", timeout=5)).data == (
            b"site1 switched"
        )
        with pytest.raises(nats.errors.NoRespondersError):
            await other_viewer.client.request("livecam.camera.0.control", b"stop", timeout=5)
        assert not capture.errors and not viewer.errors and not other_viewer.errors
        await close(capture, viewer, other_capture, other_viewer)

    run(scenario)


def test_capture_with_the_web_roles_key_says_what_is_denied_once(
    site: Site, start_capture: Callable[..., subprocess.Popen]
) -> None:
    seed = site.seeds["site1-web"]
    # A record and a catalog every 0.25 s rather than every second (tests/shortened.py).
    shortened = {"livecam.publisher.STATE_EVERY": 0.25}
    capture = start_capture(CAMERAS, url=site.url, bus_creds=str(seed), shortened=shortened)
    # Its owner question, then a record and a catalog each round: wait until nats-server has
    # denied it four records.
    assert wait_for(lambda: site.messages_from("livecam-capture") >= 9, timeout=20)
    capture.send_signal(signal.SIGTERM)
    assert capture.wait(10) == 0
    said = capture.stdout.read().decode()

    line = (
        f"ERROR livecam.bus: frame bus: {site.url} denies livecam-capture (LIVECAM_BUS_CREDS {seed})"
        " permission to {} to livecam.{}: check the role's permissions"
        " (deploy/nats/livecam.conf)"
    )
    for what, subject in [
        ("publish", "camera.0.state"),  # four times, said once
        ("publish", "camera.0.owner"),
        ("subscribe", "camera.0.owner"),
        ("subscribe", "camera.0.control"),
        ("subscribe", "camera.0.latest"),
        ("subscribe", "camera.0.interest"),
        ("subscribe", "camera.0.manage"),
        ("subscribe", "cameras.add"),
        ("publish", "capture.catalog"),  # four times, said once
    ]:
        assert said.count(line.format(what, subject)) == 1, said
    assert said.count(DENIES) == 9, said
    assert site.keys["site1-web"].seed not in said and site.keys["site1-web"].seed[2:20] not in said


def test_a_prefix_the_permissions_do_not_name_is_said_as_configured(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    # nats-py lowercases nats-server's text; livecam gives the prefix its case back.
    bus = FrameBus(site.url, prefix="LiveCam", name="livecam-web", creds=str(site.seeds["site1-web"]))
    bus.start()
    try:
        assert bus.wait_connected(5)
        for _ in range(3):
            assert bus.publish(bus.subject("camera", 0, "interest"), b"{}")
        # Denied after the three publishes (one connection, in order): by the time it is
        # said, so have they been.
        bus.subscribe(bus.subject("camera", 0, "state"), lambda *_: None)
        assert wait_for(lambda: "subscribe to LiveCam.camera.0.state" in caplog.text)
    finally:
        bus.close()
    assert caplog.text.count("permission to publish to LiveCam.camera.0.interest:") == 1
