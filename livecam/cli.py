"""The ``livecam`` command: inspect devices and configuration without serving."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_settings
from .sources import list_devices, redact


def devices(args: argparse.Namespace) -> int:
    """List the V4L2 capture devices."""
    found = list_devices(args.dev)
    if not found:
        print(f"no V4L2 capture device under {args.dev}", file=sys.stderr)
        return 1
    for device in found:
        print(f"{device.index}\t{device.path}\t{device.name}\t{device.by_id or '-'}")
    return 0


def check_config(args: argparse.Namespace) -> int:
    """Validate the configuration and print the cameras it registers."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"livecam: configuration error: {exc}", file=sys.stderr)
        return 1
    origin = "discovered" if settings.discovered else "configured"
    print(f"configuration OK: {len(settings.cameras)} camera(s) {origin}, bind {settings.bind}")
    for camera in settings.cameras.values():
        start = "autostart" if camera.autostart else "off at start"
        print(f"{camera.id}\t{camera.name}\t{camera.source.kind}\t{redact(str(camera.source))}\t{start}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one ``livecam`` subcommand and return its exit code."""
    parser = argparse.ArgumentParser(prog="livecam", description="livecam tools (serve with gunicorn)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("devices", help="list V4L2 capture devices")
    listing.add_argument("--dev", default="/dev", help=argparse.SUPPRESS)
    listing.set_defaults(run=devices)
    checking = commands.add_parser("check-config", help="validate the configuration, list its cameras")
    checking.set_defaults(run=check_config)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
