"""Fixtures for the export tests: MLPerf Tiny files, test targets, and a model TFLite Micro lacks
an op for (an op code rewritten in the flatbuffer, so no TensorFlow is needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MLPERF_INT8, REPO, need_mlperf

HERE = Path(__file__).resolve().parent
TEST_TARGETS = HERE / "targets"

# Minimum arena sizes stated in ../shared/fixtures/mlperf_tiny/README.md (TFLite Micro Python
# interpreter, x86-64 host build, bisection on arena_size).
README_ARENA = {"kws": 24_279, "vww": 103_674, "ic": 55_994, "ad": 4_634}


def mlperf(name: str) -> Path:
    return need_mlperf(MLPERF_INT8[name])


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (needed to compile the generated sources)")
    return path


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def tflc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real `tflc` command line."""
    return run([str(REPO / ".venv" / "bin" / "tflc"), *args], cwd or REPO)


def with_op_code(model: Path, builtin: str, out: Path) -> Path:
    """A copy of `model` whose first operator code is `builtin` (an op TFLite Micro lacks)."""
    flatbuffers = pytest.importorskip("flatbuffers")
    schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    obj = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model.read_bytes(), 0))
    code = getattr(schema.BuiltinOperator, builtin)
    obj.operatorCodes[0].builtinCode = code
    obj.operatorCodes[0].deprecatedBuiltinCode = min(code, 127)
    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    out.write_bytes(bytes(builder.Output()))
    return out


@pytest.fixture(scope="session")
def float_model() -> Path:
    """The MLPerf Tiny anomaly-detection autoencoder, float32 (FULLY_CONNECTED only)."""
    return need_mlperf(MLPERF_INT8["ad"].parent / "ad01_fp32.tflite")
