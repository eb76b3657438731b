"""Prometheus metrics, read from each camera's own counters when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .access import requires
from .record import STATES
from .registry import Registry

bp = Blueprint("metrics", __name__)
KEY = "livecam.metrics"  # this module's own app.extensions: the app's Prometheus registry


class CameraCollector:
    """Turns the registry's cameras into metric families at scrape time: nothing per frame."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family, one sample per camera."""
        labels = ["camera", "name"]
        state = GaugeMetricFamily(
            "livecam_camera_state", "1 for the camera's current state", labels=[*labels, "state"]
        )
        gauges = {
            "fps": GaugeMetricFamily(
                "livecam_camera_fps", "Frames per second after the fps cap", labels=labels
            ),
            "viewers": GaugeMetricFamily("livecam_camera_viewers", "Stream viewers connected", labels=labels),
            "passthrough": GaugeMetricFamily(
                "livecam_camera_passthrough", "1 while the camera's own JPEGs are forwarded", labels=labels
            ),
        }
        counters = {
            "frames": CounterMetricFamily(
                "livecam_frames_captured", "Frames read from the source", labels=labels
            ),
            "decoded": CounterMetricFamily(
                "livecam_frames_decoded",
                "Frames decoded to pixels (once each, for every profile)",
                labels=labels,
            ),
            "encoded": CounterMetricFamily(
                "livecam_frames_encoded", "Frames encoded to JPEG, over every profile", labels=labels
            ),
            "dropped": CounterMetricFamily(
                "livecam_frames_dropped", "Frames dropped by the fps cap", labels=labels
            ),
            "errors": CounterMetricFamily("livecam_source_errors", "Times the source failed", labels=labels),
            "rejected": CounterMetricFamily(
                "livecam_frames_rejected", "Frames dropped as not whole JPEGs or too large", labels=labels
            ),
            "bytes": CounterMetricFamily(
                "livecam_bytes_sent", "Stream bytes written to viewers", labels=labels
            ),
            "bus_dropped": CounterMetricFamily(
                "livecam_bus_frames_dropped",
                "Frames the capture process replaced by newer ones while NATS was too slow to take them",
                labels=labels,
            ),
            "bus_rejected": CounterMetricFamily(
                "livecam_bus_messages_rejected",
                "Bad frame bus messages about the camera dropped, by its capture process and this worker",
                labels=labels,
            ),
        }
        by_profile = [*labels, "profile"]
        profile_gauges = {
            "viewers": GaugeMetricFamily(
                "livecam_profile_viewers", "Stream viewers of a profile", labels=by_profile
            ),
            "fps": GaugeMetricFamily(
                "livecam_profile_fps", "Frames per second published to a profile", labels=by_profile
            ),
        }
        profile_counters = {
            "encoded": CounterMetricFamily(
                "livecam_profile_frames_encoded", "Frames encoded to JPEG for a profile", labels=by_profile
            ),
            "bytes": CounterMetricFamily(
                "livecam_profile_bytes_sent", "Stream bytes written to a profile's viewers", labels=by_profile
            ),
        }
        latency = HistogramMetricFamily(
            "livecam_frame_latency_seconds", "Capture to send, per frame and viewer", labels=labels
        )
        for camera in self._registry:
            values = [str(camera.id), camera.config.name]
            for name in STATES:
                state.add_metric([*values, name], 1.0 if camera.state == name else 0.0)
            record = camera.status()
            for key, family in gauges.items():
                family.add_metric(values, float(record[key]))
            sent, counts, total = camera.sends.snapshot()
            for key, family in counters.items():
                family.add_metric(values, float(sent if key == "bytes" else record[key]))
            cumulative, buckets = 0, []
            for bound, count in zip([*camera.sends.buckets, float("inf")], counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric(values, buckets, total)
            for profile, figures in record["profiles"].items():
                for key, family in (*profile_gauges.items(), *profile_counters.items()):
                    family.add_metric([*values, profile], float(figures.get(key) or 0))
        yield state
        yield from gauges.values()
        yield from counters.values()
        yield latency
        yield from profile_gauges.values()
        yield from profile_counters.values()


def init_app(app: Flask, registry: Registry) -> None:
    """Serve /metrics from a Prometheus registry of this app only, never the process-wide one."""
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(CameraCollector(registry))
    app.extensions[KEY] = metrics
    app.register_blueprint(bp)


@bp.get("/metrics")
@requires("view")
def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(current_app.extensions[KEY]), content_type=CONTENT_TYPE_LATEST)
