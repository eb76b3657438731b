"""MQTT: the cameras' states, motion and pictures on a broker, with Home Assistant discovery.

A thin output of the event log, like the webhooks: the thread that noticed an event only
appends it to a bounded queue (a full one lets its oldest go, counted), so a slow or absent
broker never reaches capture. One thread of livecam's (``livecam-mqtt``) publishes what is
queued; paho-mqtt's own thread does the network, reconnecting with a doubling backoff.

Topics, under the prefix P (``LIVECAM_MQTT_PREFIX``) and for each camera N this process
captures: ``P/camera/N/state`` (off, starting, on, error), ``P/camera/N/motion`` (ON, OFF) and
``P/camera/N/picture`` (the last motion event's JPEG), all retained; ``P/camera/N/event`` (each
event's JSON, not retained); ``P/node/NODE/availability`` (online, or offline as the last
will), retained. With ``LIVECAM_MQTT_CONTROL``, ON or OFF sent to ``P/camera/N/set`` switches
the camera; without it nothing is subscribed there.

The availability is one per process, not per camera, because a connection has one last will:
in bus mode each ``livecam capture`` has its own, so one of them dying marks only its own
cameras unavailable. NODE is this host's name and a digest of the state directory: the same
across restarts, different for two processes.

At each connection, and when Home Assistant says ``online`` on ``<discovery>/status``, every
camera's discovery and states are published again from the cameras' records: a broker that
restarted without persistence has lost the retained ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any, Protocol

import paho.mqtt.client as paho

from .config import CameraConfig, MqttBroker, Settings, state_directory
from .events import Event, EventLog
from .integers import parse_int
from .record import STATES

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000  # events waiting for the broker; past that the oldest is dropped
BACKOFF = (1.0, 30.0)  # seconds before the first reconnection, doubling up to the second
CONNECT_TIMEOUT = 5.0  # seconds one connection attempt may take
KEEPALIVE = 60  # seconds between pings on a quiet connection
ONLINE, OFFLINE = "online", "offline"
ON, OFF = "ON", "OFF"
# Home Assistant shows a camera switched on (starting, on or failing) as on.
ON_OFF_TEMPLATE = "{{ 'OFF' if value == 'off' else 'ON' }}"
MODELS = {"device": "V4L2 camera", "url": "network camera", "file": "video file", "testsrc": "test pattern"}
# Broker answers (MQTT 5 reason codes; paho gives 3.1.1's the same way) that a password fixes.
AUTH_REFUSALS = frozenset({0x86, 0x87})
# Every entity a camera may have in Home Assistant, as (component, name in its discovery topic).
ENTITIES = (
    ("sensor", "state"),
    ("switch", "capture"),
    ("binary_sensor", "capture"),
    ("binary_sensor", "motion"),
    ("image", "picture"),
)


def _slug(text: str) -> str:
    """``text`` as a Home Assistant id part or a topic level: letters, digits, _ and - only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


def node_name(state_dir: str, host: str | None = None) -> str:
    """This process's node: its host's name and a digest of its state directory (stable across
    restarts; two processes on one host have two state directories)."""
    digest = hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:8]
    return f"{_slug(host or socket.gethostname()).lower()}-{digest}"


@dataclass(frozen=True)
class Topics:
    """Every topic livecam publishes to or listens on, named once here."""

    prefix: str  # LIVECAM_MQTT_PREFIX
    discovery: str  # LIVECAM_MQTT_DISCOVERY
    node: str  # node_name()

    @property
    def availability(self) -> str:
        """This process's online/offline, retained, its last will."""
        return f"{self.prefix}/node/{self.node}/availability"

    def camera(self, cam_id: int, leaf: str) -> str:
        """A camera's topic: ``state``, ``motion``, ``picture``, ``event`` or ``set``."""
        return f"{self.prefix}/camera/{cam_id}/{leaf}"

    @property
    def commands(self) -> str:
        """The subscription to every camera's command topic."""
        return f"{self.prefix}/camera/+/set"

    def commanded(self, topic: str) -> int | None:
        """The camera a command topic names, or None if it is none."""
        rest = topic.removeprefix(f"{self.prefix}/camera/")
        number, _, leaf = rest.partition("/")
        return parse_int(number, 6) if rest != topic and leaf == "set" else None

    @property
    def ha_status(self) -> str:
        """Where Home Assistant says ``online`` when it (re)starts."""
        return f"{self.discovery}/status"

    def device_id(self, cam_id: int) -> str:
        """A camera's Home Assistant device id, stable while its id and the prefix are."""
        return f"{_slug(self.prefix)}_{cam_id}"

    def config(self, component: str, cam_id: int, name: str) -> str:
        """An entity's discovery topic: ``<discovery>/<component>/<device id>/<name>/config``."""
        return f"{self.discovery}/{component}/{self.device_id(cam_id)}/{name}/config"


def discovery(camera: CameraConfig, topics: Topics, control: bool, version: str) -> dict[str, Any]:
    """A camera's discovery messages by topic, one for each of ENTITIES: its config, or None
    where the entity must go (a retained empty message removes it: the switch without
    control, motion without a detector)."""
    cam_id, device_id = camera.id, topics.device_id(camera.id)
    available = {"topic": topics.availability, "payload_available": ONLINE, "payload_not_available": OFFLINE}
    common = {
        "availability": [available],
        "device": {
            "identifiers": [device_id],
            "name": camera.name,
            "manufacturer": "livecam",
            "model": MODELS.get(camera.source.kind, camera.source.kind),
            "sw_version": version,
        },
        "origin": {"name": "livecam", "sw_version": version},
    }
    state = topics.camera(cam_id, "state")
    on_off = {"state_topic": state, "value_template": ON_OFF_TEMPLATE, "payload_on": ON, "payload_off": OFF}
    # Home Assistant's switch requires a command topic: without control the same on/off is a
    # binary sensor ("running"), read-only, rather than a switch whose toggle would do nothing.
    switch = {**common, "name": "Capture", "unique_id": f"{device_id}_switch", **on_off}
    switch |= {"command_topic": topics.camera(cam_id, "set"), "icon": "mdi:cctv"}
    running = {**common, "name": "Capture", "unique_id": f"{device_id}_running", **on_off}
    running["device_class"] = "running"
    detects = camera.motion.enabled  # a camera without a detector would show "no motion" forever
    motion = {
        **common,
        "name": "Motion",
        "unique_id": f"{device_id}_motion",
        "state_topic": topics.camera(cam_id, "motion"),
        "device_class": "motion",
        "payload_on": ON,
        "payload_off": OFF,
    }
    picture = {
        **common,
        "name": "Motion picture",
        "unique_id": f"{device_id}_picture",
        "image_topic": topics.camera(cam_id, "picture"),
        "content_type": "image/jpeg",
    }
    status = {
        **common,
        "name": "State",
        "unique_id": f"{device_id}_state",
        "state_topic": state,
        "device_class": "enum",
        "options": list(STATES),
    }
    configs = {
        ("sensor", "state"): status,
        ("switch", "capture"): switch if control else None,
        ("binary_sensor", "capture"): None if control else running,
        ("binary_sensor", "motion"): motion if detects else None,
        ("image", "picture"): picture if detects else None,
    }
    return {topics.config(component, cam_id, name): configs[component, name] for component, name in ENTITIES}


def command(payload: bytes) -> str | None:
    """ON or OFF as a command topic's payload says it (any case, spaces around), else None."""
    try:
        word = payload.decode("ascii").strip().upper()
    except UnicodeDecodeError:
        return None
    return word if word in (ON, OFF) else None


def livecam_version() -> str:
    """livecam's version as installed, for Home Assistant's device page."""
    try:
        return metadata.version("livecam")
    except metadata.PackageNotFoundError:
        return "unknown"


class LocalCamera(Protocol):
    """A camera as the MQTT output uses it (capture.py's Camera)."""

    config: CameraConfig

    @property
    def id(self) -> int:
        """The camera's id."""

    def status(self) -> dict[str, Any]:
        """The camera's record."""

    def start(self) -> None:
        """Switch on."""

    def stop(self, wait: bool = True) -> None:
        """Switch off."""


class Cameras(Protocol):
    """What the MQTT output needs of the registry (registry.py imports this module)."""

    events: EventLog

    @property
    def local(self) -> Sequence[LocalCamera]:
        """The cameras this process captures."""

    def switch(self, change: Callable[[], None]) -> None:
        """Apply a camera's start or stop and remember it."""

    def listen(self, listener: Callable[[], None], changes: bool = False) -> None:
        """Call ``listener()`` after each camera added or removed at run time (and after one
        changed, if ``changes``)."""


def _payload(value: Any) -> bytes:
    """A JSON message as livecam publishes it: compact, ASCII."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


class MqttOutput:
    """The cameras of this process on an MQTT broker, and their switches from it when allowed."""

    def __init__(
        self,
        settings: Settings,
        registry: Cameras,
        *,
        queue_size: int = QUEUE_SIZE,
        backoff: tuple[float, float] | None = None,
        node: str | None = None,
    ) -> None:
        assert settings.mqtt_url is not None
        self._broker: MqttBroker = settings.mqtt_url
        self._registry = registry
        self._control = settings.mqtt_control
        self.topics = Topics(
            settings.mqtt_prefix,
            settings.mqtt_discovery,
            node or node_name(str(state_directory(settings))),
        )
        self._version = livecam_version()
        self._queue_size = queue_size
        # One Condition guards everything below it: the queue, the connection's state as the
        # callbacks report it, what is to be published again, and the counters.
        self._lock = threading.Condition()
        # Events without their JPEG (kept below, the newest only), each with whether it had one.
        self._queue: deque[tuple[Event, bool]] = deque()
        self._pictures: dict[int, tuple[int, bytes]] = {}  # camera -> (event id, its JPEG)
        self._connected = False
        self._resync = False  # publish every camera's discovery and states again
        self._closing = False
        self._overflowed = False  # the queue dropped an event since the thread last looked
        self.sent = 0  # messages handed to the connection
        self.received = 0  # messages that came from the broker (what livecam subscribed to)
        self.dropped = 0  # events let go: pushed out of a full queue, or livecam stopping
        self.ignored = 0  # commands not understood (a bad payload, a camera not captured here)
        # The network thread's own: the outage under way, and whether it was logged.
        self._down_since: float | None = None
        self._down_dropped = 0
        self._ever_connected = False
        self._published: set[int] = set()  # cameras whose discovery is out (livecam-mqtt's own)
        self._stop_listening: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name="livecam-mqtt", daemon=True)
        self._client = self._make_client(backoff or BACKOFF)  # BACKOFF read now: tests shorten it

    def _make_client(self, backoff: tuple[float, float]) -> paho.Client:
        """paho's client, set up but not connected: credentials, TLS, last will, backoff."""
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"livecam-{self.topics.node}",
            protocol=paho.MQTTv311,  # what every broker and Home Assistant speak
        )
        if self._broker.username is not None:
            client.username_pw_set(self._broker.username, self._broker.password)
        if self._broker.tls:
            client.tls_set_context(ssl.create_default_context())  # the system's trust, host names checked
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(*backoff)
        client.connect_timeout = CONNECT_TIMEOUT
        client.max_queued_messages_set(self._queue_size)  # paho's own queue is bounded too
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted livecam's connection (and not lost it since)."""
        return self._connected

    def start(self) -> MqttOutput:
        """Connect in the background and follow the events; returns at once, broker or not."""
        self._stop_listening = self._registry.events.listen(self._offer)
        self._registry.listen(self._cameras_changed, changes=True)
        self._thread.start()
        self._client.connect_async(self._broker.host, self._broker.port, keepalive=KEEPALIVE)
        self._client.loop_start()
        control = "switches from MQTT on" if self._control else "no switching from MQTT"
        log.info(
            "MQTT to %s: topics under %s/, Home Assistant discovery under %s/, %s",
            self._broker,
            self.topics.prefix,
            self.topics.discovery,
            control,
        )
        return self

    # -- what the other threads call: quick, never waiting on the broker -------------------

    def _offer(self, event: Event) -> None:
        """The event log's listener (in the thread that noticed the event): queue it."""
        with self._lock:
            if self._closing:
                return
            pictured = event.snapshot is not None
            if pictured:
                # Only the newest picture of a camera is kept: its topic is retained, the
                # older ones would be replaced at once.
                self._pictures[event.camera] = (event.id, event.snapshot)
                event = replace(event, snapshot=None)
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.dropped += 1
                self._overflowed = True
            self._queue.append((event, pictured))
            self._lock.notify_all()

    def _cameras_changed(self) -> None:
        """A camera was added, changed or removed at run time: publish discovery again."""
        with self._lock:
            self._resync = True
            self._lock.notify_all()

    # -- paho's network thread --------------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            hint = (
                " (check the user name and password in LIVECAM_MQTT_URL)"
                if reason.value in AUTH_REFUSALS
                else ""
            )
            self._trouble(f"refused the connection: {reason}{hint}")
            return
        client.subscribe(self.topics.ha_status, qos=1)
        if self._control:
            client.subscribe(self.topics.commands, qos=1)
        with self._lock:
            self._connected = self._resync = True
            dropped = self.dropped - self._down_dropped
            self._lock.notify_all()
        if self._down_since is not None:
            log.info(
                "MQTT broker %s: connected again after %.0f s (%d event(s) dropped meanwhile)",
                self._broker,
                time.monotonic() - self._down_since,
                dropped,
            )
        elif not self._ever_connected:
            log.info("MQTT broker %s: connected", self._broker)
        self._down_since = None
        self._ever_connected = True

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` around the connection attempt.
        exc = sys.exc_info()[1]
        self._trouble(f"unreachable ({exc})" if exc is not None else "unreachable")

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            was, self._connected = self._connected, False
            closing = self._closing
        if not closing:
            # Not yet accepted: a TLS or protocol mismatch (a refusal was said in _on_connect).
            self._trouble(
                f"connection lost ({reason})" if was else f"closed the connection at once ({reason})"
            )

    def _trouble(self, reason: str) -> None:
        """The broker cannot be used: say so once per outage (never the password)."""
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        with self._lock:
            self._down_dropped = self.dropped
        log.warning(
            "MQTT broker %s: %s; livecam goes on without it and retries (said once until it is back)",
            self._broker,
            reason,
        )

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received += 1
        if message.topic == self.topics.ha_status:
            if message.payload == ONLINE.encode():
                self._cameras_changed()  # Home Assistant (re)started: discovery again
            return
        if not self._control:
            return  # not subscribed to commands: nothing else comes
        cam_id = self.topics.commanded(message.topic)
        camera = next((c for c in self._registry.local if c.id == cam_id), None)
        word = command(message.payload)
        if camera is None or word is None:
            with self._lock:
                self.ignored += 1
                first = self.ignored == 1
            if first:  # anyone who may publish could fill the log: the first one only
                log.warning(
                    "MQTT: ignored a command on %r: not ON or OFF to a camera captured here", message.topic
                )
            return
        log.info("MQTT: camera %s switched %s", cam_id, word.lower())
        try:
            self._registry.switch(camera.start if word == ON else camera.stop)
        except Exception as exc:  # CameraBusy, a state file unwritable: the connection goes on
            log.warning("MQTT: camera %s could not be switched %s: %s", cam_id, word.lower(), exc)

    # -- livecam-mqtt: everything published goes out from here, in order ---------------------

    def _run(self) -> None:
        """Publish the queued events (and everything again after each connection) until closed."""
        while True:
            with self._lock:
                self._lock.wait_for(
                    lambda: self._closing or (self._connected and (self._resync or self._queue))
                )
                if not self._connected:  # closing while disconnected: what is queued is lost
                    self.dropped += len(self._queue)
                    self._queue.clear()
                    return
                resync, self._resync = self._resync, False
                queued = self._queue.popleft() if self._queue and not resync else None
                if queued is None and not resync:
                    return  # closing, and everything was handed over
                overflowed, self._overflowed = self._overflowed, False
            if overflowed:
                log.warning(
                    "MQTT: %d events waiting, the oldest dropped (the broker is too slow)", self._queue_size
                )
            try:
                if resync:
                    self._publish_all()
                if queued is not None:
                    self._publish_event(*queued)
            except Exception:  # never a silent thread death: the next event is tried anyway
                log.exception("MQTT: publishing failed unexpectedly")

    def _publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = True) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            with self._lock:
                self.sent += 1

    def _publish_all(self) -> None:
        """Every camera's discovery, availability and states, from the records of now."""
        cameras = {camera.id: camera for camera in self._registry.local}
        for cam_id in sorted(self._published - cameras.keys()):  # removed at run time: forget it
            self._forget(cam_id)
        for camera in cameras.values():
            for topic, config in discovery(camera.config, self.topics, self._control, self._version).items():
                self._publish(topic, _payload(config) if config is not None else b"")
        self._published = set(cameras)
        self._publish(self.topics.availability, ONLINE)
        for cam_id, camera in cameras.items():
            record = camera.status()
            self._publish(self.topics.camera(cam_id, "state"), record["state"])
            if record["motion"]:
                self._publish(self.topics.camera(cam_id, "motion"), ON if record["motion_active"] else OFF)
            with self._lock:
                picture = self._pictures.get(cam_id)
            if picture is not None:
                self._publish(self.topics.camera(cam_id, "picture"), picture[1])

    def _forget(self, cam_id: int) -> None:
        """A camera removed: its entities and retained states go from the broker too."""
        for component, name in ENTITIES:
            self._publish(self.topics.config(component, cam_id, name), b"")
        for leaf in ("state", "motion", "picture"):
            self._publish(self.topics.camera(cam_id, leaf), b"")
        with self._lock:
            self._pictures.pop(cam_id, None)

    def _publish_event(self, event: Event, pictured: bool) -> None:
        """One event: its JSON, and the retained state or motion (and picture) it changes."""
        topic = self.topics.camera
        try:
            body = _payload({**event.json(), "snapshot": pictured})  # its JPEG was taken off
        except (TypeError, ValueError):  # a field JSON cannot hold: its state is still published
            log.exception("MQTT: event %d cannot be sent as JSON", event.id)
        else:
            self._publish(topic(event.camera, "event"), body, qos=0, retain=False)
        if event.camera not in self._published:
            return  # removed since, or added and not yet announced: the next resync says its state
        if event.type == "camera.state":
            self._publish(topic(event.camera, "state"), str(event.data.get("state")))
        elif event.type in ("motion.start", "motion.end"):
            self._publish(topic(event.camera, "motion"), ON if event.type == "motion.start" else OFF)
            with self._lock:
                picture = self._pictures.get(event.camera)
            if picture is not None and picture[0] == event.id:  # a later event sends a later one
                self._publish(topic(event.camera, "picture"), picture[1])

    # -- stopping -------------------------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Stop following; publish what is queued and ``offline`` until ``timeout``; disconnect."""
        deadline = time.monotonic() + timeout
        if self._stop_listening is not None:
            self._stop_listening()
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._connected:
            # A clean disconnection sends no last will: say offline first.
            info = self._client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass  # the connection went meanwhile: the broker sends the will instead
        self._client.disconnect()
        # paho's loop_stop() joins its thread without a timeout (a connection attempt under
        # way holds it up to CONNECT_TIMEOUT): it is waited for here within the budget only.
        stopper = threading.Thread(target=self._client.loop_stop, name="livecam-mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.1, deadline - time.monotonic()))
        if self._thread.is_alive() or stopper.is_alive():
            log.warning("MQTT: not closed within %.1f s; left to the process's exit", timeout)
