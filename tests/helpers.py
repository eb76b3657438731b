"""Test helpers: read MJPEG streams the way a client does, decode JPEGs, find threads."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

import forked

ROOT = Path(__file__).resolve().parent.parent


def capture_threads() -> list[threading.Thread]:
    """The livecam capture threads alive in this process."""
    return [t for t in threading.enumerate() if t.name.startswith("livecam-capture-")]


def decode(jpeg: bytes) -> np.ndarray:
    """Decode JPEG bytes, failing the test if they are not a valid image."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


class Readable(Protocol):
    def read(self, size: int) -> bytes: ...

    def readline(self) -> bytes: ...


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes


class ChunkReader:
    """A file-like view of an iterable of byte chunks (a WSGI response body)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def _fill(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._buffer += chunk
        return True

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size and self._fill():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self) -> bytes:
        while b"\n" not in self._buffer and self._fill():
            pass
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line


class Dechunked(io.RawIOBase):
    """Decode an HTTP/1.1 chunked body from a socket, checking the framing as it goes."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._rest:
            size = int(self._file.readline().strip(), 16)
            self._rest = self._file.read(size)
            assert self._file.read(2) == b"\r\n"
        count = min(len(buffer), len(self._rest))
        buffer[:count], self._rest = self._rest[:count], self._rest[count:]
        return count


def read_parts(stream: Readable, boundary: bytes = b"frame") -> Iterator[Part]:
    """Yield parts until the stream ends; assert the framing livecam promises."""
    opening = stream.readline()
    assert opening == b"--" + boundary + b"\r\n", opening
    while True:
        headers = {}
        while True:
            line = stream.readline()
            if not line:
                return
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        body = stream.read(length)
        if len(body) < length:
            return
        # Each part ends with the next boundary, so the client knows at once it is complete.
        closing = stream.read(len(boundary) + 6)
        assert closing == b"\r\n--" + boundary + b"\r\n", closing
        yield Part(headers, body)


@dataclass
class Message:
    """One Server-Sent Events block: its fields (``event``, ``id``, ``data``, ``retry``) and comments."""

    fields: dict[str, str]
    comments: list[str]

    @property
    def json(self) -> Any:
        return json.loads(self.fields["data"])


def read_messages(stream: Readable) -> Iterator[Message]:
    """Yield SSE blocks until the stream ends; assert the framing livecam promises: each field
    once, the data on one line, every line ended by LF alone."""
    fields: dict[str, str] = {}
    comments: list[str] = []
    while line := stream.readline():
        assert line.endswith(b"\n") and not line.endswith(b"\r\n"), line
        text = line[:-1].decode("utf-8")
        if not text:
            if fields or comments:
                yield Message(fields, comments)
            fields, comments = {}, []
        elif text.startswith(":"):
            comments.append(text[1:].strip())
        else:
            name, _, value = text.partition(":")
            assert name not in fields, f"{name} twice in one message"
            fields[name] = value.removeprefix(" ")


def read_for(parts: Iterator[Part], seconds: float) -> list[Part]:
    """Read parts for about ``seconds``."""
    result = []
    deadline = time.monotonic() + seconds
    for part in parts:
        result.append(part)
        if time.monotonic() >= deadline:
            break
    return result


def read_each_for(streams: Iterable[Readable], seconds: float) -> list[list[Part]]:
    """Read the parts of several streams at once, each for about ``seconds`` (one thread each)."""
    streams = list(streams)
    readings: list[list[Part]] = [[] for _ in streams]

    def read(index: int) -> None:
        readings[index] = read_for(read_parts(streams[index]), seconds)

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(streams))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)  # each read is also bounded by its socket's timeout
        assert not thread.is_alive(), "a stream stopped sending"
    return readings


def call(
    client: Any, method: str, path: str, token: str | None = None, address: str = "127.0.0.1", **headers: str
) -> Any:
    """One request through a Flask test client, as an API client from ``address`` sends it."""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = client.open(
        path,
        method=method,
        headers={"Accept": "application/json", **headers},
        environ_base={"REMOTE_ADDR": address},
    )
    response.close()  # streams too
    return response


def blocked_reading(thread: threading.Thread) -> bool:
    """Whether ``thread`` waits in a socket read, plain or TLS (its innermost Python frame)."""
    frame = sys._current_frames().get(thread.ident or 0)
    reads = {(socket.__file__, "readinto"), (ssl.__file__, "read")}
    return frame is not None and (frame.f_code.co_filename, frame.f_code.co_name) in reads


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, every: float = 0.05) -> bool:
    """Poll a condition that has no event to wait on (state seen from outside), bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def proc_status(pid: int) -> dict[str, int]:
    """Threads and resident memory (kB) of a process, from /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"threads": int(fields["Threads"]), "rss_kb": int(fields["VmRSS"].split()[0])}


def run_cli(
    *args: str, env: dict[str, str] | None = None, interpreter: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the ``livecam`` command as a user would, without the developer's LIVECAM_* settings:
    a process forked from one that has imported livecam (tests/forked.py), or with
    ``interpreter`` a whole new ``python -m livecam.cli``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
    if not interpreter:
        return forked.livecam(*args, env={**base, **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "livecam.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamConnection(http.client.HTTPConnection):
    """A connection to a stream: ``close()`` closes the stream's response too.

    A stream answers ``Connection: close``, so http.client hands the socket over to the
    response and closing the connection alone would leave the stream open.
    """

    response: http.client.HTTPResponse | None = None
    stream_socket: socket.socket | None = None  # to vanish without a goodbye

    def close(self) -> None:
        super().close()
        if self.response is not None:
            self.response.close()


class Server:
    """A gunicorn process serving livecam on a loopback port."""

    def __init__(
        self, env: dict[str, str], state_dir: Path, *args: str, shortened: dict[str, float] | None = None
    ) -> None:
        """``shortened``: livecam constants set to other values in the server (tests/shortened.py),
        by dotted name: ``{"livecam.sse.KEEPALIVE_INTERVAL": 2.0}``."""
        self.port = free_port()
        self.state_dir = state_dir
        log = ROOT / "test-artifacts" / f"gunicorn-{self.port}.log"
        self.log = open(log, "w+b")  # noqa: SIM115
        arguments = ["-c", "gunicorn.conf.py", "wsgi:app", "--bind", f"127.0.0.1:{self.port}", *args]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
        full_env["LIVECAM_STATE_DIR"] = str(state_dir)
        self.process: subprocess.Popen | forked.Forked
        if shortened:  # a whole interpreter: the constants are set as livecam is imported
            self.process = subprocess.Popen(
                [sys.executable, *python_m("gunicorn", shortened), *arguments],
                cwd=ROOT,
                env={**full_env, **env},
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
        else:
            self.process = forked.gunicorn(arguments, {**full_env, **env}, ROOT, log)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the app answers its health check (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.02)  # not listening yet: a forked server listens within 0.1 s
        raise AssertionError("gunicorn did not become ready:\n" + self.output())

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One request; the status and the body (parsed when it is JSON)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read()
            if response.getheader("Content-Type", "").startswith("application/json"):
                return response.status, json.loads(body)
            return response.status, body
        finally:
            conn.close()

    def send_json(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> tuple[int, Any]:
        """One request with a JSON body (when given), as curl sends it; the status and the
        parsed body (None when empty)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            headers = {"Accept": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            data = None
            if body is not None:
                data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def record(self, cam_id: int) -> dict:
        """A camera's status record."""
        status, body = self.request("GET", f"/cameras/{cam_id}")
        assert status == 200, body
        return body

    def worker_pid(self) -> int:
        """The pid of the (single) gunicorn worker."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def open_stream(self, path: str) -> tuple[StreamConnection, http.client.HTTPResponse]:
        """Open a stream and check it answered 200."""
        conn = StreamConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", path)
        conn.stream_socket = conn.sock
        response = conn.response = conn.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("Connection") == "close"
        return conn, response

    def output(self) -> str:
        """What gunicorn wrote to stderr so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def terminate(self) -> None:
        """SIGTERM, without waiting for the exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        end_process(self.process, 15)


def python_m(module: str, shortened: dict[str, float] | None = None) -> list[str]:
    """The arguments after ``python`` that run ``module`` as ``-m`` does, with some livecam
    constants shortened first when ``shortened`` names any (see tests/shortened.py)."""
    if not shortened:
        return ["-m", module]
    return [str(ROOT / "tests" / "shortened.py"), json.dumps(shortened), module]


def end_process(process: subprocess.Popen, grace: float) -> None:
    """Stop a process we started: SIGTERM, then SIGKILL if it has not exited within ``grace``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def response_head(sock: socket.socket) -> bytes:
    """Read up to the end of a response's head (bounded by the socket's timeout)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


FIN_WAIT1 = 0x04  # the state of a TCP socket closed while data it sent waits for the peer


def server_socket(port: int, peer_port: int) -> tuple[int, int] | None:
    """The state and send queue (bytes) of the server's end of a loopback connection, or None
    when the kernel keeps no socket for it (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
        if (local, remote) == (port, peer_port):
            return int(fields[3], 16), int(fields[4].split(":")[0], 16)
    return None
