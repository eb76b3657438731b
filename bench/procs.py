"""Servers as subprocesses on loopback: start, wait until ready, measure from /proc, stop by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
STOP_TIMEOUT = 8.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` different loopback ports nobody listens on right now."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def http(method: str, url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """One request; the status and the decoded JSON body (None if not JSON)."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields from the third on (after ``comm``, which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """``root`` and all its descendants, found by each process's parent id."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


@dataclass(frozen=True)
class Usage:
    """A process tree's CPU time so far and its size right now."""

    cpu_ticks: int  # utime + stime, clock ticks
    rss_kb: int  # summed over the processes: pages a forked worker shares with its master count twice
    threads: int
    pss_kb: int = 0  # each page counted once, shared ones split between their processes


def pss_kb(pid: int) -> int:
    """A process's proportional set size (its share of every page it maps), 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def usage(pids: list[int], memory: bool = False) -> Usage:
    """Sum utime+stime (stat fields 14, 15), RSS and threads over ``pids`` still alive; with
    ``memory`` their PSS too (slower: the kernel walks every mapping)."""
    ticks = rss = threads = pss = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is None:
            continue
        # Field n of stat is fields[n - 3] here: utime 14, stime 15, num_threads 20, rss 24.
        ticks += int(fields[11]) + int(fields[12])
        threads += int(fields[17])
        rss += int(fields[21]) * PAGE_KB
        pss += pss_kb(pid) if memory else 0
    return Usage(ticks, rss, threads, pss)


def ticks(pids: list[int]) -> dict[int, int]:
    """Each live process's utime+stime so far, in clock ticks."""
    found = {}
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            found[pid] = int(fields[11]) + int(fields[12])
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def roles(pids: list[int]) -> dict[int, str]:
    """What each process of a server's tree is, from its command line: ``nats``, ``capture``,
    ``master`` (gunicorn's arbiter), ``web1``, ``web2``... (its workers, by pid) or ``other``."""
    found: dict[int, str] = {}
    lines = {pid: _cmdline(pid) for pid in pids}
    gunicorn = {pid for pid, argv in lines.items() if "gunicorn" in argv}
    workers = []
    for pid, argv in lines.items():
        name = Path(argv[0]).name if argv and argv[0] else ""
        parent = (_stat(pid) or ["", "0"])[1]
        if name == "nats-server":
            found[pid] = "nats"
        elif "livecam.cli" in argv and "capture" in argv:
            found[pid] = "capture"
        elif pid in gunicorn and int(parent) in gunicorn:
            workers.append(pid)
        elif pid in gunicorn:
            found[pid] = "master"
        else:
            found[pid] = "other"
    for number, pid in enumerate(sorted(workers), 1):
        found[pid] = f"web{number}"
    return found


def cpu_percent(before: Usage, after: Usage, seconds: float) -> float:
    """CPU used between two samples, in percent of one core."""
    return (after.cpu_ticks - before.cpu_ticks) / CLOCK_TICK / seconds * 100


class Server:
    """A server subprocess (and its children), stopped by PID: SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], ready_url: str, log: Path, **popen: Any) -> None:
        self.name = name
        self.ready_url = ready_url
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **popen)
        self._known: dict[int, str] = {}  # pid -> stat start time, so a reused PID is never hit

    @property
    def pid(self) -> int:
        """The top process's id."""
        return self.process.pid

    def pids(self) -> list[int]:
        """The live process tree, remembered for the final cleanup."""
        pids = tree(self.pid)
        for pid in pids:
            if (fields := _stat(pid)) is not None:
                self._known.setdefault(pid, fields[19])
        return pids

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the ready URL answers 200.

        :raise RuntimeError: the server exited or did not answer in time (with its log's tail).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if http("GET", self.ready_url, timeout=1.0)[0] == 200:
                    self.pids()
                    return
            except OSError:
                pass
            time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} did not become ready at {self.ready_url}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM the top process, SIGKILL it after a timeout, then kill any stragglers."""
        self.pids()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        for pid, started in self._known.items():
            fields = _stat(pid)
            if fields is not None and fields[19] == started and fields[0] != "Z":
                os.kill(pid, signal.SIGKILL)
