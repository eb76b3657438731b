"""/metrics: Prometheus text that parses, with counters that move as frames flow."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from helpers import ChunkReader, read_parts


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, camera: str, **labels: str) -> float:
    key = (
        name,
        tuple(sorted({"camera": camera, "name": {"0": "Bench", "1": "Door"}[camera], **labels}.items())),
    )
    return samples[key]


def test_metrics_parse_and_move_with_frames(client) -> None:
    before = scrape(client)
    assert (
        value(before, "livecam_camera_state", "0", state="on")
        + value(before, "livecam_camera_state", "0", state="starting")
        == 1
    )
    assert value(before, "livecam_camera_state", "1", state="off") == 1
    response = client.get("/cameras/0/stream.mjpg")
    parts = read_parts(ChunkReader(response.response))
    for _ in range(5):
        next(parts)
    during = scrape(client)
    assert value(during, "livecam_camera_viewers", "0") == 1
    response.close()
    after = scrape(client)
    assert value(after, "livecam_frames_captured_total", "0") > value(
        before, "livecam_frames_captured_total", "0"
    )
    assert value(after, "livecam_frames_encoded_total", "0") >= 5
    assert value(after, "livecam_bytes_sent_total", "0") > 5 * 1000
    assert value(after, "livecam_frame_latency_seconds_count", "0") >= 4
    assert value(after, "livecam_frame_latency_seconds_bucket", "0", le="+Inf") == value(
        after, "livecam_frame_latency_seconds_count", "0"
    )
    assert value(after, "livecam_camera_viewers", "0") == 0
    assert value(after, "livecam_source_errors_total", "1") == 0


def test_two_apps_have_their_own_metrics(make_app) -> None:
    first = make_app({"cameras": {"7": {"source": "testsrc"}}})
    second = make_app({"cameras": {"8": {"source": "testsrc"}}})
    text = second.test_client().get("/metrics").get_data(as_text=True)
    assert 'camera="8"' in text and 'camera="7"' not in text
    assert 'camera="7"' in first.test_client().get("/metrics").get_data(as_text=True)


def test_each_profile_has_its_viewers_fps_frames_and_bytes(client) -> None:
    response = client.get("/cameras/0/stream.mjpg?profile=preview")
    parts = read_parts(ChunkReader(response.response))
    for _ in range(3):
        next(parts)
    during = scrape(client)
    response.close()
    after = scrape(client)
    assert value(during, "livecam_profile_viewers", "0", profile="preview") == 1
    assert value(during, "livecam_profile_viewers", "0", profile="full") == 0
    assert value(during, "livecam_profile_fps", "0", profile="preview") > 0
    assert value(after, "livecam_profile_frames_encoded_total", "0", profile="preview") >= 3
    assert value(after, "livecam_profile_bytes_sent_total", "0", profile="preview") > 1000
    assert value(after, "livecam_profile_bytes_sent_total", "0", profile="full") == 0
    assert value(after, "livecam_bytes_sent_total", "0") == value(
        after, "livecam_profile_bytes_sent_total", "0", profile="preview"
    )
    assert value(after, "livecam_frames_decoded_total", "0") >= 3
