"""How soon motion is told: from the first moving frame a camera sends to the motion.start
event at an SSE client (``GET /events``) and at an MQTT subscriber, over repeated trials.

A camera of this process (HTTP MJPEG, 640x480 at 30 fps) shows a still room; for each trial
an object appears in it, and the time the first frame showing it was sent is noted. livecam
runs under gunicorn with motion on for that camera (its defaults) and MQTT to a mosquitto of
its own (Debian's, on a loopback port). Figures printed, nothing asserted::

    .venv/bin/python bench/motion_latency.py --trials 20

Takes about 8 s per trial (the event must end before the next one starts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as paho
from procs import Server, free_port, http

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
FPS = 30.0


class Room:
    """An HTTP MJPEG camera looking at a still room; ``show()`` puts an object in it and
    notes when the first frame showing it was sent."""

    def __init__(self) -> None:
        rng = np.random.default_rng(3)
        room = cv2.GaussianBlur(rng.integers(70, 150, (480, 640, 3), dtype=np.uint8), (5, 5), 0)
        busy = room.copy()
        busy[180:330, 260:380] = (25, 30, 35)
        self.frames = {False: self._jpeg(room), True: self._jpeg(busy)}
        self.showing = False
        self.shown_at: float | None = None  # wall clock, first frame with the object sent
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/cam.mjpg"

    @staticmethod
    def _jpeg(image: np.ndarray) -> bytes:
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert ok
        return buffer.tobytes()

    def show(self, on: bool) -> None:
        with self._lock:
            self.showing, self.shown_at = on, None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        room = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=f")
                self.end_headers()
                due = time.monotonic()
                try:
                    while True:
                        with room._lock:
                            showing = room.showing
                        jpeg = room.frames[showing]
                        self.wfile.write(
                            b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                        )
                        self.wfile.write(jpeg + b"\r\n")
                        self.wfile.flush()
                        with room._lock:
                            if showing and room.shown_at is None:
                                room.shown_at = time.time()
                        due += 1 / FPS
                        time.sleep(max(0.0, due - time.monotonic()))  # the camera's frame clock
                except OSError:
                    return

        return Handler


class SseClient(threading.Thread):
    """Reads livecam's /events and notes when each motion.start arrived (wall clock)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        self.starts: list[float] = []

    def run(self) -> None:
        stream = self.sock.makefile("rb")
        for line in stream:
            if line.startswith(b"event: motion.start"):
                self.starts.append(time.time())


def main() -> None:
    """Run the trials and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory(prefix="livecam-latency-") as tmp:
        logs = Path(tmp)
        broker_port, port = free_port(), free_port()
        (logs / "mosquitto.conf").write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([mosquitto, "-c", str(logs / "mosquitto.conf")], stderr=subprocess.DEVNULL)
        room = Room()
        (logs / "livecam.toml").write_text(
            f"[cameras.1]\nsource = '{room.url}'\nautostart = true\n[cameras.1.motion]\nenabled = true\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
        env |= {
            "LIVECAM_CONFIG": str(logs / "livecam.toml"),
            "LIVECAM_STATE_DIR": str(logs / "state"),
            "LIVECAM_MQTT_URL": f"mqtt://127.0.0.1:{broker_port}",
        }
        argv = [PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app", "--bind", f"127.0.0.1:{port}"]
        livecam = Server(
            "livecam", argv, f"http://127.0.0.1:{port}/healthz", logs / "livecam.log", cwd=REPO, env=env
        )
        mqtt_starts: list[float] = []
        client = paho.Client(paho.CallbackAPIVersion.VERSION2)

        def on_message(_client: object, _userdata: object, message: paho.MQTTMessage) -> None:
            if json.loads(message.payload).get("type") == "motion.start":
                mqtt_starts.append(time.time())

        client.on_message = on_message
        try:
            livecam.wait_ready()
            client.connect("127.0.0.1", broker_port)
            client.subscribe("livecam/camera/1/event")
            client.loop_start()
            sse = SseClient(port)
            sse.start()
            while http("GET", f"http://127.0.0.1:{port}/cameras/1")[1]["state"] != "on":
                time.sleep(0.2)
            time.sleep(3)  # the background learns the room
            to_sse, to_mqtt = [], []
            for trial in range(args.trials):
                seen_sse, seen_mqtt = len(sse.starts), len(mqtt_starts)
                room.show(True)
                deadline = time.monotonic() + 5
                while (
                    len(sse.starts) == seen_sse or len(mqtt_starts) == seen_mqtt
                ) and time.monotonic() < deadline:
                    time.sleep(0.01)
                shown = room.shown_at
                if shown is not None and len(sse.starts) > seen_sse and len(mqtt_starts) > seen_mqtt:
                    to_sse.append(sse.starts[seen_sse] - shown)
                    to_mqtt.append(mqtt_starts[seen_mqtt] - shown)
                    print(
                        f"  trial {trial}: SSE {to_sse[-1] * 1000:.0f} ms, MQTT {to_mqtt[-1] * 1000:.0f} ms",
                        file=sys.stderr,
                    )
                else:
                    print(f"  trial {trial}: no event within 5 s", file=sys.stderr)
                room.show(False)
                time.sleep(7)  # end_after (5 s) without motion: the event ends
        finally:
            client.loop_stop()
            livecam.stop()
            room.server.shutdown()
            broker.terminate()
            broker.wait(5)
    print(f"\nfirst moving frame sent -> motion.start received, {len(to_sse)} of {args.trials} trials:")
    for name, values in (("SSE /events", to_sse), ("MQTT event", to_mqtt)):
        if values:
            ordered = sorted(values)
            p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
            median, top = statistics.median(values) * 1000, max(values) * 1000
            print(f"{name:12} median {median:4.0f} ms   p95 {p95 * 1000:4.0f} ms   max {top:4.0f} ms")


if __name__ == "__main__":
    main()
