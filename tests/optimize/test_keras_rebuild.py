"""Keras 3 -> tf_keras: same architecture, same weights, same outputs; clear when impossible."""

from __future__ import annotations

import numpy as np
import pytest

from tflc.optimize.keras_rebuild import CannotRebuild, rebuild_as_tf_keras


@pytest.fixture(scope="module")
def keras3():
    from tflc.tf_env import import_keras3

    return import_keras3()


def test_functional_model_with_shared_nested_and_merged_layers(keras3):
    layers = keras3.layers
    keras3.utils.set_random_seed(0)
    image = keras3.Input((16, 16, 3), name="img")
    aux = keras3.Input((4,), name="aux")
    x = layers.Conv2D(8, 3, padding="same",
                      kernel_regularizer=keras3.regularizers.L2(1e-4), name="conv")(image)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.Add(name="residual")([x, layers.DepthwiseConv2D(3, padding="same", name="dw")(x)])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    shared = layers.Dense(4, name="shared")
    a, b = shared(aux), shared(layers.Dense(4, name="pre")(aux))
    inner_in = keras3.Input((8,))
    nested = keras3.Model(inner_in, layers.Dense(8, activation="tanh")(inner_in), name="nested")
    x = layers.Concatenate(name="concat")([nested(x), a, b])
    out = layers.Dense(3, activation="softmax", name="out")(x)
    model = keras3.Model([image, aux], out)
    # non-trivial batch-norm statistics, so a wrong weight order would show
    bn = model.get_layer("bn")
    bn.set_weights([w + np.random.default_rng(1).random(w.shape) for w in bn.get_weights()])

    rebuilt, report = rebuild_as_tf_keras(model)
    assert type(rebuilt).__module__.startswith("tf_keras")
    assert [layer.name for layer in rebuilt.layers if layer.name != "nested"] == \
        [layer.name for layer in model.layers if layer.name != "nested"]
    assert rebuilt.count_params() == model.count_params()
    assert report.max_abs_difference < 1e-5
    assert len(rebuilt.get_layer("conv").losses) == 1  # the regularizer came along
    rng = np.random.default_rng(2)
    x = [rng.random((5, 16, 16, 3), np.float32), rng.random((5, 4), np.float32)]
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(rebuilt(x)), atol=1e-5)


def test_sequential_model(keras3):
    model = keras3.Sequential([keras3.Input((6,)), keras3.layers.Dense(5, activation="relu"),
                               keras3.layers.Dropout(0.2), keras3.layers.Dense(2)])
    rebuilt, report = rebuild_as_tf_keras(model)
    assert report.max_abs_difference < 1e-6 and len(rebuilt.layers) == 4


def test_a_layer_without_tf_keras_twin_is_named(keras3):
    class Doubler(keras3.layers.Layer):
        def call(self, x):
            return x * 2

    inputs = keras3.Input((3,))
    model = keras3.Model(inputs, keras3.layers.Dense(2)(Doubler(name="double")(inputs)))
    with pytest.raises(CannotRebuild) as info:
        rebuild_as_tf_keras(model, source="m.keras")
    message = str(info.value)
    assert message.startswith("m.keras: layer 'double' (Doubler) has no tf_keras equivalent")
    assert "post-training quantization works on Keras 3 models" in message
    assert info.value.exit_code == 2


def test_a_subclassed_model_is_refused_with_what_works(keras3):
    class Net(keras3.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras3.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(CannotRebuild, match="only Sequential and functional models"):
        rebuild_as_tf_keras(net)
