"""The ``livecam`` command: inspect devices and configuration without serving."""

from __future__ import annotations

import argparse
import fcntl
import gc
import logging
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from . import catalog, state
from .auth import check_session_key
from .config import (
    FULL,
    CameraConfig,
    ConfigError,
    MotionConfig,
    Profile,
    Settings,
    bus_creds_kind,
    load_settings,
    settings_markdown,
    state_directory,
)
from .integers import parse_int
from .redaction import redact
from .state import write_atomically_bytes
from .v4l2 import Ioctl, choose_mode, describe_modes, device_modes, list_devices


def devices(args: argparse.Namespace, ioctl: Ioctl = fcntl.ioctl) -> int:
    """List the V4L2 capture devices, each with its modes and the one livecam would take."""
    found = list_devices(args.dev, ioctl)
    if not found:
        print(f"no V4L2 capture device under {args.dev}", file=sys.stderr)
        return 1
    for device in found:
        print(f"{device.index}\t{device.path}\t{device.name}\t{device.by_id or '-'}")
        try:
            modes = device_modes(device.path, ioctl)
        except OSError as exc:
            print(f"\tmodes unknown: {exc.strerror or exc}")
            continue
        for line in describe_modes(modes) or ["no modes listed"]:
            print(f"\t{line}")
        chosen = choose_mode(modes)
        if chosen is not None:
            print(f"\tcaptured as {chosen} unless size or fps say otherwise")
    return 0


def _settings() -> Settings | None:
    """The validated settings, or None after printing the one line that says what is wrong."""
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"livecam: configuration error: {exc}", file=sys.stderr)
        return None


def check_config(args: argparse.Namespace) -> int:
    """Validate the configuration and print the cameras it registers."""
    settings = _settings()
    if settings is None:
        return 1
    origin = "discovered" if settings.discovered else "configured"
    print(f"configuration OK: {len(settings.cameras)} camera(s) {origin}, bind {settings.bind}")
    if settings.bus:
        print(f"frame bus {redact(settings.bus)}, subjects under {settings.bus_prefix}.")
    if settings.bus_creds:
        kind = {"creds": "a NATS .creds file", "seed": "a user nkey seed"}[bus_creds_kind(settings.bus_creds)]
        unused = "" if settings.bus else " (unused without LIVECAM_BUS)"
        print(f"frame bus credentials: {settings.bus_creds}, {kind}{unused}")
    try:
        check_session_key(settings)
    except ConfigError as exc:
        # The capture role needs no key: only gunicorn (the web role) refuses to start.
        print(f"the web role (gunicorn) will refuse to start: {exc}")
    if settings.mqtt_url:  # shown masked: str() of a broker never holds its password
        control = "switching from MQTT allowed" if settings.mqtt_control else "no switching from MQTT"
        print(
            f"MQTT broker {settings.mqtt_url}, topics under {settings.mqtt_prefix}/, "
            f"Home Assistant discovery under {settings.mqtt_discovery}/, {control}"
        )
    changed = catalog.load(state_directory(settings))
    if changed.tables or changed.removed:
        added = ", ".join(str(i) for i in sorted(changed.tables)) or "none"
        removed = ", ".join(str(i) for i in sorted(changed.removed)) or "none"
        print(
            f"changed at run time ({catalog.RUNTIME_FILE}, wins over the file): {added}; removed: {removed}"
        )
    switches = state.load(state_directory(settings)) or {}
    for camera in catalog.apply(settings, changed).values():
        start = _at_start(camera, switches)
        print(f"{camera.id}\t{camera.name}\t{camera.source.kind}\t{redact(str(camera.source))}\t{start}")
        print("\tprofiles: " + ", ".join(_profile(p) for p in camera.profiles.values()))
        if camera.motion.enabled:
            print("\t" + _motion(camera.motion))
            for doubt in _motion_doubts(camera.motion):
                print(f"\tnote: {doubt}")
        elif camera.motion != MotionConfig():
            print("\tnote: motion settings given but not enabled (enabled = true turns it on)")
    return 0


def _at_start(camera: CameraConfig, switches: dict[int, bool]) -> str:
    """Whether the camera is on at start, and why: as the registry restores it, its switch
    as livecam last left it, else its ``autostart``."""
    if camera.id in switches:
        return f"{'on' if switches[camera.id] else 'off'} at start (as last left, {state.FILENAME})"
    return "on at start (autostart)" if camera.autostart else "off at start"


def _motion_doubts(motion: MotionConfig) -> list[str]:
    """Motion settings that are valid but unlikely to be meant."""
    doubts = []
    if motion.area == 0:
        doubts.append("area = 0: any changed pixel is motion, noise included")
    if motion.area > motion.recalibrate:
        doubts.append("area is above recalibrate: a change large enough to be motion is taken as the lights")
    covered = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in motion.ignore)
    if covered >= 1:
        doubts.append("the ignored areas cover the whole picture: nothing is left to watch")
    return doubts


def _motion(motion: MotionConfig) -> str:
    """A camera's motion settings in a line."""
    ignored = f", {len(motion.ignore)} area(s) ignored" if motion.ignore else ""
    return (
        f"motion: {motion.fps:g} analyses/s, pixels changed by over {motion.threshold}, "
        f"{motion.area:.1%} of the picture for {motion.duration:g} s, ends {motion.end_after:g} s "
        f"after the last{ignored}"
    )


def _profile(profile: Profile) -> str:
    """A stream profile in a line: ``preview (320 px, 5 fps, quality 60)``."""
    width = f"{profile.width} px" if profile.width else "full width"
    fps = f"{profile.fps:g} fps" if profile.fps else "source fps"
    if profile.quality:
        quality = f"quality {profile.quality}"
    else:
        quality = "camera's JPEGs or quality 80" if profile.name == FULL else "quality 80"
    return f"{profile.name} ({width}, {fps}, {quality})"


def snapshot(args: argparse.Namespace) -> int:
    """Save one fresh frame of a camera from a running livecam."""
    base = args.url or "http://" + os.environ.get("LIVECAM_BIND", "127.0.0.1:8000")
    url = f"{base.rstrip('/')}/cameras/{args.camera}/snapshot.jpg"
    if args.profile:
        url += "?" + urllib.parse.urlencode({"profile": args.profile})
    request = urllib.request.Request(url)
    token = args.token or os.environ.get("LIVECAM_VIEW_TOKEN") or os.environ.get("LIVECAM_CONTROL_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        reasons = {
            401: "livecam needs a token (--token or LIVECAM_VIEW_TOKEN)",
            403: "livecam refused the token",
            404: f"livecam has no camera {args.camera}",
        }
        reason = (
            reasons.get(exc.code) or f"livecam answered {exc.code}: {exc.read().decode(errors='replace')}"
        )
        print(f"livecam: snapshot failed: {reason.strip()}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"livecam: cannot reach {base}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    if not write_atomically_bytes(Path(args.file), data):
        print(f"livecam: cannot write {args.file}", file=sys.stderr)
        return 1
    print(f"saved camera {args.camera} to {args.file} ({len(data)} bytes)")
    return 0


def capture(args: argparse.Namespace) -> int:
    """Run the capture role of bus mode until SIGTERM or SIGINT."""
    settings = _settings()
    if settings is None:
        return 1
    if not settings.bus:
        print("livecam capture: set LIVECAM_BUS (nats://HOST:4222) to the frame bus", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported here: the other commands need neither NATS nor the capture threads.
    from .bus import FrameBus
    from .publisher import CaptureRole
    from .registry import Registry

    registry = Registry(settings)
    bus = FrameBus(
        settings.bus, settings.bus_prefix, name="livecam-capture", creds=settings.bus_creds
    ).start()
    role = CaptureRole(registry, bus)
    # What startup made lives as long as the process: a full collection need not scan it
    # while the capture threads wait for the interpreter.
    gc.collect()
    gc.freeze()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: role.stop())
    try:
        return role.run()
    finally:
        role.close()
        bus.close()


GENERATED_BEGIN = "<!-- generated from livecam/config.py by: livecam docs-settings --write PAGE -->"
GENERATED_END = "<!-- end of the generated tables -->"


def with_settings_tables(page: str, tables: str) -> str:
    """The page with the settings tables between its two markers replaced by ``tables``.

    :raise ValueError: the page lacks a marker.
    """
    head, begin, rest = page.partition(GENERATED_BEGIN)
    _, end, tail = rest.partition(GENERATED_END)
    if not begin or not end:
        raise ValueError(f"no {GENERATED_BEGIN} ... {GENERATED_END} in it")
    return f"{head}{begin}\n\n{tables}\n{end}{tail}"


def docs_settings(args: argparse.Namespace) -> int:
    """Print the settings page's tables, or rewrite them in the page named by ``--write``."""
    tables = settings_markdown()
    if args.write is None:
        print(tables, end="")
        return 0
    try:
        page = Path(args.write).read_text(encoding="utf-8")
        Path(args.write).write_text(with_settings_tables(page, tables), encoding="utf-8")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        print(f"livecam docs-settings: {args.write}: {reason}", file=sys.stderr)
        return 1
    print(f"wrote the settings tables in {args.write}")
    return 0


def _camera_id(text: str) -> int:
    """A camera id given on the command line, in ASCII digits."""
    cam_id = parse_int(text, 6)
    if cam_id is None:
        raise argparse.ArgumentTypeError(f"not a camera id: {text!r}")
    return cam_id


def main(argv: list[str] | None = None) -> int:
    """Run one ``livecam`` subcommand and return its exit code."""
    parser = argparse.ArgumentParser(prog="livecam", description="livecam tools (serve with gunicorn)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("devices", help="list V4L2 capture devices")
    listing.add_argument("--dev", default="/dev", help=argparse.SUPPRESS)
    listing.set_defaults(run=devices)
    checking = commands.add_parser("check-config", help="validate the configuration, list its cameras")
    checking.set_defaults(run=check_config)
    saving = commands.add_parser("snapshot", help="save one frame of a camera from a running livecam")
    saving.add_argument("camera", type=_camera_id, help="camera id")
    saving.add_argument("file", help="where to write the JPEG")
    saving.add_argument("--url", help="livecam's address (default: http:// + LIVECAM_BIND)")
    saving.add_argument("--token", help="view token (default: LIVECAM_VIEW_TOKEN)")
    saving.add_argument("--profile", help="stream profile (default: full), e.g. preview")
    saving.set_defaults(run=snapshot)
    capturing = commands.add_parser(
        "capture", help="bus mode: capture the cameras and publish them on LIVECAM_BUS"
    )
    capturing.set_defaults(run=capture)
    documenting = commands.add_parser("docs-settings", help="print the settings page's tables (Markdown)")
    documenting.add_argument("--write", metavar="PAGE", help="rewrite them in PAGE (docs/configuration.md)")
    documenting.set_defaults(run=docs_settings)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
