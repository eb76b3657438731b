"""Where a running server's CPU goes, thread by thread: a window of /proc, nothing injected.

    python bench/threads.py PID [--seconds 20] [--fps 30]

PID is the top of a server's process tree (the bench's bus supervisor, gunicorn's master, a
``livecam capture``). For every process (named as the benchmark names them: capture, nats,
master, web1...) and every thread that used CPU in the window, it prints user and system
CPU in % of one core and the context switches per camera frame (at ``--fps``): voluntary
ones are wakes (a thread that sleeps and is woken for each frame costs one), involuntary
ones are preemptions (threads of one process taking the GIL from each other show here).
Python does not give its threads' names to the system; when py-spy is installed (it is no
requirement of livecam) they are read with ``py-spy dump``, else threads show by id.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from procs import CLOCK_TICK, roles, tree

Sample = dict[int, tuple[int, int, int, int]]  # tid -> utime, stime, voluntary, involuntary


def sample(pid: int) -> Sample:
    """Each thread's CPU ticks and context switches so far."""
    found: Sample = {}
    try:
        tids = [int(path.name) for path in Path(f"/proc/{pid}/task").iterdir() if path.name.isdigit()]
    except OSError:
        return found
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        counts = dict(line.split(":", 1) for line in status.splitlines() if "ctxt_switches" in line)
        found[tid] = (
            int(fields[11]),
            int(fields[12]),
            int(counts["voluntary_ctxt_switches"]),
            int(counts["nonvoluntary_ctxt_switches"]),
        )
    return found


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of a process's threads, by system thread id (empty without py-spy)."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        return {}
    try:
        out = subprocess.run([spy, "dump", "--json", "--pid", str(pid)], capture_output=True, timeout=10)
        threads = json.loads(out.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}  # not a Python process (nats-server), or not allowed to look
    return {
        t["os_thread_id"]: t["thread_name"] for t in threads if t.get("os_thread_id") and t.get("thread_name")
    }


def main() -> None:
    """Sample the tree twice and print the difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pid", type=int)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=30.0, help="the camera's rate, for switches per frame")
    args = parser.parse_args()
    pids = tree(args.pid)
    names = roles(pids)
    threads = {pid: thread_names(pid) for pid in pids}
    before, started = {pid: sample(pid) for pid in pids}, time.monotonic()
    time.sleep(args.seconds)
    after, seconds = {pid: sample(pid) for pid in pids}, time.monotonic() - started
    frames = seconds * args.fps
    total = 0.0
    for pid in pids:
        rows = []
        for tid, now in after[pid].items():
            was = before[pid].get(tid, (0, 0, 0, 0))
            user, system = ((now[i] - was[i]) / CLOCK_TICK / seconds * 100 for i in (0, 1))
            voluntary, involuntary = ((now[i] - was[i]) / frames for i in (2, 3))
            name = threads[pid].get(tid, str(tid))
            rows.append((user + system, name, user, system, voluntary, involuntary))
        spent = sum(row[0] for row in rows)
        total += spent
        print(f"{names.get(pid, 'other'):8} pid {pid}: {spent:5.2f} %")
        for _, name, user, system, voluntary, involuntary in sorted(rows, reverse=True):
            if user + system > 0:
                print(
                    f"    {name:24} user {user:5.2f}  sys {system:5.2f}   "
                    f"switches/frame: woken {voluntary:5.2f}  preempted {involuntary:5.2f}"
                )
    print(f"total {total:.2f} % of one core over {seconds:.1f} s")


if __name__ == "__main__":
    main()
