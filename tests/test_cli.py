"""The livecam command, run as a user runs it: a process each run (forked from one that has
imported livecam already, see forked.py; the first test starts a whole interpreter)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fake_v4l2 import HD_WEBCAM, VGA_WEBCAM, FakeCamera, FakeDev, capability
from helpers import free_port, run_cli
from livecam.cli import GENERATED_BEGIN, GENERATED_END, devices
from nats_keys import Key

run = run_cli


def test_check_config_lists_cameras_with_redacted_sources() -> None:
    env = {"LIVECAM_CAMERAS": "0=testsrc,4=rtsp://admin:hunter2@cam/s"}
    result = run("check-config", env=env, interpreter=True)
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
    assert "motion: 5 analyses/s, pixels changed by over 25, 1.0% of the picture for 0.2 s" in result.stdout
    assert "1 area(s) ignored" in result.stdout
    assert "the web role (gunicorn) will refuse to start: LIVECAM_SECRET_KEY" in result.stdout
    result = run("check-config", env={**env, "LIVECAM_SECRET_KEY": "k" * 32})
    assert "will refuse" not in result.stdout


def test_check_config_lists_what_changed_at_run_time(tmp_path: Path) -> None:
    (tmp_path / "runtime-cameras.json").write_text(
        '{"cameras": {"4": {"source": "testsrc", "name": "Added"}}, "removed": [1]}'
    )
    env = {"LIVECAM_STATE_DIR": str(tmp_path), "LIVECAM_CAMERAS": "0=testsrc,1=testsrc"}
    result = run("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "changed at run time (runtime-cameras.json, wins over the file): 4; removed: 1" in result.stdout
    listed = [line.split("\t")[0] for line in result.stdout.splitlines() if line[:1].isdigit()]
    assert listed == ["0", "4"]


def test_check_config_says_which_cameras_are_on_at_start_as_livecam_will(tmp_path: Path) -> None:
    # A camera added at run time (on, though its table says no autostart) and configured
    # ones: the switches kept in cameras.json win over autostart, as at startup.
    (tmp_path / "runtime-cameras.json").write_text('{"cameras": {"4": {"source": "testsrc"}}, "removed": []}')
    (tmp_path / "cameras.json").write_text('{"version": 1, "on": {"4": true, "1": false}}')
    config = tmp_path / "livecam.toml"
    config.write_text(
        "[cameras.0]\nsource = 'testsrc'\nautostart = true\n"
        "[cameras.1]\nsource = 'testsrc'\nautostart = true\n"
        "[cameras.2]\nsource = 'testsrc'\n"
    )
    result = run("check-config", env={"LIVECAM_STATE_DIR": str(tmp_path), "LIVECAM_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    at_start = {
        line.split("\t")[0]: line.split("\t")[-1] for line in result.stdout.splitlines() if line[:1].isdigit()
    }
    assert at_start == {
        "0": "on at start (autostart)",
        "1": "off at start (as last left, cameras.json)",
        "2": "off at start",
        "4": "on at start (as last left, cameras.json)",
    }


def test_check_config_notes_motion_settings_unlikely_to_be_meant(tmp_path: Path) -> None:
    config = tmp_path / "livecam.toml"
    config.write_text(
        "[cameras.0]\nsource = 'testsrc'\n[cameras.0.motion]\nenabled = true\narea = 0\n"
        "ignore = [[0, 0, 1, 1]]\n[cameras.1]\nsource = 'testsrc'\n[cameras.1.motion]\narea = 0.05\n"
    )
    result = run("check-config", env={"LIVECAM_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert "note: area = 0: any changed pixel is motion" in result.stdout
    assert "note: the ignored areas cover the whole picture" in result.stdout
    assert "note: motion settings given but not enabled" in result.stdout


def test_docs_settings_prints_every_setting_and_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    printed = run("docs-settings")
    assert printed.returncode == 0, printed.stderr
    assert "| `LIVECAM_THREADS` | `256` | an integer from 4 to 4096 |" in printed.stdout
    assert "| `rotate` | `0` | `0`, `90`, `180`, `270` |" in printed.stdout
    page = tmp_path / "page.md"
    page.write_text(f"# Settings\n\nBefore.\n\n{GENERATED_BEGIN}\nstale\n{GENERATED_END}\n\nAfter.\n")
    written = run("docs-settings", "--write", str(page))
    assert written.returncode == 0, written.stderr
    text = page.read_text()
    assert text.startswith(f"# Settings\n\nBefore.\n\n{GENERATED_BEGIN}\n\n### Settings\n")
    assert text.endswith(f"\n{GENERATED_END}\n\nAfter.\n") and "stale" not in text
    assert text.partition(GENERATED_BEGIN)[2].partition(GENERATED_END)[0].strip() == printed.stdout.strip()
    assert run("docs-settings", "--write", str(page)).returncode == 0
    assert page.read_text() == text  # rewriting is idempotent


def test_docs_settings_refuses_a_page_without_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Settings\n")
    result = run("docs-settings", "--write", str(page))
    assert result.returncode == 1 and "no <!-- generated" in result.stderr
    assert page.read_text() == "# Settings\n"
    missing = run("docs-settings", "--write", str(tmp_path / "none.md"))
    assert missing.returncode == 1 and "No such file" in missing.stderr
