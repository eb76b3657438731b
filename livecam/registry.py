"""The cameras of one app, by id."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from .capture import Camera
from .config import Settings

log = logging.getLogger(__name__)


class Registry:
    """Every configured camera by id, with the settings they came from."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cameras = {cam_id: Camera(config) for cam_id, config in settings.cameras.items()}

    def get(self, cam_id: int) -> Camera | None:
        """The camera with this id, or None."""
        return self._cameras.get(cam_id)

    def __iter__(self) -> Iterator[Camera]:
        return iter(self._cameras.values())

    def __len__(self) -> int:
        return len(self._cameras)

    def autostart(self) -> None:
        """Start every camera configured to start at boot."""
        for camera in self:
            if camera.config.autostart:
                camera.start()

    def shutdown(self) -> None:
        """Stop every camera: end all streams at once, then wait for each source's release."""
        running = [camera for camera in self if camera.is_on]
        for camera in running:
            camera.stop(wait=False)
        for camera in self:
            camera.stop()
        if running:
            log.info("stopped %d camera(s)", len(running))
