"""The livecam command, run as a user runs it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fake_v4l2 import HD_WEBCAM, VGA_WEBCAM, FakeCamera, FakeDev, capability
from helpers import free_port, run_cli
from livecam.cli import devices
from nats_keys import Key

run = run_cli


def test_check_config_lists_cameras_with_redacted_sources() -> None:
    result = run("check-config", env={"LIVECAM_CAMERAS": "0=testsrc,4=rtsp://admin:hunter2@cam/s"})
    assert result.returncode == 0, result.stderr
    assert "configuration OK: 2 camera(s) configured" in result.stdout
    assert "rtsp://admin:***@cam/s" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr
    full = "full (full width, source fps, camera's JPEGs or quality 80)"
    profiles = f"profiles: {full}, preview (320 px, 5 fps, quality 60)"
    assert result.stdout.count(profiles) == 2


def test_check_config_reports_the_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "livecam.toml"
    config.write_text("[cameras.0]\nrotate = 45\n")
    result = run("check-config", env={"LIVECAM_CONFIG": str(config)})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "livecam: configuration error: cameras.0.rotate: must be one of 0, 90, 180, 270, got 45"
    )


def test_check_config_shows_the_frame_bus_without_its_secrets(tmp_path: Path) -> None:
    seed = Key().seed
    (tmp_path / "web.nk").write_text(seed + "\n")
    env = {
        "LIVECAM_CAMERAS": "0=testsrc",
        "LIVECAM_BUS": "nats://cams:hunter2@nats.example:4222",
        "LIVECAM_BUS_CREDS": str(tmp_path / "web.nk"),
    }
    result = run("check-config", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "frame bus nats://cams:***@nats.example:4222, subjects under livecam." in lines
    assert f"frame bus credentials: {tmp_path / 'web.nk'}, a user nkey seed" in lines
    assert "hunter2" not in result.stdout + result.stderr and seed not in result.stdout + result.stderr

    (tmp_path / "web.nk").write_text("not-a-seed-hunter2")
    result = run("check-config", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"livecam: configuration error: LIVECAM_BUS_CREDS: {tmp_path / 'web.nk'} is neither a NATS "
        ".creds file nor a user nkey seed (SU...)"
    )


def test_capture_refuses_unreadable_bus_creds(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.creds"
    env = {"LIVECAM_CAMERAS": "0=testsrc", "LIVECAM_BUS": f"nats://127.0.0.1:{free_port()}"}
    result = run("capture", env={**env, "LIVECAM_BUS_CREDS": str(missing)})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"livecam: configuration error: LIVECAM_BUS_CREDS: cannot read {missing}: No such file or directory"
    )


def test_devices_without_any_device(tmp_path: Path) -> None:
    result = run("devices", "--dev", str(tmp_path))
    assert result.returncode == 1
    assert "no V4L2 capture device" in result.stderr


def test_devices_lists_each_device_with_its_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = FakeDev(tmp_path)
    hd_webcam = FakeCamera(capability(1, card=b"HD Webcam"), HD_WEBCAM)
    dev.add("video0", hd_webcam, by_id="usb-HD_Webcam-video-index0")
    dev.add("video1", FakeCamera(capability(1, card=b"Old Webcam"), VGA_WEBCAM))
    assert devices(argparse.Namespace(dev=str(tmp_path)), dev.ioctl) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"0\t{tmp_path}/video0\tHD Webcam\t{tmp_path}/v4l/by-id/usb-HD_Webcam-video-index0",
        "\tMJPG 1920x1080@30 1280x720@60 640x480@30",
        "\tYUYV 640x480@30 1280x720@10 1920x1080@5",
        "\tH264 3840x2160@30",
        "\tcaptured as MJPG 1920x1080 @30 fps unless size or fps say otherwise",
        f"1\t{tmp_path}/video1\tOld Webcam\t-",
        "\tYUYV 640x480@30 352x288@30 320x240@30",
        "\tcaptured as YUYV 640x480 @30 fps unless size or fps say otherwise",
    ]


@pytest.mark.parametrize("args", [[], ["nonsense"], ["snapshot", "٣", "x.jpg"], ["snapshot", "²", "x.jpg"]])
def test_usage_errors(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert "usage: livecam" in result.stderr


@pytest.mark.parametrize("value", ["²", "٣"])
def test_check_config_refuses_unicode_digits_in_one_line(value: str) -> None:
    for name in ("LIVECAM_CAMERAS", "LIVECAM_THREADS"):
        result = run("check-config", env={"LIVECAM_CAMERAS": "0=testsrc", name: value})
        assert result.returncode == 1
        assert result.stderr.startswith(f"livecam: configuration error: {name}: ")
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_snapshot_without_a_server(tmp_path: Path) -> None:
    result = run("snapshot", "0", str(tmp_path / "x.jpg"), "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "cannot reach" in result.stderr
    assert not (tmp_path / "x.jpg").exists()


def test_check_config_says_motion_and_a_missing_session_key(tmp_path: Path) -> None:
    config = tmp_path / "livecam.toml"
    config.write_text(
        "[cameras.0]\nsource = 'testsrc'\n[cameras.0.motion]\nenabled = true\nignore = [[0, 0, 0.3, 0.1]]\n"
        "[cameras.1]\nsource = 'testsrc'\n"
    )
    env = {
        "LIVECAM_CONFIG": str(config),
        "LIVECAM_BUS": "nats://127.0.0.1:4222",
        "LIVECAM_VIEW_TOKEN": "v" * 12,
    }
    result = run("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\tmotion: ") == 1
    assert "motion: 5 analyses/s, pixels changed by over 25, 1.0% of the picture for 0.4 s" in result.stdout
    assert "1 area(s) ignored" in result.stdout
    assert "the web role (gunicorn) will refuse to start: LIVECAM_SECRET_KEY" in result.stdout
    result = run("check-config", env={**env, "LIVECAM_SECRET_KEY": "k" * 32})
    assert "will refuse" not in result.stdout
