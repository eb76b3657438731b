"""Bus mode as one process tree for the benchmark: nats-server, ``livecam capture``, gunicorn.

The benchmark counts the CPU of a server's whole process tree; this supervisor makes the three
processes of bus mode one tree, and stops them all (SIGTERM, then SIGKILL) when it is stopped.

    python bench/bus_system.py NATS_PORT HTTP_PORT WORKERS   (LIVECAM_CAMERAS etc. from the env)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def main() -> None:
    """Start the three, wait for a stop signal or for one of them to end, then stop them all."""
    nats_port, http_port, workers = sys.argv[1:4]
    env = {**os.environ, "LIVECAM_BUS": f"nats://127.0.0.1:{nats_port}"}
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    children = [
        subprocess.Popen([str(BIN / "nats-server"), "-a", "127.0.0.1", "-p", nats_port]),
        subprocess.Popen([sys.executable, "-m", "livecam.cli", "capture"], cwd=REPO, env=env),
        subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
            + ["--bind", f"127.0.0.1:{http_port}", "--workers", workers],
            cwd=REPO,
            env=env,
        ),
    ]
    while not stopping.wait(0.5):
        if any(child.poll() is not None for child in children):
            break
    for child in reversed(children):  # the web workers first, NATS last
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


if __name__ == "__main__":
    main()
