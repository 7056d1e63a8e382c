"""The agreement corpus: tiny Keras models whose conversion emits the ops the descriptors name.

Each entry builds a tf_keras model of a few hundred parameters; `build_corpus` converts all of
them once (int8 with int8 I/O, or float32) and returns {name: tflite bytes}. Layers are chosen so
the converter emits each operator in a variant the backends support and, where a backend has a
limit, in a variant that breaks it (stride 4, dilation, align_corners, 1x1 pooling with stride 2,
depth multiplier 2, float ops left in an integer model, rank 5, ...).

Used by tests/check/test_check_agreement.py and benchmarks/agreement.py, so both see the same
models. TensorFlow is imported only inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Entry:
    name: str
    build: Callable  # (keras module, tf module) -> keras Model
    kind: str = "int8"  # "int8" (full integer, int8 I/O), "int8-float-io" or "float"
    what: str = ""


def _k():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from tflc.tf_env import import_tensorflow, import_tf_keras

    return import_tf_keras(), import_tensorflow()


def _model(k, inp, out):
    return k.Model(inp, out)


def cnn(k, tf):
    inp = k.Input((12, 12, 3), batch_size=1)
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = k.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = k.layers.MaxPool2D()(x)
    x = k.layers.Conv2D(8, 1, strides=2)(x)
    x = k.layers.AveragePooling2D(3)(x)
    x = k.layers.Flatten()(x)
    x = k.layers.Dense(6)(x)
    return _model(k, inp, k.layers.Softmax()(x))


def residual(k, tf):
    inp = k.Input((8, 8, 4), batch_size=1)
    a = k.layers.Conv2D(4, 3, padding="same")(inp)
    b = k.layers.Conv2D(4, 1)(inp)
    s = k.layers.Add()([a, b])
    d = k.layers.Subtract()([a, b])
    m = k.layers.Multiply()([s, d])
    mx = k.layers.Maximum()([a, m])
    mn = k.layers.Minimum()([b, m])
    c = k.layers.Concatenate()([mx, mn, s])
    x = k.layers.GlobalAveragePooling2D()(c)
    return _model(k, inp, k.layers.Dense(3)(x))


def activations(k, tf):
    inp = k.Input((16,), batch_size=1)
    x = k.layers.Dense(16)(inp)
    a = k.layers.Activation("sigmoid")(x)
    b = k.layers.Activation("tanh")(x)
    c = k.layers.LeakyReLU(0.1)(x)
    d = k.layers.ReLU()(x)
    e = k.layers.ReLU(max_value=6.0)(x)
    f = k.layers.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0)(x)  # HARD_SWISH
    return _model(k, inp, k.layers.Concatenate()([a, b, c, d, e, f]))


def float_islands(k, tf):
    """Ops the int8 converter leaves in float (DEQUANTIZE -> op -> QUANTIZE)."""
    inp = k.Input((8, 8, 4), batch_size=1)
    x = k.layers.Conv2D(4, 3, padding="same")(inp)
    x = k.layers.Activation("elu")(x)
    x = k.layers.Lambda(lambda t: tf.nn.log_softmax(t))(x)
    return _model(k, inp, k.layers.Conv2D(2, 1)(x))


def gelu(k, tf):
    inp = k.Input((8,), batch_size=1)
    x = k.layers.Dense(8)(inp)
    return _model(k, inp, k.layers.Activation("gelu")(x))


def prelu(k, tf):
    inp = k.Input((8, 8, 4), batch_size=1)
    x = k.layers.Conv2D(4, 3, padding="same")(inp)
    x = k.layers.PReLU(shared_axes=[1, 2])(x)
    return _model(k, inp, k.layers.Conv2D(2, 1)(x))


def resize(k, tf):
    inp = k.Input((4, 4, 4), batch_size=1)
    a = k.layers.UpSampling2D(2, interpolation="nearest")(inp)
    b = k.layers.UpSampling2D(2, interpolation="bilinear")(inp)
    c = k.layers.Lambda(lambda t: tf.compat.v1.image.resize_bilinear(t, (8, 8), align_corners=True))(inp)
    d = k.layers.Lambda(lambda t: tf.compat.v1.image.resize_bilinear(t, (8, 8)))(inp)
    return _model(k, inp, k.layers.Concatenate()([a, b, c, d]))


def shapes(k, tf):
    inp = k.Input((8, 8, 4), batch_size=1)
    x = k.layers.ZeroPadding2D(1)(inp)
    x = k.layers.Cropping2D(((1, 2), (2, 1)))(x)
    x = k.layers.Permute((2, 1, 3))(x)
    parts = k.layers.Lambda(lambda t: tf.split(t, 2, axis=3))(x)
    y = k.layers.Lambda(lambda ts: tf.stack(ts, axis=1))(parts)
    y = k.layers.Lambda(lambda t: tf.reduce_max(t, axis=1))(y)
    z = k.layers.Lambda(lambda t: tf.reduce_sum(t, axis=[1, 2], keepdims=True))(y)
    z = k.layers.Reshape((2,))(z)
    return _model(k, inp, z)


def layernorm(k, tf):
    inp = k.Input((6, 8), batch_size=1)
    x = k.layers.LayerNormalization()(inp)
    return _model(k, inp, k.layers.Dense(4)(x))


def upconv(k, tf):
    inp = k.Input((4, 4, 4), batch_size=1)
    x = k.layers.Conv2DTranspose(4, 3, strides=2, padding="same")(inp)
    return _model(k, inp, k.layers.Conv2D(2, 1)(x))


def limits(k, tf):
    """Variants past common limits: stride 4, dilation 2, 1x1 pooling with stride 2, multiplier 2."""
    inp = k.Input((16, 16, 1), batch_size=1)
    a = k.layers.Conv2D(4, 3, strides=4, padding="valid")(inp)
    b = k.layers.Conv2D(4, 3, dilation_rate=2, padding="same")(inp)
    b = k.layers.MaxPool2D(1, strides=2)(b)
    b = k.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(b)
    b = k.layers.AveragePooling2D(2)(b)
    a = k.layers.Conv2D(8, 1)(a)
    return _model(k, inp, k.layers.Add()([a, b]))


def matmul(k, tf):
    inp = k.Input((4, 6), batch_size=1)
    a = k.layers.Dense(6)(inp)
    x = k.layers.Lambda(lambda ts: tf.matmul(ts[0], ts[1], transpose_b=True))([inp, a])
    return _model(k, inp, k.layers.Flatten()(x))


def space_depth(k, tf):
    inp = k.Input((8, 8, 4), batch_size=1)
    x = k.layers.Lambda(lambda t: tf.nn.space_to_depth(t, 2))(inp)
    x = k.layers.Conv2D(16, 1)(x)
    x = k.layers.Lambda(lambda t: tf.nn.depth_to_space(t, 2))(x)
    return _model(k, inp, x)


def math_ops(k, tf):
    inp = k.Input((8,), batch_size=1)
    x = k.layers.Dense(8)(inp)
    a = k.layers.Lambda(lambda t: tf.abs(t))(x)
    b = k.layers.Lambda(lambda t: tf.sqrt(tf.abs(t) + 1.0))(x)
    d = k.layers.Lambda(lambda ts: tf.math.squared_difference(ts[0], ts[1]))([x, a])
    return _model(k, inp, k.layers.Concatenate()([a, b, d]))


def exp(k, tf):
    inp = k.Input((8,), batch_size=1)
    x = k.layers.Dense(8)(inp)
    return _model(k, inp, k.layers.Lambda(lambda t: tf.exp(t))(x))


def tile(k, tf):
    inp = k.Input((8,), batch_size=1)
    x = k.layers.Dense(8)(inp)
    return _model(k, inp, k.layers.Lambda(lambda t: tf.tile(t, [1, 2]))(x))


def argmax(k, tf):
    inp = k.Input((10,), batch_size=1)
    x = k.layers.Dense(10)(inp)
    return _model(k, inp, k.layers.Lambda(lambda t: tf.argmax(t, axis=-1))(x))


def mirror_pad(k, tf):
    inp = k.Input((6, 6, 2), batch_size=1)
    x = k.layers.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT"))(inp)
    return _model(k, inp, k.layers.Conv2D(2, 3)(x))


def conv3d(k, tf):
    inp = k.Input((4, 6, 6, 2), batch_size=1)
    x = k.layers.Conv3D(2, 3)(inp)
    return _model(k, inp, k.layers.Flatten()(x))


def more_shapes(k, tf):
    # Every UNPACK output is used: an unused one has no calibration range, and the converter's
    # choice between int8 and float for the op then varies from run to run.
    inp = k.Input((2, 8), batch_size=1)
    x = k.layers.Dense(8)(inp)
    rows = k.layers.Lambda(lambda t: tf.unstack(t, axis=1))(x)
    a = k.layers.Lambda(lambda ts: tf.expand_dims(ts[0] + ts[1], 1))(rows)
    b, c = k.layers.Lambda(lambda t: tf.split(t, [3, 5], axis=2))(a)
    d = k.layers.Lambda(lambda t: tf.slice(t, [0, 0, 1], [1, 1, 4]))(c)
    e = k.layers.Lambda(lambda ts: tf.squeeze(tf.concat(ts, axis=2), axis=1))([b, d])
    return _model(k, inp, e)


def misc_math(k, tf):
    inp = k.Input((8,), batch_size=1)
    x = k.layers.Dense(8)(inp)
    y = k.layers.Dense(8, activation="sigmoid")(inp)
    a = k.layers.Lambda(lambda t: tf.negative(t))(x)
    b = k.layers.Lambda(lambda ts: ts[0] / (ts[1] + 1.0))([x, y])
    c = k.layers.Lambda(lambda t: tf.math.l2_normalize(t, axis=-1))(x)
    return _model(k, inp, k.layers.Concatenate()([a, b, c]))


def log(k, tf):
    inp = k.Input((8,), batch_size=1)
    x = k.layers.Dense(8, activation="sigmoid")(inp)
    return _model(k, inp, k.layers.Lambda(lambda t: tf.math.log(t + 1.0))(x))


def branches(k, tf):
    """Two parallel branches; only one goes through an op the Edge TPU lacks (LEAKY_RELU)."""
    inp = k.Input((8, 8, 4), batch_size=1)
    a = k.layers.Conv2D(4, 3, padding="same")(inp)
    a = k.layers.LeakyReLU(0.2)(a)
    a = k.layers.Conv2D(4, 1)(a)
    b = k.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = k.layers.Conv2D(4, 1)(b)
    x = k.layers.Concatenate()([a, b])
    return _model(k, inp, k.layers.Conv2D(2, 1)(x))


def lstm(k, tf):
    inp = k.Input((5, 4), batch_size=1)
    x = k.layers.LSTM(4, unroll=False)(inp)
    return _model(k, inp, k.layers.Dense(2)(x))


CORPUS = [
    Entry("cnn", cnn, what="CONV_2D, DEPTHWISE_CONV_2D (fused RELU/RELU6), pools, FC, SOFTMAX"),
    Entry("residual", residual, what="ADD, SUB, MUL, MAXIMUM, MINIMUM, CONCATENATION, MEAN"),
    Entry("activations", activations, what="LOGISTIC, TANH, LEAKY_RELU, RELU, RELU6, HARD_SWISH"),
    Entry("float_islands", float_islands, what="ELU, LOG_SOFTMAX left in float"),
    Entry("gelu", gelu, what="GELU (float in an int8 model)"),
    Entry("prelu", prelu, what="PRELU"),
    Entry("resize", resize, what="RESIZE_NEAREST_NEIGHBOR, RESIZE_BILINEAR (half-pixel, align-corners)"),
    Entry("shapes", shapes, what="PAD, STRIDED_SLICE, TRANSPOSE, SPLIT, PACK, REDUCE_MAX, SUM, RESHAPE"),
    Entry("layernorm", layernorm, what="MEAN, SQUARED_DIFFERENCE, RSQRT (LayerNormalization)"),
    Entry("upconv", upconv, what="TRANSPOSE_CONV"),
    Entry("limits", limits, what="stride 4, dilation 2, 1x1 pool stride 2, depth multiplier 2"),
    Entry("matmul", matmul, what="BATCH_MATMUL of two run-time tensors"),
    Entry("space_depth", space_depth, what="SPACE_TO_DEPTH, DEPTH_TO_SPACE"),
    Entry("math_ops", math_ops, what="ABS, SQRT, SQUARED_DIFFERENCE"),
    Entry("exp", exp, what="EXP"),
    Entry("tile", tile, what="TILE"),
    Entry("argmax", argmax, what="ARG_MAX"),
    Entry("mirror_pad", mirror_pad, what="MIRROR_PAD"),
    Entry("conv3d", conv3d, what="CONV_3D (rank 5)"),
    Entry("lstm", lstm, what="UNIDIRECTIONAL_SEQUENCE_LSTM"),
    Entry("more_shapes", more_shapes, what="UNPACK, SPLIT_V, SLICE (expand_dims and squeeze become RESHAPE)"),
    Entry("misc_math", misc_math, what="NEG, DIV, L2_NORMALIZATION"),
    Entry("log", log, what="LOG"),
    Entry("branches", branches, what="parallel branches, one through LEAKY_RELU"),
    Entry("cnn_float_io", cnn, kind="int8-float-io", what="int8 inside, float32 I/O (QUANTIZE/DEQUANTIZE at the edges)"),
    Entry("cnn_float", cnn, kind="float", what="the cnn model in float32"),
    Entry("activations_float", activations, kind="float", what="activations in float32"),
    Entry("resize_float", resize, kind="float", what="resizes in float32"),
    Entry("shapes_float", shapes, kind="float", what="shape ops in float32"),
    Entry("limits_float", limits, kind="float", what="limit variants in float32"),
]


def convert(model, kind: str, seed: int = 0) -> bytes:
    """Convert a tf_keras model: full-integer int8 (int8 I/O) or plain float32."""
    from tflc.tf_env import import_tensorflow, quiet_native_output

    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind.startswith("int8"):
        rng = np.random.default_rng(seed)
        shapes = [tuple(d or 1 for d in t.shape) for t in model.inputs]

        def representative():
            for _ in range(8):
                yield [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        if kind == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    with quiet_native_output():
        return converter.convert()


def build_corpus(names=None) -> dict[str, bytes]:
    """Build and convert the corpus (or the named entries): {name: .tflite bytes}."""
    k, tf = _k()
    out = {}
    for entry in CORPUS:
        if names and entry.name not in names:
            continue
        tf.random.set_seed(0)
        k.backend.clear_session()
        out[entry.name] = convert(entry.build(k, tf), entry.kind)
    return out
