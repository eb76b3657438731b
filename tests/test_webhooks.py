"""Webhooks against real HTTP receivers on loopback: healthy, slow, failing, gone and hostile."""

from __future__ import annotations

import re
from typing import Any

import pytest

from livecam.config import ConfigError, load_settings

SECRET = "hook-secret-123"


def test_good_settings() -> None:
    environ = {
        "LIVECAM_CAMERAS": "0",
        "LIVECAM_WEBHOOK_URL": " http://a.example/x, https://u:p@b.example:8443/y?token=1,",
        "LIVECAM_WEBHOOK_SECRET": SECRET,
    }
    configured = load_settings(environ=environ)
    assert configured.webhook_url == ("http://a.example/x", "https://u:p@b.example:8443/y?token=1")
    assert configured.webhook_secret == SECRET
    from_file = load_settings(environ={}, overrides={"cameras": {}, "webhook_url": ["http://[::1]:9000/"]})
    assert from_file.webhook_url == ("http://[::1]:9000/",)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "webhook_url",
            "ftp://host/x",
            "LIVECAM_WEBHOOK_URL: 'ftp://host/x' is not an http:// or https:// URL",
        ),
        ("webhook_url", "host/x", "is not an http:// or https:// URL"),
        ("webhook_url", "http://", "names no valid host and port"),
        ("webhook_url", "http://host:99999/x", "names no valid host and port"),
        ("webhook_url", "http://host:0/x", "names no valid host and port"),
        ("webhook_url", "http://host:8o/x", "names no valid host and port"),
        ("webhook_url", "http://user:pa/ss@host/x", "http://user:***@host/x names no valid host"),
        ("webhook_url", "http://user:pa#ss@host/x", "http://user:***@host/x holds a '#'"),
        ("webhook_url", "http://host/a b", "holds a space or control character"),
        ("webhook_url", "http://host/a\tb", "holds a space or control character"),
        ("webhook_url", " , ", "LIVECAM_WEBHOOK_URL: names no URL"),
        ("webhook_url", "http://a/x,http://a/x", "http://a/x is named twice"),
        ("webhook_url", ",".join(f"http://h{n}/" for n in range(17)), "at most 16 URLs, got 17"),
        ("webhook_secret", "short", "LIVECAM_WEBHOOK_SECRET: must be at least 8 characters"),
        ("webhook_secret", "   ", "LIVECAM_WEBHOOK_SECRET: must be a non-empty string"),
    ],
)
def test_bad_settings_are_one_line_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"LIVECAM_CAMERAS": "0", f"LIVECAM_{key.upper()}": value})
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    for secret in ("pa/ss", "pa#ss", "short"):
        assert secret not in text


@pytest.mark.parametrize(
    ("value", "message"),
    [(5, "webhook_url: must be a comma list or an array"), ([1], "webhook_url: 1 is not an http(s) URL")],
)
def test_bad_file_values_are_one_line_errors(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(environ={}, overrides={"cameras": {}, "webhook_url": value})
