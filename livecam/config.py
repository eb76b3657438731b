"""Settings in layers: defaults, a TOML file, ``LIVECAM_*`` environment, test overrides.

Everything is validated before anything starts: a bad value raises :class:`ConfigError`
whose message is one line naming the key and the problem.
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import logging
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .integers import parse_int
from .redaction import redact, redact_endpoint, split_url, url_port
from .state import load_device_ids, read_runtime, save_device_ids
from .v4l2 import Device, assign_ids, device_path, list_devices

log = logging.getLogger(__name__)

ENV_PREFIX = "LIVECAM_"
DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_THREADS = 256
ROTATIONS = (0, 90, 180, 270)
# re.ASCII: \d alone matches "٣", which int() reads as 3.
TESTSRC_RE = re.compile(r"^testsrc(?::(\d{1,5})x(\d{1,5})(?:@(\d{1,3}(?:\.\d+)?))?)?$", re.ASCII)
DEVICE_PATH_RE = re.compile(r"^/dev/(video\d+|v4l/.+)$", re.ASCII)

ENV_ONLY = ("config",)
SIZE_RE = re.compile(r"^(\d{2,5})x(\d{2,5})$", re.ASCII)
DEFAULT_MAX_FRAME_MB = 16
# livecam's only request bodies are small forms: larger ones are refused (413) unread.
MAX_REQUEST_BODY = 64 * 1024


class ConfigError(ValueError):
    """A setting is invalid; the message names the key and the problem."""


@dataclass(frozen=True)
class SourceSpec:
    """Where a camera's frames come from: a V4L2 device, a URL, a file or the test pattern."""

    kind: str  # "device", "url", "file" or "testsrc"
    target: int | str  # device index or path, URL, file path; "" for testsrc
    width: int = 640  # testsrc only
    height: int = 480  # testsrc only
    fps: float = 15.0  # testsrc only

    def __str__(self) -> str:
        if self.kind == "testsrc":
            return f"testsrc:{self.width}x{self.height}@{self.fps:g}"
        return str(self.target)


@dataclass(frozen=True)
class Profile:
    """A named stream of a camera: a width, an fps cap and a JPEG quality."""

    name: str
    width: int | None = None  # None: as wide as the camera's full stream (never wider)
    fps: float | None = None  # None: every frame the camera keeps
    quality: int | None = None  # None: 80 (for full: the camera's own JPEGs where it sends JPEG)


@dataclass(frozen=True)
class MotionConfig:
    """A camera's motion detector, as ``[cameras.ID.motion]`` sets it."""

    enabled: bool = False
    fps: float = 5.0  # pictures analysed a second, whether or not anyone watches
    threshold: int = 25  # how much a pixel's brightness must change (0-255) to count as changed
    area: float = 0.01  # how much of the picture (0-1) must change for motion
    duration: float = 0.2  # seconds motion must go on before an event starts
    end_after: float = 5.0  # seconds without motion before the event ends
    recalibrate: float = 0.6  # a change of more of the picture than this at once (lights on)
    # is a new background, not motion
    ignore: tuple[tuple[float, float, float, float], ...] = ()  # areas left out: x0, y0, x1, y1 (0-1)


FULL = "full"
# Built-in profiles besides ``full`` (whose width, fps and quality are the camera's own keys).
BUILTIN_PROFILES: dict[str, dict[str, Any]] = {"preview": {"width": 320, "fps": 5.0, "quality": 60}}
PROFILE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class CameraConfig:
    """One camera's validated settings."""

    id: int
    source: SourceSpec
    name: str
    width: int | None = None
    fps: float | None = None
    quality: int | None = None  # None: the camera's own JPEGs when it sends JPEG, else 80
    rotate: int = 0
    autostart: bool = False
    loop: bool = True
    size: tuple[int, int] | None = None  # the capture mode asked of a device; None: its largest
    tls_verify: bool = False  # an https camera must show a certificate the system trusts
    # Its stream profiles by name: ``full`` first (made from width, fps and quality), then
    # the built-in ``preview`` and any others, as configured globally and for the camera.
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    motion: MotionConfig = MotionConfig()

    def __post_init__(self) -> None:
        profiles = {FULL: Profile(FULL, self.width, self.fps, self.quality)}
        for name, options in BUILTIN_PROFILES.items():
            profiles[name] = Profile(name, **options)
        profiles.update({name: p for name, p in self.profiles.items() if name != FULL})
        object.__setattr__(self, "profiles", profiles)


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration."""

    cameras: dict[int, CameraConfig]
    bind: str = DEFAULT_BIND
    threads: int = DEFAULT_THREADS
    proxy_hops: int = 0  # how many reverse proxies in front of livecam set X-Forwarded-*
    send_timeout: int = 20  # seconds a stream viewer may take to accept one frame
    control_token: str | None = None
    view_token: str | None = None
    secret_key: str | None = None  # signs the login session; made and kept if not given
    allow_origins: tuple[str, ...] = ()  # other sites allowed to embed streams and snapshots
    trusted_hosts: tuple[str, ...] = ()  # host names answered besides IP literals, localhost, this host
    state_dir: str | None = None
    max_frame_mb: int = DEFAULT_MAX_FRAME_MB  # a camera's frame larger than this is dropped
    media_dir: str | None = None  # files a camera added at run time may play; none: no file
    bus: str | None = None  # nats://HOST:4222 (or tls://): bus mode; None: one process
    bus_creds: str | None = None  # a NATS .creds file or a user nkey seed file for the frame bus
    bus_prefix: str = "livecam"  # the subjects' prefix (not isolation: a site is a NATS account)
    workers: int = 1  # gunicorn workers: more than one only in bus mode
    mqtt_url: MqttBroker | None = None  # where the cameras' states and events go, for Home Assistant
    mqtt_control: bool = False  # cameras switched from MQTT (whoever may publish there may switch)
    mqtt_prefix: str = "livecam"  # livecam's MQTT topics' first levels
    mqtt_discovery: str = "homeassistant"  # Home Assistant's discovery prefix
    discovered: bool = False  # cameras came from device discovery, not configuration
    # [profiles.NAME] tables for every camera, as validated (each keeps only the keys it sets)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Each camera's table as configured (the TOML's keys), for a change made at run time
    tables: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    webhook_url: tuple[str, ...] = ()  # receivers every event is POSTed to (webhooks.py)
    webhook_secret: str | None = None  # signs each webhook delivery (HMAC-SHA256)


def parse_source(value: Any, key: str) -> SourceSpec:
    """Turn a configured source (index, URL, path or testsrc spec) into a SourceSpec."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{key}: must be a device index, URL, file path or testsrc")
    index = value if isinstance(value, int) else parse_int(value.strip())
    if index is not None:
        if not 0 <= index < 1024:
            raise ConfigError(f"{key}: device index must be 0-1023, got {index}")
        return SourceSpec("device", index)
    text = value.strip()
    if not text:
        raise ConfigError(f"{key}: must not be empty")
    if text.startswith("testsrc"):
        match = TESTSRC_RE.match(text)
        if not match:
            raise ConfigError(f"{key}: expected testsrc or testsrc:WIDTHxHEIGHT@FPS, got {text!r}")
        width, height, fps = match.groups()
        spec = SourceSpec(
            "testsrc",
            "",
            int(width) if width else 640,
            int(height) if height else 480,
            float(fps) if fps else 15.0,
        )
        if not (16 <= spec.width <= 7680 and 16 <= spec.height <= 4320):
            raise ConfigError(f"{key}: test pattern size must be 16x16 to 7680x4320")
        if not 0 < spec.fps <= 120:
            raise ConfigError(f"{key}: test pattern fps must be above 0 and at most 120")
        return spec
    if "://" in text:
        _check_url(text, key)
        return SourceSpec("url", text)
    if DEVICE_PATH_RE.match(text):
        return SourceSpec("device", text)
    return SourceSpec("file", text)


# What a character typed in a URL's password must be written as, where every reader of the
# URL (FFmpeg, VLC, livecam's HTTP reader) takes it for the end of the host part.
ENDS_HOST = {"/": "%2F", "?": "%3F", "#": "%23"}


def _check_url(text: str, key: str) -> None:
    """Refuse a URL whose host part, read as FFmpeg and livecam read it, is no host and port.

    An "@" or "[" typed in a password is fine (the userinfo ends at the last "@" before the
    host), but a "/", "?" or "#" ends the host part for every reader: "user:pa" would be a
    host and a port, the rest of the password a path. Guessing instead where the password
    ends would send an "@" of a path or query (``?email=a@b``) to the wrong host. Messages
    show the URL masked: its text may be all password.
    """
    parts = split_url(text)
    if parts is None:
        return
    problem = _host_problem(parts.host)
    if problem is None:
        return
    # The password as redaction.py finds it (up to the URL's last "@"): what cut it short?
    typed = [c for c in ENDS_HOST if c in text.partition("://")[2].rpartition("@")[0]]
    if typed and "@" in parts.rest:
        names = " and ".join(f"'{c}'" for c in typed)
        codes = " and ".join(ENDS_HOST[c] for c in typed)
        verb, them = ("ends", "it") if len(typed) == 1 else ("end", "them")
        raise ConfigError(
            f"{key}: {redact(text)}: {names} typed in its password (or user name) {verb} the host "
            f"part for every reader: percent-encode {them} as {codes}"
        )
    raise ConfigError(f"{key}: {redact(text)} {problem}")


def _host_problem(host: str) -> str | None:
    """What is wrong with a URL's host part (``host``, ``host:port``, ``[v6]:port``), or None."""
    if host.startswith("["):
        address, closed, after = host[1:].partition("]")
        if not closed:
            return "opens an IPv6 address with '[' and never closes it (write [::1]:8080)"
        if "[" in address or (after and not after.startswith(":")):
            return "has a host that is not a bracketed IPv6 address"
        port = after[1:] if after else None
    else:
        if "[" in host or "]" in host:
            return "has '[' or ']' in its host, where only an IPv6 address in brackets may"
        name, colon, port_text = host.rpartition(":")
        if ":" in name:
            return "has an IPv6 address without brackets (write [::1]:8080)"
        port = port_text if colon else None
    if port is not None and not 1 <= (parse_int(port) or 0) <= 65535:
        # The port's text is not shown: where a URL is mangled it may be part of a password.
        return "names a port that is not one from 1 to 65535"
    return None


Check = Callable[[str, Any], Any]  # (label, value) -> the validated value, or ConfigError


def _integer(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be from {low} to {high}, got {value}")
    return value


def _between(low: int, high: int) -> Check:
    """An integer from ``low`` to ``high`` (a TOML integer)."""
    return lambda label, value: _integer(value, label, low, high)


def _count(low: int, high: int) -> Check:
    """An integer from ``low`` to ``high``, from TOML or from the environment's text."""

    def check(label: str, value: Any) -> int:
        if isinstance(value, str):
            number = parse_int(value.strip())
            if number is None:
                raise ConfigError(f"{label}: must be an integer, got {value!r}")
            value = number
        return _integer(value, label, low, high)

    return check


def _text(label: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{label}: must be a non-empty string")
    return value.strip()


def _secret(label: str, value: Any) -> str:
    text = _text(label, value)
    if len(text) < 8:
        raise ConfigError(f"{label}: must be at least 8 characters")
    return text


def _flag(label: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{label}: must be true or false, got {value!r}")
    return value


def _rate(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{label}: must be a number, got {value!r}")
    if not 0 < value <= 120:
        raise ConfigError(f"{label}: must be above 0 and at most 120, got {value}")
    return float(value)


def _rotation(label: str, value: Any) -> int:
    if isinstance(value, bool) or value not in ROTATIONS:
        raise ConfigError(f"{label}: must be one of 0, 90, 180, 270, got {value!r}")
    return value


def _size(label: str, value: Any) -> tuple[int, int]:
    match = SIZE_RE.match(value) if isinstance(value, str) else None
    if not match or not (16 <= int(match[1]) <= 7680 and 16 <= int(match[2]) <= 4320):
        raise ConfigError(f"{label}: expected WIDTHxHEIGHT from 16x16 to 7680x4320, got {value!r}")
    return int(match[1]), int(match[2])


def _name(label: str, value: Any) -> str:
    # Printable as the frame bus requires of a record's name (wire.py): a name with a newline or
    # an escape would forge log lines, and in bus mode its camera could never be shown.
    if not isinstance(value, str) or not value.strip() or len(value) > 64 or not value.isprintable():
        raise ConfigError(f"{label}: must be a non-empty string of at most 64 printable characters")
    return value.strip()


# A profile table's keys: ``[profiles.NAME]`` for every camera, ``[cameras.ID.profiles.NAME]``
# for one.
PROFILE_CHECKS: dict[str, Check] = {"width": _between(16, 7680), "fps": _rate, "quality": _between(1, 100)}


def _profiles(label: str, value: Any) -> dict[str, dict[str, Any]]:
    """Validate a table of profile tables; each keeps only the keys it sets."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{label}: must be a table of profiles ([profiles.NAME] in the TOML file)")
    tables: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        key = f"{label}.{name}"
        if not isinstance(name, str) or not PROFILE_NAME_RE.match(name):
            raise ConfigError(
                f"{key}: a profile name is a lowercase letter then up to 31 letters, digits, - or _"
            )
        if not isinstance(table, Mapping):
            raise ConfigError(f"{key}: must be a table")
        for option in table:
            if option not in PROFILE_CHECKS:
                raise ConfigError(f"{key}.{option}: unknown key (a profile has width, fps and quality)")
        tables[name] = {option: PROFILE_CHECKS[option](f"{key}.{option}", v) for option, v in table.items()}
    return tables


def _camera_profiles(
    shared: Mapping[str, Mapping[str, Any]], own: Mapping[str, Mapping[str, Any]], full: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Profile]]:
    """A camera's profiles: built in, then the global tables, then its own, key by key.

    The camera's own width, fps and quality keys are its ``full`` profile and win over any
    ``[profiles.full]``. Returns the full profile's keys and every other profile.
    """
    merged: dict[str, dict[str, Any]] = {FULL: {}, **{n: dict(o) for n, o in BUILTIN_PROFILES.items()}}
    for layer in (shared, own):
        for name, options in layer.items():
            merged.setdefault(name, {}).update(options)
    full_keys = {**merged.pop(FULL), **full}
    return full_keys, {name: Profile(name, **options) for name, options in merged.items()}


def _fraction(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{label}: must be a number from 0 to 1, got {value!r}")
    return float(value)


def _seconds(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
        raise ConfigError(f"{label}: must be a number of seconds from 0 to 3600, got {value!r}")
    return float(value)


def _areas(label: str, value: Any) -> tuple[tuple[float, float, float, float], ...]:
    """Areas as [x0, y0, x1, y1] lists in relative coordinates, 0 to 1, x0 < x1 and y0 < y1."""
    shape = f"{label}: must be a list of [x0, y0, x1, y1] areas, each number from 0 to 1"
    if not isinstance(value, list):
        raise ConfigError(shape)
    areas = []
    for i, area in enumerate(value):
        if not isinstance(area, list) or len(area) != 4:
            raise ConfigError(shape)
        x0, y0, x1, y1 = (_fraction(f"{label}[{i}]", number) for number in area)
        if not (x0 < x1 and y0 < y1):
            raise ConfigError(f"{label}[{i}]: x0 must be left of x1 and y0 above y1, got {area}")
        areas.append((x0, y0, x1, y1))
    return tuple(areas)


# ``[cameras.ID.motion]``: the detector's knobs.
MOTION_CHECKS: dict[str, Check] = {
    "enabled": _flag,
    "fps": _rate,
    "threshold": _between(1, 255),
    "area": _fraction,
    "duration": _seconds,
    "end_after": _seconds,
    "recalibrate": _fraction,
    "ignore": _areas,
}


def _motion(label: str, value: Any) -> MotionConfig:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{label}: must be a table ([cameras.ID.motion] in the TOML file)")
    for option in value:
        if option not in MOTION_CHECKS:
            known = ", ".join(MOTION_CHECKS)
            raise ConfigError(f"{label}.{option}: unknown key (motion has {known})")
    return MotionConfig(
        **{option: MOTION_CHECKS[option](f"{label}.{option}", v) for option, v in value.items()}
    )


# A camera table's keys besides ``source``: a new camera setting is one line here (and a
# CameraConfig field with its default).
CAMERA_CHECKS: dict[str, Check] = {
    "name": _name,
    "size": _size,
    "width": _between(16, 7680),
    "fps": _rate,
    "quality": _between(1, 100),
    "rotate": _rotation,
    "autostart": _flag,
    "loop": _flag,
    "tls_verify": _flag,
    "profiles": _profiles,
    "motion": _motion,
}
CAMERA_KEYS = ("source", *CAMERA_CHECKS)


def _camera(
    cam_id: int, table: Mapping[str, Any], key: str, shared: Mapping[str, Mapping[str, Any]]
) -> CameraConfig:
    """Validate one ``[cameras.ID]`` table; ``shared`` are the global profile tables."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{key}: must be a table")
    for name in table:
        if name not in CAMERA_KEYS:
            raise ConfigError(f"{key}.{name}: unknown key")
    source = parse_source(table.get("source", cam_id), f"{key}.source")
    options = {
        name: CAMERA_CHECKS[name](f"{key}.{name}", value) for name, value in table.items() if name != "source"
    }
    options.setdefault("name", "Test pattern" if source.kind == "testsrc" else f"Camera {cam_id}")
    own = {name: options.pop(name) for name in ("width", "fps", "quality") if name in options}
    full, profiles = _camera_profiles(shared, options.pop("profiles", {}), own)
    return CameraConfig(id=cam_id, source=source, profiles=profiles, **options, **full)


def camera_config(cam_id: int, table: Mapping[str, Any], settings: Settings, key: str) -> CameraConfig:
    """One camera table validated as the configuration file's ``[cameras.ID]`` would be, with
    the settings' global profiles (a camera added or changed at run time).

    :raise ConfigError: the same one-line message as at startup, naming ``key``.
    """
    return _camera(cam_id, table, key, settings.profiles)


def _camera_id(raw: Any, key: str) -> int:
    text = str(raw).strip()
    cam_id = parse_int(text, 6)
    if cam_id is None:
        if len(text) > 12 or any(c in text for c in "@/:?#"):
            # Never echoed: a comma inside a camera URL splits it here, password and all.
            raise ConfigError(
                f"{key}: an entry is not ID=SOURCE (a comma inside a camera URL? write it as %2C, "
                "or put the camera in the TOML file)"
            )
        raise ConfigError(f"{key}: camera id must be an integer from 0 to 999999, got {raw!r}")
    return cam_id


def parse_camera_list(text: str, key: str = "LIVECAM_CAMERAS") -> dict[int, Any]:
    """Parse ``0,5=rtsp://host/s,6=testsrc`` into ``{id: source}``."""
    result: dict[int, Any] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        raw_id, sep, source = entry.partition("=")
        cam_id = _camera_id(raw_id, key)
        if cam_id in result:
            raise ConfigError(f"{key}: duplicate camera id {cam_id}")
        result[cam_id] = source.strip() if sep else cam_id
    if not result:
        raise ConfigError(f"{key}: names no camera")
    return result


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the TOML configuration file, turning every failure into a ConfigError."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"LIVECAM_CONFIG: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"LIVECAM_CONFIG: {path} is not valid TOML: {exc}") from None


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect ``LIVECAM_*`` variables as settings; unknown ones are logged, not fatal."""
    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key in TOP_KEYS:
            layer[key] = value
        elif key not in ENV_ONLY:
            layer.setdefault("_unknown", []).append(name)
    return layer


def _merge_cameras(base: Mapping[str, Any], override: Any, key: str) -> dict[str, Any]:
    """Apply a camera layer: a list string (env) picks cameras and sources, a table replaces."""
    if isinstance(override, str):
        chosen = parse_camera_list(override, key)
        tables = {}
        for cam_id, source in chosen.items():
            table = dict(base.get(str(cam_id), {}))
            table["source"] = source
            tables[str(cam_id)] = table
        return tables
    if not isinstance(override, Mapping):
        raise ConfigError(f"{key}: must be a table of cameras or a comma list")
    return {str(k): v for k, v in override.items()}


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    discover: Any = None,
) -> Settings:
    """Build validated Settings from file, environment and overrides, in that order."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    cameras: dict[str, Any] | None = None
    layers: list[tuple[str, Mapping[str, Any]]] = []
    path = (overrides or {}).get("config_file") or environ.get("LIVECAM_CONFIG")
    if path:
        layers.append(("", read_toml(path)))
    env = _env_layer(environ)
    for name in env.pop("_unknown", []):
        log.warning("ignoring unknown environment variable %s", name)
    layers.append(("LIVECAM_", env))
    if overrides:
        layers.append(("", {k: v for k, v in overrides.items() if k != "config_file"}))
    for prefix, layer in layers:
        for key, value in layer.items():
            label = f"{prefix}{key.upper()}" if prefix else key
            if key not in TOP_KEYS:
                raise ConfigError(f"{label}: unknown key")
            if key == "cameras":
                cameras = _merge_cameras(cameras or {}, value, label)
            else:
                merged[key] = (label, value)
    return _validate(merged, cameras, discover)


def _validate(merged: dict[str, Any], cameras: dict[str, Any] | None, discover: Any) -> Settings:
    values = {key: SETTING_CHECKS[key](label, value) for key, (label, value) in merged.items()}
    discovered = cameras is None
    if cameras is None:
        cameras = _discovered_cameras(discover, state_directory(Settings({}, **values)))
    configs: dict[int, CameraConfig] = {}
    tables: dict[int, Mapping[str, Any]] = {}
    # Each device by its real node: 0, /dev/video0 and a by-id link to it are one camera.
    devices: dict[str, CameraConfig] = {}
    for raw_id, table in cameras.items():
        cam_id = _camera_id(raw_id, f"cameras.{raw_id}")
        if cam_id in configs:
            raise ConfigError(f"cameras.{raw_id}: duplicate camera id {cam_id}")
        camera = _camera(cam_id, table, f"cameras.{raw_id}", values.get("profiles", {}))
        if camera.source.kind == "device":
            target, real = camera.source.target, device_path(camera.source.target)
            other = devices.setdefault(real, camera)
            if other is not camera:
                same = "" if other.source.target == target else f" ({other.source.target}, both {real})"
                raise ConfigError(
                    f"cameras.{raw_id}.source: device {target} is already camera {other.id}{same}"
                )
        configs[cam_id] = camera
        tables[cam_id] = dict(table) if isinstance(table, Mapping) else {"source": table}
    return Settings(cameras=dict(sorted(configs.items())), discovered=discovered, tables=tables, **values)


def _origins(label: str, value: Any) -> tuple[str, ...]:
    """Validate a list of origins (``https://host[:port]``), from a comma list or a TOML array."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{label}: must be a comma list or an array of origins")
    origins = []
    for item in items:
        text = item.strip().rstrip("/").lower() if isinstance(item, str) else ""
        if not re.fullmatch(r"https?://[a-z0-9.\-\[\]:]+", text):
            raise ConfigError(f"{label}: {item!r} is not an origin like https://example.org")
        origins.append(text)
    return tuple(origins)


def _hosts(label: str, value: Any) -> tuple[str, ...]:
    """Validate host names (``cams.example``, ``.example`` for every subdomain, ``*`` for any)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{label}: must be a comma list or an array of host names")
    hosts = []
    for item in items:
        text = item.strip().lower() if isinstance(item, str) else ""
        if text != "*" and not re.fullmatch(r"\.?[a-z0-9_]([a-z0-9_.\-]*[a-z0-9_])?", text):
            raise ConfigError(f"{label}: {item!r} is not a host name like cams.example (no scheme or port)")
        hosts.append(text)
    return tuple(hosts)


def _bus_url(label: str, value: Any) -> str:
    text = _text(label, value)
    if not re.fullmatch(r"(nats|tls)://\S+", text):
        raise ConfigError(f"{label}: expected nats://HOST:PORT or tls://HOST:PORT, got {redact(text)!r}")
    port = url_port(text)
    if port and not 1 <= (parse_int(port) or 0) <= 65535:
        raise ConfigError(f"{label}: {redact(text)} names a port that is not one from 1 to 65535")
    return text


# A NATS .creds file holds the user's JWT and nkey seed, each alone on the line after the
# first line naming it (found as nats-py finds them).
CREDS_JWT, CREDS_SEED = b"BEGIN NATS USER JWT", b"BEGIN USER NKEY SEED"
CREDS_LIMIT = 64 * 1024  # a .creds file is about 1 KB
JWT_RE = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _user_seed(text: bytes) -> bool:
    """Whether ``text`` is exactly a user's nkey seed: SU, then base32 with a valid CRC16."""
    if not re.fullmatch(rb"SU[A-Z2-7]{56}", text):
        return False
    import nkeys  # here: only bus mode needs it

    raw = base64.b32decode(text + b"======")
    return nkeys.crc16(bytearray(raw[:-2])) == int.from_bytes(raw[-2:], "little")


def creds_line(data: bytes, marker: bytes) -> bytes | None:
    """The line after the first one holding ``marker``, as nats-py reads it: up to the next
    newline, less one character (so a Windows line end leaves a "\\r" that spoils it)."""
    lines = data.split(b"\n")
    at = next((i + 1 for i, line in enumerate(lines) if marker in line), len(lines))
    return lines[at] if at + 1 < len(lines) else None  # None too without a newline after it


def bus_creds_kind(path: str, label: str = "LIVECAM_BUS_CREDS") -> str:
    """What the frame bus's credentials file holds: ``"creds"`` (a NATS .creds file, a user
    JWT with its nkey seed) or ``"seed"`` (a user nkey seed alone).

    :raise ConfigError: it cannot be read or holds neither; its content is never shown.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(CREDS_LIMIT + 1)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror}") from None
    if len(data) > CREDS_LIMIT:
        raise ConfigError(f"{label}: {path} is larger than NATS credentials ever are (64 KB)")
    if CREDS_JWT in data:
        jwt, seed = creds_line(data, CREDS_JWT), creds_line(data, CREDS_SEED)
        if jwt is None or seed is None or not JWT_RE.fullmatch(jwt) or not _user_seed(seed):
            raise ConfigError(
                f"{label}: {path} is not a valid NATS .creds file (a user JWT and a user nkey seed, "
                "each alone on the line after its BEGIN line)"
            )
        return "creds"
    if _user_seed(data.strip()):
        return "seed"
    raise ConfigError(f"{label}: {path} is neither a NATS .creds file nor a user nkey seed (SU...)")


def _bus_creds(label: str, value: Any) -> str:
    path = _text(label, value)
    bus_creds_kind(path, label)
    return path


def _subject_token(label: str, value: Any) -> str:
    text = _text(label, value)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise ConfigError(f"{label}: must be letters, digits, - and _ (a NATS subject token), got {text!r}")
    return text


@dataclass(frozen=True)
class MqttBroker:
    """An MQTT broker, as ``mqtt://USER:PASSWORD@HOST:PORT`` (or ``mqtts://``) names it."""

    tls: bool
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    shown: str = ""  # the URL with its password masked, for the log and check-config

    def __str__(self) -> str:
        return self.shown


# scheme, then anything up to the LAST "@" as the user and password (a password may hold "@"),
# then a host name, an IPv4 address or a bracketed IPv6 one, and an optional port.
MQTT_URL_RE = re.compile(
    r"(?P<scheme>mqtts?)://(?:(?P<userinfo>.*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?/?"  # [0-9], not \d: int() would read "٣" as 3
)


def parse_mqtt_url(label: str, value: Any) -> MqttBroker:
    """Split an MQTT URL into a broker; user and password are percent-decoded, as in any URL.

    :raise ConfigError: it is not one; the message never shows the password.
    """
    text = _text(label, value)
    match = MQTT_URL_RE.fullmatch(text)
    if not match:
        # Not echoed: a URL too mangled to parse may not be masked right (no "@" after a password).
        raise ConfigError(f"{label}: expected mqtt://[USER:PASSWORD@]HOST[:PORT] or mqtts://... (not shown)")
    scheme, userinfo, port = match["scheme"], match["userinfo"], match["port"]
    number = int(port) if port else (8883 if scheme == "mqtts" else 1883)
    if not 1 <= number <= 65535:
        raise ConfigError(f"{label}: {redact(text)} names a port that is not one from 1 to 65535")
    user = password = None
    if userinfo is not None:
        user, colon, secret = userinfo.partition(":")
        user, password = unquote(user) or None, unquote(secret) if colon else None
    if password is not None and user is None:
        # MQTT sends a password only with a user name: brokers refuse one alone.
        raise ConfigError(f"{label}: {redact(text)} has a password but no user name")
    host = match["host"].strip("[]")
    return MqttBroker(scheme == "mqtts", host, number, user, password, redact(text))


def _mqtt_topic(label: str, value: Any) -> str:
    """Validate a topic prefix: levels split by "/", none empty, no wildcard, not a $ topic."""
    text = _text(label, value)
    bad = any(not level or set(level) & set("+#\0") for level in text.split("/"))
    if len(text) > 128 or text.startswith("$") or bad:
        raise ConfigError(
            f"{label}: must be MQTT topic levels (home/livecam): none empty, no + or #, not starting with $"
        )
    return text


FLAG_WORDS = {
    **dict.fromkeys(("true", "1", "yes", "on"), True),
    **dict.fromkeys(("false", "0", "no", "off"), False),
}


def _env_flag(label: str, value: Any) -> bool:
    """A flag from TOML (true/false) or from the environment's text (true, 1, yes, on...)."""
    if isinstance(value, str) and value.strip().lower() in FLAG_WORDS:
        return FLAG_WORDS[value.strip().lower()]
    return _flag(label, value)


MAX_WEBHOOKS = 16  # a thread each


def _webhook_urls(label: str, value: Any) -> tuple[str, ...]:
    """Validate webhook receivers' http(s) URLs, from a comma list or a TOML array."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{label}: must be a comma list or an array of http(s) URLs")
    urls: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{label}: {item!r} is not an http(s) URL")
        text = item.strip()
        if not text and isinstance(value, str):
            continue  # "a,,b" or a trailing comma
        # Only the masked URL is ever shown: it may carry a password, or a secret in its path.
        shown = redact_endpoint(text)
        if not re.match(r"(?i)https?://", text):
            raise ConfigError(f"{label}: {shown!r} is not an http:// or https:// URL")
        if re.search(r"[\x00-\x20\x7f]", text):
            raise ConfigError(f"{label}: {shown!r} holds a space or control character (write it %20)")
        if "#" in text:
            raise ConfigError(f"{label}: {shown} holds a '#' (in a password it is written %23)")
        parts = urllib.parse.urlsplit(text)
        try:
            port = parts.port  # None when the URL names none
        except ValueError:  # not a number, or past 65535
            port = 0
        if not parts.hostname or port == 0:
            raise ConfigError(
                f"{label}: {shown} names no valid host and port (a '/' or '?' in a user name or "
                "password is written %2F or %3F; a port is 1 to 65535)"
            )
        if text in urls:
            raise ConfigError(f"{label}: {shown} is named twice")
        urls.append(text)
    if not urls:
        raise ConfigError(f"{label}: names no URL")
    if len(urls) > MAX_WEBHOOKS:
        raise ConfigError(f"{label}: at most {MAX_WEBHOOKS} URLs, got {len(urls)}")
    return tuple(urls)


# Every top-level setting (LIVECAM_<NAME> in the environment) but ``cameras``: a new setting
# is one line here (and a Settings field with its default).
SETTING_CHECKS: dict[str, Check] = {
    "bind": _text,
    "threads": _count(4, 4096),
    "proxy_hops": _count(0, 10),
    "send_timeout": _count(1, 3600),
    "control_token": _secret,
    "view_token": _secret,
    "secret_key": _secret,
    "allow_origins": _origins,
    "trusted_hosts": _hosts,
    "state_dir": _text,
    "max_frame_mb": _count(1, 1024),
    "media_dir": _text,
    "bus": _bus_url,
    "bus_creds": _bus_creds,
    "bus_prefix": _subject_token,
    "workers": _count(1, 64),
    "mqtt_url": parse_mqtt_url,
    "mqtt_control": _env_flag,
    "mqtt_prefix": _mqtt_topic,
    "mqtt_discovery": _mqtt_topic,
    "profiles": _profiles,
    "webhook_url": _webhook_urls,
    "webhook_secret": _secret,
}
TOP_KEYS = ("cameras", *SETTING_CHECKS)


def _discovered_cameras(discover: Any, state_dir: Path) -> dict[str, Any]:
    """Zero configuration: every V4L2 capture device, else one test pattern, all autostarted.

    A device is captured by its stable path (/dev/v4l/by-id or by-path) where udev made one,
    and keeps its camera id, remembered in the state directory, when USB order changes; so
    its remembered on/off switch stays its own. ``discover`` may return bare indexes (tests).
    """
    found = (discover or list_devices)()
    if not found:
        return {"0": {"source": "testsrc", "autostart": True}}
    devices = [d if isinstance(d, Device) else Device(d, f"/dev/video{d}", "", None) for d in found]
    remembered = load_device_ids(state_dir)
    try:
        removed = read_runtime(state_dir)[1]
    except (OSError, ValueError, TypeError, AttributeError):
        removed = set()  # the catalog says why when it loads
    ids = assign_ids(devices, remembered, reserved=removed)
    learned = {**remembered, **{device.stable: cam_id for cam_id, device in ids.items() if device.stable}}
    if learned != remembered:
        save_device_ids(state_dir, learned)
    return {str(cam_id): discovered_table(device) for cam_id, device in ids.items()}


def discovered_table(device: Device) -> dict[str, Any]:
    """A discovered device's camera table: captured by its stable path (else its index), autostarted."""
    return {"source": device.stable or device.index, "autostart": True}


def beyond_loopback(binds: list[str]) -> list[str]:
    """The gunicorn bind addresses that other machines can reach."""
    local = ("127.", "localhost:", "[::1]:", "unix:")
    return [address for address in binds if not address.startswith(local)]


def unguarded(settings: Settings, binds: list[str]) -> str | None:
    """Where others may reach a livecam that has no token (for a loud warning), or None: the
    addresses beyond loopback it listens on, or the proxy in front of it, which gunicorn's
    own loopback bind does not show."""
    if settings.view_token or settings.control_token:
        return None
    exposed = beyond_loopback(binds)
    if exposed:
        return "listening on " + ", ".join(exposed)
    if settings.proxy_hops:
        return f"behind a proxy (LIVECAM_PROXY_HOPS={settings.proxy_hops})"
    return None


def state_directory(settings: Settings) -> Path:
    """Where livecam keeps state: the setting, else $XDG_STATE_HOME/livecam or ~/.local/state."""
    if settings.state_dir:
        return Path(settings.state_dir)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "livecam"


# The settings page (docs/configuration.md) is rendered from the tables above and the words
# below: a key without its words, or words for a key that is gone, stops the rendering.


@dataclass(frozen=True)
class KeyDoc:
    """What the settings page says of one key."""

    meaning: str
    default: str | None = None  # the default in words, where the field's own value says too little
    env: bool = True  # settable from the environment (a table is not)


SETTING_DOCS: dict[str, KeyDoc] = {
    "bind": KeyDoc("the address gunicorn listens on (`--bind` overrides it)"),
    "threads": KeyDoc(
        "gunicorn threads. A viewer of a camera's stream holds none under gunicorn on plain HTTP "
        "(the sender takes its connection over, up to 4096 such viewers); a stream written by a "
        "request's own thread (the dashboard's, any over TLS straight to gunicorn) holds one, all "
        "threads but 16 being for them (a quarter kept back below 64); one more gets a 503 with "
        "`Retry-After`"
    ),
    "proxy_hops": KeyDoc(
        "how many reverse proxies in front of livecam set `X-Forwarded-*` headers to trust "
        "([Deployment](deployment.md))"
    ),
    "send_timeout": KeyDoc("seconds a viewer may take to accept one frame before it is cut off"),
    "control_token": KeyDoc("when set, switching and changing cameras needs it ([Security](security.md))"),
    "view_token": KeyDoc(
        "when set, every route but `/healthz`, the login and logout routes and static files needs it "
        "([Security](security.md))"
    ),
    "secret_key": KeyDoc(
        "signs the login session cookie; in bus mode with a token, required and the same on every "
        "web host ([Security](security.md))",
        default="made once, kept in the state directory",
    ),
    "allow_origins": KeyDoc(
        "other sites (`https://intranet.example`) whose pages may embed streams and snapshots "
        "(never switch cameras); a comma list or a TOML array"
    ),
    "trusted_hosts": KeyDoc(
        "the other host names livecam answers to (`cams.example.org`, `.home.arpa` for every name "
        "under it, `*` for any); a request for any other name gets 400 ([Security](security.md))",
        default="IP addresses, `localhost`, this machine's name and `NAME.local`",
    ),
    "state_dir": KeyDoc(
        "where livecam keeps which cameras are on, the cameras changed at run time and the "
        "discovered devices' ids",
        default="`$XDG_STATE_HOME/livecam`, else `~/.local/state/livecam`",
    ),
    "max_frame_mb": KeyDoc(
        "a camera's frame larger than this many MB is dropped without being kept in memory, and counted"
    ),
    "media_dir": KeyDoc(
        "the only directory a camera added at run time may play files from "
        "([Cameras](cameras.md#cameras-at-run-time))",
        default="none: no file",
    ),
    "bus": KeyDoc(
        "`nats://HOST:4222` (or `tls://`, credentials in the URL): bus mode ([Scaling out](scaling.md))",
        default="none: one process",
    ),
    "bus_creds": KeyDoc(
        "a file for a NATS that asks for credentials: a `.creds` file or a user's nkey seed alone "
        "(`SU...`); checked at startup, never logged ([Scaling out](scaling.md))"
    ),
    "bus_prefix": KeyDoc(
        "the NATS subjects' prefix (a site of its own on a shared NATS is an account: "
        "[Scaling out](scaling.md))"
    ),
    "workers": KeyDoc("gunicorn workers; more than one only in bus mode"),
    "mqtt_url": KeyDoc(
        "`mqtt://USER:PASSWORD@HOST:1883` (or `mqtts://`, port 8883 by default, the broker's "
        "certificate checked against the system's trust): states, motion and pictures on MQTT, for "
        "Home Assistant ([Events](events.md)); the password is never shown or logged"
    ),
    "mqtt_control": KeyDoc(
        "`ON`/`OFF` sent to a camera's command topic switches it; whoever may publish there may switch"
    ),
    "mqtt_prefix": KeyDoc("the first levels of livecam's MQTT topics (`home/livecam`)"),
    "mqtt_discovery": KeyDoc("Home Assistant's MQTT discovery prefix"),
    "profiles": KeyDoc(
        "`[profiles.NAME]` tables: stream profiles for every camera (below)", default="none", env=False
    ),
    "webhook_url": KeyDoc(
        "http(s) URLs every event is POSTed to as JSON ([Events](events.md#webhooks)); a comma list "
        "or a TOML array"
    ),
    "webhook_secret": KeyDoc("signs each webhook POST (`X-Livecam-Signature`); never logged"),
}

CAMERA_DOCS: dict[str, KeyDoc] = {
    "source": KeyDoc(
        "a device index (`0`), a device path (`/dev/v4l/by-id/...`), a URL FFmpeg or livecam reads "
        "(`http`, `https`, `rtsp`...), a video file, or `testsrc[:WIDTHxHEIGHT[@FPS]]` "
        "(640x480@15 by default)",
        default="the camera's id, as a device index",
    ),
    "name": KeyDoc("the name shown", default="`Camera ID`, or `Test pattern`"),
    "size": KeyDoc(
        "the capture mode asked of a webcam ([Cameras](cameras.md#webcams))",
        default="its largest, MJPG preferred",
    ),
    "width": KeyDoc("resize of the full stream, keeping the aspect ratio", default="native"),
    "fps": KeyDoc("cap on the full stream's rate (frames beyond it dropped)", default="the source's rate"),
    "quality": KeyDoc("JPEG quality of the full stream", default="the camera's own JPEGs, else 80"),
    "rotate": KeyDoc("clockwise rotation"),
    "autostart": KeyDoc(
        "start capturing at startup (cameras livecam finds on its own always do)",
    ),
    "loop": KeyDoc("a file plays again from the start; `false`: once, then the camera switches off"),
    "tls_verify": KeyDoc(
        "an `https` camera must show a certificate the system trusts (cameras ship self-signed ones)"
    ),
    "profiles": KeyDoc("`[cameras.ID.profiles.NAME]`: this camera's own stream profiles", default="none"),
    "motion": KeyDoc("`[cameras.ID.motion]`: motion detection (below)", default="off"),
}

PROFILE_DOCS: dict[str, KeyDoc] = {
    "width": KeyDoc("the width, never wider than the full stream", default="as wide as the full stream"),
    "fps": KeyDoc("cap on the rate, at most the camera's own", default="every frame the camera keeps"),
    "quality": KeyDoc("JPEG quality", default="80"),
}

MOTION_DOCS: dict[str, KeyDoc] = {
    "enabled": KeyDoc("turns motion detection on"),
    "fps": KeyDoc("pictures analysed a second, whether or not anyone watches"),
    "threshold": KeyDoc("how much a pixel's brightness (0-255) must change to count"),
    "area": KeyDoc("how much of the picture must change for motion"),
    "duration": KeyDoc("seconds motion must go on before an event starts"),
    "end_after": KeyDoc("seconds without motion before the event ends"),
    "recalibrate": KeyDoc("more of the picture than this changing at once (lights on) is a new background"),
    "ignore": KeyDoc(
        "areas left out, `[[x0, y0, x1, y1], ...]` from the top left, each 0 to 1 "
        "(a timestamp overlay, a tree)"
    ),
}

_VALUES: dict[Any, str] = {
    _text: "text",
    _secret: "text, 8 characters or more",
    _flag: "`true` or `false`",
    _env_flag: "`true` or `false` (also `1`, `yes`, `on`, `0`, `no`, `off`)",
    _rate: "a number above 0, at most 120",
    _fraction: "a number from 0 to 1",
    _seconds: "seconds, from 0 to 3600",
    _rotation: ", ".join(f"`{r}`" for r in ROTATIONS),
    _size: "`WIDTHxHEIGHT`, 16x16 to 7680x4320",
    _name: (
        "text, up to 64 printable characters: no control or format character (newline, tab, escape,"
        " direction mark), and no space but the plain one"
    ),
    _origins: "origins",
    _hosts: "host names",
    _bus_url: "a URL",
    _bus_creds: "a file's path",
    _subject_token: "letters, digits, `-`, `_`",
    parse_mqtt_url: "a URL",
    _mqtt_topic: "MQTT topic levels",
    _profiles: "tables",
    _motion: "a table",
    _areas: "a list of areas",
    _webhook_urls: f"up to {MAX_WEBHOOKS} URLs",
}


def _values(check: Check) -> str:
    """The values a check accepts, in words (a range read from the check itself)."""
    if check in _VALUES:
        return _VALUES[check]
    bounds = inspect.getclosurevars(check).nonlocals
    if "low" in bounds and "high" in bounds:
        return f"an integer from {bounds['low']} to {bounds['high']}"
    return ""


def _default(value: Any) -> str:
    """A field's default as the page writes it."""
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _rows(
    checks: Mapping[str, Check | None], docs: Mapping[str, KeyDoc], defaults: Mapping[str, Any], what: str
) -> list[tuple[str, KeyDoc, str, str]]:
    """Each key with its words, its values and its default; the words must match the keys."""
    if set(checks) != set(docs):
        missing, stale = sorted(set(checks) - set(docs)), sorted(set(docs) - set(checks))
        raise ValueError(f"{what}: keys without words {missing}, words without a key {stale}")
    rows = []
    for key, check in checks.items():
        doc = docs[key]
        values = _values(check) if check else ""
        rows.append((key, doc, values, doc.default or _default(defaults.get(key))))
    return rows


def _table(header: str, rows: list[list[str]]) -> str:
    """A Markdown table; a '|' in a cell is escaped."""
    names = header.split("|")
    lines = ["| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def settings_markdown() -> str:
    """The settings page's tables, rendered from the settings' own tables and defaults."""
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    top = [
        ["`LIVECAM_CONFIG`", "none", "a file's path", "the TOML file (environment only)"],
        [
            "`LIVECAM_CAMERAS`",
            "every V4L2 device, else a test pattern",
            "`[cameras.ID]` tables; in the environment a comma list",
            "the cameras: a device index (`0`) or `ID=SOURCE` (`5=rtsp://host/s`, `6=testsrc`) in the "
            "environment, which decides which cameras exist; the file's tables give them their settings",
        ],
    ]
    for key, doc, values, default in _rows(SETTING_CHECKS, SETTING_DOCS, fields, "settings"):
        name = f"`{ENV_PREFIX}{key.upper()}`" if doc.env else f"`{key}` (file only)"
        top.append([name, default, values, doc.meaning])
    camera_fields = {f.name: f.default for f in dataclasses.fields(CameraConfig)}
    cameras = [
        [f"`{key}`", default, values, doc.meaning]
        for key, doc, values, default in _rows(
            {"source": None, **CAMERA_CHECKS}, CAMERA_DOCS, camera_fields, "camera keys"
        )
    ]
    profile_fields = {f.name: f.default for f in dataclasses.fields(Profile)}
    profiles = [
        [f"`{key}`", default, values, doc.meaning]
        for key, doc, values, default in _rows(PROFILE_CHECKS, PROFILE_DOCS, profile_fields, "profile keys")
    ]
    motion_fields = {f.name: f.default for f in dataclasses.fields(MotionConfig)}
    motion = [
        [f"`{key}`", default, values, doc.meaning]
        for key, doc, values, default in _rows(MOTION_CHECKS, MOTION_DOCS, motion_fields, "motion keys")
    ]
    parts = [
        "### Settings\n",
        "Each is an environment variable, or the same name in lower case without `LIVECAM_` as a "
        "top-level key of the TOML file (`LIVECAM_VIEW_TOKEN`, `view_token`).\n",
        _table("setting|default|values|meaning", top),
        "\n### `[cameras.ID]`\n",
        _table("key|default|values|meaning", cameras),
        "\n### `[profiles.NAME]` and `[cameras.ID.profiles.NAME]`\n",
        _table("key|default|values|meaning", profiles),
        "\n### `[cameras.ID.motion]`\n",
        _table("key|default|values|meaning", motion),
    ]
    return "\n".join(parts) + "\n"
