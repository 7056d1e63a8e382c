"""Fixtures for the compression pipeline's tests: the shared digits model, loaded once, and one
pipeline run (prune 80% + PQAT) several tests inspect instead of each training its own."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_loaded(digits_dir):
    from tflc.load.models import load_model

    return load_model(digits_dir / "model.keras")


@pytest.fixture(scope="session")
def digits_eval(digits_dir):
    data = np.load(digits_dir / "eval.npz")
    return data["x"], data["y"]


@pytest.fixture(scope="session")
def pruned_pqat(digits_loaded, digits_dir):
    """One run: prune conv2/fc1 to 80% (polynomial schedule), then QAT (-> PQAT)."""
    from tflc.optimize.pipeline import resolve_config, run_pipeline

    config = resolve_config({"stages": [{"prune": {"sparsity": 0.8, "epochs": 2}},
                                        {"qat": {"epochs": 1}}]})
    return run_pipeline(digits_loaded, config, digits_dir / "train.npz",
                        digits_dir / "eval.npz", seed=0)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def digits_train(digits_dir, digits_loaded):
    from tflc.load.data import load_labelled

    return load_labelled(digits_dir / "train.npz", digits_loaded.inputs, 10)


@pytest.fixture(scope="session")
def digits_task(digits_loaded):
    from tflc.optimize.training import describe_task

    return describe_task(digits_loaded.model)


def run(loaded, digits_dir, stages, **budget):
    """run_pipeline on the digits data with `stages` (a list as the YAML holds it)."""
    from tflc.optimize.pipeline import resolve_config, run_pipeline

    config = resolve_config({"stages": stages, **({"budget": budget} if budget else {})})
    return run_pipeline(loaded, config, digits_dir / "train.npz", digits_dir / "eval.npz", seed=0)


def layer_stats(stage) -> dict:
    """layer name -> its weights as measured in the stage's int8 flatbuffer."""
    return {entry["layer"]: entry for entry in stage.layers}
