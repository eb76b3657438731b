"""For the MQTT tests: a real mosquitto on loopback with a password file (started, killed and
restarted by PID), and a real MQTT client that records what it receives."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho

from helpers import free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"  # Debian puts it in sbin


class Mosquitto:
    """Debian's mosquitto on a loopback port, every client with a user name and password."""

    def __init__(
        self,
        directory: Path,
        users: dict[str, str],
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """:param tls: a certificate and its key: the listener speaks TLS only (mqtts)."""
        self.port = port or free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None
        passwords = directory / "passwords"
        for n, (user, password) in enumerate(users.items()):
            create = ["-c"] if n == 0 else []
            subprocess.run(
                ["mosquitto_passwd", "-b", *create, str(passwords), user, password],
                check=True,
                capture_output=True,
                timeout=10,
            )
        self.log = directory / "mosquitto.log"
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"password_file {passwords}\n"
            "allow_anonymous false\n"
            "persistence false\n"  # a restart loses every retained message: livecam must send them again
            f"user {getpass.getuser()}\n"  # as root it would switch to "mosquitto", who cannot read tmp_path
            f"log_dest file {self.log}\n" + (f"certfile {tls[0]}\nkeyfile {tls[1]}\n" if tls else "")
        )

    def start(self) -> Mosquitto:
        """Start (again, on the same port) and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def listening() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        assert wait_for(listening, timeout=10), "mosquitto did not start"
        return self

    def stop(self) -> None:
        """Stop it (SIGKILL: as a crash would) and wait for the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def refusals(self) -> int:
        """Connections it refused for a wrong user name or password, so far."""
        return self.log.read_text().count("not authorised")


@dataclass(frozen=True)
class Received:
    """One message as a subscriber got it."""

    topic: str
    payload: bytes
    retain: bool  # True: the broker's retained copy, sent at subscription


class Subscriber:
    """A real MQTT client (paho) subscribed to some topics, recording every message."""

    def __init__(self, port: int, user: str, password: str, *topics: str) -> None:
        self.messages: list[Received] = []
        self._arrived = threading.Condition()  # guards messages; notified at each one
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        self.client.username_pw_set(user, password)
        self.client.on_connect = lambda client, *_: client.subscribe([(topic, 1) for topic in topics])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK from mosquitto"

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._arrived:
            self.messages.append(Received(message.topic, message.payload, bool(message.retain)))
            self._arrived.notify_all()

    def wait(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> bool:
        """Wait up to ``timeout`` until ``predicate(messages)`` holds."""
        with self._arrived:
            return self._arrived.wait_for(lambda: predicate(self.messages), timeout)

    def wait_for(
        self, topic: str, payload: bytes | None = None, after: int = 0, timeout: float = 10.0
    ) -> Received:
        """The first message on ``topic`` (with ``payload``) from the ``after``-th on, awaited."""

        def match(messages: list[Received]) -> Received | None:
            return next(
                (m for m in messages[after:] if m.topic == topic and payload in (None, m.payload)), None
            )

        assert self.wait(lambda messages: match(messages) is not None, timeout), (
            topic,
            payload,
            self.topics(),
        )
        found = match(self.messages)
        assert found is not None
        return found

    def last(self, topic: str) -> Received | None:
        """The newest message on ``topic`` so far."""
        with self._arrived:
            return next((m for m in reversed(self.messages) if m.topic == topic), None)

    def topics(self) -> list[str]:
        """Every topic a message came on, in order, once each."""
        with self._arrived:
            return list(dict.fromkeys(m.topic for m in self.messages))

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        """Publish, and wait until the broker has it."""
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
