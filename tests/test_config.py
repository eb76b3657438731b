"""Settings: layers, camera lists, zero configuration and every kind of bad value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nkeys
import pytest

from fake_v4l2 import FakeCamera, FakeDev, capability
from livecam.config import (
    ConfigError,
    MotionConfig,
    Profile,
    beyond_loopback,
    bus_creds_kind,
    load_settings,
    parse_camera_list,
    parse_source,
    unguarded,
)
from livecam.v4l2 import Device, list_devices
from nats_keys import Key, Operator


def test_zero_config_without_devices_serves_an_autostarted_test_pattern() -> None:
    settings = load_settings(environ={}, discover=lambda: [])
    assert settings.discovered
    assert list(settings.cameras) == [0]
    camera = settings.cameras[0]
    assert camera.source.kind == "testsrc"
    assert camera.autostart
    assert camera.name == "Test pattern"


def test_zero_config_registers_every_capture_device() -> None:
    settings = load_settings(environ={}, discover=lambda: [0, 2])
    assert list(settings.cameras) == [0, 2]
    assert settings.cameras[2].source.kind == "device"
    assert settings.cameras[2].source.target == 2


def test_environment_camera_list() -> None:
    environ = {"LIVECAM_CAMERAS": "0, 5=rtsp://u:p@host/s,6=testsrc:320x240@10,7=/videos/a.mp4"}
    cameras = load_settings(environ=environ).cameras
    assert [(c.id, c.source.kind) for c in cameras.values()] == [
        (0, "device"),
        (5, "url"),
        (6, "testsrc"),
        (7, "file"),
    ]
    assert (cameras[6].source.width, cameras[6].source.height, cameras[6].source.fps) == (320, 240, 10)
    assert not cameras[0].autostart  # configured cameras are off until switched on


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "livecam.toml"
    path.write_text(
        'bind = "127.0.0.1:9000"\n'
        '[cameras.0]\nname = "Workbench"\nwidth = 320\nfps = 15\n'
        "quality = 70\nrotate = 90\nautostart = true\n"
        '[cameras.5]\nsource = "http://127.0.0.1:8091/cam.mjpg"\n'
    )
    settings = load_settings(environ={"LIVECAM_CONFIG": str(path)})
    assert settings.bind == "127.0.0.1:9000"
    workbench = settings.cameras[0]
    assert (workbench.name, workbench.width, workbench.fps, workbench.quality, workbench.rotate) == (
        "Workbench",
        320,
        15.0,
        70,
        90,
    )
    assert workbench.source.kind == "device" and workbench.source.target == 0
    assert settings.cameras[5].source.kind == "url"

    # The environment wins: it picks the cameras, and the file still names them.
    environ = {
        "LIVECAM_CONFIG": str(path),
        "LIVECAM_CAMERAS": "0=testsrc,9",
        "LIVECAM_BIND": "127.0.0.1:9100",
    }
    settings = load_settings(environ=environ)
    assert settings.bind == "127.0.0.1:9100"
    assert list(settings.cameras) == [0, 9]
    assert settings.cameras[0].name == "Workbench"
    assert settings.cameras[0].source.kind == "testsrc"


def test_overrides_come_last() -> None:
    settings = load_settings(environ={"LIVECAM_THREADS": "50"}, overrides={"threads": 8})
    assert settings.threads == 8


def test_unknown_environment_variable_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    load_settings(environ={"LIVECAM_CAMERAS": "0", "LIVECAM_TYPO": "1"})
    assert "LIVECAM_TYPO" in caplog.text


@pytest.mark.parametrize(
    ("toml", "environ", "key"),
    [
        ("[cameras.0]\nqualty = 80\n", {}, "cameras.0.qualty: unknown key"),
        ('colour = "red"\n', {}, "colour: unknown key"),
        ("[cameras.0]\nquality = 0\n", {}, "cameras.0.quality: must be from 1 to 100"),
        ('[cameras.0]\nquality = "high"\n', {}, "cameras.0.quality: must be an integer"),
        ("[cameras.0]\nrotate = 45\n", {}, "cameras.0.rotate: must be one of 0, 90, 180, 270"),
        ("[cameras.0]\nfps = 0\n", {}, "cameras.0.fps: must be above 0"),
        ('[cameras.0]\nfps = "fast"\n', {}, "cameras.0.fps: must be a number"),
        ("[cameras.0]\nwidth = 8\n", {}, "cameras.0.width: must be from 16 to 7680"),
        ('[cameras.0]\nautostart = "yes"\n', {}, "cameras.0.autostart: must be true or false"),
        ('[cameras.0]\nname = ""\n', {}, "cameras.0.name: must be a non-empty string"),
        ('[cameras.0]\nsource = "testsrc:big"\n', {}, "cameras.0.source: expected testsrc"),
        ("[cameras.0]\nsource = 1.5\n", {}, "cameras.0.source: must be a device index"),
        ("[cameras.x]\n", {}, "cameras.x: camera id must be an integer"),
        ("[cameras.0]\n[cameras.1]\nsource = 0\n", {}, "cameras.1.source: device 0 is already camera 0"),
        (
            '[cameras.0]\n[cameras.1]\nsource = "/dev/video0"\n',
            {},
            "cameras.1.source: device /dev/video0 is already camera 0 (0, both /dev/video0)",
        ),
        (
            '[cameras.3]\nsource = "/dev/video2"\n[cameras.7]\nsource = "/dev/v4l/../video2"\n',
            {},
            "cameras.7.source: device /dev/v4l/../video2 is already camera 3 (/dev/video2, both /dev/video2)",
        ),
        ("", {"LIVECAM_CAMERAS": "1=/dev/video4,2=4"}, "cameras.2.source: device 4 is already camera 1"),
        ("cameras = 3\n", {}, "cameras: must be a table"),
        ("threads = 0\n", {}, "threads: must be from 4 to 4096"),
        ("bind = 8000\n", {}, "bind: must be a non-empty string"),
        ("[cameras.0\n", {}, "is not valid TOML"),
        ("", {"LIVECAM_CAMERAS": "0,0=testsrc"}, "LIVECAM_CAMERAS: duplicate camera id 0"),
        ("", {"LIVECAM_CAMERAS": "-1"}, "LIVECAM_CAMERAS: camera id must be an integer"),
        ("", {"LIVECAM_CAMERAS": ","}, "LIVECAM_CAMERAS: names no camera"),
        ("", {"LIVECAM_THREADS": "many"}, "LIVECAM_THREADS: must be an integer"),
        # Unicode digits are no numbers: "²" made int() raise a ValueError, "٣" read as 3.
        ("", {"LIVECAM_THREADS": "²"}, "LIVECAM_THREADS: must be an integer, got '²'"),
        ("", {"LIVECAM_THREADS": "٦٤"}, "LIVECAM_THREADS: must be an integer, got '٦٤'"),
        ("", {"LIVECAM_THREADS": "1_000"}, "LIVECAM_THREADS: must be an integer, got '1_000'"),
        (
            "",
            {"LIVECAM_CAMERAS": "²"},
            "LIVECAM_CAMERAS: camera id must be an integer from 0 to 999999, got '²'",
        ),
        ("", {"LIVECAM_CAMERAS": "٣=testsrc"}, "LIVECAM_CAMERAS: camera id must be an integer"),
        ("", {"LIVECAM_CAMERAS": "0=testsrc:٣٢٠x٢٤٠"}, "cameras.0.source: expected testsrc"),
        ('[cameras.0]\nsize = "٦٤٠x٤٨٠"\n', {}, "cameras.0.size: expected WIDTHxHEIGHT"),
        (
            "",
            {"LIVECAM_CAMERAS": "0=http://cam:²/x"},
            "cameras.0.source: http://cam:²/x names a port that is not",
        ),
        ("", {"LIVECAM_PROXY_HOPS": "11"}, "LIVECAM_PROXY_HOPS: must be from 0 to 10"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, toml: str, environ: dict, key: str) -> None:
    path = tmp_path / "livecam.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"LIVECAM_CONFIG": str(path), **environ}, discover=lambda: [])
    message = str(info.value)
    assert key in message
    assert "\n" not in message


def test_unreadable_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^LIVECAM_CONFIG: cannot read .*missing\.toml"):
        load_settings(environ={"LIVECAM_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("value", "kind", "target"),
    [
        (3, "device", 3),
        ("3", "device", 3),
        ("/dev/video2", "device", "/dev/video2"),
        ("/dev/v4l/by-id/usb-cam-video-index0", "device", "/dev/v4l/by-id/usb-cam-video-index0"),
        ("rtsp://host/stream", "url", "rtsp://host/stream"),
        ("/videos/a.mp4", "file", "/videos/a.mp4"),
        ("testsrc", "testsrc", ""),
    ],
)
def test_parse_source(value: object, kind: str, target: object) -> None:
    spec = parse_source(value, "source")
    assert (spec.kind, spec.target) == (kind, target)


def test_camera_list_keeps_urls_with_equals_signs() -> None:
    assert parse_camera_list("4=http://h/cam?a=1&b=2") == {4: "http://h/cam?a=1&b=2"}


def test_addresses_beyond_loopback() -> None:
    binds = [
        "127.0.0.1:8000",
        "localhost:8000",
        "[::1]:8000",
        "unix:/run/livecam.sock",
        "0.0.0.0:80",
        "[::]:80",
    ]
    assert beyond_loopback(binds) == ["0.0.0.0:80", "[::]:80"]


def test_a_livecam_others_may_reach_without_a_token_is_named() -> None:
    def where(binds: list[str], **overrides: Any) -> str | None:
        return unguarded(load_settings(environ={}, overrides={"cameras": "0", **overrides}), binds)

    assert where(["0.0.0.0:8000", "127.0.0.1:8001"]) == "listening on 0.0.0.0:8000"
    # Behind nginx gunicorn binds loopback; the proxy is what others reach.
    assert where(["127.0.0.1:8000"], proxy_hops=1) == "behind a proxy (LIVECAM_PROXY_HOPS=1)"
    assert where(["127.0.0.1:8000"]) is None
    assert where(["0.0.0.0:8000"], proxy_hops=1, view_token="view-secret-1") is None
    assert where(["0.0.0.0:8000"], control_token="control-secret-1") is None


def test_capture_size_trusted_hosts_and_frame_cap() -> None:
    settings = load_settings(
        environ={"LIVECAM_TRUSTED_HOSTS": "cams.example, .lan", "LIVECAM_MAX_FRAME_MB": "4"},
        overrides={"cameras": {"0": {"size": "1280x720"}}},
    )
    assert settings.cameras[0].size == (1280, 720)
    assert settings.trusted_hosts == ("cams.example", ".lan")
    assert settings.max_frame_mb == 4
    assert load_settings(environ={}, overrides={"cameras": "0"}).max_frame_mb == 16


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cameras": {"0": {"size": "1280"}}}, "cameras.0.size: expected WIDTHxHEIGHT"),
        ({"cameras": {"0": {"size": "9x9"}}}, "cameras.0.size: expected WIDTHxHEIGHT"),
        ({"trusted_hosts": "http://cams.example"}, "trusted_hosts: 'http://cams.example' is not a host"),
        ({"trusted_hosts": "cams.example:8443"}, "is not a host name"),
        ({"max_frame_mb": 0}, "max_frame_mb: must be from 1 to 1024"),
    ],
)
def test_bad_new_settings(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={}, overrides={"cameras": "0", **overrides})


def plug(dev: FakeDev, cameras: dict[str, tuple[str, str]]) -> None:
    """Replace the fake /dev tree: node name -> (udev link kind, link name) of a capture device."""
    for entry in dev.root.glob("video*"):
        entry.unlink()
    for kind in ("by-id", "by-path"):
        for link in dev.root.glob(f"v4l/{kind}/*"):
            link.unlink()
    dev.drivers.clear()
    for node, (kind, link) in cameras.items():
        dev.add(node, FakeCamera())
        metadata = f"video{int(node[5:]) + 1}"  # each webcam's second node carries metadata only
        dev.add(metadata, FakeCamera(capability(0x80000001, 0x00800000)))
        target = dev.root / "v4l" / kind / link
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(dev.root / node)


def test_discovered_cameras_keep_their_ids_when_usb_order_changes(tmp_path: Path) -> None:
    dev = FakeDev(tmp_path / "dev")
    dev.root.mkdir()
    state = tmp_path / "state"
    links = tmp_path / "dev" / "v4l"

    def discovered() -> dict[int, str]:
        def discover() -> list[Device]:
            return list_devices(dev.root, dev.ioctl)

        settings = load_settings(environ={}, overrides={"state_dir": str(state)}, discover=discover)
        assert settings.discovered and all(c.autostart for c in settings.cameras.values())
        return {cam_id: camera.source.target for cam_id, camera in settings.cameras.items()}

    plug(dev, {"video0": ("by-id", "usb-Desk-index0"), "video2": ("by-id", "usb-Door-index0")})
    # At first sight a device's id is its index, as before ids were remembered.
    assert discovered() == {0: f"{links}/by-id/usb-Desk-index0", 2: f"{links}/by-id/usb-Door-index0"}
    # Replugged the other way round, and a third camera without a serial number (by-path only).
    plug(
        dev,
        {
            "video0": ("by-id", "usb-Door-index0"),
            "video2": ("by-path", "pci-0000:00:14.0-usb-0:3:1.0-video-index0"),
            "video4": ("by-id", "usb-Desk-index0"),
        },
    )
    assert discovered() == {
        0: f"{links}/by-id/usb-Desk-index0",
        1: f"{links}/by-path/pci-0000:00:14.0-usb-0:3:1.0-video-index0",  # its index is taken
        2: f"{links}/by-id/usb-Door-index0",
    }
    # The desk camera is away: its id stays reserved, a new camera takes the lowest free one.
    plug(dev, {"video0": ("by-id", "usb-Door-index0"), "video2": ("by-id", "usb-Yard-index0")})
    assert discovered() == {2: f"{links}/by-id/usb-Door-index0", 3: f"{links}/by-id/usb-Yard-index0"}
    remembered = json.loads((state / "devices.json").read_text())
    assert remembered["ids"] == {
        f"{links}/by-id/usb-Desk-index0": 0,
        f"{links}/by-id/usb-Door-index0": 2,
        f"{links}/by-id/usb-Yard-index0": 3,
        f"{links}/by-path/pci-0000:00:14.0-usb-0:3:1.0-video-index0": 1,
    }


def test_a_webcam_first_seen_never_takes_the_id_of_a_camera_removed_at_run_time(tmp_path: Path) -> None:
    """The test pattern (camera 0, no webcam yet) was removed; a webcam plugged in while livecam
    was stopped must not take id 0, which would keep it removed."""
    dev = FakeDev(tmp_path / "dev")
    dev.root.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    (state / "runtime-cameras.json").write_text('{"cameras": {}, "removed": [0]}')
    plug(dev, {"video0": ("by-id", "usb-Desk-index0")})
    settings = load_settings(
        environ={}, overrides={"state_dir": str(state)}, discover=lambda: list_devices(dev.root, dev.ioctl)
    )
    assert {cam_id: c.source.target for cam_id, c in settings.cameras.items()} == {
        1: f"{tmp_path}/dev/v4l/by-id/usb-Desk-index0"
    }


def test_a_discovered_camera_is_captured_by_its_stable_path(tmp_path: Path) -> None:
    by_id = "/dev/v4l/by-id/usb-046d_HD_Webcam_C615_A1B2C3-video-index0"
    found = [Device(0, "/dev/video0", "HD Webcam C615", by_id), Device(2, "/dev/video2", "Old Webcam", None)]
    settings = load_settings(environ={}, overrides={"state_dir": str(tmp_path)}, discover=lambda: found)
    assert [(c.id, c.source.kind, c.source.target) for c in settings.cameras.values()] == [
        (0, "device", by_id),
        (2, "device", 2),  # no udev link: its index, as before
    ]


def test_a_corrupt_device_id_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "devices.json").write_text('{"ids": {"/dev/v4l/by-id/a": 0, "/dev/v4l/by-id/b": 0}}')
    found = [Device(0, "/dev/video0", "A", "/dev/v4l/by-id/b")]
    settings = load_settings(environ={}, overrides={"state_dir": str(tmp_path)}, discover=lambda: found)
    assert list(settings.cameras) == [0]
    assert "ignoring device id file" in caplog.text
    assert json.loads((tmp_path / "devices.json").read_text())["ids"] == {"/dev/v4l/by-id/b": 0}


def test_bus_settings() -> None:
    environ = {"LIVECAM_BUS": "nats://user:secret-pw@10.0.0.2:4222", "LIVECAM_BUS_PREFIX": "shop"}
    settings = load_settings(environ=environ, overrides={"cameras": "0"})
    assert (settings.bus, settings.bus_prefix) == ("nats://user:secret-pw@10.0.0.2:4222", "shop")
    assert load_settings(environ={}, overrides={"cameras": "0"}).bus is None
    for bad, message in (("http://host:4222", "expected nats://"), ("nats://u:secret-pw@h:99999", "port")):
        with pytest.raises(ConfigError, match=message) as error:
            load_settings(environ={"LIVECAM_BUS": bad}, overrides={"cameras": "0"})
        assert "secret-pw" not in str(error.value)
    with pytest.raises(ConfigError, match="NATS subject token"):
        load_settings(environ={"LIVECAM_BUS_PREFIX": "a.b"}, overrides={"cameras": "0"})


def test_bus_creds_a_seed_or_a_creds_file(tmp_path: Path) -> None:
    seed, creds = tmp_path / "user.nk", tmp_path / "user.creds"
    seed.write_text(Key().seed + "\n")
    creds.write_text(Operator().user_creds("web")[0])
    for path, kind in ((seed, "seed"), (creds, "creds")):
        settings = load_settings(environ={"LIVECAM_BUS_CREDS": str(path)}, overrides={"cameras": "0"})
        assert settings.bus_creds == str(path) and bus_creds_kind(str(path)) == kind
    assert load_settings(environ={}, overrides={"cameras": "0"}).bus_creds is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("dir", "cannot read {path}: Is a directory"),
        ("password=hunter2-secret\n", "{path} is neither a NATS .creds file nor a user nkey seed (SU...)"),
        ("SA-account", "{path} is neither a NATS .creds file nor a user nkey seed (SU...)"),
        ("SU-typo", "{path} is neither a NATS .creds file nor a user nkey seed (SU...)"),
        ("creds\r\n", "{path} is not a valid NATS .creds file (a user JWT and a user nkey seed, each alone"),
        ("creds-no-seed", "{path} is not a valid NATS .creds file"),
        ("x" * 70000, "{path} is larger than NATS credentials ever are (64 KB)"),
    ],
)
def test_bus_creds_refused_with_one_line_that_never_shows_the_content(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "bus.creds"
    creds, user = Operator().user_creds("web")
    seed = Key().seed
    shown: list[str] = [seed, user.seed, "hunter2"]
    if content == "dir":
        path.mkdir()
    elif content == "SA-account":  # an account's seed, not a user's
        shown.append(Key(nkeys.PREFIX_BYTE_ACCOUNT).seed)
        path.write_text(shown[-1])
    elif content == "SU-typo":  # one character changed: its checksum fails
        path.write_text(seed[:30] + ("A" if seed[30] != "A" else "B") + seed[31:])
    elif content == "creds\r\n":  # Windows line ends: nats-py would send the seed with a \r
        path.write_text(creds.replace("\n", "\r\n"))
    elif content == "creds-no-seed":
        path.write_text(creds.replace(user.seed, ""))
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"LIVECAM_BUS_CREDS": str(path)}, overrides={"cameras": "0"})
    text = str(error.value)
    assert text.startswith("LIVECAM_BUS_CREDS: " + message.format(path=path)) and "\n" not in text
    assert not any(secret in text for secret in shown)
    assert seed[2:20] not in text and user.seed[2:20] not in text


def test_profiles_built_in_adjusted_globally_and_per_camera(tmp_path: Path) -> None:
    path = tmp_path / "livecam.toml"
    path.write_text(
        "[profiles.preview]\nfps = 2\n[profiles.thumb]\nwidth = 160\n[profiles.full]\nquality = 70\n"
        "[cameras.0]\nsource = 'testsrc'\n[cameras.0.profiles.preview]\nwidth = 200\n"
        "[cameras.1]\nsource = 'testsrc'\nquality = 90\nfps = 12\n"
    )
    cameras = load_settings(environ={"LIVECAM_CONFIG": str(path)}).cameras
    first, second = cameras[0].profiles, cameras[1].profiles
    assert list(first) == ["full", "preview", "thumb"]
    assert first["preview"] == Profile("preview", width=200, fps=2.0, quality=60)
    assert second["preview"] == Profile("preview", width=320, fps=2.0, quality=60)
    assert first["thumb"] == Profile("thumb", width=160)
    # full is the camera's own width, fps and quality; [profiles.full] fills what it leaves out.
    assert (cameras[0].quality, first["full"]) == (70, Profile("full", quality=70))
    assert (cameras[1].quality, cameras[1].fps) == (90, 12.0)
    assert second["full"] == Profile("full", fps=12.0, quality=90)


def test_a_camera_without_profile_settings_has_full_and_preview() -> None:
    camera = load_settings(environ={}, overrides={"cameras": "0=testsrc"}).cameras[0]
    assert camera.profiles == {"full": Profile("full"), "preview": Profile("preview", 320, 5.0, 60)}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[profiles.Big]\nwidth = 100\n", "profiles.Big: a profile name is a lowercase letter"),
        ("[profiles.small]\nheight = 100\n", "profiles.small.height: unknown key"),
        ("[profiles.small]\nwidth = 8\n", "profiles.small.width: must be from 16 to 7680"),
        ("[profiles.small]\nquality = 0\n", "profiles.small.quality: must be from 1 to 100"),
        ("profiles = 3\n", "profiles: must be a table of profiles"),
        ("[cameras.0.profiles.small]\nfps = 0\n", "cameras.0.profiles.small.fps: must be above 0"),
        ("[cameras.0]\nprofiles = 'preview'\n", "cameras.0.profiles: must be a table of profiles"),
    ],
)
def test_bad_profiles_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "livecam.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={"LIVECAM_CONFIG": str(path)}, discover=lambda: [])


def test_motion_is_off_by_default_and_tuned_in_the_camera_table(tmp_path: Path) -> None:
    path = tmp_path / "livecam.toml"
    path.write_text(
        "[cameras.0]\nsource = 'testsrc'\n[cameras.0.motion]\nenabled = true\nthreshold = 30\n"
        "area = 0.02\nduration = 1\nend_after = 10\nfps = 3\nignore = [[0, 0, 0.3, 0.1]]\n"
        "[cameras.1]\nsource = 'testsrc'\n"
    )
    cameras = load_settings(environ={"LIVECAM_CONFIG": str(path)}).cameras
    assert cameras[0].motion == MotionConfig(
        enabled=True,
        fps=3.0,
        threshold=30,
        area=0.02,
        duration=1.0,
        end_after=10.0,
        ignore=((0, 0, 0.3, 0.1),),
    )
    assert cameras[1].motion == MotionConfig() and not cameras[1].motion.enabled


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("sensitivity = 3\n", r"cameras.0.motion.sensitivity: unknown key \(motion has enabled, fps"),
        ("enabled = 'yes'\n", "cameras.0.motion.enabled: must be true or false"),
        ("area = 2\n", "cameras.0.motion.area: must be a number from 0 to 1"),
        ("threshold = 0\n", "cameras.0.motion.threshold: must be from 1 to 255"),
        ("end_after = -1\n", "cameras.0.motion.end_after: must be a number of seconds"),
        ("ignore = [[0, 0, 1.5, 1]]\n", r"cameras.0.motion.ignore\[0\]: must be a number from 0 to 1"),
        ("ignore = [[0.5, 0, 0.2, 1]]\n", r"cameras.0.motion.ignore\[0\]: x0 must be left of x1"),
        ("ignore = [0, 0, 1, 1]\n", "cameras.0.motion.ignore: must be a list of"),
        ("ignore = [[0, 0, 1]]\n", "cameras.0.motion.ignore: must be a list of"),
    ],
)
def test_bad_motion_settings_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "livecam.toml"
    path.write_text("[cameras.0]\nsource = 'testsrc'\n[cameras.0.motion]\n" + toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={"LIVECAM_CONFIG": str(path)}, discover=lambda: [])
