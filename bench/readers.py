"""MJPEG readers for the benchmark: many viewers in asyncio processes, each part stamped.

A reader sends an HTTP/1.0 request (so the body is plain, not chunked), splits the body into
parts by Content-Length or, when a server sends none, by scanning for the boundary, and
records for each part its arrival time and the frame it carries (see ``stamp``). Only a few
bytes of a part are looked at: the comment stamp, else a CRC of the part that is looked up in
a table shared by all readers, so each distinct JPEG is decoded once, not once per viewer.

``Readers`` keeps every viewer in this process's event loop; ``Spread`` shares them out over
several reader processes (each a ``Readers`` in its own loop), so that a thousand viewers
measure the server and not one reader process's single core.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import socket
import time
import zlib
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from stamp import read_comment, read_index

MAX_PART = 8 << 20  # a part larger than this is a broken stream, not a frame
SLOW_READ_EVERY = 0.25  # the slow reader takes one small read this often
SLOW_RCVBUF = 8192
LAG_EVERY = 0.005  # how often a reader process's own event loop is timed during a window


@dataclass(slots=True)
class Part:
    """One complete part as a reader saw it."""

    received: float  # Unix time its last byte arrived
    number: int  # the camera's frame number, -1 until known
    index: int  # the picture's index in the camera's loop, -1 if unreadable
    sent: float  # the camera's send time, NaN until known


@dataclass
class Viewer:
    """One reader's connection and everything it received."""

    connect_started: float = 0.0
    connected: float = math.nan  # when the reader's request was handed to its socket
    first_part: float = math.nan
    status: int = 0
    error: str = ""
    closed: bool = False
    parts: list[Part] = field(default_factory=list)


class Stamps:
    """Identifies parts; the CRC table is shared so a re-encoded frame is decoded once."""

    def __init__(self) -> None:
        self._by_crc: dict[tuple[int, int], int] = {}

    def identify(self, buf: bytearray, start: int, stop: int, received: float) -> Part:
        """The part ``buf[start:stop]``: from its comment stamp, else from its pixels."""
        stamped = read_comment(bytes(buf[start : start + 96]))
        if stamped is not None:
            number, sent = stamped
            return Part(received, number, -1, sent)
        with memoryview(buf)[start:stop] as body:
            key = (stop - start, zlib.crc32(body))
        index = self._by_crc.get(key)
        if index is None:
            if len(self._by_crc) > 100_000:
                self._by_crc.clear()  # bound memory on endless distinct frames
            decoded = read_index(bytes(buf[start:stop]))
            index = self._by_crc[key] = -1 if decoded is None else decoded
        return Part(received, -1, index, math.nan)


class LoopLag:
    """How long a callback waits in this process's event loop: the readers' own delay.

    Every LAG_EVERY a probe steps back into the loop's ready queue and times how long it
    takes to run again. Every part's receipt time is taken in that loop, so a reader process
    that cannot keep up shows here (and in its CPU) before it shows as server latency.
    """

    def __init__(self) -> None:
        self.lags: list[float] = []  # ms
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(LAG_EVERY)
            asked = time.perf_counter()
            await asyncio.sleep(0)  # behind whatever the loop has to do now
            self.lags.append((time.perf_counter() - asked) * 1000)

    def start(self) -> None:
        """Start timing the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> list[float]:
        """Stop timing; the lags seen (ms)."""
        if self._task is not None:
            self._task.cancel()
        return self.lags


class MjpegReader(asyncio.Protocol):
    """Parses one MJPEG response into parts as bytes arrive."""

    def __init__(self, viewer: Viewer, stamps: Stamps, request: bytes, slow: bool = False) -> None:
        self.viewer = viewer
        self._stamps = stamps
        self._request = request
        self._slow = slow
        self._buf = bytearray()
        self._in_body = False  # past the HTTP response head
        self._delimiter = b""
        self._body_at = -1  # where the current part's body starts, -1 while reading its head
        self._length = -1  # its Content-Length, -1 if it has none
        self._scan_from = 0
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self._request)
        self.viewer.connected = time.time()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            self._parse(time.time())
        except ValueError as exc:
            self.viewer.error = f"bad stream: {exc}"
            self.transport.close()
        if self._slow and not self.transport.is_closing():
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(SLOW_READ_EVERY, self._resume)

    def _resume(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.viewer.closed = True
        if exc is not None and not self.viewer.error:
            self.viewer.error = str(exc)
        if not self.done.done():
            self.done.set_result(None)

    def _parse(self, received: float) -> None:
        """Consume every complete head and part in the buffer."""
        buf = self._buf
        while True:
            if self._body_at < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, self._body_at = bytes(buf[:end]), end + 4
                if not self._in_body:
                    self._response_head(head)
                    del buf[: self._body_at]
                    self._body_at = -1
                    continue
                self._length = _content_length(head)
                self._scan_from = self._body_at
            if self._length >= 0:
                stop = next_head = self._body_at + self._length
                if len(buf) < stop:
                    return
            else:
                stop = buf.find(self._delimiter, self._scan_from)
                if stop < 0:
                    self._scan_from = max(self._body_at, len(buf) - len(self._delimiter))
                    if len(buf) > MAX_PART:
                        raise ValueError("no boundary in 8 MB")
                    return
                next_head = stop + 2  # the next head starts at its "--boundary" line
            self._part(self._stamps.identify(buf, self._body_at, stop, received))
            del buf[:next_head]
            self._body_at = -1

    def _response_head(self, head: bytes) -> None:
        """Check the status and learn the boundary."""
        lines = head.decode("latin-1").split("\r\n")
        self.viewer.status = int(lines[0].split()[1])
        if self.viewer.status != 200:
            raise ValueError(f"HTTP {self.viewer.status}")
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type" and "boundary=" in value:
                boundary = value.split("boundary=", 1)[1].split(";")[0].strip().strip('"')
                self._delimiter = b"\r\n--" + boundary.encode()
        if not self._delimiter:
            raise ValueError("no multipart boundary")
        self._in_body = True

    def _part(self, part: Part) -> None:
        viewer = self.viewer
        if not viewer.parts:
            viewer.first_part = part.received
        viewer.parts.append(part)


def _content_length(head: bytes) -> int:
    """A part head's Content-Length, -1 if it has none."""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return -1


class Readers:
    """A set of viewers of one stream URL, all in this process's event loop."""

    def __init__(self, host: str, port: int, path: str, stamps: Stamps) -> None:
        self.host, self.port = host, port
        self.request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode()
        self.stamps = stamps
        self.readers: list[MjpegReader] = []
        self._lag = LoopLag()

    @property
    def viewers(self) -> list[Viewer]:
        """Every viewer opened so far."""
        return [reader.viewer for reader in self.readers]

    async def open(self, slow: bool = False) -> Viewer:
        """Connect one more viewer; a slow one has a tiny receive buffer and reads rarely."""
        loop = asyncio.get_running_loop()
        viewer = Viewer(connect_started=time.time())
        reader = MjpegReader(viewer, self.stamps, self.request, slow)
        self.readers.append(reader)
        sock = socket.socket()
        sock.setblocking(False)
        if slow:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
        try:
            await loop.sock_connect(sock, (self.host, self.port))
            await loop.create_connection(lambda: reader, sock=sock)
        except OSError as exc:
            sock.close()
            viewer.error, viewer.closed = str(exc), True
        return viewer

    async def open_many(self, count: int) -> None:
        """Connect ``count`` viewers at once."""
        await asyncio.gather(*(self.open() for _ in range(count)))

    async def wait_first_parts(self, timeout: float) -> None:
        """Wait until every open viewer has a part (or failed), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(v.parts or v.closed for v in self.viewers):
                return
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Close every connection and wait (bounded) until each is gone."""
        for reader in self.readers:
            if reader.transport is not None:
                reader.transport.close()
        pending = [reader.done for reader in self.readers if reader.transport is not None]
        if pending:
            await asyncio.wait(pending, timeout=5.0)

    def pids(self) -> list[int]:
        """The reader processes other than this one: none."""
        return []

    async def begin_window(self) -> None:
        """A measurement window starts: time this process's event loop."""
        self._lag = LoopLag()
        self._lag.start()

    async def end_window(self) -> list[float]:
        """The window ended: how late this loop's callbacks ran during it (ms)."""
        return self._lag.stop()


async def _child(conn: Connection, host: str, port: int, path: str) -> None:
    """A reader process's loop: viewers opened, timed and closed as the parent asks."""
    loop = asyncio.get_running_loop()
    readers = Readers(host, port, path, Stamps())
    lags: list[float] = []
    conn.send(None)  # ready: imported and looping, so a burst is not slowed by a process starting
    while True:
        command, argument = await loop.run_in_executor(None, conn.recv)
        if command == "open":
            await readers.open_many(argument)
            conn.send(None)
        elif command == "first":
            await readers.wait_first_parts(argument)
            conn.send(None)
        elif command == "begin":
            await readers.begin_window()
            conn.send(None)
        elif command == "end":
            lags = await readers.end_window()
            conn.send(None)
        else:  # "close": hand every viewer's parts back and end
            await readers.close()
            conn.send((readers.viewers, lags))
            return


def _serve(conn: Connection, host: str, port: int, path: str) -> None:
    """A reader process's entry point."""
    try:
        asyncio.run(_child(conn, host, port, path))
    finally:
        conn.close()


class Spread:
    """Viewers of one stream URL shared out over ``procs`` reader processes.

    Each process keeps its share in its own event loop and hands every viewer's parts back
    when closed; the figures are then read as from one ``Readers``. Parts are stamped with
    the same clock (``time.time()``) in every process.
    """

    def __init__(self, host: str, port: int, path: str, procs: int) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no loop, no sockets inherited
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for _ in range(procs):
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(child, host, port, path), daemon=True)
            process.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(process)
        self._viewers: list[Viewer] = []
        self._lags: list[float] = []
        self._started = False

    @property
    def viewers(self) -> list[Viewer]:
        """Every viewer, once the processes handed them back (after ``close()``)."""
        return self._viewers

    def pids(self) -> list[int]:
        """The reader processes."""
        return [process.pid for process in self._procs]

    async def _answers(self) -> list[object]:
        """Every process's next answer."""
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(None, conn.recv) for conn in self._conns)))

    async def _ask(self, commands: list[tuple[str, object]]) -> list[object]:
        """Send each process its command at once (once all are ready) and wait for every answer."""
        if not self._started:
            await self._answers()  # each process says it is ready
            self._started = True
        for conn, command in zip(self._conns, commands, strict=True):
            conn.send(command)
        return await self._answers()

    async def open_many(self, count: int) -> None:
        """Connect ``count`` viewers at once, shared out evenly."""
        procs = len(self._conns)
        await self._ask([("open", count // procs + (number < count % procs)) for number in range(procs)])

    async def wait_first_parts(self, timeout: float) -> None:
        """Wait until every viewer has a part (or failed), at most ``timeout`` seconds."""
        await self._ask([("first", timeout)] * len(self._conns))

    async def begin_window(self) -> None:
        """A measurement window starts: every process times its event loop."""
        await self._ask([("begin", None)] * len(self._conns))

    async def end_window(self) -> list[float]:
        """The window ended: how late callbacks ran in every reader process (ms)."""
        await self._ask([("end", None)] * len(self._conns))
        return []  # handed back with the viewers, at close

    @property
    def lags(self) -> list[float]:
        """Every process's loop lags over the window (ms), after ``close()``."""
        return self._lags

    async def close(self) -> None:
        """Close every connection, take the viewers back and end the processes (bounded)."""
        try:
            answers = await asyncio.wait_for(self._ask([("close", None)] * len(self._conns)), 60.0)
            for viewers, lags in answers:
                self._viewers += viewers
                self._lags += lags
        finally:
            for process in self._procs:
                process.join(5.0)
                if process.is_alive():
                    process.kill()
                    process.join(5.0)
