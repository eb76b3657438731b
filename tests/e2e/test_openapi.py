"""The OpenAPI document: it describes every route, and schemathesis finds no fault live."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from helpers import ROOT, Server


def documented(client) -> dict:
    response = client.get("/openapi.yaml")
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    return yaml.safe_load(response.data)


def test_every_route_is_documented_and_nothing_else(app, client) -> None:
    doc = documented(client)
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        # Each camera's Blueprint registration is one parametrised path in the document.
        path = re.sub(r"^/cameras/\d+", "/cameras/{camera_id}", rule.rule)
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)  # Flask's <int:x> is OpenAPI's {x}
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    assert routes == {path: set(ops) - {"parameters"} for path, ops in doc["paths"].items()}


def test_the_event_stream_is_documented_as_server_sent_events(client) -> None:
    events = documented(client)["paths"]["/events"]["get"]
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    assert {p["name"] for p in events["parameters"]} == {"cameras", "since", "Last-Event-ID"}


def test_document_names_its_base_under_a_proxy_prefix(make_app) -> None:
    app = make_app({"proxy_hops": 1, "cameras": {"0": {"source": "testsrc"}}})
    response = app.test_client().get("/openapi.yaml", headers={"X-Forwarded-Prefix": "/livecam"})
    assert yaml.safe_load(response.data)["servers"] == [{"url": "/livecam"}]


def test_schemathesis_finds_no_server_error_and_every_answer_conforms(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:160x120@10,3=testsrc:160x120@10"})
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "--no-color",
        "--config-file",
        str(ROOT / "tests" / "e2e" / "schemathesis.toml"),
        "run",
        f"http://127.0.0.1:{livecam.port}/openapi.yaml",
        # A stream never ends while its camera is on, nor the events while livecam runs; the gunicorn,
        # events and browser tests read them for real.
        "--exclude-path",
        "/cameras/{camera_id}/stream.mjpg",
        "--exclude-path",
        "/streams.mjpg",
        "--exclude-path",
        "/events",
        "--request-timeout",
        "10",
        "--max-examples",
        "30",
        "--seed",
        "20261124",
    ]
    # Hooks that keep every camera source the bodies name on this machine (see the module).
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": str(ROOT / "tests" / "e2e"),
    }
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Traceback" not in livecam.output()
