"""The N:M structure check on int8 weights as TFLite lays them out (input channels last)."""

from __future__ import annotations

import numpy as np

from tflc.optimize.measure import _respects, _structure_ok, gzip_size


def test_two_of_four_blocks_along_the_input_channels():
    ok = np.array([[1, 0, 2, 0, 0, 3, 0, 4], [0, 0, 5, 6, 7, 0, 0, 8]], np.int8)
    assert _respects(ok, (2, 4))
    bad = ok.copy()
    bad[1, 1] = 9  # three non-zeros in the first block of row 1
    assert not _respects(bad, (2, 4))
    # conv filters (out, h, w, in): blocks run along `in`; a short tail counts as zero-padded
    conv = np.zeros((2, 3, 3, 6), np.int8)
    conv[..., 0] = conv[..., 3] = conv[..., 4] = 1
    assert _respects(conv, (2, 4))
    conv[..., 5] = 1  # the tail block (4, 5, pad, pad) holds 2: still fine
    assert _respects(conv, (2, 4))
    conv[..., 1] = 1  # the first block (0..3) now holds 3
    assert not _respects(conv, (2, 4))


def test_dense_layers_are_not_judged():
    assert _structure_ok(np.ones((4, 8), np.int8), (2, 4)) is None
    assert _structure_ok(np.ones((4, 8), np.int8), None) is None


def test_gzip_size_is_deterministic_and_rewards_zeros():
    rng = np.random.default_rng(0)
    dense = rng.integers(-128, 127, 10_000, dtype=np.int8).tobytes()
    sparse = np.where(rng.random(10_000) < 0.8, 0, rng.integers(-128, 127, 10_000)).astype(
        np.int8).tobytes()
    assert gzip_size(dense) == gzip_size(dense)
    assert gzip_size(sparse) < 0.5 * gzip_size(dense)
