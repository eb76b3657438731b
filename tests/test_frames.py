"""What a camera's settings do to its pictures, and the size the record promises."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import decode
from livecam.frames import encode, output_size, placeholder_size, transform


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
