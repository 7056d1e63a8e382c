"""Shared fixtures: the tiny models and data every room's tests build on.

Models are trained once per test session (seeded) and shared, so no test trains its own copy of
the same model. The MLPerf Tiny reference files are read from ../shared and tests that need them
skip with a clear reason where that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TFLC_SHARED", REPO.parent / "shared"))
MLPERF = SHARED / "fixtures" / "mlperf_tiny"
MLPERF_INT8 = {
    "kws": MLPERF / "kws" / "kws_ref_model_int8.tflite",
    "vww": MLPERF / "vww" / "vww_96_int8.tflite",
    "ic": MLPERF / "ic" / "resnet8_int8.tflite",
    "ad": MLPERF / "ad" / "ad01_int8.tflite",
}
MLPERF_KERAS = {
    "kws": MLPERF / "kws" / "kws_ref_model_savedmodel",
    "vww": MLPERF / "vww" / "vww_96.h5",
    "ic": MLPERF / "ic" / "resnet8.h5",
    "ad": MLPERF / "ad" / "ad01.h5",
}


def need_mlperf(path: Path) -> Path:
    """Skip the calling test with a clear reason when the shared MLPerf fixtures are missing."""
    if not path.exists():
        pytest.skip(f"MLPerf Tiny fixture not found at {path} (expected ../shared beside the repo)")
    return path


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The bundled example, trained briefly: model.keras (tf_keras), calib/train/eval .npz."""
    from tflc.examples.digits import write_example

    return write_example(tmp_path_factory.mktemp("digits"), epochs=8)


@pytest.fixture(scope="session")
def digits_compiled(digits_dir, tmp_path_factory):
    """The digits model compiled with default options: (CompileReport, output folder)."""
    import tflc

    out = tmp_path_factory.mktemp("digits_int8")
    report = tflc.compile(
        digits_dir / "model.keras", out,
        calibration_data=digits_dir / "calib.npz", eval_data=digits_dir / "eval.npz",
    )
    return report, out


@pytest.fixture(scope="session")
def digits_16x8(digits_dir, tmp_path_factory) -> Path:
    """The digits model compiled 16x8 (int16 input and output, 64 calibration samples): the
    output folder (model.tflite, profile.json), e.g. a fallback with outputs of its own."""
    import tflc

    out = tmp_path_factory.mktemp("digits_16x8")
    tflc.compile(digits_dir / "model.keras", out, calibration_data=digits_dir / "calib.npz",
                 activations="int16", calibration_samples=64)
    return out


@pytest.fixture(scope="session")
def digits_tflite(digits_compiled) -> Path:
    """Path of the fully-integer int8 digits model."""
    return digits_compiled[1] / "model.tflite"


@pytest.fixture(scope="session", autouse=True)
def session_registry(tmp_path_factory) -> Path:
    """The run registry of session fixtures (e.g. `digits_compiled` records its compile here):
    set before any of them runs, so nothing is recorded into the repository's .tflc/."""
    path = tmp_path_factory.mktemp("session_registry")
    previous = os.environ.get("TFLC_REGISTRY")
    os.environ["TFLC_REGISTRY"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("TFLC_REGISTRY", None)
    else:
        os.environ["TFLC_REGISTRY"] = previous


@pytest.fixture(autouse=True)
def _private_registry(tmp_path, monkeypatch):
    """No test writes a run registry into the repository: each gets its own."""
    monkeypatch.setenv("TFLC_REGISTRY", str(tmp_path / "registry"))
