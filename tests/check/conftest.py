"""Fixtures of the check room: the agreement corpus, converted once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MLPERF_INT8


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Every corpus model (tests/check/corpus.py) as a .tflite file: {name: path}."""
    from tests.check.corpus import build_corpus

    folder = tmp_path_factory.mktemp("check_corpus")
    paths = {}
    for name, data in build_corpus().items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(scope="session")
def agreement_models(corpus) -> dict[str, Path]:
    """The corpus plus the MLPerf Tiny int8 reference files that are present."""
    models = dict(corpus)
    for name, path in MLPERF_INT8.items():
        if path.exists():
            models[f"mlperf_{name}"] = path
    return models
