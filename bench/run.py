"""livecam's benchmark: the same viewers against livecam, the seed pattern and the camera itself.

Run from the repository root (about 5 minutes; ``--quick`` takes under one)::

    python bench/run.py                      # 1, 10, 50, 100, 200 viewers, 10 s windows
    python bench/run.py --quick              # 1 and 10 viewers, 3 s windows
    python bench/run.py --viewers 1,100 --seconds 5
    python bench/run.py --systems livecam --viewers 1000@320x240 --fps 5 --quality 60 --reader-procs 2

It starts the bench camera (``bench/camera.py``: 640x480 q80 at 30 fps, every frame stamped
with its number and send time), then measures three systems in turn, each a subprocess on
a free loopback port:

- floor: the readers read the camera directly; the "server" is the camera process;
- livecam: gunicorn from ``gunicorn.conf.py``, camera 1 = the bench camera;
- seed: ``bench/baselines/seed_pattern.py`` (the busy-loop re-encode pattern livecam
  replaces) under gunicorn gthread with the same thread count.

For each viewer count, N readers (one asyncio process: this one) connect, wait for a first
part, warm up, then record a window. Per viewer: unique frames per second and duplicate
parts (a frame number seen before). Latency is receipt of a part's last byte minus the
camera's send time of that frame, over each frame's first arrival; the send time comes from
the JPEG comment stamp when the bytes are the camera's own, else from the picture's pixel
stamp and the camera's send log (the ``src`` column says which). CPU is utime+stime of the
server's process tree from /proc over the window, in % of one core; the camera's and this
reader process's own CPU are shown too, so a reader-bound run is visible, and so is how long
a callback waits in the readers' event loop (``lag``). ``--reader-procs N`` shares the
readers out over N processes, so that hundreds of viewers measure the server, not one reader
process's core. The server's CPU per part sent to one viewer (``us/f/v``) compares across
cameras and machines; the viewers connect all at once, so the first-part times are a burst's,
and the threads and RSS after they left show what the burst left behind. livecam is also measured off and idle
(on, nobody watching), for a viewer joining a running camera, with a slow reader beside
five normal ones, and with viewers coming and going beside five watching (churn). Every
server is stopped by PID at the end.

A viewer count may name a camera size of its own, ``400@320x240``: the counts of each size
run against a camera of that size (started afresh, every system with it); the first size
also gives livecam's off, idle, join, slow-reader and churn figures. ``--systems`` picks which
systems run (``floor,livecam,seed`` by default, ``bus`` added by ``--bus``). The server
thread count defaults to the most viewers + 64 (at least livecam's 256): each of the seed's
viewers holds a thread, and so does each of livecam's streams written by a request's thread.

Bus mode (``--bus W``): nats-server, ``livecam capture`` and gunicorn with W web workers,
one process tree (``bench/bus_system.py``), measured beside one process at the same counts.
The issue's table, bus mode's CPU (every process: capture, nats-server, each web worker)
beside one process and the latency the hop adds, at 100, 200 and 400 viewers, the 400 with
a smaller camera so that the readers stay far from their limit (about 2.5 minutes)::

    python bench/run.py --bus 2 --systems livecam,bus --viewers 100,200,400@320x240

Run it several times: on a small shared machine one window's CPU moves by a few tenths of a
percent from run to run, and its p95 by milliseconds when something else runs. Where the
CPU goes inside each process, thread by thread: ``bench/threads.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bus_floor import hop
from procs import CLOCK_TICK, Server, Usage, cpu_percent, free_port, free_ports, http, roles, ticks, usage
from readers import Part, Readers, Spread, Stamps, Viewer
from stamp import frame_number

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
CAMERA_FPS = 30.0  # the default; --fps sets another
JOINS = 5  # viewers that join a running camera, one by one, for the first-frame time
JOIN_WATCHERS = 10
SLOW_NORMALS = 5
CHURNERS = 10  # viewers that connect, take a first part and leave, again and again
FPS_GRACE = 0.5  # seconds a frame sent just before a window's end has to arrive
THREADS_BACK = 15.0  # seconds the server has after a burst to end the threads it started
# Threads a server may keep after its first viewers: livecam's sender thread, started by the
# first stream, stays (asleep) for the next ones.
THREADS_KEPT = 1
SYSTEMS = ("floor", "livecam", "seed", "bus")


@dataclass
class System:
    """A server under test: how to reach its stream and whose CPU to count."""

    name: str
    server: Server
    path: str
    port: int
    settle: Callable[[], None] = lambda: time.sleep(1.0)  # after readers leave, until idle


@dataclass
class Window:
    """CPU, memory and time at one edge of a measurement window."""

    at: float
    server: Usage
    camera: Usage
    reader_cpu: float  # the readers' user+system seconds: this process and any reader processes
    by_pid: dict[int, int]  # each server process's CPU ticks

    @classmethod
    def take(cls, server: list[int], camera: list[int], readers: list[int] | None = None) -> Window:
        """Sample now."""
        times = os.times()
        by_pid = ticks(server)
        others = usage(readers or []).cpu_ticks / CLOCK_TICK
        return cls(time.time(), usage(server), usage(camera), times.user + times.system + others, by_pid)


def split(start: Window, end: Window, names: dict[int, str]) -> dict[str, float]:
    """CPU % of one core per process role (``names``) over a window."""
    seconds, found = end.at - start.at, {}
    for pid, name in names.items():
        if pid in start.by_pid and pid in end.by_pid:
            spent = (end.by_pid[pid] - start.by_pid[pid]) / CLOCK_TICK / seconds * 100
            found[name] = found.get(name, 0.0) + spent
    return found


@dataclass
class Result:
    """One measured run: N viewers of one system."""

    viewers: int
    seconds: float
    fps: list[float]  # unique frames per second, per viewer
    duplicates: int
    unknown: int  # parts whose frame could not be identified
    latencies: list[float]  # ms, each frame's first arrival at each viewer
    first_ms: list[float]  # connect to first complete part, per viewer
    frames: int  # unique frames delivered to all viewers together
    cpu: float
    camera_cpu: float
    reader_cpu: float
    rss_mb: float
    threads: int
    failed: int  # viewers that got no frame in the window or broke
    source: str  # where latencies' send times came from
    size: str = ""  # the camera's picture size
    split: dict[str, float] = field(default_factory=dict)  # CPU % per process role
    lag: list[float] = field(default_factory=list)  # ms, the readers' event loop lateness
    before: Usage | None = None  # the server before the viewers connected
    after: Usage | None = None  # the server once they left and its threads had time to end
    parts_sent: int = 0  # every part the server sent to every viewer in the window, resends too


@dataclass
class Extras:
    """livecam's (and the seed's) off, idle, join and slow-reader figures."""

    off_state: str = ""  # livecam's camera state during the "off" window
    off_cpu: float = math.nan
    off_ticks: int = -1
    off_connected: int = -1
    idle_cpu: float = math.nan
    idle_connected: int = -1
    join_ms: list[float] = field(default_factory=list)
    slow_fps: list[float] = field(default_factory=list)
    slow_rss_growth_mb: float = math.nan
    churn_fps: list[float] = field(default_factory=list)  # the watchers' fps during the churn
    churn_connections: int = 0
    churn_cpu: float = math.nan  # the server's CPU % during the churn
    churn_rss_growth_mb: float = math.nan
    hop: dict[str, float] = field(default_factory=dict)  # bus mode: the hop alone (bus_floor.py)
    hop_size: str = ""  # the camera size it was measured at (the first one's)


# -- measuring ------------------------------------------------------------------------------


class Bench:
    """Holds the camera and the settings shared by every measurement."""

    def __init__(self, camera: Server, camera_port: int, args: argparse.Namespace, size: str) -> None:
        self.camera = camera
        self.camera_port = camera_port
        self.size = size
        self.seconds = args.seconds
        self.warmup = args.warmup
        self.reader_procs = args.reader_procs
        self.fps = args.fps
        self.stamps = Stamps()

    def camera_json(self, path: str) -> dict:
        """A JSON document from the bench camera."""
        return http("GET", f"http://127.0.0.1:{self.camera_port}{path}")[1]

    def readers(self, system: System) -> Readers:
        """A fresh set of readers of ``system``'s stream."""
        return Readers("127.0.0.1", system.port, system.path, self.stamps)

    async def run(self, system: System, count: int) -> Result:
        """Measure ``count`` viewers of ``system`` over one window.

        The viewers connect all at once (a burst); with ``--reader-procs`` above 1 they are
        shared out over that many reader processes, whose CPU and loop lag count as the readers'.
        """
        spread = self.reader_procs > 1
        readers = Spread("127.0.0.1", system.port, system.path, self.reader_procs) if spread else None
        readers = readers or self.readers(system)
        server, camera = system.server.pids(), self.camera.pids()
        before = usage(server, memory=True)
        try:
            await readers.open_many(count)
            await readers.wait_first_parts(10.0 + count * 0.05)
            await asyncio.sleep(self.warmup)
            server = system.server.pids()
            await readers.begin_window()
            start = Window.take(server, camera, readers.pids())
            await asyncio.sleep(self.seconds)
            end = Window.take(server, camera, readers.pids())
            lags = await readers.end_window()
        finally:
            await readers.close()
        system.settle()
        if system.name in ("livecam", "bus"):
            # The threads a burst started should end by themselves: give them a moment.
            _wait_for(lambda: usage(server).threads <= before.threads + THREADS_KEPT, THREADS_BACK)
        result = self.summarize(readers.viewers, start, end)
        result.split, result.lag = split(start, end, roles(server)), lags + getattr(readers, "lags", [])
        result.before, result.after = before, usage(server, memory=True)
        return result

    def summarize(self, viewers: list[Viewer], start: Window, end: Window) -> Result:
        """Turn the viewers' parts and the window's samples into one result."""
        sent = self.camera_json("/sent")
        tally = Tally(start.at, end.at, *send_window(sent, start.at, end.at - FPS_GRACE))
        for viewer in viewers:
            tally.add(viewer, sent)
        seconds = end.at - start.at
        parts_sent = sum(start.at <= part.received < end.at for viewer in viewers for part in viewer.parts)
        return Result(
            viewers=len(viewers),
            seconds=seconds,
            fps=tally.fps,
            duplicates=tally.duplicates,
            unknown=tally.unknown,
            latencies=tally.latencies,
            first_ms=tally.first_ms,
            frames=tally.frames,
            cpu=cpu_percent(start.server, end.server, seconds),
            camera_cpu=cpu_percent(start.camera, end.camera, seconds),
            reader_cpu=(end.reader_cpu - start.reader_cpu) / seconds * 100,
            rss_mb=end.server.rss_kb / 1024,
            threads=end.server.threads,
            failed=tally.failed,
            source="+".join(sorted(tally.sources)) or "-",
            size=self.size,
            parts_sent=parts_sent,
        )

    async def quiet_cpu(self, system: System) -> tuple[float, int, int]:
        """The server's CPU % and clock ticks over a window with no viewer; camera clients."""
        pids = system.server.pids()
        before, started = usage(pids), time.time()
        await asyncio.sleep(self.seconds)
        after = usage(pids)
        clients = self.camera_json("/stats")["clients"]
        return cpu_percent(before, after, time.time() - started), after.cpu_ticks - before.cpu_ticks, clients

    async def joins(self, system: System) -> list[float]:
        """First-frame times (ms) of viewers joining one by one while others watch."""
        watchers, joiners = self.readers(system), self.readers(system)
        try:
            await watchers.open_many(JOIN_WATCHERS)
            await watchers.wait_first_parts(10.0)
            await asyncio.sleep(0.5)
            for number in range(JOINS):
                await joiners.open()
                await joiners.wait_first_parts(3.0)
                # Join at different phases of the 30 fps frame clock.
                await asyncio.sleep(0.137 + number * 0.011)
        finally:
            await joiners.close()
            await watchers.close()
        system.settle()
        return [(v.first_part - v.connect_started) * 1000 for v in joiners.viewers if v.parts]

    async def slow_reader(self, system: System) -> tuple[list[float], float]:
        """The normal viewers' fps beside one slow reader, and the server's RSS growth (MB)."""
        readers = self.readers(system)
        try:
            await readers.open_many(SLOW_NORMALS)
            await readers.wait_first_parts(10.0)
            await asyncio.sleep(self.warmup)
            server = system.server.pids()
            before = Window.take(server, [])
            await readers.open(slow=True)
            await asyncio.sleep(self.warmup)
            start = Window.take(server, [])
            await asyncio.sleep(self.seconds)
            end = Window.take(server, [])
        finally:
            await readers.close()
        system.settle()
        normals = readers.viewers[:SLOW_NORMALS]
        fps = self.summarize(normals, start, end).fps
        return fps, (end.server.rss_kb - before.server.rss_kb) / 1024

    async def churn(self, system: System) -> tuple[list[float], int, float, float]:
        """Viewers that keep coming and going beside a few watching: the watchers' fps, the
        connections made, the server's CPU % meanwhile and its RSS growth (MB)."""
        watchers = self.readers(system)
        made = 0

        async def come_and_go(until: float) -> None:
            nonlocal made
            while time.monotonic() < until:
                viewer = self.readers(system)
                await viewer.open()
                await viewer.wait_first_parts(3.0)
                await viewer.close()
                made += 1

        try:
            await watchers.open_many(SLOW_NORMALS)
            await watchers.wait_first_parts(10.0)
            await asyncio.sleep(self.warmup)
            server = system.server.pids()
            before = Window.take(server, [])
            start = Window.take(server, [])
            await asyncio.gather(*(come_and_go(time.monotonic() + self.seconds) for _ in range(CHURNERS)))
            end = Window.take(server, [])
        finally:
            await watchers.close()
        system.settle()
        result = self.summarize(watchers.viewers, start, end)
        return result.fps, made, result.cpu, (end.server.rss_kb - before.server.rss_kb) / 1024


def send_window(sent: dict, start: float, end: float) -> tuple[int, int, float]:
    """The first and last frame the camera sent in [start, end] and its measured rate."""
    first, times = sent["first"], sent["times"]
    low, high = bisect_left(times, start), bisect_right(times, end) - 1
    rate = (high - low) / (times[high] - times[low]) if high > low else math.nan
    return first + low, first + high, rate


@dataclass
class Tally:
    """Counts over every viewer of one window.

    Duplicates, latencies and frames delivered count parts received in [start, end). fps
    counts frames sent in [first, last] that a viewer received at all (they had at least
    ``FPS_GRACE`` to arrive), times the camera's measured rate, so it is exactly the camera's
    rate for a viewer that misses nothing, free of the window edges' rounding.
    """

    start: float
    end: float
    first: int
    last: int
    rate: float
    fps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # ms
    first_ms: list[float] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)
    duplicates: int = 0
    unknown: int = 0
    failed: int = 0
    frames: int = 0

    def add(self, viewer: Viewer, sent: dict) -> None:
        """Count one viewer's parts."""
        seen: set[int] = set()
        for part in viewer.parts:
            number, sent_at = _resolve(part, sent)
            in_window = self.start <= part.received < self.end
            if number is None:
                self.unknown += in_window
            elif number in seen:
                self.duplicates += in_window
            else:
                seen.add(number)
                if in_window:
                    self.frames += 1
                    self.latencies.append((part.received - sent_at) * 1000)
                    self.sources.add("COM" if part.number >= 0 else "pixels")
        got = sum(self.first <= number <= self.last for number in seen)
        self.fps.append(got / (self.last - self.first + 1) * self.rate)
        self.failed += got == 0 or bool(viewer.error)
        if viewer.parts:
            self.first_ms.append((viewer.first_part - viewer.connect_started) * 1000)


def _resolve(part: Part, sent: dict) -> tuple[int | None, float]:
    """A part's frame number and send time, from its comment or its pixels and the send log."""
    if part.number >= 0:
        return part.number, part.sent
    if part.index < 0:
        return None, math.nan
    first, times = sent["first"], sent["times"]
    number = frame_number(part.index, part.received, first, times)
    return (None, math.nan) if number is None else (number, times[number - first])


# -- the systems ----------------------------------------------------------------------------


def _wait_for(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` every 0.1 s until it holds, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any LIVECAM_ setting, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LIVECAM_")}
    return env | extra


def start_camera(logs: Path, size: str, quality: int, fps: float = CAMERA_FPS) -> tuple[Server, int]:
    """Start the bench camera and wait until it serves."""
    port = free_port()
    argv = [PYTHON, str(BENCH / "camera.py"), "--port", str(port), "--fps", str(fps)]
    argv += ["--size", size, "--quality", str(quality)]
    camera = Server("camera", argv, f"http://127.0.0.1:{port}/stats", logs / "camera.log")
    camera.wait_ready()
    return camera, port


def floor(bench: Bench) -> System:
    """The camera read directly: the cost of serving MJPEG at all."""

    def settle() -> None:
        _wait_for(lambda: bench.camera_json("/stats")["clients"] == 0, 5.0)

    return System("floor", bench.camera, "/cam.mjpg", bench.camera_port, settle)


def start_livecam(bench: Bench, logs: Path, threads: int) -> System:
    """livecam under gunicorn from its own configuration, camera 1 off."""
    port = free_port()
    env = _clean_env(
        LIVECAM_CAMERAS=f"1=http://127.0.0.1:{bench.camera_port}/cam.mjpg",
        LIVECAM_THREADS=str(threads),
        # A state directory of its own: livecam must not switch on what an earlier run left on,
        # nor remember this run's switches for the next livecam on the machine.
        LIVECAM_STATE_DIR=str(logs / "livecam-state"),
    )
    argv = [PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app", "--bind", f"127.0.0.1:{port}"]
    ready = f"http://127.0.0.1:{port}/healthz"
    server = Server("livecam", argv, ready, logs / "livecam.log", cwd=REPO, env=env)
    server.wait_ready()
    status = f"http://127.0.0.1:{port}/cameras/1"

    def settle() -> None:
        _wait_for(lambda: http("GET", status)[1]["viewers"] == 0, 5.0)

    return System("livecam", server, "/cameras/1/stream.mjpg", port, settle)


def start_bus(bench: Bench, logs: Path, threads: int, workers: int) -> System:
    """Bus mode: nats-server, a capture process and gunicorn of ``workers`` workers, one tree."""
    port, nats_port = free_ports(2)
    env = _clean_env(
        LIVECAM_CAMERAS=f"1=http://127.0.0.1:{bench.camera_port}/cam.mjpg",
        LIVECAM_THREADS=str(threads),
        LIVECAM_STATE_DIR=str(logs / "bus-state"),
    )
    argv = [PYTHON, str(BENCH / "bus_system.py"), str(nats_port), str(port), str(workers)]
    server = Server("bus", argv, f"http://127.0.0.1:{port}/healthz", logs / "bus.log", cwd=REPO, env=env)
    server.wait_ready()
    status = f"http://127.0.0.1:{port}/cameras/1"

    def settle() -> None:
        _wait_for(lambda: http("GET", status)[1]["viewers"] == 0, 8.0)

    return System("bus", server, "/cameras/1/stream.mjpg", port, settle)


def start_seed(bench: Bench, logs: Path, threads: int) -> System:
    """The seed pattern under gunicorn gthread, one worker, the same thread count."""
    port = free_port()
    argv = [PYTHON, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1"]
    argv += ["--threads", str(threads), "--graceful-timeout", "2", "--chdir", str(BENCH / "baselines")]
    argv += ["--bind", f"127.0.0.1:{port}", "seed_pattern:app"]
    env = _clean_env(SEED_CAMERA_URL=f"http://127.0.0.1:{bench.camera_port}/cam.mjpg")
    # Run from the baselines: gunicorn would otherwise load livecam's ./gunicorn.conf.py.
    server = Server(
        "seed", argv, f"http://127.0.0.1:{port}/", logs / "seed.log", cwd=BENCH / "baselines", env=env
    )
    server.wait_ready()
    return System("seed", server, "/video_feed", port)


# -- running ----------------------------------------------------------------------------------


def progress(message: str) -> None:
    """One progress line on stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run_counts(bench: Bench, system: System, counts: list[int]) -> list[Result]:
    """One result per viewer count."""
    results = []
    for count in counts:
        progress(f"{system.name}: {count} viewers")
        results.append(await bench.run(system, count))
    return results


async def run_extras(bench: Bench, system: System, extras: Extras) -> None:
    """The join and slow-reader measurements."""
    progress(f"{system.name}: viewers joining a running camera")
    extras.join_ms = await bench.joins(system)
    progress(f"{system.name}: a slow reader beside {SLOW_NORMALS} normal ones")
    extras.slow_fps, extras.slow_rss_growth_mb = await bench.slow_reader(system)
    progress(f"{system.name}: {CHURNERS} viewers coming and going beside {SLOW_NORMALS} watching")
    churned = await bench.churn(system)
    extras.churn_fps, extras.churn_connections, extras.churn_cpu, extras.churn_rss_growth_mb = churned


async def switch_on(system: System) -> None:
    """Switch livecam's camera on through its API and wait until it is on."""
    status = f"http://127.0.0.1:{system.port}/cameras/1"
    http("POST", status + "/start")
    if not _wait_for(lambda: http("GET", status)[1]["state"] == "on", 15.0):
        raise RuntimeError(f"{system.name}'s camera did not come on: {http('GET', status)[1]}")


async def measure_livecam(
    bench: Bench, system: System, counts: list[int], extras: Extras | None
) -> list[Result]:
    """Off, idle, the viewer counts and the extras (when ``extras`` is given), against livecam."""
    if extras is None:
        await switch_on(system)
        await asyncio.sleep(bench.warmup)
        return await run_counts(bench, system, counts)
    status = f"http://127.0.0.1:{system.port}/cameras/1"
    extras.off_state = http("GET", status)[1]["state"]
    progress(f"livecam: camera {extras.off_state} (should be off)")
    extras.off_cpu, extras.off_ticks, extras.off_connected = await bench.quiet_cpu(system)
    await switch_on(system)
    await asyncio.sleep(bench.warmup)
    progress("livecam: camera on, nobody watching")
    extras.idle_cpu, _, extras.idle_connected = await bench.quiet_cpu(system)
    results = await run_counts(bench, system, counts)
    await run_extras(bench, system, extras)
    return results


async def measure_seed(
    bench: Bench, system: System, counts: list[int], extras: Extras | None
) -> list[Result]:
    """Idle, the viewer counts and the extras (when given), against the seed pattern (no off)."""
    await asyncio.sleep(bench.warmup)
    if extras is not None:
        progress("seed: nobody watching")
        extras.idle_cpu, _, extras.idle_connected = await bench.quiet_cpu(system)
    results = await run_counts(bench, system, counts)
    if extras is not None:
        await run_extras(bench, system, extras)
    return results


async def measure_bus(
    bench: Bench, system: System, counts: list[int], _extras: Extras | None
) -> list[Result]:
    """The viewer counts against bus mode, its camera switched on through a web worker."""
    status = f"http://127.0.0.1:{system.port}/cameras/1"
    if not _wait_for(lambda: http("GET", status)[1]["state"] == "off", 20.0):
        raise RuntimeError(f"bus mode's capture process did not come: {http('GET', status)[1]}")
    await switch_on(system)
    await asyncio.sleep(bench.warmup)
    return await run_counts(bench, system, counts)


async def measure_camera(
    args: argparse.Namespace,
    logs: Path,
    size: str,
    counts: list[int],
    measured: dict[str, tuple[list[Result], Extras]],
) -> None:
    """One camera of ``size``, then each system in turn at ``counts``; every server stopped by PID.

    The first camera also gets the extras (off, idle, joins, slow reader): they are about
    livecam, not about the picture size.
    """
    logs.mkdir()
    camera, camera_port = start_camera(logs, size, args.quality, args.fps)
    try:
        bench = Bench(camera, camera_port, args, size)
        if "floor" in args.systems:
            results, _ = measured.setdefault("floor", ([], Extras()))
            results += await run_counts(bench, floor(bench), counts)
        for name, start, body in (
            ("livecam", start_livecam, measure_livecam),
            ("seed", start_seed, measure_seed),
            ("bus", lambda *a: start_bus(*a, args.bus), measure_bus),
        ):
            if name not in args.systems:
                continue
            first = name not in measured
            results, extras = measured.setdefault(name, ([], Extras()))
            label = f" ({args.bus} web workers)" if name == "bus" else ""
            progress(f"{name}: starting, camera {size}{label}")
            system = start(bench, logs, args.threads)
            try:
                results += await body(bench, system, counts, extras if first else None)
            finally:
                system.server.stop()
            if name == "bus" and first:
                progress(f"the frame bus's hop alone: nats-server and bare clients, {args.bus} subscribers")
                extras.hop = await asyncio.to_thread(
                    hop, args.bus, size, args.quality, args.fps, args.seconds
                )
        late = bench.camera_json("/stats")
        progress(
            f"camera {size}: {late['frames']} frames sent, {late['late']} late ticks, "
            f"{late['skipped']} skipped"
        )
    finally:
        camera.stop()


async def measure(args: argparse.Namespace, logs: Path) -> dict[str, tuple[list[Result], Extras]]:
    """Each camera size in turn, each with the viewer counts asked of it."""
    measured: dict[str, tuple[list[Result], Extras]] = {}
    for number, (size, counts) in enumerate(args.cameras.items()):
        await measure_camera(args, logs / f"camera{number}-{size}", size, counts, measured)
    return measured


# -- the report -------------------------------------------------------------------------------

COLUMNS = (
    ("N", 4),
    ("camera", 7),
    ("fps min", 7),
    ("fps med", 7),
    ("dups", 6),
    ("unk", 4),
    ("p50 ms", 6),
    ("p95 ms", 6),
    ("1st ms", 6),
    ("1st max", 7),
    ("CPU %", 6),
    ("us/f/v", 6),
    ("RSS MB", 6),
    ("RSS aft", 7),
    ("PSS aft", 7),
    ("thr", 9),
    ("cam %", 5),
    ("rdr %", 5),
    ("lag ms", 6),
    ("fail", 4),
)
LEGEND = """\
fps: unique frames/s per viewer (camera: --fps)   dups: parts repeating a frame the viewer had
unk: parts with no readable stamp   p50/p95: send-to-receipt latency of each frame's first
arrival   1st, 1st max: median and slowest connect-to-first-part time, every viewer connecting
at once   CPU %: server process tree, % of one core   us/f/v: server CPU microseconds per
part sent to one viewer (CPU time / parts received by all viewers in the window)
RSS MB: server tree at the window's end; aft: after the viewers left (and up to 15 s for the
threads they needed to end, all but livecam's sender)   PSS aft: the same, each page counted
once (a forked worker shares most of its pages with gunicorn's master: RSS summed over the
tree counts them twice)
thr: server threads before the viewers > at the window's end > after
cam %: the camera's CPU   rdr %: the readers' CPU (every reader process)   lag: p99 of how
long a callback waits in the readers' event loops (the readers' own delay: small means they
are not the limit)   fail: viewers with no frame"""


def fmt(value: float, digits: int = 1) -> str:
    """A number for a table cell; '-' when unknown."""
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def min_fps(result: Result) -> float:
    """The worst viewer's fps."""
    return min(result.fps, default=math.nan)


def us_per_part(result: Result) -> float:
    """Server CPU microseconds per part sent to one viewer: comparable across cameras and machines."""
    return result.cpu / 100 * result.seconds * 1e6 / result.parts_sent if result.parts_sent else math.nan


def threads(result: Result) -> str:
    """Server threads before the viewers, at the window's end and after they left."""
    if result.before is None or result.after is None:
        return str(result.threads)
    return f"{result.before.threads}>{result.threads}>{result.after.threads}"


def row(result: Result) -> list[str]:
    """One table row."""
    return [
        str(result.viewers),
        result.size,
        fmt(min_fps(result)),
        fmt(statistics.median(result.fps) if result.fps else math.nan),
        str(result.duplicates),
        str(result.unknown),
        fmt(percentile(result.latencies, 0.5)),
        fmt(percentile(result.latencies, 0.95)),
        fmt(statistics.median(result.first_ms) if result.first_ms else math.nan, 0),
        fmt(max(result.first_ms, default=math.nan), 0),
        fmt(result.cpu),
        fmt(us_per_part(result)),
        fmt(result.rss_mb, 0),
        fmt(result.after.rss_kb / 1024 if result.after else math.nan, 0),
        fmt(result.after.pss_kb / 1024 if result.after else math.nan, 0),
        threads(result),
        fmt(result.camera_cpu),
        fmt(result.reader_cpu),
        fmt(percentile(result.lag, 0.99)),
        str(result.failed),
    ]


def table(headers: list[tuple[str, int]], rows: list[list[str]]) -> str:
    """Right-aligned columns."""
    lines = [" ".join(f"{name:>{width}}" for name, width in headers)]
    lines += [
        " ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, headers, strict=True))
        for cells in rows
    ]
    return "\n".join(lines)


def system_report(name: str, results: list[Result], extras: Extras) -> str:
    """A system's table and its extra figures."""
    sources = sorted({result.source for result in results})
    meaning = {"COM": "JPEG comment stamp", "pixels": "pixel stamp + camera send log"}
    source = ", ".join(" + ".join(meaning.get(s, s) for s in src.split("+")) for src in sources)
    lines = [
        f"== {name}   (latency send time from: {source})",
        table(list(COLUMNS), [row(r) for r in results]),
    ]
    if not math.isnan(extras.off_cpu):
        lines.append(
            f"off (state {extras.off_state}): CPU {extras.off_cpu:.2f} % ({extras.off_ticks} ticks), "
            f"connections to the camera {extras.off_connected}"
        )
    if not math.isnan(extras.idle_cpu):
        idle = f"CPU {extras.idle_cpu:.2f} %, connections to the camera {extras.idle_connected}"
        lines.append(f"on, nobody watching: {idle}")
    if extras.join_ms:
        joins = " ".join(f"{ms:.1f}" for ms in extras.join_ms)
        lines.append(f"joining a running camera ({JOIN_WATCHERS} watching): first part after {joins} ms")
    if extras.slow_fps:
        fps = " ".join(f"{value:.1f}" for value in extras.slow_fps)
        lines.append(
            f"slow reader: normal viewers' fps {fps}; server RSS grew {extras.slow_rss_growth_mb:+.1f} MB"
        )
    if extras.churn_fps:
        fps = " ".join(f"{value:.1f}" for value in extras.churn_fps)
        lines.append(
            f"churn: {extras.churn_connections} connections came and went; watchers' fps {fps}; "
            f"server CPU {extras.churn_cpu:.1f} %, RSS grew {extras.churn_rss_growth_mb:+.1f} MB"
        )
    return "\n".join(lines)


def ratio(top: float, bottom: float) -> str:
    """``top / bottom`` for a table cell."""
    return fmt(top / bottom, 2) if bottom and not math.isnan(bottom) else "-"


def by_run(results: list[Result]) -> dict[tuple[int, str], Result]:
    """Results by viewer count and camera size."""
    return {(r.viewers, r.size): r for r in results}


def ratio_report(measured: dict[str, tuple[list[Result], Extras]]) -> str:
    """livecam's CPU, CPU per frame and latency divided by the seed's and the floor's."""
    names = [name for name in ("seed", "floor") if name in measured]
    others = {name: by_run(measured[name][0]) for name in names}
    headers = [("N", 4), ("camera", 7)] + [
        (f"{what} /{other}", 14) for what in ("CPU", "us/f/v", "p95") for other in names
    ]
    rows = []
    for result in measured["livecam"][0]:
        cells = [str(result.viewers), result.size]
        for measure in (lambda r: r.cpu, us_per_part, lambda r: percentile(r.latencies, 0.95)):
            for other in names:
                match = others[other].get((result.viewers, result.size))
                cells.append(ratio(measure(result), measure(match)) if match else "-")
        rows.append(cells)
    title = " and ".join(f"livecam / {name}" for name in names)
    return f"== {title} (below 1: livecam is cheaper or faster)\n" + table(headers, rows)


def bus_report(measured: dict[str, tuple[list[Result], Extras]], workers: int) -> str:
    """Bus mode beside one process: CPU of every process (capture, NATS, workers), the hop's latency."""
    single = by_run(measured["livecam"][0])
    rows = []
    for result in measured["bus"][0]:
        one = single.get((result.viewers, result.size))
        if one is None:
            continue
        p95, one_p95 = percentile(result.latencies, 0.95), percentile(one.latencies, 0.95)
        part = result.split.get
        webs = sorted(name for name in result.split if name.startswith("web"))
        rows.append(
            [
                str(result.viewers),
                result.size,
                fmt(min_fps(result)),
                fmt(result.cpu),
                fmt(one.cpu),
                ratio(result.cpu, one.cpu),
                fmt(p95),
                fmt(one_p95),
                fmt(p95 - one_p95),
                fmt(part("capture", math.nan)),
                fmt(part("nats", math.nan)),
                "+".join(fmt(result.split[name]) for name in webs) or "-",
                fmt(part("master", 0.0) + part("other", 0.0)),
                fmt(one.split.get("web1", math.nan)),
                fmt(one.split.get("master", 0.0) + one.split.get("other", 0.0)),
            ]
        )
    headers = [("N", 4), ("camera", 7), ("fps min", 7), ("bus CPU%", 8), ("one CPU%", 8)]
    headers += [("bus/one", 7), ("bus p95", 7), ("one p95", 7), ("p95 +ms", 7), ("capture", 7)]
    headers += [("nats", 5), ("web each", 11), ("rest", 5), ("one web", 7), ("rest", 5)]
    lines = (
        f"== bus mode ({workers} web workers) / one process "
        "(targets: CPU <= 1.2x at 200 viewers, p95 <= +1 ms)\n"
        "CPU in % of one core; bus: capture + nats + web each + rest (gunicorn's master, the\n"
        "supervisor); one process: its web worker + rest (the master)\n"
    )
    return lines + table(headers, rows) + "\n" + "\n".join(bus_verdicts(measured, workers))


def bus_verdicts(measured: dict[str, tuple[list[Result], Extras]], workers: int) -> list[str]:
    """Bus mode's targets at 200 viewers, met or by how much missed, beside what the hop alone
    costs (nats-server and bare clients that only pass frames on: what no design of livecam's
    processes can go below)."""
    lines = []
    extras = measured["bus"][1]
    alone = extras.hop
    if alone:
        each = ", ".join(f"{name} {fmt(cpu)}" for name, cpu in alone.items())
        lines.append(
            f"the hop alone (bench/bus_floor.py, bare clients, camera {extras.hop_size}): {each}:"
            f" {fmt(sum(alone.values()))} %"
        )
    single = by_run(measured["livecam"][0])
    for result in measured["bus"][0]:
        one = single.get((result.viewers, result.size))
        if result.viewers != 200 or one is None:
            continue
        budget = 0.2 * one.cpu  # what 1.2x one process leaves for everything bus mode adds
        added = result.cpu - one.cpu
        met = added <= budget
        hop_here = alone and result.size == extras.hop_size
        why = f"; the hop alone, with bare clients, takes {fmt(sum(alone.values()))} %" if hop_here else ""
        times = ratio(result.cpu, one.cpu)
        lines.append(
            f"{'met' if met else 'NOT MET':>7}  CPU <= 1.2x one process ({result.size}): {times}x,"
            f" bus mode adds {fmt(added)} % where 1.2x allows {fmt(budget)} %{why}"
        )
        extra = percentile(result.latencies, 0.95) - percentile(one.latencies, 0.95)
        lines.append(
            f"{'met' if extra <= 1 else 'NOT MET':>7}  p95 <= +1 ms ({result.size}): {extra:+.1f} ms"
        )
    return lines


def targets(
    measured: dict[str, tuple[list[Result], Extras]], size: str, fps: float = CAMERA_FPS
) -> list[tuple[str, bool | None, str]]:
    """Each target (for the camera of ``size``): its text, met (None when not measured), the figure."""
    results, extras = measured["livecam"]
    live = {r.viewers: r for r in results if r.size == size}
    floors = {r.viewers: r for r in measured.get("floor", ([], None))[0] if r.size == size}
    checks: list[tuple[str, bool | None, str]] = []

    def check(text: str, count: int, test: Callable[[Result], tuple[bool, str]]) -> None:
        checks.append((text, *test(live[count])) if count in live else (text, None, "not measured"))

    check(
        f"100 viewers: every viewer >= {fps - 0.5:g} fps",
        100,
        lambda r: (min(r.fps) >= fps - 0.5, f"min {min(r.fps):.2f}"),
    )
    check("100 viewers: 0 duplicates", 100, lambda r: (r.duplicates == 0, f"{r.duplicates}"))
    p95 = lambda r: percentile(r.latencies, 0.95)  # noqa: E731 - a one-line measure for the checks
    check("100 viewers: latency p95 <= 25 ms", 100, lambda r: (p95(r) <= 25, f"{p95(r):.1f} ms"))
    if 100 in floors:
        floor_cpu = floors[100].cpu
        check(
            "100 viewers: CPU <= the floor's",
            100,
            lambda r: (r.cpu <= floor_cpu, f"{r.cpu:.1f} % vs {floor_cpu:.1f} %"),
        )
    check("200 viewers: every viewer gets frames", 200, lambda r: (r.failed == 0, f"{r.failed} without"))
    check(
        f"200 viewers: median >= {fps - 1:g} fps",
        200,
        lambda r: (statistics.median(r.fps) >= fps - 1, f"{statistics.median(r.fps):.2f}"),
    )
    check(
        "1,000 viewers: at most 27 us per part per viewer",
        1000,
        lambda r: (us_per_part(r) <= 27, f"{us_per_part(r):.1f} us"),
    )
    check(
        "1,000 viewers at once: first part median <= 0.25 s",
        1000,
        lambda r: (statistics.median(r.first_ms) <= 250, f"{statistics.median(r.first_ms):.0f} ms"),
    )
    check(
        "1,000 viewers: after, PSS <= 90 MB, threads back (+1)",
        1000,
        lambda r: (
            r.after is not None
            and r.after.pss_kb <= 90 * 1024
            and r.after.threads <= r.before.threads + THREADS_KEPT,
            threads(r)
            + (f", PSS {r.after.pss_kb / 1024:.0f} MB, RSS {r.after.rss_kb / 1024:.0f}" if r.after else ""),
        ),
    )
    check("1 viewer: latency p95 <= 4 ms", 1, lambda r: (p95(r) <= 4, f"{p95(r):.1f} ms"))
    check("1 viewer: CPU <= 5 %", 1, lambda r: (r.cpu <= 5, f"{r.cpu:.1f} %"))
    if math.isnan(extras.idle_cpu):
        return checks  # livecam's extras were measured with another camera
    checks.append(("on, nobody watching: CPU <= 0.3 %", extras.idle_cpu <= 0.3, f"{extras.idle_cpu:.2f} %"))
    checks.append(
        (
            "off: 0 % CPU (<= 1 tick) and no connection to the camera",
            extras.off_ticks <= 1 and extras.off_connected == 0,
            f"{extras.off_ticks} ticks, {extras.off_connected} connections",
        )
    )
    worst = max(extras.join_ms, default=math.nan)
    joined = len(extras.join_ms) == JOINS
    checks.append(("a joining viewer's first frame <= 10 ms", joined and worst <= 10, f"max {worst:.1f} ms"))
    slow_min = min(extras.slow_fps, default=math.nan)
    checks.append(
        (f"slow reader: the others keep >= {fps - 0.5:g} fps", slow_min >= fps - 0.5, f"min {slow_min:.2f}")
    )
    growth = extras.slow_rss_growth_mb
    checks.append(("slow reader: RSS grows <= 4 MB", growth <= 4, f"{growth:+.1f} MB"))
    churn_min = min(extras.churn_fps, default=math.nan)
    checks.append(
        (f"churn: the watchers keep >= {fps - 0.5:g} fps", churn_min >= fps - 0.5, f"min {churn_min:.2f}")
    )
    growth = extras.churn_rss_growth_mb
    checks.append(("churn: RSS grows <= 4 MB", growth <= 4, f"{growth:+.1f} MB"))
    return checks


def report(measured: dict[str, tuple[list[Result], Extras]], args: argparse.Namespace) -> str:
    """The whole plain-text report."""
    sizes = ", ".join(args.cameras)
    head = (
        f"livecam benchmark: camera {sizes} q{args.quality} @ {args.fps:g} fps, "
        f"{args.seconds:g} s windows after {args.warmup:g} s warm-up, {args.threads} server threads, "
        f"{args.reader_procs} reader process{'es' * (args.reader_procs > 1)}, {os.cpu_count()} cores"
    )
    parts = [head, LEGEND]
    parts += [
        system_report(name, *measured[name])
        for name in ("livecam", "bus", "seed", "floor")
        if name in measured
    ]
    if "livecam" in measured and ("seed" in measured or "floor" in measured):
        parts.append(ratio_report(measured))
    if "bus" in measured and "livecam" in measured:
        parts.append(bus_report(measured, args.bus))
    if "livecam" in measured:
        size = next(iter(args.cameras))
        lines = [f"== targets (livecam, camera {size})"]
        for text, met, figure in targets(measured, size, args.fps):
            mark = "n/a" if met is None else "met" if met else "NOT MET"
            lines.append(f"{mark:>7}  {text:<58} {figure}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` changes the defaults, explicit options still win."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--viewers",
        help="comma list of viewer counts, each optionally @WxH for its own camera size "
        "(default 1,10,50,100,200)",
    )
    parser.add_argument("--seconds", type=float, help="measurement window (default 10)")
    parser.add_argument("--warmup", type=float, help="warm-up before each window (default 2)")
    parser.add_argument(
        "--threads",
        type=int,
        help="server threads (default 256, or the most viewers + 64: the seed pattern holds one per viewer)",
    )
    parser.add_argument("--size", default="640x480", help="camera picture size")
    parser.add_argument("--quality", type=int, default=80, help="camera JPEG quality")
    parser.add_argument("--fps", type=float, default=CAMERA_FPS, help="camera frame rate")
    parser.add_argument(
        "--reader-procs",
        type=int,
        default=1,
        metavar="N",
        help="share each window's viewers out over N reader processes (default 1: this one)",
    )
    parser.add_argument("--quick", action="store_true", help="1 and 10 viewers, 3 s windows: under a minute")
    parser.add_argument("--bus", type=int, default=0, metavar="W", help="also bus mode with W web workers")
    parser.add_argument(
        "--systems", help=f"comma list out of {','.join(SYSTEMS)} (default all; bus only with --bus)"
    )
    args = parser.parse_args(argv)
    viewers = args.viewers or ("1,10" if args.quick else "1,10,50,100,200")
    # Viewer counts by camera size, the sizes in the order given: {"640x480": [1, 100], ...}
    args.cameras = {}
    for item in viewers.split(","):
        count, _, size = item.partition("@")
        args.cameras.setdefault(size or args.size, []).append(int(count))
    args.systems = args.systems.split(",") if args.systems else [*SYSTEMS[:3], *["bus"] * bool(args.bus)]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    most = max(count for counts in args.cameras.values() for count in counts)
    args.threads = args.threads or max(256, most + 64)
    if "bus" in args.systems and not args.bus:
        parser.error("bus mode needs --bus W (its number of web workers)")
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup or (1.0 if args.quick else 2.0)
    if args.fps <= 0 or args.reader_procs < 1:
        parser.error("--fps must be above 0 and --reader-procs at least 1")
    return args


def main() -> None:
    """Measure and print the report."""
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="livecam-bench-") as logs:
        measured = asyncio.run(measure(args, Path(logs)))
    print(report(measured, args))


if __name__ == "__main__":
    main()
