"""Camera credentials never shown: userinfo and query secrets, in every output livecam has."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from flask import Flask

import forked
from helpers import ROOT, wait_for
from livecam.appstate import get_registry
from livecam.config import ConfigError, load_settings
from livecam.redaction import redact, redact_endpoint, url_port

SECRET = "hunter2"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s", "rtsp://admin:***@10.0.0.5:554/s"),
        ("rtsp://admin:hun[ter]2@10.0.0.5/s", "rtsp://admin:***@10.0.0.5/s"),  # brackets
        ("rtsp://admin:hun@ter2@cam/s", "rtsp://admin:***@cam/s"),  # an @ in the password
        ("https://hunter2token@cam/s", "https://***@cam/s"),
        ("rtsp://admin:hun/ter2@cam/s", "rtsp://admin:***@cam/s"),  # a slash in the password
        ("rtsp://admin:hun?ter#2@cam:554/s", "rtsp://admin:***@cam:554/s"),
        ("http://cam/video.cgi?user=admin&pwd=hunter2", "http://cam/video.cgi?user=***&pwd=***"),
        (
            "http://cam/v.cgi?loginuse=admin&loginpas=hunter2&res=1",
            "http://cam/v.cgi?loginuse=***&loginpas=***&res=1",
        ),
        ("http://cam/s?channel=1&token=hunter2#x", "http://cam/s?channel=1&token=***#x"),
        ("http://cam/s?Password=hunter2", "http://cam/s?Password=***"),
        (
            "cannot open rtsp://u:hunter2@cam:99999/s: refused",
            "cannot open rtsp://u:***@cam:99999/s: refused",
        ),
        ("http://host/cam.mjpg?fps=5", "http://host/cam.mjpg?fps=5"),
        # A value with an unescaped space, or after one; a key with spaces around it.
        ("http://cam/x?pwd=hunter 2&res=1", "http://cam/x?pwd=***&res=1"),
        ("http://cam/x?pwd= hunter2", "http://cam/x?pwd=***"),
        ("http://cam/x?res=1 pwd=hunter2", "http://cam/x?res=1 pwd=***"),
        ("http://cam/x?user=admin pwd=hunter2", "http://cam/x?user=***"),
        ("http://cam/x? pwd =hunter2", "http://cam/x? pwd =***"),
        # A percent-encoded key is the key a camera decodes: pw%64 is pwd.
        ("http://cam/x?pw%64=hunter2", "http://cam/x?pw%64=***"),
        ("http://cam/x?%70%61ss=hunter2&a=1", "http://cam/x?%70%61ss=***&a=1"),
        ("http://cam/x?code=hunter2&authcode=hunter2", "http://cam/x?code=***&authcode=***"),
        ("http://cam/x?codec=h264&fps=5", "http://cam/x?codec=h264&fps=5"),
        # A URL masked once keeps the reason after it when its message is masked again.
        (
            "cannot open http://cam/x?pwd=hunter 2: camera answered 401",
            "cannot open http://cam/x?pwd=***: camera answered 401",
        ),
        (
            "cannot open http://cam/x?pwd=***: camera answered 401",
            "cannot open http://cam/x?pwd=***: camera answered 401",
        ),
        ("/videos/a.mp4", "/videos/a.mp4"),
        ("testsrc:640x480@15", "testsrc:640x480@15"),
    ],
)
def test_redact_hides_credentials_whatever_the_shape(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("rtsp://u:p:w@cam:554/s", "554"),
        ("rtsp://u:p[]@cam/s", None),
        ("http://[::1]:8080/x", "8080"),
        ("http://[::1]/x", None),
        ("http://cam:99999/x?a=b:c", "99999"),
        ("rtsp://admin:pa/ss@cam/x", "pa"),  # as FFmpeg reads it: host "admin", port "pa"
    ],
)
def test_url_port_is_found_without_a_parser(url: str, port: str | None) -> None:
    assert url_port(url) == port


@pytest.mark.parametrize(
    ("password", "named"),
    [
        (
            f"{SECRET}/x",
            "'/' typed in its password (or user name) ends the host part for every "
            "reader: percent-encode it as %2F",
        ),
        (
            f"p#a[s@{SECRET}",
            "'#' typed in its password (or user name) ends the host part for every "
            "reader: percent-encode it as %23",
        ),
        (
            f"{SECRET}?a#b",
            "'?' and '#' typed in its password (or user name) end the host part for "
            "every reader: percent-encode them as %3F and %23",
        ),
    ],
)
@pytest.mark.parametrize("port", ["", ":8091", ":99999"])
def test_a_password_with_a_character_that_ends_the_host_is_refused_unshown(
    password: str, named: str, port: str
) -> None:
    # Every reader (FFmpeg, VLC, livecam's) ends the host part at the first "/", "?" or "#":
    # "admin:hunter2" would be a host and a port, "x@cam/s" a path.
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"LIVECAM_CAMERAS": f"5=http://admin:{password}@127.0.0.1{port}/cam.mjpg"})
    assert str(error.value) == f"cameras.5.source: http://admin:***@127.0.0.1{port}/cam.mjpg: {named}"
    assert SECRET not in str(error.value)


def test_check_config_names_the_character_to_percent_encode_in_one_line() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "LIVECAM_CAMERAS": f"5=http://user:p#a[s@{SECRET}@127.0.0.1:8091/cam.mjpg",
    }
    result = forked.livecam("check-config", env=env, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "livecam: configuration error: cameras.5.source: http://user:***@127.0.0.1:8091/cam.mjpg: "
        "'#' typed in its password (or user name) ends the host part for every reader: "
        "percent-encode it as %23"
    ]
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://[::1:8080/x", "opens an IPv6 address with '[' and never closes it (write [::1]:8080)"),
        (
            "rtsp://admin:pw@[fe80::1/s",
            "opens an IPv6 address with '[' and never closes it (write [::1]:8080)",
        ),
        ("http://::1:8080/x", "has an IPv6 address without brackets (write [::1]:8080)"),
        ("http://cam]:80/x", "has '[' or ']' in its host, where only an IPv6 address in brackets may"),
        ("http://[::1]8080/x", "has a host that is not a bracketed IPv6 address"),
    ],
)
def test_a_host_that_is_no_host_is_one_configuration_error(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"LIVECAM_CAMERAS": f"5={url}"})
    assert str(error.value) == f"cameras.5.source: {redact(url)} {problem}"


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:p@ss[w0rd]:x@10.0.0.5:80/a?b=1",  # "@", "[", "]" and ":" typed as is
        "http://[::1]:8080/x",
        "http://[::1]/x",
        "http://cam/x?email=a@b.example",  # an "@" in a query: the host is still "cam"
        "rtsp://cam:554/s",
    ],
)
def test_urls_every_reader_reads_alike_are_accepted(url: str) -> None:
    assert load_settings(environ={"LIVECAM_CAMERAS": f"5={url}"}).cameras[5].source.target == url


@pytest.mark.parametrize("port", ["99999", "0", "http", "-1"])
def test_a_bad_port_stops_startup_without_showing_the_password(port: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"LIVECAM_CAMERAS": f"5=rtsp://admin:{SECRET}@cam:{port}/s"})
    assert "names a port that is not one" in str(error.value) and SECRET not in str(error.value)


@pytest.fixture
def exposed(make_app: Callable[..., Flask]) -> Flask:
    """Cameras whose URLs carry the secret in every place a camera puts one; nothing listens."""
    cameras = {
        "1": {"source": f"http://admin:{SECRET}@127.0.0.1:9/video.cgi?user=admin&pwd={SECRET}"},
        "2": {"source": f"rtsp://admin:hun[{SECRET}]@127.0.0.1:9/s"},
    }
    return make_app({"cameras": cameras})


def test_no_output_shows_a_camera_secret(exposed: Flask, caplog: pytest.LogCaptureFixture) -> None:
    client = exposed.test_client()
    with caplog.at_level(logging.DEBUG):
        for cam_id in (1, 2):
            client.post(f"/cameras/{cam_id}/start")
        registry = get_registry(exposed)
        # The reason each camera failed is what its record, the log and the "no signal"
        # picture show; every one of them passes through the same redaction.
        assert wait_for(lambda: all(camera.error for camera in registry))
        outputs = [
            client.get("/cameras").get_data(as_text=True),
            client.get("/").get_data(as_text=True),
            client.get("/metrics").get_data(as_text=True),
            *(camera.error or "" for camera in registry),
            caplog.text,
        ]
    assert "127.0.0.1:9" in outputs[0]  # the sources are shown, only without their secrets
    for output in outputs:
        assert SECRET not in output


def test_check_config_shows_no_secret() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "LIVECAM_CAMERAS": f"4=http://cam/v.cgi?user=admin&pwd={SECRET},5=rtsp://a:x[{SECRET}]@cam/s",
    }
    result = forked.livecam("check-config", env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "pwd=***" in result.stdout and "rtsp://a:***@cam/s" in result.stdout
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("rtsp://admin:pass word@cam/s", "rtsp://admin:***@cam/s"),  # a space, unescaped
        ("http://admin:tab\tsecret@cam/x", "http://admin:***@cam/x"),
        ("http://admin:p@ss w0rd@h/x", "http://admin:***@h/x"),
        ("http://cam/x.jpg?u=admin&p=hunter2&res=2", "http://cam/x.jpg?u=***&p=***&res=2"),
    ],
)
def test_odd_passwords_and_one_letter_keys_are_masked(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_a_comma_inside_a_listed_url_is_reported_without_the_password() -> None:
    with pytest.raises(ConfigError, match="a comma inside a camera URL") as error:
        load_settings(environ={"LIVECAM_CAMERAS": "1=http://admin:se,cret@127.0.0.1:9/x.mjpg"})
    assert "cret" not in str(error.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://ha.local:8123/api/webhook/s3cr3t-id", "http://ha.local:8123/***"),
        ("https://hooks.example/services/T0/B0/tok?x=1", "https://hooks.example/***"),
        ("http://user:pa/ss@host/x", "http://user:***@host/***"),
        ("http://user:pw@host", "http://user:***@host"),
        ("http://host:8080/", "http://host:8080/"),
        ("http://[::1]:9/?token=abc", "http://[::1]:9/***"),
    ],
)
def test_an_endpoint_is_shown_without_its_path(url: str, shown: str) -> None:
    assert redact_endpoint(url) == shown
