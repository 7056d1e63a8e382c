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


@pytest.fixture(scope="session")
def mixed_ops_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny CNN using many TFLite Micro kernels at once (conv, depthwise, transpose conv,
    sigmoid gating, pad, concat, upsampling, global pooling, two outputs), converted to int8
    with int8 I/O ("int8") and with float I/O ("float_io": QUANTIZE / DEQUANTIZE added)."""
    import numpy as np

    from tflc.tf_env import import_tensorflow, import_tf_keras, quiet_native_output

    tf, keras = import_tensorflow(), import_tf_keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    x = keras.Input((16, 16, 3), batch_size=1)
    a = layers.Conv2D(8, 3, padding="same", activation="relu6")(x)
    b = layers.Activation("sigmoid")(layers.DepthwiseConv2D(3, padding="same")(a))
    c = layers.Conv2D(8, 3, strides=2)(layers.ZeroPadding2D(1)(layers.Multiply()([a, b])))
    d = layers.Concatenate()([c, layers.UpSampling2D(1)(c)])
    e = layers.GlobalAveragePooling2D()(layers.Conv2DTranspose(4, 3, strides=2, padding="same")(d))
    model = keras.Model(x, [layers.Dense(5, activation="softmax")(e), layers.Activation("tanh")(e)])
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("mixed_ops")
    paths = {}
    for name, integer_io in (("int8", True), ("float_io", False)):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)] for _ in range(10))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if integer_io:
            converter.inference_input_type = converter.inference_output_type = tf.int8
        with quiet_native_output():
            paths[name] = out / f"{name}.tflite"
            paths[name].write_bytes(converter.convert())
    return paths
