"""The livecam command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import decode, free_port


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
    return subprocess.run(
        [sys.executable, "-m", "livecam.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_lists_cameras_with_redacted_sources() -> None:
    result = run("check-config", env={"LIVECAM_CAMERAS": "0=testsrc,4=rtsp://admin:hunter2@cam/s"})
    assert result.returncode == 0, result.stderr
    assert "configuration OK: 2 camera(s) configured" in result.stdout
    assert "rtsp://admin:***@cam/s" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


def test_check_config_reports_the_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "livecam.toml"
    config.write_text("[cameras.0]\nrotate = 45\n")
    result = run("check-config", env={"LIVECAM_CONFIG": str(config)})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "livecam: configuration error: cameras.0.rotate: must be one of 0, 90, 180, 270, got 45"
    )


def test_devices_without_any_device(tmp_path: Path) -> None:
    result = run("devices", "--dev", str(tmp_path))
    assert result.returncode == 1
    assert "no V4L2 capture device" in result.stderr


@pytest.mark.parametrize("args", [[], ["nonsense"]])
def test_usage_errors(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert "usage: livecam" in result.stderr


def test_snapshot_from_a_running_livecam(serve, tmp_path: Path) -> None:
    livecam = serve({"LIVECAM_CAMERAS": "0=testsrc:64x48@10", "LIVECAM_VIEW_TOKEN": "viewers-only-1"})
    url = f"http://127.0.0.1:{livecam.port}"
    livecam.request("POST", "/cameras/0/start", {"Authorization": "Bearer viewers-only-1"})
    target = tmp_path / "frame.jpg"
    refused = run("snapshot", "0", str(target), "--url", url)
    assert refused.returncode == 1 and "needs a token" in refused.stderr
    saved = run("snapshot", "0", str(target), "--url", url, env={"LIVECAM_VIEW_TOKEN": "viewers-only-1"})
    assert saved.returncode == 0, saved.stderr
    assert decode(target.read_bytes()).shape == (48, 64, 3)
    missing = run("snapshot", "5", str(target), "--url", url, "--token", "viewers-only-1")
    assert missing.returncode == 1 and "no camera 5" in missing.stderr


def test_snapshot_without_a_server(tmp_path: Path) -> None:
    result = run("snapshot", "0", str(tmp_path / "x.jpg"), "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "cannot reach" in result.stderr
    assert not (tmp_path / "x.jpg").exists()
