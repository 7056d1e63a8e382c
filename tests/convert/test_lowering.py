"""Lowering of recurrent and attention layers: Keras 3 models that failed with
"tf.TensorListReserve" or "Neg" compile fully integer, verified on the flatbuffer and against
the float model (report.lowering.fidelity: top-1 agreement and SQNR per output).

Models are tiny (6 time steps, 4 features) so each compile takes seconds.
"""

from __future__ import annotations

import pytest

from tests.zoo.flatbuffer import assert_fully_integer

T, F = 6, 4


def _keras3():
    from tflc.tf_env import import_keras3

    return import_keras3()


def _classifier(body, shape=(T, F), batch_size=None):
    keras = _keras3()
    keras.utils.set_random_seed(0)
    i = keras.Input(shape, batch_size=batch_size)
    x = body(keras, i)
    return keras.Model(i, keras.layers.Dense(3, activation="softmax")(x))


RECURRENT = {
    "lstm": lambda k, i: k.layers.LSTM(8)(i),
    "lstm_sequences": lambda k, i: k.layers.GlobalAveragePooling1D()(k.layers.LSTM(8, return_sequences=True)(i)),
    "bilstm": lambda k, i: k.layers.Bidirectional(k.layers.LSTM(8))(i),
    "gru": lambda k, i: k.layers.GRU(8)(i),
    "simplernn_stack": lambda k, i: k.layers.SimpleRNN(4)(k.layers.SimpleRNN(8, return_sequences=True)(i)),
}
EXPECTED_OP = {"lstm": "UNIDIRECTIONAL_SEQUENCE_LSTM", "lstm_sequences": "UNIDIRECTIONAL_SEQUENCE_LSTM",
               "bilstm": "UNIDIRECTIONAL_SEQUENCE_LSTM", "gru": "LOGISTIC", "simplernn_stack": "TANH"}


def _compile(model, tmp_path, **options):
    import tflc

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "m.keras"
    model.save(path)
    return tflc.compile(path, tmp_path / "out", calibration="random", calibration_samples=64,
                        **options)


def _assert_close(report, min_sqnr=20.0, min_top1=60.0):
    for entry in report.lowering["fidelity"]:
        assert entry["sqnr_db"] >= min_sqnr, entry
        assert entry["top1_agreement"] >= min_top1, entry


@pytest.mark.parametrize("name", sorted(RECURRENT))
def test_keras3_recurrent_compiles_fully_integer(name, tmp_path):
    report = _compile(_classifier(RECURRENT[name]), tmp_path)
    ops = assert_fully_integer(report.tflite_path)
    assert EXPECTED_OP[name] in ops and "WHILE" not in ops
    assert report.lowering["static_batch"] and report.inputs[0]["shape"][0] == 1
    classes = {entry["cls"] for entry in report.lowering["layers"]}
    assert classes & {"LSTM", "GRU", "SimpleRNN", "Bidirectional"}
    if name in ("gru", "simplernn_stack"):
        assert all("unrolled over 6 time steps" in e["lowered_to"] for e in report.lowering["layers"])
    _assert_close(report)


def test_stateful_lstm_compiles_and_says_the_state_is_kept(tmp_path):
    model = _classifier(lambda k, i: k.layers.LSTM(8, stateful=True)(i), batch_size=1)
    report = _compile(model, tmp_path)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in assert_fully_integer(report.tflite_path)
    assert report.lowering["stateful"]
    assert any("keeps its state" in note for note in report.lowering["notes"])
    _assert_close(report)


def test_lstm_in_16x8_is_unrolled(tmp_path):
    """16x8 has no fused-LSTM kernel: the LSTM is unrolled and still integer (int16 activations)."""
    report = _compile(_classifier(RECURRENT["lstm"]), tmp_path, activations="int16")
    ops = assert_fully_integer(report.tflite_path)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops and "FULLY_CONNECTED" in ops
    assert report.inputs[0]["dtype"] == "int16"
    _assert_close(report)


def _transformer(keras, i, approximate=False):
    a = keras.layers.MultiHeadAttention(2, 4)(i, i)
    x = keras.layers.LayerNormalization()(i + a)
    f = keras.ops.gelu(keras.layers.Dense(8)(x), approximate=True) if approximate \
        else keras.layers.Dense(8, activation="gelu")(x)  # tanh form as an op: no lambda to refuse
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(F)(f))
    x = keras.layers.Softmax(axis=-1)(x)
    return keras.layers.GlobalAveragePooling1D()(x)


@pytest.mark.parametrize("approximate", [False, True], ids=["gelu_exact", "gelu_tanh"])
def test_keras3_transformer_block_compiles_fully_integer(approximate, tmp_path):
    model = _classifier(lambda k, i: _transformer(k, i, approximate))
    report = _compile(model, tmp_path)
    ops = assert_fully_integer(report.tflite_path)
    assert {"BATCH_MATMUL", "GELU", "SOFTMAX", "RSQRT"} <= set(ops)
    assert {e["cls"] for e in report.lowering["layers"]} == {"LayerNormalization"}
    assert not report.lowering["static_batch"]  # nothing in it needs a pinned batch
    _assert_close(report)


def test_models_without_such_layers_are_not_lowered(tmp_path):
    model = _classifier(lambda k, i: k.layers.Conv1D(4, 3)(i))
    report = _compile(model, tmp_path)
    assert report.lowering is None


def test_evaluation_runs_each_sample_from_a_fresh_lstm_state(tmp_path):
    """The fused LSTM keeps its state between invocations; fidelity must not inherit it."""
    import numpy as np

    from tflc.convert.evaluate import run_tflite

    report = _compile(_classifier(RECURRENT["lstm"]), tmp_path)
    x = np.random.default_rng(1).random((1, T, F)).astype(np.float32)
    outputs = run_tflite(report.tflite_path.read_bytes(), [np.repeat(x, 3, axis=0)])[0]
    assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[0], outputs[2])
    assert report.lowering["fidelity"][0]["sqnr_db"] >= 35


def test_keras3_attention_gelu_softmax_in_16x8(tmp_path):
    """Without LayerNormalization, attention converts in 16x8 (int16 activations) as it is."""
    def body(keras, i):
        a = keras.layers.MultiHeadAttention(2, 4)(i, i)
        f = keras.layers.Dense(8, activation="gelu")(keras.layers.Add()([i, a]))
        return keras.layers.GlobalAveragePooling1D()(keras.layers.Softmax(axis=-1)(f))
    report = _compile(_classifier(body), tmp_path, activations="int16")
    ops = assert_fully_integer(report.tflite_path)
    assert {"BATCH_MATMUL", "GELU", "SOFTMAX"} <= set(ops) and report.inputs[0]["dtype"] == "int16"


def test_unrolled_gru_is_integer_and_byte_identical_run_after_run(tmp_path):
    """With the GRU's fused gate matmul (implementation=2) the quantizer left a SPLIT in float
    in some runs; one matmul per gate gives the same integer file every time."""
    model = _classifier(RECURRENT["gru"])
    hashes = set()
    for run in range(3):
        report = _compile(model, tmp_path / str(run))
        assert_fully_integer(report.tflite_path)
        hashes.add(report.tflite_sha256)
    assert len(hashes) == 1
