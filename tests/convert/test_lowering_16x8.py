"""LayerNormalization in 16x8 (int16 activations, int8 weights).

tf_keras' LayerNormalization traces to FusedBatchNormV3 with an all-zero offset, which the
converter expands into SUB(zeros, mean * rsqrt(variance)); 16x8 quantizes that constant with
scale 0.0 and LiteRT's int16 SUB aborts the process preparing it. tflc writes the normalization
out in ops with int16 kernels instead (Keras 3 models in int8 too: their trace has a Neg). Checked here on the flatbuffer (int16 activations, int8
weights, no zero-scale constant), in the real LiteRT interpreter (in a child process: an abort
must fail the test, not kill it) and numerically against the float model.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.convert.test_lowering import _compile, _keras3
from tests.zoo.flatbuffer import assert_fully_integer
from tflc.tflite.reader import read_model

T, F = 6, 4


def _tf_keras():
    from tflc.tf_env import import_tf_keras

    return import_tf_keras()


def _trained_like(model, seed=1):
    """Give the first LayerNormalization non-trivial gamma and beta (the MUL and ADD steps stay);
    the others keep ones and zeros (those identity steps are left out)."""
    rng = np.random.default_rng(seed)
    norms = [layer for layer in model.layers if type(layer).__name__ == "LayerNormalization"]
    gamma, beta = norms[0].get_weights()
    norms[0].set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                          rng.normal(0.0, 0.2, beta.shape).astype(np.float32)])
    return model


def _block(keras):
    """A transformer encoder block, GELU in both forms; layers only (tf_keras turns `x + y`
    into a code-carrying layer). Keras 3 has `ops.gelu(approximate=True)`, tf_keras the exact form."""
    keras.utils.set_random_seed(0)
    i = keras.Input((T, F))
    a = keras.layers.MultiHeadAttention(2, 4)(i, i)
    x = keras.layers.LayerNormalization()(keras.layers.Add()([i, a]))
    f = keras.layers.Dense(8, activation="gelu")(x)
    if hasattr(keras, "ops"):
        f = keras.layers.Add()([f, keras.ops.gelu(keras.layers.Dense(8)(x), approximate=True)])
    x = keras.layers.LayerNormalization()(keras.layers.Add()([x, keras.layers.Dense(F)(f)]))
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Softmax(axis=-1)(x))
    return _trained_like(keras.Model(i, keras.layers.Dense(3, activation="softmax")(x)))


def _image_norm(keras):
    """LayerNormalization over height, width and channels of a feature map."""
    keras.utils.set_random_seed(0)
    i = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu")(i)
    x = keras.layers.LayerNormalization(axis=[1, 2, 3])(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return _trained_like(keras.Model(i, keras.layers.Dense(3, activation="softmax")(x)))


MODELS = {
    "k2_block": lambda: _block(_tf_keras()),
    "k3_image_norm": lambda: _image_norm(_keras3()),
}

_LITERT_RUN = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1])
interpreter.allocate_tensors()
detail = interpreter.get_input_details()[0]
interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
interpreter.invoke()
print("ran")
"""


def _activation_dtypes(path) -> dict[str, set[str]]:
    """dtype of every non-constant tensor an op writes, and of every constant weight, by role."""
    view = read_model(path)
    sg = view.subgraphs[0]
    found = {"activations": set(), "weights": set()}
    for op in sg.operators:
        for index in op.outputs:
            found["activations"].add(sg.tensors[index].dtype)
        if op.op in ("FULLY_CONNECTED", "CONV_2D", "BATCH_MATMUL") and len(op.inputs) > 1:
            weights = sg.tensors[op.inputs[1]]
            if weights.is_constant:
                found["weights"].add(weights.dtype)
    return found


def _zero_scale_constants(path) -> list[str]:
    view = read_model(path)
    sg = view.subgraphs[0]
    return [f"{op.op} #{op.index} {sg.tensors[i].name}" for op in sg.operators for i in op.inputs
            if i >= 0 and sg.tensors[i].is_constant and sg.tensors[i].dtype == "int16"
            and sg.tensors[i].quantization is not None
            and any(s == 0.0 for s in sg.tensors[i].quantization.scales)]


def _fidelity(model, tflite_path) -> tuple[float, float]:
    """(SQNR dB, top-1 agreement %) of the file run in LiteRT against the float model, on
    inputs drawn from the calibration range (uniform [0, 1)) with another seed."""
    from tflc.convert.evaluate import run_tflite, sqnr_db, top1_agreement

    shape = (64,) + tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(7).random(shape).astype(np.float32)
    expected = np.asarray(model.predict(x, verbose=0))
    got = run_tflite(tflite_path.read_bytes(), [x])[0]
    return sqnr_db(expected, got), top1_agreement(expected, got)


def _assert_16x8(model, report, attention: bool) -> float:
    ops = assert_fully_integer(report.tflite_path)
    assert {"MEAN", "RSQRT", "SUB", "MUL"} <= set(ops), ops
    if attention:
        assert {"BATCH_MATMUL", "GELU", "SOFTMAX"} <= set(ops), ops
    dtypes = _activation_dtypes(report.tflite_path)
    assert dtypes["activations"] <= {"int16", "int32"} and "int16" in dtypes["activations"], dtypes
    assert dtypes["weights"] == {"int8"}, dtypes
    assert report.inputs[0]["dtype"] == "int16"
    assert not _zero_scale_constants(report.tflite_path)
    layers = report.lowering["layers"]
    assert layers and all(e["cls"] == "LayerNormalization" and "written out" in e["lowered_to"]
                          for e in layers)
    assert report.lowering["max_abs_difference"] < 1e-4  # written out: the same float function

    run = subprocess.run([sys.executable, "-c", _LITERT_RUN, str(report.tflite_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ran" in run.stdout, (run.returncode, run.stderr[-500:])

    sqnr, top1 = _fidelity(model, report.tflite_path)
    assert sqnr >= 40.0 and top1 >= 95.0, (sqnr, top1)
    return sqnr


@pytest.mark.parametrize("name", sorted(MODELS))
def test_layer_normalization_compiles_in_16x8_and_runs_in_litert(name, tmp_path):
    model = MODELS[name]()
    _assert_16x8(model, _compile(model, tmp_path, activations="int16"), name.endswith("block"))


def test_keras3_transformer_block_in_16x8_is_more_faithful_than_int8(tmp_path):
    """MultiHeadAttention, LayerNormalization, GELU (exact and tanh), softmax: 16x8 runs and
    beats int8 on fidelity; the int8 file of the same written-out block is all int8."""
    model = _block(_keras3())
    sqnr_16x8 = _assert_16x8(model, _compile(model, tmp_path / "16x8", activations="int16"), True)
    int8 = _compile(model, tmp_path / "int8")
    assert all("written out" in e["lowered_to"] for e in int8.lowering["layers"])
    assert _activation_dtypes(int8.tflite_path)["activations"] <= {"int8", "int32"}
    sqnr_int8, _ = _fidelity(model, int8.tflite_path)
    assert sqnr_16x8 >= sqnr_int8 + 10.0, (sqnr_16x8, sqnr_int8)
