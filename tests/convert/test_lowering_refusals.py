"""When a layer cannot be lowered: one line naming the layer (name and class), the TensorFlow
op, and a fix; each fix is then applied and shown to compile fully integer."""

from __future__ import annotations

import pytest

from tests.convert.test_lowering import _compile, _keras3
from tests.zoo.flatbuffer import assert_fully_integer
from tflc.errors import BadInput, PipelineError


def _model(body, shape):
    keras = _keras3()
    keras.utils.set_random_seed(0)
    i = keras.Input(shape)
    return keras.Model(i, keras.layers.Dense(3, activation="softmax")(body(keras, i)))


def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_conv_lstm_names_layer_op_and_the_replacement_that_compiles(tmp_path):
    conv_lstm = _model(lambda k, i: k.layers.ConvLSTM2D(2, 3, name="clstm")(i), (4, 6, 6, 1))
    with pytest.raises(PipelineError) as exc:
        _compile(conv_lstm, tmp_path / "a")
    line = _one_line(exc)
    assert "layer 'clstm' (ConvLSTM2D)" in line and "TensorList" in line
    assert "TimeDistributed(Conv2D) followed by LSTM" in line

    def fixed(k, i):
        x = k.layers.TimeDistributed(k.layers.Conv2D(2, 3))(i)
        return k.layers.LSTM(4)(k.layers.TimeDistributed(k.layers.Flatten())(x))
    report = _compile(_model(fixed, (4, 6, 6, 1)), tmp_path / "b")
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in assert_fully_integer(report.tflite_path)


def test_generic_rnn_names_layer_op_and_unroll_which_compiles(tmp_path):
    generic = _model(lambda k, i: k.layers.RNN(k.layers.GRUCell(4), name="loop")(i), (5, 3))
    with pytest.raises(PipelineError) as exc:
        _compile(generic, tmp_path / "a")
    line = _one_line(exc)
    assert "layer 'loop' (RNN)" in line and "TensorList" in line and "unroll=True" in line
    unrolled = _model(lambda k, i: k.layers.RNN(k.layers.GRUCell(4), unroll=True)(i), (5, 3))
    assert_fully_integer(_compile(unrolled, tmp_path / "b").tflite_path)



def test_a_layer_without_tf_keras_twin_beside_a_recurrent_one_is_named_in_one_line(tmp_path):
    """Keras 3 recurrent layers are lowered by rebuilding the whole model as tf_keras: a layer
    tf_keras lacks (RMSNormalization) closes that route, named with the layer being lowered."""
    def body(k, i):
        return k.layers.LSTM(4, name="rnn")(k.layers.RMSNormalization(name="rms")(i))
    with pytest.raises(BadInput) as exc:
        _compile(_model(body, (5, 3)), tmp_path / "a")
    line = _one_line(exc)
    assert "layer 'rnn' (LSTM) is lowered by rebuilding the model as tf_keras" in line
    assert "layer 'rms' (RMSNormalization) has no tf_keras equivalent" in line
    assert "without that layer" in line
