"""What a camera's settings do to its pictures, and the size the record promises."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import decode
from livecam.config import CameraConfig, Profile, parse_source
from livecam.frames import decode as decode_jpeg
from livecam.frames import encode, output_size, placeholder_size, stream_size, stream_width, transform


@pytest.mark.parametrize("source", [(640, 480), (1920, 1080), (333, 217), (16, 16), (1279, 721)])
@pytest.mark.parametrize("width", [None, 16, 320, 641, 1000])
@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_the_record_size_is_what_transform_makes(
    source: tuple[int, int], width: int | None, rotate: int
) -> None:
    image = np.zeros((source[1], source[0], 3), np.uint8)
    made = transform(image, width, rotate)
    assert (made.shape[1], made.shape[0]) == output_size(source, width, rotate)


def test_rotation_is_exact() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(transform(image, None, 90), np.rot90(image, k=-1))


def test_encode_at_a_quality() -> None:
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    small, large = encode(image, 10), encode(image, None)  # None: the default quality, 80
    assert decode(small).shape == decode(large).shape == (48, 64, 3)
    assert len(small) < len(large)


def test_placeholder_size_is_four_by_three() -> None:
    assert placeholder_size(None) == (640, 480)
    assert placeholder_size(320) == (320, 240)


@pytest.mark.parametrize("source", [(640, 480), (1920, 1080), (1279, 721), (333, 217), (100, 60)])
@pytest.mark.parametrize("profile_width", [None, 80, 320, 700])
@pytest.mark.parametrize(("full_width", "rotate"), [(None, 0), (None, 90), (500, 0)])
def test_a_profile_decoded_at_a_reduced_scale_has_the_size_the_record_promises(
    source: tuple[int, int], profile_width: int | None, full_width: int | None, rotate: int
) -> None:
    config = CameraConfig(0, parse_source("testsrc", "source"), "Cam", width=full_width, rotate=rotate)
    profile = Profile("small", width=profile_width)
    rng = np.random.default_rng(2)
    jpeg = encode(rng.integers(0, 255, (source[1], source[0], 3), dtype=np.uint8), 90)
    width = stream_width(config, profile, source[0])
    image = decode_jpeg(jpeg, source[0], width)
    assert image.shape[1] >= min(width or source[0], source[0])  # never fewer pixels than needed
    made = transform(image, width, rotate, source)
    assert (made.shape[1], made.shape[0]) == stream_size(config, profile, source)


def test_a_profile_is_never_wider_than_the_full_stream() -> None:
    source = parse_source("testsrc", "source")
    preview = Profile("preview", width=320)
    assert stream_width(CameraConfig(0, source, "Cam"), preview, 1920) == 320
    assert stream_width(CameraConfig(0, source, "Cam"), preview, 160) is None  # 160 wide as it is
    assert stream_width(CameraConfig(0, source, "Cam", width=200), preview, 1920) == 200
    assert stream_width(CameraConfig(0, source, "Cam", width=800), Profile("same"), 1920) == 800
    full = CameraConfig(0, source, "Cam", width=1000).profiles["full"]
    assert stream_width(CameraConfig(0, source, "Cam", width=1000), full, 640) == 1000  # full as configured
