"""The livecam command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


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
