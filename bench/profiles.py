"""Stream profiles and the multiplexed dashboard, measured: bytes, CPU, scale, browser memory.

Run from the repository root (about 13 minutes; ``--quick`` takes about 3)::

    python bench/profiles.py                     # parts 1-4, part 4 for 10 minutes
    python bench/profiles.py --quick             # short windows, part 4 for 2 minutes
    python bench/profiles.py --part 3            # only the 1,100-viewer run
    python bench/profiles.py --part 4 --minutes 2

Everything runs on 127.0.0.1 as real processes: the bench camera (``bench/camera.py``: 640x480
q80 at 30 fps, each frame stamped), and livecam's gunicorn from ``gunicorn.conf.py`` with eight
cameras (``LIVECAM_CAMERAS=0=URL,...,7=URL``) all reading that one bench camera over HTTP, so
``full`` is the camera's own JPEGs passed through and ``preview`` is livecam's 320 px, 5 fps,
q60 encode of them. Streams are read over plain sockets by asyncio readers (HTTP/1.0, so the
body is not chunked) in separate reader processes; every process is stopped by PID at the end.
Figures are printed, never asserted. CPU is utime+stime from /proc in % of ONE core (this
machine has 2: 200 % is all of it); ``machine`` is every core's busy time from /proc/stat, so
``machine - (server + camera + readers)`` is what other programs used meanwhile.

Per viewer, a part is one frame; its ``X-Timestamp`` (livecam's capture time of that frame) is
its identity: ``fps`` counts distinct timestamps received in the window, ``dups`` parts whose
timestamp the viewer already had, ``lat`` is receipt time minus capture time.

1. Dashboard download, 8 cameras. ``before``: what the dashboard did before the multiplexed
   stream, emulated: the focused camera's full stream (``/cameras/0/stream.mjpg``) plus a full
   snapshot (``/cameras/ID/snapshot.jpg``) of each of the 7 others once a second, at most two
   at a time on two kept-alive connections (the old dashboard.js pump). ``after``:
   ``/streams.mjpg?cameras=0:full,1:preview,...,7:preview``; ``after, all preview``: eight
   previews. KB/s is every byte received (KB = 1,000 bytes), per tile and in all; frames/s is
   new frames per tile. The status refresh (``/cameras`` every 2 s) is the same in both and is
   printed apart.
2. Server CPU, 8 cameras each with 1 full and 10 preview viewers (88 streams), with each
   profile's fps and viewers from the records (``GET /cameras``), and the record's counters over
   the window: ``enc/frame`` is preview frames encoded divided by preview frames one viewer of
   that camera received (1.0: one encode per frame however many viewers; 10 would be one per
   viewer); ``full enc`` is 0 when full is passed through; ``decoded`` is decodes per preview frame.
3. Scale: 1,000 preview viewers over the 8 cameras (125 each) and 100 full viewers of camera 0,
   in 4 reader processes. Per group: min and median fps, duplicates, latency; the server's CPU,
   the gunicorn worker's threads (/proc/PID/task) and RSS before and during; each reader
   process's CPU and its event loop's worst lag (a reader that cannot keep up shows a lag of
   hundreds of ms, latency growing and fps falling; one that keeps up shows a few ms).
4. Chromium's memory with the dashboard open on the 8 cameras over HTTP/1.1 (headless Debian
   chromium through Playwright): every 30 s, RSS of the browser, renderer, GPU and utility
   processes (/proc of chromium's process tree), their PSS in all, the page's JS heap (CDP
   ``Runtime.getHeapUsage``, before and after a forced GC), DOM nodes, frames the page showed
   per second (frames drawn on the tiles' canvases) and the server's bytes sent per second; then each series'
   growth per minute (least squares over every sample, and over the second half alone), and the
   memory left 10 s after a forced GC and a critical memory-pressure signal (CDP
   ``Memory.simulatePressureNotification``): what a cache held is given back, a leak stays.

The machine is shared and small: other programs' CPU shows in ``machine``; repeat a part whose
``others`` figure is large.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import CLOCK_TICK, Server, Usage, cpu_percent, free_port, http, tree, usage

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
CAMERAS = 8
CAMERA_FPS = 30.0
PREVIEW = "preview"
FULL = "full"
CHROMIUM = "/usr/bin/chromium"
# As tests/e2e/test_browser.py launches it: no sandbox (root), no GPU, nothing phoned home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SAMPLE_EVERY = 30.0  # part 4's sampling interval, seconds
PRESSURE_SETTLE = 10.0  # part 4: seconds between the memory-pressure signal and the last reading
READ_BUFFER = 256 * 1024  # one reader connection's receive buffer (a part head must fit)
LAG_TICK = 0.05  # the reader's loop-lag probe interval


# -- a reader connection: MJPEG parts counted, bodies skipped ------------------------------


class StreamConn(asyncio.BufferedProtocol):
    """One MJPEG response read into a fixed buffer: part heads are parsed, bodies only counted.

    Each part is logged as (received, track, X-Timestamp, bytes): ``track`` is ``CAM:PROFILE``
    from a multiplexed stream's X-Camera/X-Profile, else the connection's own label.
    """

    def __init__(self, request: bytes, label: str) -> None:
        self.request = request
        self.label = label
        self.buf = bytearray(READ_BUFFER)
        self.view = memoryview(self.buf)
        self.fill = 0  # bytes of an unfinished head kept at the buffer's start
        self.remaining = 0  # body bytes still to skip
        self.pending: tuple[str, bytes, int] = ("", b"", 0)
        self.in_body = False  # past the response head
        self.status = 0
        self.error = ""
        self.received = 0  # every byte read from the socket
        self.parts: list[tuple[float, str, bytes, int]] = []
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.fill :]

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        buf, end, pos = self.buf, self.fill + nbytes, 0
        now = 0.0
        try:
            while pos < end:
                if self.remaining:
                    take = min(self.remaining, end - pos)
                    self.remaining -= take
                    pos += take
                    if not self.remaining:
                        now = now or time.time()
                        self.parts.append((now, *self.pending))
                    continue
                stop = buf.find(b"\r\n\r\n", pos, end)
                if stop < 0:
                    break
                head, pos = bytes(buf[pos:stop]), stop + 4
                if not self.in_body:
                    self._response(head)
                    continue
                length = self._part(head)
                self.remaining = length
                if not length:
                    now = now or time.time()
                    self.parts.append((now, *self.pending))
        except ValueError as exc:
            self.error = f"bad stream: {exc}"
            self.transport.close()
            return
        rest = end - pos
        if rest and pos:
            buf[:rest] = buf[pos:end]  # same length: the exported buffer keeps its size
        self.fill = rest
        if self.fill > READ_BUFFER - 4096:
            self.error = "a part head larger than the buffer"
            self.transport.close()

    def _response(self, head: bytes) -> None:
        line = head.split(b"\r\n", 1)[0].split()
        self.status = int(line[1]) if len(line) > 1 and line[1].isdigit() else 0
        if self.status != 200:
            raise ValueError(f"HTTP {self.status}: {head[:200]!r}")
        self.in_body = True

    def _part(self, head: bytes) -> int:
        length, stamp, camera, profile = -1, b"", b"", b""
        for line in head.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon:
                continue
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-timestamp":
                stamp = value.strip()
            elif name == b"x-camera":
                camera = value.strip()
            elif name == b"x-profile":
                profile = value.strip()
        if length < 0:
            raise ValueError("a part without Content-Length")
        track = f"{camera.decode()}:{profile.decode()}" if camera else self.label
        self.pending = (track, stamp, len(head) + 4 + length)
        return length

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.error:
            self.error = str(exc)
        if not self.done.done():
            self.done.set_result(None)


class SnapshotPoller:
    """The old dashboard's snapshot pump: each tile's snapshot about once a second, oldest
    first, at most ``at_once`` in flight, over as many kept-alive HTTP/1.1 connections."""

    PUMP = 0.2

    def __init__(self, port: int, tiles: dict[str, str], every: float, at_once: int) -> None:
        self.port = port
        self.tiles = tiles  # label -> path
        self.every = every
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = [None] * at_once
        self.shot_at = {label: 0.0 for label in tiles}
        self.loading: set[str] = set()
        self.received = 0
        self.parts: list[tuple[float, str, bytes, int]] = []
        self.error = ""
        self.tasks: set[asyncio.Task] = set()

    async def run(self, until: float) -> None:
        """Pump until the loop time ``until``."""
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            self.pump()
            await asyncio.sleep(self.PUMP)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5.0)
        for conn in self.free:
            if conn is not None:
                conn[1].close()

    def pump(self) -> None:
        """Start every snapshot that is due, oldest first, while a connection is free."""
        now = time.monotonic()
        while self.free:
            due = [t for t in self.tiles if t not in self.loading and now - self.shot_at[t] >= self.every]
            if not due:
                return
            label = min(due, key=self.shot_at.__getitem__)
            self.loading.add(label)
            self.shot_at[label] = now
            task = asyncio.create_task(self.load(label, self.free.pop()))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def load(self, label: str, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        """One snapshot on a kept-alive connection (opened when there is none)."""
        try:
            if conn is None:
                conn = await asyncio.open_connection(HOST, self.port)
            reader, writer = conn
            writer.write(f"GET {self.tiles[label]} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            fields = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(fields.get(b"content-length", b"0")))
            self.received += len(head) + len(body)
            if head.split()[1] == b"200":
                self.parts.append(
                    (time.time(), label, fields.get(b"x-timestamp", b""), len(head) + len(body))
                )
            if fields.get(b"connection", b"").lower() == b"close":
                writer.close()
                conn = None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.error = self.error or f"snapshot: {exc!r}"
            conn = None
        finally:
            self.loading.discard(label)
            self.free.append(conn)
            self.pump()


# -- reader processes -----------------------------------------------------------------------


def reader_process(conn: Any, port: int, specs: list[dict], batch: int) -> None:
    """A reader process: open the streams in ``specs``, report when every one has a part, then
    summarize the window the parent sends, and exit."""
    asyncio.run(_reader_main(conn, port, specs, batch))


async def _open(port: int, path: str, label: str) -> StreamConn:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.0\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    proto = StreamConn(request, label)
    try:
        await loop.create_connection(lambda: proto, HOST, port)
    except OSError as exc:
        proto.error = f"connect: {exc}"
        proto.done.set_result(None)
    return proto


async def _lag_probe(lags: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """Record how late each wake-up of this event loop is, and when (lateness s, Unix time)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + LAG_TICK
        await asyncio.sleep(LAG_TICK)
        lags.append((loop.time() - due, time.time()))


async def _reader_main(conn: Any, port: int, specs: list[dict], batch: int) -> None:
    loop = asyncio.get_running_loop()
    streams: list[tuple[str, str, StreamConn]] = []  # (group, path, connection)
    pollers: list[tuple[str, SnapshotPoller]] = []
    todo = []
    for spec in specs:
        if spec["kind"] == "stream":
            todo += [(spec["group"], spec["path"], spec.get("label", spec["group"]))] * spec["count"]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        opened = await asyncio.gather(*(_open(port, path, label) for _, path, label in chunk))
        streams += [(group, path, proto) for (group, path, _), proto in zip(chunk, opened, strict=True)]
    deadline = time.monotonic() + 15.0 + len(todo) * 0.01
    while time.monotonic() < deadline:
        if all(p.parts or p.done.done() for _, _, p in streams):
            break
        await asyncio.sleep(0.05)
    waiting = [p for _, _, p in streams if not p.parts]
    conn.send(
        {
            "opened": len(streams),
            "without_part": len(waiting),
            "errors": sorted({p.error for p in waiting if p.error})[:5],
        }
    )
    window = await loop.run_in_executor(None, conn.recv)
    if window is None:  # the parent gave up
        _close(streams)
        return
    t0, t1 = window
    lags: list[tuple[float, float]] = []
    stop_lag = asyncio.Event()
    lag_task = asyncio.create_task(_lag_probe(lags, stop_lag))
    for spec in specs:
        if spec["kind"] == "snapshots":
            poller = SnapshotPoller(port, spec["tiles"], spec["every"], spec["at_once"])
            pollers.append((spec["group"], poller))
    pump_until = loop.time() + (t1 - time.time()) + 0.2
    pumps = [asyncio.create_task(p.run(pump_until)) for _, p in pollers]
    await asyncio.sleep(max(0.0, t0 - time.time()))
    cpu0, bytes0 = os.times(), [p.received for _, _, p in streams] + [p.received for _, p in pollers]
    await asyncio.sleep(max(0.0, t1 - time.time()))
    cpu1, bytes1 = os.times(), [p.received for _, _, p in streams] + [p.received for _, p in pollers]
    stop_lag.set()
    await lag_task
    if pumps:
        await asyncio.wait(pumps, timeout=10.0)
    seconds = t1 - t0
    results = []
    every = [(g, path, p) for g, path, p in streams] + [(g, "snapshots", p) for g, p in pollers]
    for (group, path, proto), before, after in zip(every, bytes0, bytes1, strict=True):
        results.append(
            {
                "group": group,
                "path": path,
                "error": proto.error,
                "bytes": after - before,
                "tracks": summarize(proto.parts, t0, t1),
            }
        )
    window_lags = [lag for lag, at in lags if t0 <= at <= t1]
    conn.send(
        {
            "cpu": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / seconds * 100,
            "lag_max_ms": max(window_lags, default=math.nan) * 1000,
            "lag_p99_ms": _percentile(window_lags, 0.99) * 1000,
            "results": results,
        }
    )
    _close(streams)
    await asyncio.sleep(0.2)


def _close(streams: list[tuple[str, str, StreamConn]]) -> None:
    for _, _, proto in streams:
        if proto.transport is not None:
            proto.transport.close()


def summarize(parts: list[tuple[float, str, bytes, int]], t0: float, t1: float) -> dict[str, dict]:
    """Per track, over parts received in [t0, t1): new frames, duplicates, bytes, latencies,
    and the longest wait between new frames."""
    tracks: dict[str, dict] = {}
    seen: dict[str, set[bytes]] = {}
    for received, track, stamp, size in parts:
        known = seen.setdefault(track, set())
        dup = stamp in known
        known.add(stamp)
        if not t0 <= received < t1:
            continue
        entry = tracks.setdefault(
            track, {"frames": 0, "dups": 0, "bytes": 0, "lat": array("f"), "last": t0, "max_gap": 0.0}
        )
        entry["bytes"] += size
        if dup:
            entry["dups"] += 1
            continue
        entry["frames"] += 1
        entry["max_gap"] = max(entry["max_gap"], received - entry["last"])
        entry["last"] = received
        if stamp:
            entry["lat"].append((received - float(stamp)) * 1000)
    for entry in tracks.values():
        entry["max_gap"] = max(entry["max_gap"], t1 - entry.pop("last"))
        entry["lat"] = entry["lat"].tobytes()
    return tracks


@dataclass
class ReaderRun:
    """Several reader processes, one window: what each process saw and what it cost."""

    ready: list[dict] = field(default_factory=list)
    reports: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def results(self) -> list[dict]:
        """Every connection's result, from every process."""
        return [r for report in self.reports for r in report["results"]]


@dataclass
class Sample:
    """The system at one instant: the server, the camera, the machine and the readers."""

    at: float
    server: Usage
    camera: Usage
    machine_busy: int  # clock ticks, every core
    worker_threads: int
    worker_rss_kb: int
    records: list[dict]
    streams: int  # /healthz: streams livecam is serving


class Rig:
    """The bench camera and livecam with eight cameras on it, shared by every part."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.camera: Server | None = None
        self.livecam: Server | None = None
        self.camera_port = self.port = 0

    def start(self) -> None:
        """Start the camera, then gunicorn with 8 cameras reading it, and switch them on."""
        self.camera_port = free_port()
        argv = [PYTHON, str(BENCH / "camera.py"), "--port", str(self.camera_port), "--fps", str(CAMERA_FPS)]
        argv += ["--size", "640x480", "--quality", "80"]
        ready = f"http://{HOST}:{self.camera_port}/stats"
        self.camera = Server("camera", argv, ready, self.logs / "camera.log")
        self.camera.wait_ready()
        self.port = free_port()
        url = f"http://{HOST}:{self.camera_port}/cam.mjpg"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
        env |= {
            "LIVECAM_CAMERAS": ",".join(f"{i}={url}" for i in range(CAMERAS)),
            "LIVECAM_STATE_DIR": str(self.logs / "livecam-state"),
        }
        argv = [PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
        argv += ["--bind", f"{HOST}:{self.port}"]
        ready = f"http://{HOST}:{self.port}/healthz"
        self.livecam = Server("livecam", argv, ready, self.logs / "livecam.log", cwd=REPO, env=env)
        self.livecam.wait_ready()
        for cam in range(CAMERAS):
            http("POST", self.url(f"/cameras/{cam}/start"))
        if not wait_for(lambda: all(r["state"] == "on" and r["fps"] > 25 for r in self.records()), 20.0):
            raise RuntimeError(f"livecam's cameras did not come on at full rate: {self.records()}")

    def stop(self) -> None:
        """Stop livecam, then the camera, by PID."""
        for server in (self.livecam, self.camera):
            if server is not None:
                server.stop()

    def url(self, path: str) -> str:
        """A URL on livecam."""
        return f"http://{HOST}:{self.port}{path}"

    def records(self) -> list[dict]:
        """Every camera's record."""
        return http("GET", self.url("/cameras"))[1]

    def worker(self) -> int:
        """The gunicorn worker's PID (the master's one child)."""
        children = [pid for pid in tree(self.livecam.pid) if pid != self.livecam.pid]
        return children[0] if children else self.livecam.pid

    def sample(self, with_records: bool = True) -> Sample:
        """The system now."""
        worker = self.worker()
        return Sample(
            at=time.time(),
            server=usage(self.livecam.pids()),
            camera=usage(self.camera.pids()),
            machine_busy=machine_busy(),
            worker_threads=len(os.listdir(f"/proc/{worker}/task")),
            worker_rss_kb=status_kb(worker, "VmRSS"),
            records=self.records() if with_records else [],
            streams=http("GET", self.url("/healthz"))[1]["streams"],
        )

    def idle(self, timeout: float = 15.0) -> bool:
        """Wait until no camera counts a viewer."""
        return wait_for(lambda: all(r["viewers"] == 0 for r in self.records()), timeout)

    def readers(
        self, plans: list[list[dict]], warmup: float, seconds: float, batch: int = 50
    ) -> tuple[ReaderRun, Sample, Sample]:
        """Run one reader process per plan, wait until every stream has a part, warm up, then
        measure one window; samples of the system at its start and end."""
        ctx = mp.get_context("spawn")
        procs, pipes = [], []
        run = ReaderRun(seconds=seconds)
        try:
            for plan in plans:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=reader_process, args=(child, self.port, plan, batch), daemon=True)
                proc.start()
                procs.append(proc)
                pipes.append(parent)
            for pipe in pipes:
                if not pipe.poll(120.0):
                    raise RuntimeError("a reader process did not get ready in 120 s")
                run.ready.append(pipe.recv())
            t0 = time.time() + warmup
            t1 = t0 + seconds
            for pipe in pipes:
                pipe.send((t0, t1))
            time.sleep(max(0.0, t0 - time.time()))
            start = self.sample()
            time.sleep(max(0.0, t1 - time.time()))
            end = self.sample()
            for pipe in pipes:
                if not pipe.poll(60.0):
                    raise RuntimeError("a reader process did not report in 60 s")
                run.reports.append(pipe.recv())
        finally:
            for proc in procs:
                proc.join(10.0)
                if proc.is_alive():
                    proc.kill()  # by its PID: only processes started here
                    proc.join(5.0)
        return run, start, end


# -- /proc helpers --------------------------------------------------------------------------


def wait_for(check: Any, timeout: float) -> bool:
    """Poll ``check`` every 0.1 s until it holds, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (OSError, TypeError, KeyError):
            pass
        time.sleep(0.1)
    return False


def machine_busy() -> int:
    """Clock ticks every core has spent busy (not idle, not waiting for I/O) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` figure from /proc/PID/status (VmRSS...); 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_time(pid: int) -> str:
    """The process's start time (/proc/PID/stat field 22); '' if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return text[text.rindex(")") + 2 :].split()[19]


def pss_kb(pid: int) -> int:
    """The process's proportional set size (shared pages split among their users)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def percent(start: Sample, end: Sample) -> dict[str, float]:
    """Server, camera and machine CPU over a window, in % of one core."""
    seconds = end.at - start.at
    return {
        "server": cpu_percent(start.server, end.server, seconds),
        "camera": cpu_percent(start.camera, end.camera, seconds),
        "machine": (end.machine_busy - start.machine_busy) / CLOCK_TICK / seconds * 100,
    }


# -- figures --------------------------------------------------------------------------------


def _percentile(values: list[float] | array, fraction: float) -> float:
    if not len(values):
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def fmt(value: float, digits: int = 1) -> str:
    """A number for a table cell; '-' when unknown."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(headers: list[tuple[str, int]], rows: list[list[str]]) -> str:
    """Right-aligned columns, the first left-aligned."""

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return " ".join(
            [f"{first:<{headers[0][1]}}"] + [f"{c:>{w}}" for c, (_, w) in zip(rest, headers[1:], strict=True)]
        )

    return "\n".join([line([name for name, _ in headers])] + [line(r) for r in rows])


@dataclass
class Group:
    """Every viewer track of one kind in a window: fps each, duplicates, latencies, bytes."""

    fps: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    dups: int = 0
    bytes: int = 0
    lat: array = field(default_factory=lambda: array("f"))
    failed: int = 0

    def add(self, track: dict | None, seconds: float) -> None:
        """One viewer's track (None: it received nothing in the window)."""
        if track is None:
            self.fps.append(0.0)
            self.gaps.append(seconds)
            self.failed += 1
            return
        self.fps.append(track["frames"] / seconds)
        self.gaps.append(track["max_gap"])
        self.dups += track["dups"]
        self.bytes += track["bytes"]
        self.lat.frombytes(track["lat"])

    def row(self, name: str) -> list[str]:
        """A table row: viewers, fps min/median/max, dups, latency p50/p95, longest gap, failed."""
        return [
            name,
            str(len(self.fps)),
            fmt(min(self.fps, default=math.nan), 2),
            fmt(statistics.median(self.fps) if self.fps else math.nan, 2),
            fmt(max(self.fps, default=math.nan), 2),
            str(self.dups),
            fmt(_percentile(self.lat, 0.5)),
            fmt(_percentile(self.lat, 0.95)),
            fmt(_percentile(self.lat, 0.999)),
            fmt(max(self.gaps, default=math.nan) * 1000, 0),
            str(self.failed),
        ]


GROUP_HEADERS = [
    ("group", 22),
    ("viewers", 7),
    ("fps min", 7),
    ("fps med", 7),
    ("fps max", 7),
    ("dups", 5),
    ("lat p50", 7),
    ("lat p95", 7),
    ("p99.9", 7),
    ("gap ms", 6),
    ("failed", 6),
]
GROUP_LEGEND = (
    "fps: new frames/s per viewer; dups: parts repeating a frame the viewer had; lat: receipt minus\n"
    "capture time, ms, each frame's first arrival; gap: longest wait for a new frame by any viewer"
)


def readers_line(run: ReaderRun) -> str:
    """Each reader process's CPU and worst event loop lag."""
    cells = [
        f"{r['cpu']:.0f} % (lag p99 {fmt(r['lag_p99_ms'], 0)} ms, max {fmt(r['lag_max_ms'], 0)} ms)"
        for r in run.reports
    ]
    return f"reader processes ({len(cells)}): " + "; ".join(cells)


def cpu_line(run: ReaderRun, cpu: dict[str, float]) -> str:
    """Server, camera, readers, machine and the rest, in % of one core."""
    readers = sum(r["cpu"] for r in run.reports)
    others = cpu["machine"] - cpu["server"] - cpu["camera"] - readers
    return (
        f"CPU, % of one core (2 cores = 200 %): livecam {cpu['server']:.1f}, camera {cpu['camera']:.1f}, "
        f"readers {readers:.1f}, machine {cpu['machine']:.1f}, others {others:.1f}"
    )


def ready_problems(run: ReaderRun) -> str:
    """Streams that had no part before the window, if any."""
    missing = sum(r["without_part"] for r in run.ready)
    if not missing:
        return ""
    errors = sorted({e for r in run.ready for e in r["errors"]})
    return f"WARNING: {missing} streams had no part before the window: {errors}\n"


def record_delta(start: Sample, end: Sample) -> dict[int, dict[str, Any]]:
    """Per camera: counters' growth over the window and the end's rates and viewers."""
    before = {r["id"]: r for r in start.records}
    result = {}
    for rec in end.records:
        old = before[rec["id"]]
        result[rec["id"]] = {
            "frames": rec["frames"] - old["frames"],
            "decoded": rec["decoded"] - old["decoded"],
            "encoded": rec["encoded"] - old["encoded"],
            **{
                f"{name}_{key}": rec["profiles"][name][key] - old["profiles"][name][key]
                for name in (FULL, PREVIEW)
                for key in ("encoded", "bytes")
            },
            **{f"{name}_fps": rec["profiles"][name]["fps"] for name in (FULL, PREVIEW)},
            **{f"{name}_viewers": rec["profiles"][name]["viewers"] for name in (FULL, PREVIEW)},
            "preview_size": f"{rec['profiles'][PREVIEW]['width']}x{rec['profiles'][PREVIEW]['height']}",
            "passthrough": rec["passthrough"],
        }
    return result


# -- part 1: what the dashboard downloads ----------------------------------------------------


def part1(rig: Rig, args: argparse.Namespace) -> str:
    """Bytes and frames per tile: the old snapshot pattern, the multiplexed stream, all previews."""
    tiles = {f"{cam}:snapshot": f"/cameras/{cam}/snapshot.jpg" for cam in range(1, CAMERAS)}
    scenarios = {
        "before (1 full stream + 7 snapshots/s)": [
            {
                "kind": "stream",
                "group": "dashboard",
                "path": "/cameras/0/stream.mjpg",
                "count": 1,
                "label": "0:full",
            },
            {"kind": "snapshots", "group": "dashboard", "tiles": tiles, "every": 1.0, "at_once": 2},
        ],
        "after (/streams.mjpg, 1 full + 7 preview)": [
            {
                "kind": "stream",
                "group": "dashboard",
                "count": 1,
                "path": "/streams.mjpg?cameras=0:full," + ",".join(f"{c}:preview" for c in range(1, CAMERAS)),
            }
        ],
        "after, all tiles preview": [
            {
                "kind": "stream",
                "group": "dashboard",
                "count": 1,
                "path": "/streams.mjpg?cameras=" + ",".join(f"{c}:preview" for c in range(CAMERAS)),
            }
        ],
    }
    out = [f"== part 1: what the dashboard downloads, 8 cameras ({args.seconds1:g} s windows)"]
    status_size = len(urlopen_bytes(rig.url("/cameras")))
    totals = {}
    for name, plan in scenarios.items():
        rig.idle()
        progress(f"part 1: {name}")
        run, start, end = rig.readers([plan], args.warmup, args.seconds1)
        cpu = percent(start, end)
        seconds = run.seconds
        results = run.results()
        total = sum(r["bytes"] for r in results)
        totals[name] = total / seconds / 1000
        rows = []
        tracks = {t: d for r in results for t, d in r["tracks"].items()}
        for track in sorted(tracks, key=lambda t: int(t.split(":")[0])):
            data = tracks[track]
            rows.append(
                [
                    track,
                    fmt(data["bytes"] / seconds / 1000),
                    fmt(data["frames"] / seconds, 2),
                    str(data["dups"]),
                    fmt(_percentile(array("f", data["lat"]), 0.5)),
                    fmt(data["max_gap"] * 1000, 0),
                ]
            )
        errors = sorted({r["error"] for r in results if r["error"]})
        out.append(f"-- {name}: {total / seconds / 1000:.1f} KB/s in all")
        out.append(
            ready_problems(run)
            + table(
                [("tile", 14), ("KB/s", 7), ("frames/s", 8), ("dups", 5), ("lat p50", 7), ("gap ms", 6)], rows
            )
        )
        out.append(cpu_line(run, cpu) + (f"\nerrors: {errors}" if errors else ""))
    before, *afters = totals.values()
    names = list(totals)
    out.append(
        "ratios to before: "
        + ", ".join(f"{n.split(' (')[0]}: {v / before:.2f}x" for n, v in zip(names[1:], afters, strict=True))
    )
    out.append(
        f"plus, in both, the status refresh: GET /cameras every 2 s, {status_size} B of JSON "
        f"(+ headers), {status_size / 2 / 1000:.1f} KB/s"
    )
    return "\n".join(out)


def urlopen_bytes(url: str) -> bytes:
    """A body, as bytes."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=5.0) as response:
        return response.read()


# -- part 2: server CPU with full and preview viewers of every camera ------------------------


def part2(rig: Rig, args: argparse.Namespace) -> str:
    """88 viewers: CPU, per-profile fps from the records, one encode per preview frame."""
    rig.idle()
    progress("part 2: 8 cameras x (1 full + 10 preview viewers)")
    quiet0 = rig.sample()
    time.sleep(args.quiet)
    quiet1 = rig.sample()
    plans: list[list[dict]] = [[], []]
    for cam in range(CAMERAS):
        plan = plans[cam % 2]
        plan.append(
            {"kind": "stream", "group": f"{cam}:full", "path": f"/cameras/{cam}/stream.mjpg", "count": 1}
        )
        path = f"/cameras/{cam}/stream.mjpg?profile=preview"
        plan.append({"kind": "stream", "group": f"{cam}:preview", "path": path, "count": 10})
    run, start, end = rig.readers(plans, args.warmup, args.seconds)
    cpu = percent(start, end)
    quiet = percent(quiet0, quiet1)
    seconds = run.seconds
    groups: dict[str, Group] = {}
    for result in run.results():
        tracks = result["tracks"]
        groups.setdefault(result["group"], Group()).add(tracks.get(result["group"]), seconds)
    delta = record_delta(start, end)
    rows = []
    for cam in range(CAMERAS):
        d, full, prev = delta[cam], groups[f"{cam}:full"], groups[f"{cam}:preview"]
        received = statistics.median(prev.fps) * seconds if prev.fps else math.nan
        rows.append(
            [
                str(cam),
                fmt(d["full_fps"]),
                fmt(d["preview_fps"]),
                f"{d['full_viewers']}/{d['preview_viewers']}",
                fmt(min(full.fps, default=math.nan), 2),
                fmt(min(prev.fps, default=math.nan), 2),
                str(full.dups + prev.dups),
                str(d["preview_encoded"]),
                fmt(d["preview_encoded"] / received if received else math.nan, 2),
                str(d["full_encoded"]),
                fmt(d["decoded"] / received if received else math.nan, 2),
                fmt(d["frames"] / seconds),
                d["preview_size"],
                "yes" if d["passthrough"] else "no",
            ]
        )
    headers = [
        ("cam", 3),
        ("rec full", 8),
        ("rec prev", 8),
        ("viewers", 7),
        ("full min", 8),
        ("prev min", 8),
        ("dups", 4),
        ("prev enc", 8),
        ("enc/frame", 9),
        ("full enc", 8),
        ("decoded", 7),
        ("captured/s", 10),
        ("preview", 7),
        ("pass", 4),
    ]
    legend = (
        "rec full/prev: the record's profiles.full.fps / profiles.preview.fps; viewers: the record's\n"
        "full/preview viewers; full min / prev min: the slowest reader's new frames/s; prev enc: preview\n"
        "frames encoded in the window; enc/frame: prev enc / preview frames one viewer received; full\n"
        "enc: full frames encoded (0 = passed through); decoded: decodes per preview frame received"
    )
    full_all, prev_all = Group(), Group()
    for name, group in groups.items():
        target = full_all if name.endswith(":full") else prev_all
        target.fps += group.fps
        target.gaps += group.gaps
        target.dups += group.dups
        target.lat += group.lat
        target.failed += group.failed
    return "\n".join(
        [
            f"== part 2: server CPU, 8 cameras x (1 full + 10 preview) = 88 viewers ({seconds:g} s window)",
            ready_problems(run) + table(headers, rows),
            legend,
            table(GROUP_HEADERS, [full_all.row("full (8)"), prev_all.row("preview (80)")]),
            cpu_line(run, cpu),
            f"the same 8 cameras on, nobody watching ({args.quiet:g} s): livecam {quiet['server']:.1f} %, "
            f"machine {quiet['machine']:.1f} %",
            f"livecam worker: {end.worker_threads} threads, RSS {end.worker_rss_kb / 1024:.0f} MB",
            readers_line(run),
        ]
    )


# -- part 3: 1,000 preview viewers and 100 full viewers ---------------------------------------


def part3(rig: Rig, args: argparse.Namespace) -> str:
    """The scale target, read by several reader processes."""
    rig.idle()
    progress(f"part 3: {args.previews} preview viewers over 8 cameras, {args.fulls} full viewers of camera 0")
    base = rig.sample()
    nproc = args.readers
    plans: list[list[dict]] = [[] for _ in range(nproc)]
    for cam in range(CAMERAS):
        share = spread(args.previews // CAMERAS + (cam < args.previews % CAMERAS), nproc)
        for plan, count in zip(plans, share, strict=True):
            if count:
                path = f"/cameras/{cam}/stream.mjpg?profile=preview"
                plan.append({"kind": "stream", "group": f"{cam}:preview", "path": path, "count": count})
    for plan, count in zip(plans, spread(args.fulls, nproc), strict=True):
        if count:
            plan.append(
                {"kind": "stream", "group": "0:full", "path": "/cameras/0/stream.mjpg", "count": count}
            )
    for plan in plans:  # interleave cameras and profiles as they open
        plan.sort(key=lambda spec: spec["group"])
    started = time.monotonic()
    run, start, end = rig.readers(plans, args.warmup, args.seconds3, batch=25)
    opened = time.monotonic() - started - args.warmup - args.seconds3
    cpu = percent(start, end)
    seconds = run.seconds
    preview, full = Group(), Group()
    per_camera: dict[str, Group] = {}
    for result in run.results():
        track = result["tracks"].get(result["group"])
        (full if result["group"].endswith(":full") else preview).add(track, seconds)
        per_camera.setdefault(result["group"], Group()).add(track, seconds)
    delta = record_delta(start, end)
    cams = " ".join(
        f"{name.split(':')[0]}:{fmt(min(g.fps), 2)}"
        for name, g in sorted(per_camera.items())
        if "preview" in name
    )
    records = " ".join(
        f"{cam}:{d['preview_fps']:.1f}/{d['preview_viewers']}" for cam, d in sorted(delta.items())
    )
    enc = " ".join(f"{cam}:{d['preview_encoded']}" for cam, d in sorted(delta.items()))
    sent = sum(d["preview_bytes"] + d["full_bytes"] for d in delta.values()) / seconds / 1e6
    got = sum(r["bytes"] for r in run.results()) / seconds / 1e6
    errors = sorted({r["error"] for r in run.results() if r["error"]})
    return "\n".join(
        [
            f"== part 3: {args.previews} preview viewers (8 cameras) + {args.fulls} full viewers (camera 0), "
            f"{nproc} reader processes, {seconds:g} s window",
            ready_problems(run)
            + table(GROUP_HEADERS, [preview.row("preview (5 fps)"), full.row("full (30 fps)")]),
            GROUP_LEGEND,
            f"slowest preview viewer per camera (fps): {cams}",
            f"records, preview fps/viewers per camera: {records}",
            f"preview frames encoded per camera: {enc} (5 fps x {seconds:g} s: {5 * seconds:.0f})",
            f"full frames encoded: {sum(d['full_encoded'] for d in delta.values())}; livecam sent "
            f"{sent:.1f} MB/s (records' bytes), the readers received {got:.1f} MB/s (MB = 10^6 bytes)",
            cpu_line(run, cpu),
            f"livecam worker: threads {base.worker_threads} before -> {end.worker_threads} during; "
            f"RSS {base.worker_rss_kb / 1024:.0f} MB -> {end.worker_rss_kb / 1024:.0f} MB; "
            f"/healthz streams {base.streams} -> {end.streams}",
            f"opening {args.previews + args.fulls} streams and their first parts took {opened:.1f} s",
            readers_line(run),
            f"errors: {errors}" if errors else "errors: none",
        ]
    )


def spread(total: int, ways: int) -> list[int]:
    """``total`` split into ``ways`` nearly equal counts."""
    return [total // ways + (i < total % ways) for i in range(ways)]


# -- part 4: Chromium's memory over a long run -----------------------------------------------


def chromium_processes() -> dict[int, str]:
    """Chromium processes under this one (Playwright's driver starts it): pid -> kind, the
    ``--type=`` of its command line (``browser`` for none). Chromium rewrites its children's
    command lines into one space-separated string, so the executable is read from /proc/PID/exe."""
    found = {}
    for pid in tree(os.getpid()):
        try:
            exe = Path(os.readlink(f"/proc/{pid}/exe")).name
            args = (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
                .split()
            )
        except OSError:
            continue
        if exe != "chromium" and "crashpad" not in exe:
            continue
        kind = "crashpad" if "crashpad" in exe else "browser"
        for arg in args[1:] if kind == "browser" else []:
            if arg.startswith("--type="):
                kind = arg.removeprefix("--type=")
            elif arg.startswith("--utility-sub-type="):
                kind = "utility " + arg.rsplit(".", 1)[-1]
        found[pid] = kind
    return found


@dataclass
class ChromiumMemory:
    """Chromium's processes' memory at one instant, in KiB."""

    browser: int = 0
    page: int = 0  # the page's renderer (the largest renderer): RSS
    page_anon: int = 0
    page_shmem: int = 0
    other: int = 0  # every other chromium process: GPU, utilities, zygotes, other renderers
    rss: int = 0
    pss: int = 0
    renderers: int = 0

    @classmethod
    def take(cls, procs: dict[int, str]) -> ChromiumMemory:
        """Read /proc for ``procs``."""
        memory = cls()
        rss = {pid: status_kb(pid, "VmRSS") for pid in procs}
        renderers = [pid for pid, kind in procs.items() if kind == "renderer"]
        page = max(renderers, key=rss.__getitem__, default=0)
        for pid, kind in procs.items():
            if kind == "browser":
                memory.browser += rss[pid]
            elif pid != page:
                memory.other += rss[pid]
        if page:
            memory.page = rss[page]
            memory.page_anon = status_kb(page, "RssAnon")
            memory.page_shmem = status_kb(page, "RssShmem")
        memory.rss = sum(rss.values())
        memory.pss = sum(pss_kb(pid) for pid in procs)
        memory.renderers = len(renderers)
        return memory


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, value) points, per minute."""
    if len(points) < 2:
        return math.nan
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else math.nan


# What the page plays: its tiles as the stream's query would name them ("0:full,1:preview,...").
TILES_KEY = """() => [...document.querySelectorAll('.tile')]
  .map((t) => `${t.dataset.id}:${t.classList.contains('focused') ? 'full' : 'preview'}`).join(',')"""
ALL_SHOWN = """() => [...document.querySelectorAll('.view canvas')].every((c) => c.width > 0)"""
# Counts the tile pictures the page shows (each frame drawn on a tile's canvas), from now on.
COUNT_LOADS = """() => {
  window.__benchShown = 0;
  const draw = CanvasRenderingContext2D.prototype.drawImage;
  CanvasRenderingContext2D.prototype.drawImage = function (...args) {
    if (this.canvas.closest('.view')) window.__benchShown++;
    return draw.apply(this, args);
  };
}"""


def part4(rig: Rig, args: argparse.Namespace) -> str:
    """The dashboard in Chromium for ``--minutes``: memory every 30 s."""
    from playwright.sync_api import sync_playwright

    rig.idle()
    progress(f"part 4: Chromium on the dashboard, {args.minutes:g} min, a sample every {SAMPLE_EVERY:g} s")
    rows, points = [], {}
    kinds_seen: set[str] = set()
    known: dict[int, str] = {}  # pid -> its start time, to kill only what is still the same process
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1360, "height": 1500})
            page = context.new_page()
            page.goto(rig.url("/"), wait_until="domcontentloaded")
            if not wait_for(lambda: page.evaluate(ALL_SHOWN), 20.0):
                raise RuntimeError("the dashboard did not show every camera within 20 s")
            page.evaluate(COUNT_LOADS)
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            key = page.evaluate(TILES_KEY)
            start = time.monotonic()
            prev: tuple[float, int, int, Usage] | None = None
            total_samples = int(args.minutes * 60 // SAMPLE_EVERY) + 1
            for index in range(total_samples):
                time.sleep(max(0.0, start + index * SAMPLE_EVERY - time.monotonic()))
                procs = chromium_processes()
                for pid, kind in procs.items():
                    known.setdefault(pid, start_time(pid))
                    kinds_seen.add(kind)
                memory = ChromiumMemory.take(procs)
                cpu = usage(list(procs))
                metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                heap = cdp.send("Runtime.getHeapUsage")
                cdp.send("HeapProfiler.collectGarbage")
                after_gc = cdp.send("Runtime.getHeapUsage")
                shown = page.evaluate("() => window.__benchShown")
                stalled = page.evaluate("() => document.querySelectorAll('.tile.stalled').length")
                sent = sum(p["bytes"] for r in rig.records() for p in r["profiles"].values())
                now = time.monotonic()
                minutes = (now - start) / 60
                fps = kbps = chrome_cpu = math.nan
                if prev is not None:
                    span = now - prev[0]
                    fps = (shown - prev[1]) / span
                    kbps = (sent - prev[2]) / span / 1000
                    chrome_cpu = (cpu.cpu_ticks - prev[3].cpu_ticks) / CLOCK_TICK / span * 100
                prev = (now, shown, sent, cpu)
                series = {
                    "browser RSS MB": memory.browser / 1024,
                    "page renderer RSS MB": memory.page / 1024,
                    "page renderer anon MB": memory.page_anon / 1024,
                    "others RSS MB": memory.other / 1024,
                    "all RSS MB": memory.rss / 1024,
                    "all PSS MB": memory.pss / 1024,
                    "JS heap MB": heap["usedSize"] / 2**20,
                    "JS heap after GC MB": after_gc["usedSize"] / 2**20,
                    "DOM nodes": metrics.get("Nodes", math.nan),
                }
                for name, value in series.items():
                    points.setdefault(name, []).append((minutes, value))
                rows.append(
                    [
                        f"{minutes:.1f}",
                        fmt(series["browser RSS MB"]),
                        fmt(series["page renderer RSS MB"]),
                        fmt(series["page renderer anon MB"]),
                        fmt(memory.page_shmem / 1024),
                        fmt(series["others RSS MB"]),
                        fmt(series["all RSS MB"]),
                        fmt(series["all PSS MB"]),
                        fmt(series["JS heap MB"], 2),
                        fmt(series["JS heap after GC MB"], 2),
                        fmt(series["DOM nodes"], 0),
                        fmt(fps),
                        fmt(kbps),
                        fmt(chrome_cpu),
                        str(stalled),
                        str(memory.renderers),
                    ]
                )
                progress("part 4: " + " ".join(rows[-1]))
            # What Chromium gives back when told memory is short: caches go, a leak stays.
            cdp.send("HeapProfiler.collectGarbage")
            cdp.send("Memory.simulatePressureNotification", {"level": "critical"})
            time.sleep(PRESSURE_SETTLE)
            pressed = ChromiumMemory.take(chromium_processes())
        finally:
            browser.close()
    for pid, started in known.items():  # anything Playwright left behind, by PID and start time
        if started and start_time(pid) == started:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
    headers = [
        ("min", 5),
        ("browser", 7),
        ("page", 6),
        ("anon", 6),
        ("shmem", 6),
        ("others", 6),
        ("RSS all", 7),
        ("PSS all", 7),
        ("heap", 6),
        ("heap gc", 7),
        ("nodes", 6),
        ("shown/s", 7),
        ("KB/s", 6),
        ("CPU %", 6),
        ("stall", 5),
        ("rend", 4),
    ]
    growth = []
    for name, pts in points.items():
        half = [p for p in pts if p[0] >= pts[-1][0] / 2]
        growth.append(
            f"{name:>21}: {pts[0][1]:8.2f} -> {pts[-1][1]:8.2f}, slope {fmt(slope(pts), 3)}/min "
            f"(second half {fmt(slope(half), 3)}/min)"
        )
    legend = (
        "MB = MiB. browser: RSS of chromium's browser process; page: RSS of the page's renderer (the\n"
        "largest renderer), anon and shmem: its anonymous and shared-memory parts; others: every other\n"
        "chromium process (GPU, utilities, zygotes, spare renderers); PSS all: shared pages split; heap:\n"
        "the page's JS heap used (CDP Runtime.getHeapUsage), and after a forced GC; nodes: DOM nodes;\n"
        "shown/s: tile pictures the page drew per second in all (canvas draws); KB/s: what livecam\n"
        "sent per second (records' bytes, every viewer: the page only); CPU: chromium's whole tree;\n"
        "stall: tiles saying stalled; rend: renderer processes"
    )
    return "\n".join(
        [
            f"== part 4: Chromium memory, dashboard with 8 cameras over HTTP/1.1 ({key}), "
            f"{args.minutes:g} min, a sample every {SAMPLE_EVERY:g} s",
            table(headers, rows),
            legend,
            f"chromium process kinds seen: {', '.join(sorted(kinds_seen))}",
            "growth (first -> last, least-squares slope per minute):",
            *growth,
            f"after a forced GC and a critical memory-pressure signal ({PRESSURE_SETTLE:g} s later): page "
            f"renderer RSS {pressed.page / 1024:.1f} MB (anon {pressed.page_anon / 1024:.1f}, shmem "
            f"{pressed.page_shmem / 1024:.1f}), all RSS {pressed.rss / 1024:.1f} MB, all PSS "
            f"{pressed.pss / 1024:.1f} MB",
        ]
    )


# -- the run --------------------------------------------------------------------------------


def progress(text: str) -> None:
    """A progress line on stderr, so the report on stdout stays clean."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shortens every window, explicit options still win."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="1,2,3,4", help="comma list of parts to run (default 1,2,3,4)")
    parser.add_argument("--quick", action="store_true", help="short windows; part 4 for 2 minutes")
    parser.add_argument("--seconds", type=float, help="part 2's window (default 20, quick 5)")
    parser.add_argument("--seconds1", type=float, help="part 1's windows (default 20, quick 6)")
    parser.add_argument("--seconds3", type=float, help="part 3's window (default 30, quick 8)")
    parser.add_argument("--warmup", type=float, help="warm-up before each window (default 3, quick 2)")
    parser.add_argument("--quiet", type=float, default=5.0, help="part 2's nobody-watching window")
    parser.add_argument("--minutes", type=float, help="part 4's length (default 10, quick 2)")
    parser.add_argument("--previews", type=int, default=1000, help="part 3's preview viewers")
    parser.add_argument("--fulls", type=int, default=100, help="part 3's full viewers of camera 0")
    parser.add_argument("--readers", type=int, default=4, help="part 3's reader processes")
    args = parser.parse_args(argv)
    args.parts = {int(p) for p in args.part.split(",") if p.strip()}
    quick = args.quick
    args.seconds = args.seconds or (5.0 if quick else 20.0)
    args.seconds1 = args.seconds1 or (6.0 if quick else 20.0)
    args.seconds3 = args.seconds3 or (8.0 if quick else 30.0)
    args.warmup = args.warmup or (2.0 if quick else 3.0)
    args.minutes = args.minutes or (2.0 if quick else 10.0)
    return args


def main() -> None:
    """Start the camera and livecam, run the parts asked for, print each report, stop by PID."""
    args = parse_args()
    print(
        f"livecam profiles benchmark: {CAMERAS} cameras on one bench camera (640x480 q80 @ "
        f"{CAMERA_FPS:.0f} fps, HTTP MJPEG), {os.cpu_count()} cores, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} at start",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="livecam-profiles-") as logs:
        rig = Rig(Path(logs))
        try:
            progress("starting the bench camera and livecam (8 cameras)")
            rig.start()
            for number, part in ((1, part1), (2, part2), (3, part3), (4, part4)):
                if number in args.parts:
                    print("\n" + part(rig, args), flush=True)
        finally:
            rig.stop()
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
