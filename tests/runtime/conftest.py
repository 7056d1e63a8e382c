"""Fixtures for the device runtime's tests: the digits model and its 16x8 variant as the fallback
(both shared, tests/conftest.py), and in-distribution digits the calibration never saw."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_fallback(digits_16x8):
    """The fallback of these tests: the digits model in 16x8 (tests/conftest.py)."""
    return digits_16x8


@pytest.fixture(scope="session")
def in_distribution(digits_dir) -> np.ndarray:
    """500 digits images outside the calibration set: the held-out split, then unseen training
    images, shuffled with a fixed seed."""
    calib = np.load(digits_dir / "calib.npz")["x"]
    x_eval = np.load(digits_dir / "eval.npz")["x"]
    train = np.load(digits_dir / "train.npz")["x"]
    seen = {row.tobytes() for row in calib}
    unseen = np.array([row for row in train if row.tobytes() not in seen])
    pool = np.concatenate([x_eval, unseen])
    return pool[np.random.default_rng(0).permutation(len(pool))[:500]]
