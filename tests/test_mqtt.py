"""MQTT without a broker: settings, topics, commands, Home Assistant's discovery payloads
checked against its documented schema, and livecam going on when no broker answers."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest

from helpers import ROOT
from livecam import cli, mqtt
from livecam.config import CameraConfig, ConfigError, MotionConfig, MqttBroker, load_settings, parse_source
from livecam.events import Event
from livecam.mqtt import ENTITIES, MqttOutput, Topics, command, discovery, node_name
from livecam.record import STATES
from livecam.registry import SHUTDOWN_BUDGET, Registry

TOPICS = Topics("livecam", "homeassistant", "host-0123abcd")


def settings(**values: Any) -> Any:
    """Settings from the environment's text, as LIVECAM_* variables give them."""
    environ = {"LIVECAM_CAMERAS": "0=testsrc:160x120@10"}
    environ |= {f"LIVECAM_{key.upper()}": value for key, value in values.items()}
    return load_settings(environ=environ)


def mqtt_threads() -> list[threading.Thread]:
    """The MQTT output's threads alive in this process (livecam's and paho's)."""
    return [t for t in threading.enumerate() if t.name.startswith(("livecam-mqtt", "paho-mqtt"))]


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- settings ---------------------------------------------------------------------------------


def test_the_defaults_leave_mqtt_off() -> None:
    loaded = settings()
    assert loaded.mqtt_url is None
    assert (loaded.mqtt_control, loaded.mqtt_prefix, loaded.mqtt_discovery) == (
        False,
        "livecam",
        "homeassistant",
    )


@pytest.mark.parametrize(
    ("url", "broker"),
    [
        ("mqtt://broker.lan", MqttBroker(False, "broker.lan", 1883, shown="mqtt://broker.lan")),
        ("mqtts://broker.lan/", MqttBroker(True, "broker.lan", 8883, shown="mqtts://broker.lan/")),
        ("mqtt://10.0.0.2:1884", MqttBroker(False, "10.0.0.2", 1884, shown="mqtt://10.0.0.2:1884")),
        ("mqtt://[::1]:1883", MqttBroker(False, "::1", 1883, shown="mqtt://[::1]:1883")),
        ("mqtt://ha@h", MqttBroker(False, "h", 1883, "ha", None, "mqtt://***@h")),
        # Percent-decoded as in any URL; a password holding "@" or ":" as typed is taken whole.
        ("mqtt://h%40a:p%3As@h", MqttBroker(False, "h", 1883, "h@a", "p:s", "mqtt://h%40a:***@h")),
        ("mqtt://ha:a@b:c@h:1", MqttBroker(False, "h", 1, "ha", "a@b:c", "mqtt://ha:***@h:1")),
    ],
)
def test_good_broker_urls(url: str, broker: MqttBroker) -> None:
    assert settings(mqtt_url=url).mqtt_url == broker
    assert broker.password is None or broker.password not in str(broker) + repr(broker)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("mqtt_url", "tcp://h:1883", "LIVECAM_MQTT_URL: expected mqtt://[USER:PASSWORD@]HOST[:PORT]"),
        ("mqtt_url", "mqtt://u:hunter2@", "LIVECAM_MQTT_URL: expected mqtt://"),
        ("mqtt_url", "mqtt://u:hunter2@h:99999", "names a port that is not one from 1 to 65535"),
        ("mqtt_url", "mqtt://u:hunter2@h:0", "names a port that is not one from 1 to 65535"),
        ("mqtt_url", "mqtt://u:hunter2@h:١٨٨٣", "LIVECAM_MQTT_URL: expected mqtt://"),
        ("mqtt_url", "mqtt://:hunter2@h", "mqtt://:***@h has a password but no user name"),
        ("mqtt_url", "mqtt://u:hunter2@h/path", "LIVECAM_MQTT_URL: expected mqtt://"),
        ("mqtt_url", " ", "LIVECAM_MQTT_URL: must be a non-empty string"),
        ("mqtt_control", "maybe", "LIVECAM_MQTT_CONTROL: must be true or false, got 'maybe'"),
        ("mqtt_prefix", "home/+/cams", "LIVECAM_MQTT_PREFIX: must be MQTT topic levels"),
        ("mqtt_prefix", "home//cams", "LIVECAM_MQTT_PREFIX: must be MQTT topic levels"),
        ("mqtt_prefix", "$SYS", "LIVECAM_MQTT_PREFIX: must be MQTT topic levels"),
        ("mqtt_discovery", "ha/#", "LIVECAM_MQTT_DISCOVERY: must be MQTT topic levels"),
        ("mqtt_discovery", "/homeassistant", "LIVECAM_MQTT_DISCOVERY: must be MQTT topic levels"),
    ],
)
def test_bad_values_are_one_line_errors_never_showing_the_password(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        settings(**{name: value})
    text = str(raised.value)
    assert message in text and "\n" not in text and "hunter2" not in text


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("yes", True), (" On ", True), ("false", False)]
)
def test_control_is_a_flag_from_the_environment(value: str, expected: bool) -> None:
    assert settings(mqtt_control=value).mqtt_control is expected


def test_control_is_a_boolean_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "livecam.toml"
    path.write_text('mqtt_url = "mqtt://h"\nmqtt_control = true\nmqtt_prefix = "home/cams"\n')
    loaded = load_settings(environ={"LIVECAM_CONFIG": str(path), "LIVECAM_CAMERAS": "0=testsrc"})
    assert (loaded.mqtt_control, loaded.mqtt_prefix) == (True, "home/cams")
    path.write_text('mqtt_control = "sometimes"\n')
    with pytest.raises(ConfigError, match="mqtt_control: must be true or false"):
        load_settings(environ={"LIVECAM_CONFIG": str(path), "LIVECAM_CAMERAS": "0=testsrc"})


def test_check_config_shows_the_broker_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("LIVECAM_CAMERAS", "0=testsrc")
    monkeypatch.setenv("LIVECAM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LIVECAM_MQTT_URL", "mqtts://ha:hunter2@broker.lan")
    monkeypatch.setenv("LIVECAM_MQTT_CONTROL", "on")
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "MQTT broker mqtts://ha:***@broker.lan, topics under livecam/, " in out
    assert "discovery under homeassistant/, switching from MQTT allowed" in out
    assert "hunter2" not in out


# -- topics and commands ---------------------------------------------------------------------------


def test_topics() -> None:
    assert TOPICS.availability == "livecam/node/host-0123abcd/availability"
    assert TOPICS.camera(3, "state") == "livecam/camera/3/state"
    assert TOPICS.commands == "livecam/camera/+/set"
    assert TOPICS.ha_status == "homeassistant/status"
    assert TOPICS.config("image", 3, "picture") == "homeassistant/image/livecam_3/picture/config"
    nested = Topics("home/cams", "ha", "n")
    assert nested.device_id(3) == "home_cams_3"  # Home Assistant's ids: no "/"
    assert nested.config("switch", 3, "capture") == "ha/switch/home_cams_3/capture/config"


@pytest.mark.parametrize(
    ("topic", "camera"),
    [
        ("livecam/camera/7/set", 7),
        ("livecam/camera/007/set", 7),
        ("livecam/camera/٣/set", None),  # a digit int() takes, but not ASCII
        ("livecam/camera/-1/set", None),
        ("livecam/camera/1234567/set", None),
        ("livecam/camera//set", None),
        ("livecam/camera/7/set/x", None),
        ("livecam/camera/7", None),
        ("other/livecam/camera/7/set", None),
    ],
)
def test_the_camera_a_command_names(topic: str, camera: int | None) -> None:
    assert TOPICS.commanded(topic) == camera


@pytest.mark.parametrize(
    ("payload", "word"),
    [(b"ON", "ON"), (b"off", "OFF"), (b" On\n", "ON"), (b"TOGGLE", None), (b"", None), (b"\xff\xfe", None)]
    + [("ÖN".encode(), None)],
)
def test_commands(payload: bytes, word: str | None) -> None:
    assert command(payload) == word


def test_the_node_is_stable_and_one_per_state_directory(tmp_path: Path) -> None:
    first = node_name(str(tmp_path / "a"), "cams.example")
    assert first == node_name(str(tmp_path / "a"), "cams.example")  # across restarts
    assert first != node_name(str(tmp_path / "b"), "cams.example")  # another process
    assert re.fullmatch(r"cams_example-[0-9a-f]{8}", first)
    assert re.fullmatch(r"[a-z0-9_-]+-[0-9a-f]{8}", node_name(str(tmp_path), "Büro PC#1/+"))


# -- Home Assistant discovery, against its documented schema ------------------------------------------

# The keys Home Assistant's MQTT integration documents for discovery (integrations/*.mqtt pages,
# the schemas of homeassistant/components/mqtt): those every entity takes, then each platform's.
COMMON_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic", "default_entity_id",
    "device", "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
    "json_attributes_template", "json_attributes_topic", "name", "object_id", "origin",
    "payload_available", "payload_not_available", "platform", "qos", "unique_id",
}  # fmt: skip
PLATFORM_KEYS = {
    "binary_sensor": {
        "device_class",
        "expire_after",
        "force_update",
        "off_delay",
        "payload_off",
        "payload_on",
    }
    | {"state_topic", "value_template"},
    "switch": {"command_template", "command_topic", "device_class", "optimistic", "payload_off", "payload_on"}
    | {"retain", "state_off", "state_on", "state_topic", "value_template"},
    "image": {"content_type", "image_encoding", "image_topic", "url_template", "url_topic"},
    "sensor": {"device_class", "expire_after", "force_update", "last_reset_value_template", "options"}
    | {"state_class", "state_topic", "suggested_display_precision", "unit_of_measurement", "value_template"},
}
REQUIRED = {"binary_sensor": {"state_topic"}, "switch": {"command_topic"}, "image": {"image_topic"}}
REQUIRED["sensor"] = {"state_topic"}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model"}
DEVICE_KEYS |= {"model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
AVAILABILITY_KEYS = {"topic", "payload_available", "payload_not_available", "value_template"}
BINARY_SENSOR_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas",
    "heat", "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power",
    "presence", "problem", "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window",
}  # fmt: skip
ID_RE = re.compile(r"[a-zA-Z0-9_-]+")  # a discovery topic's node_id and object_id


def camera(motion: bool = True, cam_id: int = 0) -> CameraConfig:
    return CameraConfig(
        cam_id, parse_source("testsrc", "source"), "Bench", motion=MotionConfig(enabled=motion)
    )


def check_entity(topic: str, config: dict[str, Any]) -> str:
    """Check one discovery message as Home Assistant validates it; return its platform."""
    discovery_prefix, platform, node_id, object_id, last = topic.split("/")
    assert (discovery_prefix, last) == ("homeassistant", "config")
    assert ID_RE.fullmatch(node_id) and ID_RE.fullmatch(object_id)
    assert set(config) <= COMMON_KEYS | PLATFORM_KEYS[platform], (
        set(config) - COMMON_KEYS - PLATFORM_KEYS[platform]
    )
    assert REQUIRED[platform] <= set(config)
    assert isinstance(config["name"], str) and isinstance(config["unique_id"], str)
    for key, value in config.items():
        if key.endswith("_topic"):  # topics livecam publishes to or listens on: no wildcard
            assert isinstance(value, str) and value and not set(value) & set("+#"), (key, value)
    (available,) = config["availability"]
    assert set(available) <= AVAILABILITY_KEYS and available["topic"] == TOPICS.availability
    assert (available["payload_available"], available["payload_not_available"]) == ("online", "offline")
    device = config["device"]
    assert (
        set(device) <= DEVICE_KEYS
        and device["identifiers"]
        and all(isinstance(i, str) for i in device["identifiers"])
    )
    assert set(config["origin"]) <= ORIGIN_KEYS and config["origin"]["name"] == "livecam"
    if platform == "binary_sensor":
        assert config["device_class"] in BINARY_SENSOR_CLASSES
    if platform == "sensor" and "options" in config:
        assert config["device_class"] == "enum" and "unit_of_measurement" not in config
    json.dumps(config, allow_nan=False)  # sent as JSON
    return platform


@pytest.mark.parametrize("control", [False, True])
def test_discovery_payloads_follow_home_assistants_schema(control: bool) -> None:
    configs = discovery(camera(), TOPICS, control, "1.2.3")
    assert list(configs) == [TOPICS.config(component, 0, name) for component, name in ENTITIES]
    shown = {topic: config for topic, config in configs.items() if config is not None}
    platforms = sorted(check_entity(topic, config) for topic, config in shown.items())
    assert platforms == sorted(["sensor", "binary_sensor", "image", "switch" if control else "binary_sensor"])
    assert len({c["unique_id"] for c in shown.values()}) == len(shown)  # one entity each
    # One device per camera: every entity names the same one.
    assert all(c["device"] == shown[TOPICS.config("sensor", 0, "state")]["device"] for c in shown.values())


def test_each_entity_field_by_field() -> None:
    on = discovery(camera(), TOPICS, True, "1.2.3")
    off = discovery(camera(), TOPICS, False, "1.2.3")
    device = {
        "identifiers": ["livecam_0"],
        "name": "Bench",
        "manufacturer": "livecam",
        "model": "test pattern",
        "sw_version": "1.2.3",
    }
    motion = on[TOPICS.config("binary_sensor", 0, "motion")]
    assert motion["device"] == device and motion["origin"] == {"name": "livecam", "sw_version": "1.2.3"}
    assert {
        k: motion[k]
        for k in ("name", "unique_id", "state_topic", "device_class", "payload_on", "payload_off")
    } == {
        "name": "Motion",
        "unique_id": "livecam_0_motion",
        "state_topic": "livecam/camera/0/motion",
        "device_class": "motion",
        "payload_on": "ON",
        "payload_off": "OFF",
    }
    picture = on[TOPICS.config("image", 0, "picture")]
    assert (picture["image_topic"], picture["content_type"]) == ("livecam/camera/0/picture", "image/jpeg")
    assert "image_encoding" not in picture  # the JPEG's own bytes, not base64
    state = on[TOPICS.config("sensor", 0, "state")]
    assert (state["state_topic"], state["device_class"], state["options"]) == (
        "livecam/camera/0/state",
        "enum",
        list(STATES),
    )
    switch = on[TOPICS.config("switch", 0, "capture")]
    assert (switch["command_topic"], switch["state_topic"]) == (
        "livecam/camera/0/set",
        "livecam/camera/0/state",
    )
    assert (switch["payload_on"], switch["payload_off"]) == ("ON", "OFF")
    assert on[TOPICS.config("binary_sensor", 0, "capture")] is None  # the switch replaces it
    running = off[TOPICS.config("binary_sensor", 0, "capture")]
    assert "command_topic" not in running and running["device_class"] == "running"
    assert off[TOPICS.config("switch", 0, "capture")] is None  # a switch needs a command topic
    # The on/off template, rendered as Home Assistant renders it (Jinja2): switched on is ON.
    for config in (switch, running):
        template = jinja2.Environment().from_string(config["value_template"])
        assert {s: template.render(value=s) for s in STATES} == {
            "off": "OFF",
            "starting": "ON",
            "on": "ON",
            "error": "ON",
        }


def test_a_camera_without_a_detector_has_no_motion_entities() -> None:
    configs = discovery(camera(motion=False), TOPICS, False, "1")
    assert configs[TOPICS.config("binary_sensor", 0, "motion")] is None  # never "no motion" for ever
    assert configs[TOPICS.config("image", 0, "picture")] is None
    assert configs[TOPICS.config("sensor", 0, "state")] is not None


def unique_ids(topics: Topics, version: str = "1") -> list[str | None]:
    """The unique id of each entity of camera 0 (None where the entity is not shown)."""
    return [c and c["unique_id"] for c in discovery(camera(), topics, True, version).values()]


def test_unique_ids_do_not_depend_on_the_host_or_state_directory() -> None:
    ids = unique_ids(Topics("livecam", "homeassistant", "a-1"))
    assert ids == unique_ids(Topics("livecam", "homeassistant", "b-2"), "2")  # another node, version
    other = unique_ids(Topics("site2", "homeassistant", "a-1"))
    assert not set(ids) & set(other) - {None}  # two sites (prefixes) on one broker never share one


# -- no broker: livecam goes on ---------------------------------------------------------------------


@pytest.fixture
def unreachable(tmp_path: Path) -> Iterator[Registry]:
    """A one-camera registry whose broker does not answer; shut down at teardown."""
    registry = Registry(
        load_settings(
            environ={},
            overrides={
                "cameras": {"0": {"source": "testsrc:160x120@30", "name": "Bench"}},
                "state_dir": str(tmp_path),
                "mqtt_url": f"mqtt://livecam:hunter2@127.0.0.1:{closed_port()}",
            },
        )
    )
    yield registry
    registry.shutdown()
    assert mqtt_threads() == []


def test_a_broker_down_at_start_costs_capture_nothing(
    unreachable: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="livecam.mqtt")
    (output,) = unreachable.outputs
    assert isinstance(output, MqttOutput) and not output.connected
    noticed: list[Event] = []
    unreachable.events.listen(noticed.append)
    camera = unreachable.get(0)
    assert camera is not None
    camera.start()
    assert camera.snapshot(5.0) is not None  # capture runs, broker or not
    slowest = 0.0
    for n in range(1500):  # more than the queue holds
        started = time.monotonic()
        unreachable.events.add(
            "motion.start", 0, "Bench", snapshot=b"\xff\xd8" + bytes(1000), score=n, box=[0, 0, 1, 1]
        )
        slowest = max(slowest, time.monotonic() - started)
    # Only queued: waiting on the broker would take its connect timeout (5 s). The bound is
    # loose because this machine's 2 cores are shared.
    assert slowest < 0.5
    assert output.dropped == len(noticed) - 1000  # the oldest let go and counted; the rest waits
    down = [r for r in caplog.get_records("setup") + caplog.records if "unreachable" in r.getMessage()]
    assert len(down) == 1, [r.getMessage() for r in caplog.records]  # once per outage, however many retries
    assert "hunter2" not in caplog.text and "mqtt://livecam:***@127.0.0.1:" in down[0].getMessage()
    started = time.monotonic()
    unreachable.shutdown()
    assert time.monotonic() - started < SHUTDOWN_BUDGET + 0.5  # within the shutdown budget


def test_only_the_capturing_process_publishes(tmp_path: Path) -> None:
    configured = load_settings(
        environ={},
        overrides={
            "cameras": {"0": {"source": "testsrc:160x120@30"}},
            "state_dir": str(tmp_path),
            "bus": f"nats://127.0.0.1:{closed_port()}",
            "mqtt_url": f"mqtt://127.0.0.1:{closed_port()}",
        },
    )
    web = Registry(configured, remote=True)  # bus mode's web worker
    try:
        assert web.outputs == [] and mqtt_threads() == []
    finally:
        web.shutdown()
    capture = Registry(configured)  # `livecam capture`, as cli.py makes it
    try:
        (output,) = capture.outputs
        assert isinstance(output, MqttOutput)
        assert {t.name for t in mqtt_threads()} >= {"livecam-mqtt"}
    finally:
        capture.shutdown()
    assert mqtt_threads() == []


def test_a_broker_that_keeps_failing_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt, "BACKOFF", (0.25, 30.0))  # livecam's doubling from 1 s, from 0.25 s
    caplog.set_level(logging.INFO, logger="livecam.mqtt")
    attempts = []
    with socket.create_server(("127.0.0.1", 0)) as server:  # accepts, then hangs up: no MQTT
        server.settimeout(10)

        def hang_up() -> None:
            for _ in range(3):
                conn, _ = server.accept()
                attempts.append(time.monotonic())
                conn.close()

        thread = threading.Thread(target=hang_up, name="test-hang-up")
        thread.start()
        port = server.getsockname()[1]
        registry = Registry(
            load_settings(
                environ={},
                overrides={
                    "cameras": {},
                    "state_dir": str(tmp_path),
                    "mqtt_url": f"mqtt://u:hunter2@127.0.0.1:{port}",
                },
            )
        )
        try:
            thread.join(15)
            assert len(attempts) == 3  # it retried, backing off:
            assert attempts[2] - attempts[1] > attempts[1] - attempts[0] > 0.8 * mqtt.BACKOFF[0]
        finally:
            registry.shutdown()
    lines = [
        r.getMessage() for r in caplog.records if r.name == "livecam.mqtt" and r.levelno >= logging.WARNING
    ]
    assert len(lines) == 1, lines  # ...and said so once
    assert f"MQTT broker mqtt://u:***@127.0.0.1:{port}: closed the connection at once" in lines[0]
    assert "hunter2" not in caplog.text


def test_the_readme_names_every_topic() -> None:
    page = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    section = page.partition("\n## MQTT and Home Assistant\n")[2].split("\n#", 1)[0]
    assert section, "docs/events.md has no 'MQTT and Home Assistant' section"
    written = {
        row.split("|")[1].strip().strip("`").replace("P/", "livecam/").replace("/N/", "/3/")
        for row in section.splitlines()
        if row.startswith("| `P/")
    }
    node = TOPICS.availability.replace(TOPICS.node, "NODE")
    published = {TOPICS.camera(3, leaf) for leaf in ("state", "motion", "picture", "event", "set")} | {node}
    assert written == published
