"""Fixtures for the device runtime's tests: the digits model (shared, tests/conftest.py), a 16x8
variant of it as the fallback, and in-distribution digits the calibration never saw."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_fallback(digits_dir, tmp_path_factory):
    """The digits model compiled 16x8 (int16 input and output): a fallback with other outputs."""
    from tflc.compiler import compile_model

    out = tmp_path_factory.mktemp("digits_16x8")
    compile_model(digits_dir / "model.keras", out, calibration_data=digits_dir / "calib.npz",
                  activations="int16", calibration_samples=64)
    return out


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
