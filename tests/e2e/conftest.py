"""Fixtures for the real-server tests: gunicorn processes sharing a state directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import ROOT, Server
from nats_server import NatsServer


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start gunicorn servers sharing one state directory; each is stopped at teardown."""
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    servers: list[Server] = []

    def start(env: dict[str, str], *args: str, ready: bool = True) -> Server:
        server = Server(env, tmp_path / "state", *args)
        servers.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()
        server.log.close()


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.stop()
