"""The zoo: architectures users bring, each a builder of a small, untrained model.

Keras 3 (`k3`) and tf_keras (`k2`) models: recurrent, attention, 1-D and dilated convolution
stacks, decoders, several inputs and outputs, preprocessing layers, and the `keras.applications`
families that build offline (weights=None) at small inputs. `SLOW` marks the applications (many
layers, seconds to minutes to convert); `M4` those expected to run whole on TFLite Micro
(cortex-m4): within its 2 MiB flash and 640 KiB RAM, and only ops its kernels have.
"""

from __future__ import annotations


def _k3():
    from tflc.tf_env import import_keras3

    return import_keras3()


def _k2():
    from tflc.tf_env import import_tf_keras

    return import_tf_keras()


def _head(k, x, classes=4):
    return k.layers.Dense(classes, activation="softmax")(x)


def _seq(k, body, shape=(8, 4)):
    i = k.Input(shape)
    return k.Model(i, _head(k, body(k, i)))


def _attention(k, i):
    a = k.layers.MultiHeadAttention(2, 4)(i, i)
    x = k.layers.LayerNormalization()(k.layers.Add()([i, a]))
    f = k.layers.Dense(16, activation="gelu")(x)
    x = k.layers.LayerNormalization()(k.layers.Add()([x, k.layers.Dense(8)(f)]))
    return k.layers.GlobalAveragePooling1D()(x)


def _tcn(k, i):
    x = k.layers.Conv1D(8, 1)(i)
    for rate in (1, 2, 4):
        y = k.layers.Conv1D(8, 3, padding="causal", dilation_rate=rate, activation="relu")(x)
        x = k.layers.Add()([x, y])
    return k.layers.GlobalAveragePooling1D()(x)


def _decoder_transpose(k):
    i = k.Input((8, 8, 3))
    x = k.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(i)
    x = k.layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(x)
    return k.Model(i, k.layers.Conv2D(2, 1, activation="sigmoid")(x))


def _decoder_upsampling(k):
    i = k.Input((8, 8, 3))
    x = k.layers.MaxPooling2D()(k.layers.Conv2D(8, 3, padding="same", activation="relu")(i))
    x = k.layers.UpSampling2D()(x)
    x = k.layers.UpSampling2D(interpolation="bilinear")(k.layers.Conv2D(4, 3, padding="same")(x))
    return k.Model(i, k.layers.Conv2D(1, 1)(k.layers.MaxPooling2D()(x)))


def _multi_io(k):
    image, series = k.Input((8, 8, 1), name="image"), k.Input((6, 3), name="series")
    a = k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(4, 3, activation="relu")(image))
    b = k.layers.Flatten()(k.layers.Conv1D(4, 3, activation="relu")(series))
    joined = k.layers.Concatenate()([a, b])
    return k.Model([image, series], [_head(k, joined, 3), k.layers.Dense(1, name="score")(joined)])


def _preprocessing(k):
    i = k.Input((12, 12, 3))
    x = k.layers.Resizing(8, 8)(i)
    x = k.layers.Rescaling(1 / 255.0)(x)
    norm = k.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.1, 0.2, 0.3])
    x = k.layers.Conv2D(4, 3, activation="relu")(norm(x))
    return k.Model(i, _head(k, k.layers.GlobalAveragePooling2D()(x)))


def _small_cnn(k):
    i = k.Input((16, 16, 3))
    x = k.layers.Conv2D(8, 3, strides=2, activation="relu")(i)
    x = k.layers.DepthwiseConv2D(3, activation="relu6")(x)
    x = k.layers.BatchNormalization()(k.layers.Conv2D(8, 1)(x))
    return k.Model(i, _head(k, k.layers.GlobalAveragePooling2D()(x)))


def _app(name, shape=(32, 32, 3), **kwargs):
    def build(k):
        return getattr(k.applications, name)(weights=None, input_shape=shape, classes=4, **kwargs)
    return build


_LSTM = lambda k, i: k.layers.LSTM(8)(i)  # noqa: E731
_GRU = lambda k, i: k.layers.GRU(8, return_sequences=True)(i)  # noqa: E731

ZOO = {
    # name: (keras flavour, builder)
    "k3_lstm": ("k3", lambda k: _seq(k, _LSTM)),
    "k3_lstm_sequences": ("k3", lambda k: _seq(k, lambda k, i: k.layers.Flatten()(k.layers.LSTM(4, return_sequences=True)(i)))),
    "k3_bilstm": ("k3", lambda k: _seq(k, lambda k, i: k.layers.Bidirectional(k.layers.LSTM(8))(i))),
    "k3_gru": ("k3", lambda k: _seq(k, lambda k, i: k.layers.Flatten()(_GRU(k, i)))),
    "k3_simplernn": ("k3", lambda k: _seq(k, lambda k, i: k.layers.SimpleRNN(8)(i))),
    "k2_lstm": ("k2", lambda k: _seq(k, _LSTM)),
    "k2_gru": ("k2", lambda k: _seq(k, lambda k, i: k.layers.GRU(8)(i))),
    "k3_attention": ("k3", lambda k: _seq(k, _attention, (8, 8))),
    "k2_attention": ("k2", lambda k: _seq(k, _attention, (8, 8))),
    "k3_conv1d": ("k3", lambda k: _seq(k, lambda k, i: k.layers.GlobalMaxPooling1D()(
        k.layers.Conv1D(8, 3, activation="relu")(k.layers.Conv1D(8, 3, activation="relu")(i))), (16, 4))),
    "k3_separable_conv1d": ("k3", lambda k: _seq(k, lambda k, i: k.layers.GlobalAveragePooling1D()(
        k.layers.SeparableConv1D(8, 3, activation="relu")(i)), (16, 4))),
    "k3_tcn": ("k3", lambda k: _seq(k, _tcn, (16, 4))),
    "k3_conv2d_transpose": ("k3", _decoder_transpose),
    "k2_upsampling": ("k2", _decoder_upsampling),
    "k3_multi_io": ("k3", _multi_io),
    "k3_preprocessing": ("k3", _preprocessing),
    "k2_small_cnn": ("k2", _small_cnn),
    "k3_mobilenet": ("k3", _app("MobileNet", alpha=0.25)),
    "k3_mobilenet_v2": ("k3", _app("MobileNetV2", alpha=0.35)),
    "k3_mobilenet_v3_small": ("k3", _app("MobileNetV3Small", alpha=0.75, include_preprocessing=False)),
    "k3_mobilenet_v3_large": ("k3", _app("MobileNetV3Large", alpha=0.75, include_preprocessing=False)),
    "k3_efficientnet_b0": ("k3", _app("EfficientNetB0")),
    "k3_efficientnet_v2_b0": ("k3", _app("EfficientNetV2B0")),
    "k3_resnet50": ("k3", _app("ResNet50")),
    "k3_resnet50_v2": ("k3", _app("ResNet50V2")),
    "k3_densenet121": ("k3", _app("DenseNet121")),
    "k3_nasnet_mobile": ("k3", _app("NASNetMobile")),
    "k3_xception": ("k3", _app("Xception", shape=(71, 71, 3))),
    "k3_vgg16": ("k3", _app("VGG16")),
    "k3_inception_v3": ("k3", _app("InceptionV3", shape=(75, 75, 3))),
    "k3_inception_resnet_v2": ("k3", _app("InceptionResNetV2", shape=(75, 75, 3))),
    # RegNet and ResNet-RS are tf_keras applications only (Keras 3 has neither)
    "k2_regnet_x002": ("k2", _app("RegNetX002")),
    "k2_resnet_rs50": ("k2", _app("ResNetRS50")),
    "k2_mobilenet_v2": ("k2", _app("MobileNetV2", alpha=0.35)),
    # LayerNormalization written out in the Keras 3 model itself: LayerScale needs no tf_keras twin
    "k3_convnext_tiny": ("k3", _app("ConvNeXtTiny")),
}
SLOW = {name for name, (_, builder) in ZOO.items() if builder.__qualname__.startswith("_app")}
# tf_keras RegNet writes its residual `x + y` as a TFOpLambda layer, which tflc refuses as
# code-carrying until the user says the file is trusted (--allow-unsafe-code); these zoo files
# are ours, so the zoo passes it for them (and asserts the refusal line without it).
TRUSTED_CODE = {"k2_regnet_x002"}
# Too big for the board's flash or RAM (or not measured there): everything else runs on it.
# TFLite Micro has no GELU kernel: the attention blocks (GELU feed-forward) stay off it.
NOT_M4 = {"k2_attention", "k3_attention", "k3_resnet50", "k3_resnet50_v2", "k3_densenet121", "k3_xception",
          "k3_efficientnet_b0", "k3_efficientnet_v2_b0", "k3_nasnet_mobile", "k2_regnet_x002",
          "k3_mobilenet_v3_large", "k3_vgg16", "k3_inception_v3", "k3_inception_resnet_v2",
          "k2_resnet_rs50", "k3_convnext_tiny"}


def build(name: str):
    """The zoo model `name`, seeded: the same weights every time (so the cache key holds)."""
    flavour, builder = ZOO[name]
    k = _k3() if flavour == "k3" else _k2()
    k.utils.set_random_seed(0)
    return builder(k)
