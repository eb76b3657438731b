"""The pattern livecam replaces, kept faithfully as the benchmark's baseline: do not improve it.

This is the Flask MJPEG tutorial recipe: a global camera object whose thread keeps the
latest decoded frame from ``cv2.VideoCapture(url)``, and one ``generate()`` generator per
viewer that loops forever re-encoding that latest frame, never waiting for a new one. Each
viewer therefore costs a JPEG encode per loop, as fast as its socket drains, and gets the
same picture many times. The camera URL comes from ``SEED_CAMERA_URL``::

    SEED_CAMERA_URL=http://127.0.0.1:8091/cam.mjpg gunicorn --worker-class gthread \\
        --threads 200 --chdir bench/baselines seed_pattern:app
"""

import os
import threading
from collections.abc import Iterator

import cv2
from flask import Flask, Response

# The tutorial encodes with OpenCV's default quality (95); livecam's default of 80 is used
# instead so that the comparison measures the pattern, not the quality setting.
QUALITY = 80

app = Flask(__name__)


class VideoCamera:
    """Reads the camera in a thread and keeps the latest decoded frame."""

    def __init__(self, url: str) -> None:
        self.video = cv2.VideoCapture(url)
        self.frame = None
        threading.Thread(target=self.update, daemon=True).start()

    def update(self) -> None:
        """Read frames forever, keeping the newest."""
        while True:
            ok, frame = self.video.read()
            if ok:
                self.frame = frame

    def get_frame(self) -> bytes | None:
        """The latest frame, encoded to JPEG now."""
        frame = self.frame
        if frame is None:
            return None
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        return jpeg.tobytes()


camera = VideoCamera(os.environ["SEED_CAMERA_URL"])


def generate(cam: VideoCamera) -> Iterator[bytes]:
    """One viewer's stream: the latest frame, re-encoded, as often as the loop spins."""
    while True:
        frame = cam.get_frame()
        if frame is None:
            continue
        yield b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + frame + b"\r\n"


@app.route("/")
def index() -> str:
    """The page showing the stream."""
    return '<html><body><img src="/video_feed"></body></html>'


@app.route("/video_feed")
def video_feed() -> Response:
    """The MJPEG stream."""
    return Response(generate(camera), mimetype="multipart/x-mixed-replace; boundary=frame")
