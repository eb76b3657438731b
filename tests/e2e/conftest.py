"""Fixtures for the real-server tests: gunicorn processes sharing a state directory, a real
nats-server, and capture processes for bus mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import forked
from helpers import ROOT, Server, end_process, python_m
from livecam.bus import FrameBus
from nats_server import NatsServer

STOP_TIMEOUT = 15.0  # seconds a gunicorn told to stop may take before it is killed
Process = subprocess.Popen | forked.Forked  # a server's or a capture process's


class Stopping:
    """gunicorns (and other servers) told to stop (SIGTERM) and not yet waited for: the next
    test starts while they shut down. Each is waited for, or killed once STOP_TIMEOUT has
    passed, when the next server starts, and every one by the end of the session."""

    def __init__(self) -> None:
        self._processes: list[tuple[float, Process, Callable[[], object]]] = []

    def add(self, server: Server) -> None:
        self.add_process(server.process, server.log.close)

    def add_process(self, process: Process, then: Callable[[], object] = lambda: None) -> None:
        """SIGTERM ``process`` now; wait for it later, then call ``then``."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        self._processes.append((time.monotonic(), process, then))

    def sweep(self, everything: bool = False) -> None:
        """Reap the processes that have exited; stop (wait, then kill) those past their time,
        or every one."""
        left = []
        for since, process, then in self._processes:
            if process.poll() is None and not everything and time.monotonic() - since < STOP_TIMEOUT:
                left.append((since, process, then))
                continue
            end_process(process, STOP_TIMEOUT)
            then()
        self._processes = left


STOPPING = Stopping()


@pytest.fixture(scope="session", autouse=True)
def stop_every_server() -> Iterator[Stopping]:
    """Wait for every process told to stop, at the end of the session (a fixture may hand
    its own to ``add_process``)."""
    yield STOPPING
    STOPPING.sweep(everything=True)


@contextmanager
def gunicorns(state_dir: Path) -> Iterator[Callable[..., Server]]:
    """Start gunicorn servers sharing one state directory; each is told to stop on leaving."""
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    servers: list[Server] = []

    def start(
        env: dict[str, str], *args: str, ready: bool = True, shortened: dict[str, float] | None = None
    ) -> Server:
        STOPPING.sweep()
        server = Server(env, state_dir, *args, shortened=shortened)
        servers.append(server)
        if ready:
            server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in servers:
            STOPPING.add(server)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start gunicorn servers sharing one state directory; each is stopped at teardown."""
    with gunicorns(tmp_path / "state") as start:
        yield start


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """``serve`` for servers the tests of a module share; stopped after the module's last test."""
    with gunicorns(tmp_path_factory.mktemp("shared") / "state") as start:
        yield start


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.stop()


@pytest.fixture
def attacker(nats_server: NatsServer) -> Iterator[FrameBus]:
    """A NATS client with no livecam role: it publishes whatever it likes."""
    bus = FrameBus(nats_server.url, name="attacker").start()
    assert bus.wait_connected(5)
    yield bus
    bus.close()


CAPTURE_CAMERAS = "0=testsrc:160x120@20,1=testsrc:64x48@10"


@pytest.fixture
def start_capture(nats_server: NatsServer, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start capture processes on the bus; each is stopped (SIGTERM, then SIGKILL) at teardown."""
    processes: list[Process] = []

    def start(
        cameras: str = CAPTURE_CAMERAS,
        url: str | None = None,
        state: str = "",
        shortened: dict[str, float] | None = None,
        **settings: str,
    ) -> Process:
        """``settings``: more LIVECAM_* variables, by their lower-case names (bus_creds=...);
        ``shortened``: livecam constants set to other values in the process (tests/shortened.py)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
        env |= {"LIVECAM_BUS": url or nats_server.url}
        if cameras:  # none: the cameras of a TOML file (config=...)
            env["LIVECAM_CAMERAS"] = cameras
        env |= {f"LIVECAM_{name.upper()}": value for name, value in settings.items()}
        env["LIVECAM_STATE_DIR"] = str(tmp_path / (state or f"capture{len(processes)}"))
        process: Process
        if shortened:  # a whole interpreter: the constants are set as livecam is imported
            process = subprocess.Popen(
                [sys.executable, *python_m("livecam.cli", shortened), "capture"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        else:
            process = forked.livecam_process(["capture"], env, ROOT)
        processes.append(process)
        return process

    yield start
    for process in processes:
        end_process(process, 10)
        process.stdout.close()
