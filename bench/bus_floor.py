"""What the frame bus's hop costs at the least: nats-server and processes that do nothing else.

Bus mode adds a hop to every frame: the capture process publishes it to nats-server, which
sends a copy to each web worker. This measures that hop alone, without livecam, at the bench
camera's frame size and rate: one publisher and W subscribers, each its own process. With
``--client raw`` they speak NATS's text protocol over a blocking socket and do nothing with a
frame but read it (the cheapest any Python process can be: one wake-up and one read a
frame); with ``--client livecam`` they are livecam's own (``FrameBus``, each frame checked by
``wire.decode_frame`` and handed to a broadcaster with nobody watching), the cost bus mode
pays before any viewer. Prints each process's CPU and its microseconds per frame::

    python bench/bus_floor.py --subscribers 2 --size 640x480 --fps 30
    python bench/bus_floor.py --subscribers 2 --client livecam

The hop's cost is per frame and per process, whatever the number of viewers: compare it
with what one process costs (``bench/run.py``) to see how close bus mode can come to it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from procs import CLOCK_TICK, free_port, ticks
from stamp import pictures

REPO = Path(__file__).resolve().parent.parent
NATS = Path(sys.executable).parent / "nats-server"
SUBJECT = "livecam.camera.1.frame.full"
SETTLE = 2.0  # seconds before the window: connections made, subscriptions in place


def _connect(port: int) -> socket.socket:
    """A NATS connection over a blocking socket, its server's INFO read and CONNECT sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.recv(4096)  # INFO {...}
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
    return sock


def raw_publisher(port: int, frames: list[bytes], fps: float, seconds: float) -> None:
    """Publish one frame a tick, as bare as a publisher can be."""
    sock = _connect(port)
    start, number = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        frame = frames[number % len(frames)]
        sock.sendall(b"PUB %s %d\r\n%s\r\n" % (SUBJECT.encode(), len(frame), frame))
        number += 1
        time.sleep(max(0.0, start + number / fps - time.monotonic()))


def raw_subscriber(port: int, seconds: float) -> None:
    """Read every message and drop it (answering nats-server's pings)."""
    sock = _connect(port)
    sock.sendall(b"SUB %s 1\r\nPING\r\n" % SUBJECT.encode())
    buffer = bytearray(1 << 22)
    deadline = time.monotonic() + seconds
    sock.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            count = sock.recv_into(buffer)
        except TimeoutError:
            continue
        if not count:
            return
        if b"PING\r\n" in buffer[:count]:
            sock.sendall(b"PONG\r\n")


def livecam_publisher(port: int, frames: list[bytes], fps: float, seconds: float) -> None:
    """Publish as a capture process does: from the thread that has the frame."""
    sys.path.insert(0, str(REPO))
    from livecam import wire
    from livecam.bus import FrameBus

    bus = FrameBus(f"nats://127.0.0.1:{port}").start()
    bus.wait_connected(10)
    start, number = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        headers = wire.frame_headers(number, time.time(), False)
        bus.publish_frame(SUBJECT, frames[number % len(frames)], headers)
        number += 1
        time.sleep(max(0.0, start + number / fps - time.monotonic()))
    bus.close()


def livecam_subscriber(port: int, seconds: float) -> None:
    """Receive as a web worker does: each frame checked, then published to a broadcaster."""
    sys.path.insert(0, str(REPO))
    from livecam import wire
    from livecam.broadcast import Broadcaster
    from livecam.bus import FrameBus

    bus = FrameBus(f"nats://127.0.0.1:{port}").start()
    broadcaster = Broadcaster()

    def take(frame: wire.FrameMessage) -> None:
        broadcaster.publish(frame.jpeg, frame.timestamp, placeholder=frame.placeholder)

    decode = partial(wire.decode_frame, max_bytes=16 << 20)
    bus.subscribe_frames(SUBJECT, wire.checked(decode, take, bus.rejections, SUBJECT))
    time.sleep(seconds)
    bus.close()


CLIENTS = {"raw": (raw_publisher, raw_subscriber), "livecam": (livecam_publisher, livecam_subscriber)}


def hop(
    subscribers: int, size: str, quality: int, fps: float, seconds: float, client: str = "raw"
) -> dict[str, float]:
    """Run the hop for a window of ``seconds``; CPU of each process in percent of one core."""
    width, height = (int(value) for value in size.split("x"))
    frames = pictures(width, height, quality)[:30]
    port = free_port()
    server = subprocess.Popen([str(NATS), "-a", "127.0.0.1", "-p", str(port)], stderr=subprocess.DEVNULL)
    publish, subscribe = CLIENTS[client]
    total = SETTLE + seconds + 1.0
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nats-server did not start") from None
                time.sleep(0.05)
        context = multiprocessing.get_context("spawn")
        readers = [
            context.Process(target=subscribe, args=(port, total + 1.0), name=f"subscriber{n}")
            for n in range(1, subscribers + 1)
        ]
        for process in readers:
            process.start()
        time.sleep(0.5)  # subscribed before the first frame
        publisher = context.Process(target=publish, args=(port, frames, fps, total), name="publisher")
        publisher.start()
        named = {"nats-server": server.pid, "publisher": publisher.pid}
        named |= {process.name: process.pid for process in readers}
        time.sleep(SETTLE)
        before = ticks(list(named.values()))
        time.sleep(seconds)
        after = ticks(list(named.values()))
        for process in [publisher, *readers]:
            process.join(total + 5)
            if process.is_alive():
                process.kill()
        return {
            name: (after.get(pid, 0) - before.get(pid, 0)) / CLOCK_TICK / seconds * 100
            for name, pid in named.items()
        }
    finally:
        server.terminate()
        server.wait(5)


def main() -> None:
    """Measure and print the hop's cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=2, help="web workers (default 2)")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--quality", type=int, default=80)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--client", choices=sorted(CLIENTS), default="raw")
    args = parser.parse_args()
    cpu = hop(args.subscribers, args.size, args.quality, args.fps, args.seconds, args.client)
    size = len(pictures(*(int(v) for v in args.size.split("x")), args.quality)[0])
    print(
        f"frame bus hop, {args.client} clients: {args.size} q{args.quality} (~{size // 1000} KB)"
        f" at {args.fps:g} fps, 1 publisher, {args.subscribers} subscribers, {os.cpu_count()} cores"
    )
    for name, percent in cpu.items():
        print(f"  {name:12} {percent:5.2f} % of a core  {percent / 100 / args.fps * 1e6:6.0f} us per frame")
    print(f"  {'all':12} {sum(cpu.values()):5.2f} %")
    # CPU time comes in clock ticks: one tick over the window is the finest step a figure takes.
    step = 100 / CLOCK_TICK / args.seconds
    print(f"  (each figure in steps of {step:.2f} %: a window of {args.seconds:g} s; longer is finer)")


if __name__ == "__main__":
    main()
