"""MQTT end to end: livecam's real cameras and event log against a real mosquitto (password
file, loopback), read by real MQTT clients the way Home Assistant reads them.

One mosquitto serves the whole file; each test has its own topic and discovery prefixes, so
no test sees another's retained messages.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask
from mosquitto import Mosquitto, Received, Subscriber

from helpers import capture_threads, wait_for
from livecam import mqtt
from livecam.appstate import get_registry
from livecam.catalog import runtime_camera
from livecam.config import load_settings
from livecam.mqtt import MqttOutput
from livecam.registry import Registry

USER, PASSWORD = "livecam", "s3cret-Pa55"
HA_USER, HA_PASSWORD = "homeassistant", "ha-Pa55word"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"), {USER: PASSWORD, HA_USER: HA_PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture
def subscribe(broker: Mosquitto) -> Iterator[Callable[..., Subscriber]]:
    """Subscribers as Home Assistant (its own user); each closed at teardown."""
    made: list[Subscriber] = []

    def make(*topics: str) -> Subscriber:
        made.append(Subscriber(broker.port, HA_USER, HA_PASSWORD, *topics))
        return made[-1]

    yield make
    for subscriber in made:
        subscriber.close()


@pytest.fixture
def livecam(broker: Mosquitto, tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """Registries publishing to the broker, as one process (or ``livecam capture``) runs them;
    shut down at teardown, no capture or MQTT thread left."""
    made: list[Registry] = []

    def make(prefix: str, cameras: dict[str, Any], **settings: Any) -> Registry:
        overrides = {
            "cameras": cameras,
            "state_dir": str(tmp_path / prefix),
            "mqtt_url": f"mqtt://{USER}:{PASSWORD}@127.0.0.1:{broker.port}",
            "mqtt_prefix": prefix,
            "mqtt_discovery": f"ha-{prefix}",
            **settings,
        }
        made.append(Registry(load_settings(environ={}, overrides=overrides)))
        return made[-1]

    yield make
    for registry in made:
        registry.shutdown()
    assert capture_threads() == []
    assert not [
        t for t in threading.enumerate() if t.name.startswith(("livecam-mqtt", "paho-mqtt-client-livecam"))
    ]


def output_of(registry: Registry, broker: Mosquitto) -> MqttOutput:
    """The registry's MQTT output, once its first round is at the broker: the availability
    is published last, so a client subscribing from now on gets the rest retained."""
    (output,) = [o for o in registry.outputs if isinstance(o, MqttOutput)]
    probe = Subscriber(broker.port, HA_USER, HA_PASSWORD, output.topics.availability)
    try:
        probe.wait_for(output.topics.availability, b"online")
    finally:
        probe.close()
    assert output.connected
    return output


def configs(messages: list[Received], discovery: str) -> dict[str, dict[str, Any]]:
    """The discovery configs among ``messages`` (the last of each topic), by topic."""
    found = {
        m.topic: m.payload
        for m in messages
        if m.topic.startswith(f"{discovery}/") and m.topic.endswith("/config")
    }
    return {topic: json.loads(payload) for topic, payload in found.items() if payload}


def jpeg() -> bytes:
    """A real JPEG, as a motion event carries."""
    image = np.zeros((48, 64, 3), np.uint8)
    cv2.rectangle(image, (10, 10), (40, 30), (0, 200, 255), -1)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


BENCH = {"source": "testsrc:160x120@15", "name": "Bench", "autostart": True, "motion": {"enabled": True}}
DOOR = {"source": "testsrc:64x48@5", "name": "Door"}


def test_discovery_is_retained_and_describes_each_camera(
    livecam: Callable[..., Registry], subscribe: Callable[..., Subscriber], broker: Mosquitto
) -> None:
    registry = livecam("disc", {"0": BENCH, "1": DOOR})
    output = output_of(registry, broker)
    camera = registry.get(0)
    assert camera is not None
    camera.start()  # as restore() would: autostart
    early = subscribe("disc/#")
    early.wait_for("disc/camera/0/state", b"on")  # a real camera, its states as they change
    late = subscribe("ha-disc/#", "disc/#")  # Home Assistant starting now: only retained messages
    expected = {
        f"ha-disc/{component}/disc_{cam}/{name}/config"
        for cam in (0, 1)
        for component, name in [("sensor", "state"), ("binary_sensor", "capture")]
    } | {"ha-disc/binary_sensor/disc_0/motion/config", "ha-disc/image/disc_0/picture/config"}
    assert late.wait(lambda messages: set(configs(messages, "ha-disc")) == expected), late.topics()
    assert all(m.retain for m in late.messages if m.topic.startswith("ha-disc/"))  # the broker's copies
    found = configs(late.messages, "ha-disc")
    assert not any("switch" in topic for topic in late.topics())  # no control, no switch
    for topic, config in found.items():
        cam = 0 if "/disc_0/" in topic else 1
        assert config["device"]["identifiers"] == [f"disc_{cam}"]
        assert config["device"]["name"] == ["Bench", "Door"][cam]
        (available,) = config["availability"]
        # Every topic an entity reads holds a retained value already.
        state_topic = config.get("state_topic")
        assert late.wait_for(available["topic"]).payload == b"online"
        if state_topic is not None:
            assert late.wait_for(state_topic).retain
    assert late.last("disc/camera/1/state") == Received("disc/camera/1/state", b"off", True)
    assert late.last("disc/camera/0/state") == Received("disc/camera/0/state", b"on", True)
    motion = late.last("disc/camera/0/motion")  # from the record: the test pattern may move
    assert motion is not None and motion.payload in (b"ON", b"OFF")
    assert late.last("disc/camera/1/motion") is None  # no detector, no motion topic
    assert output.sent > 0 and output.dropped == 0


def test_motion_on_then_off_with_its_picture(
    livecam: Callable[..., Registry], subscribe: Callable[..., Subscriber], broker: Mosquitto
) -> None:
    registry = livecam("motion", {"0": {**BENCH, "autostart": False}})  # off: only these events
    output_of(registry, broker)
    watcher = subscribe("motion/#")
    watcher.wait_for("motion/camera/0/motion", b"OFF")
    picture = jpeg()
    start = registry.events.add(
        "motion.start", 0, "Bench", snapshot=picture, score=0.2, box=[0.1, 0.1, 0.5, 0.5]
    )
    assert watcher.wait_for("motion/camera/0/motion", b"ON").retain is False  # live, not the stored copy
    assert watcher.wait_for("motion/camera/0/picture").payload == picture
    event = watcher.wait_for("motion/camera/0/event")
    assert json.loads(event.payload) == start.json() and not event.retain
    after = len(watcher.messages)
    end = registry.events.add("motion.end", 0, "Bench", score=0.2, box=[0.1, 0.1, 0.5, 0.5], duration=1.5)
    watcher.wait_for("motion/camera/0/motion", b"OFF", after=after)
    assert json.loads(watcher.wait_for("motion/camera/0/event", after=after).payload)["id"] == end.id
    late = subscribe("motion/camera/0/+")  # what a client connecting now is told
    late.wait_for("motion/camera/0/picture")
    assert late.last("motion/camera/0/motion") == Received("motion/camera/0/motion", b"OFF", True)
    assert late.last("motion/camera/0/picture") == Received("motion/camera/0/picture", picture, True)
    assert late.last("motion/camera/0/event") is None  # events are not retained


def test_switching_from_mqtt_only_with_control(
    livecam: Callable[..., Registry], subscribe: Callable[..., Subscriber], broker: Mosquitto
) -> None:
    closed = livecam("nocontrol", {"0": DOOR})
    quiet = output_of(closed, broker)
    ha = subscribe("ha-nocontrol/#", "nocontrol/#")
    ha.wait_for("nocontrol/camera/0/state", b"off")
    ha.publish("nocontrol/camera/0/set", "ON")
    # Messages reach livecam in order: once the birth after it is answered, ON was not acted on.
    after = len(ha.messages)
    ha.publish("ha-nocontrol/status", "online")
    ha.wait_for("ha-nocontrol/sensor/nocontrol_0/state/config", after=after)
    camera = closed.get(0)
    assert camera is not None and not camera.is_on
    assert (quiet.received, quiet.ignored) == (1, 0)  # the birth alone: commands not subscribed
    ha.wait_for("nocontrol/camera/0/state", after=after)  # the states are sent again with discovery
    assert [m.payload for m in ha.messages if m.topic == "nocontrol/camera/0/state"] == [b"off", b"off"]

    opened = livecam("control", {"0": DOOR}, mqtt_control="true")
    output = output_of(opened, broker)
    ha = subscribe("ha-control/#", "control/#")
    switch = ha.wait_for("ha-control/switch/control_0/capture/config")
    assert json.loads(switch.payload)["command_topic"] == "control/camera/0/set"
    ha.wait_for("control/camera/0/state", b"off")
    camera = opened.get(0)
    assert camera is not None
    ha.publish("control/camera/0/set", "ON")
    ha.wait_for("control/camera/0/state", b"on")
    assert camera.is_on
    after = len(ha.messages)
    ha.publish("control/camera/0/set", "OFF")
    ha.wait_for("control/camera/0/state", b"off", after=after)
    assert not camera.is_on
    ha.publish("control/camera/0/set", "EXPLODE")
    ha.publish("control/camera/9/set", "ON")
    assert wait_for(lambda: output.ignored == 2, 5) and not camera.is_on


def test_home_assistant_coming_online_gets_discovery_again(
    livecam: Callable[..., Registry], subscribe: Callable[..., Subscriber], broker: Mosquitto
) -> None:
    output_of(livecam("birth", {"0": BENCH, "1": DOOR}), broker)
    ha = subscribe("ha-birth/+/+/+/config")
    assert ha.wait(lambda messages: len(configs(messages, "ha-birth")) == 6)
    assert all(m.retain for m in ha.messages)
    after = len(ha.messages)
    ha.publish("ha-birth/status", "online")  # Home Assistant's birth message
    assert ha.wait(lambda messages: len(configs(messages[after:], "ha-birth")) == 6)
    again = ha.messages[after:]
    assert not any(m.retain for m in again)  # sent anew, not the broker's stored copies
    assert configs(again, "ha-birth") == configs(ha.messages[:after], "ha-birth")


def test_a_broker_restart_is_survived(
    livecam: Callable[..., Registry],
    subscribe: Callable[..., Subscriber],
    broker: Mosquitto,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mqtt, "BACKOFF", (0.25, 30.0))  # livecam's doubling from 1 s, from 0.25 s
    caplog.set_level(logging.INFO, logger="livecam.mqtt")
    registry = livecam("restart", {"0": BENCH, "1": DOOR})
    output = output_of(registry, broker)
    before = subscribe("ha-restart/#", "restart/#")
    assert before.wait(lambda messages: len(configs(messages, "ha-restart")) == 6)
    picture = jpeg()
    registry.events.add("motion.end", 1, "Door", snapshot=picture, score=0.1, box=[0, 0, 1, 1], duration=1.0)
    before.wait_for("restart/camera/1/picture", picture)
    broker.stop()  # killed: its retained messages are gone with it (no persistence)
    assert wait_for(lambda: not output.connected, 10)
    # livecam retries meanwhile: one attempt meets a port that hangs up.
    with socket.create_server(("127.0.0.1", broker.port)) as stand_in:
        stand_in.settimeout(10)
        stand_in.accept()[0].close()
    broker.start()
    assert wait_for(lambda: output.connected, 10)
    after = subscribe("ha-restart/#", "restart/#")
    assert after.wait(
        lambda messages: configs(messages, "ha-restart") == configs(before.messages, "ha-restart")
    )
    after.wait_for(output.topics.availability, b"online")
    after.wait_for("restart/camera/1/state", b"off")
    assert after.wait_for("restart/camera/1/picture").payload == picture  # kept by livecam, sent again
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "livecam.mqtt" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1 and "connection lost" in warnings[0], warnings  # one outage, one line
    assert any("connected again after" in r.getMessage() for r in caplog.records)


def test_a_wrong_password_is_one_clear_line_and_livecam_still_serves(
    make_app: Callable[..., Flask],
    broker: Mosquitto,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mqtt, "BACKOFF", (0.25, 30.0))  # retried after 0.25 s rather than 1 s
    caplog.set_level(logging.INFO, logger="livecam.mqtt")
    refused = broker.refusals()
    app = make_app(
        {
            "cameras": {"0": {"source": "testsrc:160x120@15", "name": "Bench", "autostart": True}},
            "mqtt_url": f"mqtt://{USER}:wrong-Pa55@127.0.0.1:{broker.port}",
        }
    )
    assert wait_for(lambda: broker.refusals() >= refused + 2, 10)  # refused, and tried again
    client = app.test_client()
    answer = client.get("/cameras/0/snapshot.jpg")
    assert answer.status_code == 200 and answer.data[:2] == b"\xff\xd8"
    assert client.get("/healthz").status_code == 200
    (output,) = get_registry(app).outputs
    assert isinstance(output, MqttOutput) and not output.connected
    lines = [
        r.getMessage() for r in caplog.records if r.name == "livecam.mqtt" and r.levelno >= logging.WARNING
    ]
    assert lines == [
        f"MQTT broker mqtt://{USER}:***@127.0.0.1:{broker.port}: refused the connection: Not authorized "
        "(check the user name and password in LIVECAM_MQTT_URL); livecam goes on without it and retries "
        "(said once until it is back)"
    ]
    assert "wrong-Pa55" not in caplog.text


def test_cameras_added_renamed_and_removed_at_run_time(
    livecam: Callable[..., Registry], subscribe: Callable[..., Subscriber], broker: Mosquitto
) -> None:
    registry = livecam("runtime", {"0": DOOR})
    output_of(registry, broker)
    ha = subscribe("ha-runtime/#", "runtime/#")
    ha.wait_for("ha-runtime/sensor/runtime_0/state/config")
    table = {"source": "testsrc:64x48@5", "name": "Garage"}
    registry.add(runtime_camera(5, table, registry.settings), table, start=True)
    config = json.loads(ha.wait_for("ha-runtime/sensor/runtime_5/state/config").payload)
    assert config["device"]["name"] == "Garage" and config["state_topic"] == "runtime/camera/5/state"
    ha.wait_for("runtime/camera/5/state", b"on")
    # A new name reaches Home Assistant at once: its device is named anew.
    after = len(ha.messages)
    renamed = {"source": "testsrc:64x48@5", "name": "Workshop"}
    registry.change(runtime_camera(5, renamed, registry.settings), renamed)
    config = json.loads(ha.wait_for("ha-runtime/sensor/runtime_5/state/config", after=after).payload)
    assert config["device"]["name"] == "Workshop"
    after = len(ha.messages)
    registry.remove(5)
    for topic in (
        "ha-runtime/sensor/runtime_5/state/config",
        "ha-runtime/binary_sensor/runtime_5/capture/config",
    ):
        ha.wait_for(topic, b"", after=after)  # an empty retained config: Home Assistant removes it
    ha.wait_for("runtime/camera/5/state", b"", after=after)
    late = subscribe("ha-runtime/#", "runtime/#")
    late.wait_for("runtime/camera/0/state", b"off")
    assert late.wait(lambda messages: len(configs(messages, "ha-runtime")) == 2)  # camera 0's alone
    assert not [topic for topic in late.topics() if "/camera/5/" in topic or "runtime_5" in topic]


# paho-mqtt 2.2 does not close its SSLSocket when the handshake fails (_ssl_wrap_socket): the
# garbage collector does, at once, warning that it was left open. Only that warning is allowed.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning"
)
def test_mqtts_trusts_what_the_system_trusts(
    tmp_path: Path,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="livecam.mqtt")
    (tmp_path / "tls").mkdir()
    secure = Mosquitto(tmp_path / "tls", {USER: PASSWORD}, tls=certificate).start()

    def registry(name: str) -> Registry:
        overrides = {
            "cameras": {},
            "state_dir": str(tmp_path / name),
            "mqtt_url": f"mqtts://{USER}:{PASSWORD}@127.0.0.1:{secure.port}",
        }
        return Registry(load_settings(environ={}, overrides=overrides))

    try:
        untrusted = registry("untrusted")  # a self-signed certificate: not in the system's trust
        try:
            assert wait_for(lambda: "certificate verify failed" in caplog.text, 10), caplog.text
            (output,) = untrusted.outputs
            assert isinstance(output, MqttOutput) and not output.connected
        finally:
            untrusted.shutdown()
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # now the system trusts it
        trusted = registry("trusted")
        try:
            (output,) = trusted.outputs
            assert isinstance(output, MqttOutput)
            assert wait_for(lambda: output.connected, 10), caplog.text
        finally:
            trusted.shutdown()
    finally:
        secure.stop()
    assert PASSWORD not in caplog.text
