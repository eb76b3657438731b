"""What motion detection costs: livecam's CPU with a camera on and nobody watching, motion off
and on, for a 640x480 and a 1280x720 JPEG camera at 30 fps (passed through: nothing else is
decoded) and for a camera whose pictures are pixels anyway (the test pattern).

Each case starts livecam under gunicorn from a TOML file of its own, waits until the camera is
on, lets it settle, then reads the server tree's CPU time from /proc over a window. Motion's
cost is the difference between the two runs of a case; nothing is asserted, figures printed::

    .venv/bin/python bench/motion.py --seconds 20 --repeat 3

Takes about (2 cases x 2 runs x repeat x (seconds + 8)) seconds per camera size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from procs import Server, cpu_percent, free_port, http, usage

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
SETTLE = 4.0  # seconds after the camera is on: the source opened, the background learnt

MOTION = "[cameras.1.motion]\nenabled = true\n"


def start_camera(logs: Path, size: str) -> tuple[Server, str]:
    """The bench camera (textured pictures, 30 fps, q80) on a free port."""
    port = free_port()
    argv = [PYTHON, str(BENCH / "camera.py"), "--port", str(port), "--fps", "30", "--size", size]
    camera = Server(f"camera {size}", argv, f"http://127.0.0.1:{port}/stats", logs / f"camera-{size}.log")
    camera.wait_ready()
    return camera, f"http://127.0.0.1:{port}/cam.mjpg"


def livecam_cpu(logs: Path, source: str, motion: bool, seconds: float) -> float:
    """livecam's CPU, % of a core, with camera 1 on ``source``, unwatched, motion on or off."""
    port = free_port()
    config = logs / f"livecam-{port}.toml"
    config.write_text(f"[cameras.1]\nsource = '{source}'\nautostart = true\n" + (MOTION if motion else ""))
    env = {"LIVECAM_CONFIG": str(config), "LIVECAM_STATE_DIR": str(logs / f"state-{port}")}
    env |= {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
    argv = [PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app", "--bind", f"127.0.0.1:{port}"]
    server = Server(
        "livecam", argv, f"http://127.0.0.1:{port}/healthz", logs / f"livecam-{port}.log", cwd=REPO, env=env
    )
    try:
        server.wait_ready()
        deadline = time.monotonic() + 15
        while http("GET", f"http://127.0.0.1:{port}/cameras/1")[1]["state"] != "on":
            if time.monotonic() > deadline:
                raise RuntimeError("camera 1 did not come on")
            time.sleep(0.2)
        time.sleep(SETTLE)
        record = http("GET", f"http://127.0.0.1:{port}/cameras/1")[1]
        assert record["motion"] is motion and record["viewers"] == 0
        before = usage(server.pids())
        time.sleep(seconds)
        after = usage(server.pids())
        return cpu_percent(before, after, seconds)
    finally:
        server.stop()


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="livecam-motion-bench-") as tmp:
        logs = Path(tmp)
        cases: list[tuple[str, str, Server | None]] = []
        for size in ("640x480", "1280x720"):
            camera, url = start_camera(logs, size)
            cases.append((f"JPEG camera {size} 30 fps (passthrough)", url, camera))
        cases.append(("test pattern 640x480 30 fps (pixels)", "testsrc:640x480@30", None))
        try:
            for label, source, _ in cases:
                off, on = [], []
                for _ in range(args.repeat):
                    off.append(livecam_cpu(logs, source, False, args.seconds))
                    on.append(livecam_cpu(logs, source, True, args.seconds))
                cost = [b - a for a, b in zip(off, on, strict=True)]
                rows.append(
                    (
                        label,
                        statistics.median(off),
                        statistics.median(on),
                        statistics.median(cost),
                        min(cost),
                        max(cost),
                    )
                )
                print(f"  {label}: off {off}, on {on}", file=sys.stderr, flush=True)
        finally:
            for _, _, camera in cases:
                if camera is not None:
                    camera.stop()
    print(f"\nlivecam, one camera on and unwatched, {args.seconds:g} s windows, median of {args.repeat}:")
    print(f"{'camera':45} {'motion off':>10} {'motion on':>10} {'motion costs':>13} {'(min-max)':>12}")
    for label, off, on, cost, low, high in rows:
        print(f"{label:45} {off:9.2f}% {on:9.2f}% {cost:12.2f}% {low:5.2f}-{high:5.2f}")


if __name__ == "__main__":
    main()
