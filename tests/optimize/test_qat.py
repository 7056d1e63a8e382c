"""Quantization-aware training: PQAT after prune, range initialisation, layers TF-MOT refuses,
and QAT models converting to fully-integer int8 with int8 I/O."""

from __future__ import annotations

import numpy as np
import pytest

from tests.optimize.conftest import layer_stats
from tflc.errors import BadInput
from tflc.optimize.config import parse_config
from tflc.optimize.qat import initialise_ranges, quantize_aware


def qat_config(**fields):
    return parse_config({"stages": [{"qat": {"epochs": 1, **fields}}]}).stages[0]


def test_qat_after_prune_keeps_the_zeros(pruned_pqat):
    pruned, qat = pruned_pqat.stages[1:3]
    assert qat.details["scheme"] == "pqat" and qat.status == "accepted"
    stats = layer_stats(qat)
    for name in ("conv2", "fc1"):
        assert stats[name]["zero_fraction"] >= 0.79
    assert abs(qat.sparsity - pruned.sparsity) < 0.01
    assert qat.int8_accuracy >= pruned_pqat.stages[0].int8_accuracy - 3


def test_qat_model_converts_to_fully_integer_int8(pruned_pqat, digits_dir):
    from tflc.convert.converter import convert_int8
    from tflc.convert.integer_verifier import verify_integer
    from tflc.tflite.reader import read_model

    calib = np.load(digits_dir / "calib.npz")["x"][:50]
    view = read_model(convert_int8(pruned_pqat.loaded, [calib]))
    assert [t.dtype for t in view.input_tensors()] == ["int8"]
    assert [t.dtype for t in view.output_tensors()] == ["int8"]
    assert verify_integer(view).integer_core


def test_activation_ranges_start_from_the_data(digits_loaded, digits_dir):
    """TF-MOT's ranges start at [-6, 6]; they are set from the data before fine-tuning."""
    from tflc.tf_env import import_tf_keras, import_tfmot

    tfmot = import_tfmot()
    keras = import_tf_keras()
    x = np.load(digits_dir / "train.npz")["x"][:128]
    model_q = tfmot.quantization.keras.quantize_model(digits_loaded.model)
    assert initialise_ranges(model_q, [x]) > 0
    variables = {v.name.split(":")[0]: float(v.numpy()) for v in model_q.non_trainable_variables
                 if v.shape == ()}
    conv1 = keras.Model(digits_loaded.model.inputs, digits_loaded.model.get_layer("conv1").output)
    seen = np.asarray(conv1(x))
    assert variables["quant_conv1/post_activation_min"] == 0.0  # ReLU output, 0 included
    assert abs(variables["quant_conv1/post_activation_max"] - seen.max()) < 0.01 * seen.max()
    assert variables["quant_fc1/post_activation_max"] != 6.0


@pytest.fixture(scope="module")
def model_with_unsupported_layer(digits_train):
    """Conv -> pool -> BatchNormalization (not after a conv: TF-MOT refuses it) -> dense."""
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits_train.x[0], digits_train.y, epochs=1, verbose=0)
    return model


def test_layers_tf_mot_cannot_quantize_are_named(model_with_unsupported_layer, digits_train,
                                                   digits_task):
    with pytest.raises(BadInput) as info:
        quantize_aware(model_with_unsupported_layer, qat_config(), digits_train, digits_task, 0)
    message = str(info.value)
    assert "TF-MOT cannot quantize layer(s) 'bn' (BatchNormalization)" in message
    assert "skip_unsupported: true" in message and "\n" not in message


def test_skip_unsupported_leaves_them_in_float_and_still_converts(
        model_with_unsupported_layer, digits_train, digits_task, digits_loaded):
    from tflc.convert.converter import convert_int8
    from tflc.convert.integer_verifier import verify_integer
    from tflc.tflite.reader import read_model

    model, info = quantize_aware(model_with_unsupported_layer,
                                 qat_config(skip_unsupported=True), digits_train, digits_task, 0)
    assert info.left_in_float == ["bn"] and info.scheme == "qat"
    view = read_model(convert_int8(digits_loaded.with_model(model), [digits_train.x[0][:50]]))
    assert verify_integer(view).integer_core
    assert [t.dtype for t in view.input_tensors()] == ["int8"]
