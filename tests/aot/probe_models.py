"""One-op probe models for the Qualcomm HTP descriptors: each TensorFlow op of OPS alone on a
[1, 8, 8, 4] input, converted in float32, int8 (int8 I/O, float fallback where the converter has
no int8 kernel) and 16x8, so the real plugin says op by op and dtype by dtype what the NPU
takes, including ops the real-world corpus does not hold.

`probe(name, mode)` converts once and caches the file under build/qnn-probes by a hash of this
file and the TensorFlow version. TensorFlow is imported only when a probe is converted.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TFLC_PROBE_CACHE", REPO / "build" / "qnn-probes"))
MODES = ("float32", "int8", "16x8")
S = (1, 8, 8, 4)


def _ops(tf):
    c = lambda *shape: tf.constant(np.random.RandomState(0).uniform(0.5, 1.5, shape).astype(np.float32))  # noqa: E731
    OPS = {
     "exp": lambda x: tf.exp(x), "log": lambda x: tf.math.log(tf.abs(x) + 1), "sqrt": lambda x: tf.sqrt(tf.abs(x)),
     "rsqrt": lambda x: tf.math.rsqrt(tf.abs(x) + 1), "square": lambda x: tf.square(x), "abs": lambda x: tf.abs(x),
     "neg": lambda x: -x, "sin": lambda x: tf.sin(x), "cos": lambda x: tf.cos(x), "tanh": lambda x: tf.tanh(x),
     "sigmoid": lambda x: tf.sigmoid(x), "relu": lambda x: tf.nn.relu(x), "relu6": lambda x: tf.nn.relu6(x),
     "leaky_relu": lambda x: tf.nn.leaky_relu(x, 0.2), "elu": lambda x: tf.nn.elu(x), "gelu": lambda x: tf.nn.gelu(x),
     "hard_swish": lambda x: x * tf.nn.relu6(x + 3) / 6, "floor": lambda x: tf.floor(x), "ceil": lambda x: tf.math.ceil(x),
     "round": lambda x: tf.round(x), "log_softmax": lambda x: tf.nn.log_softmax(x), "softmax": lambda x: tf.nn.softmax(x),
     "l2norm": lambda x: tf.math.l2_normalize(x, -1), "lrn": lambda x: tf.nn.local_response_normalization(x),
     "add": lambda x: x + c(*S[1:]), "sub": lambda x: x - c(*S[1:]), "mul": lambda x: x * c(*S[1:]), "div": lambda x: x / c(*S[1:]),
     "maximum": lambda x: tf.maximum(x, c(*S[1:])), "minimum": lambda x: tf.minimum(x, c(*S[1:])),
     "pow": lambda x: tf.pow(tf.abs(x) + 1, c(*S[1:])), "sqdiff": lambda x: tf.math.squared_difference(x, c(*S[1:])),
     "floor_div": lambda x: tf.math.floordiv(x, c(*S[1:])), "floor_mod": lambda x: tf.math.floormod(x, c(*S[1:])),
     "atan2": lambda x: tf.math.atan2(x, c(*S[1:])), "greater": lambda x: tf.cast(x > c(*S[1:]), tf.float32) * x,
     "less": lambda x: tf.where(x < c(*S[1:]), x, -x), "equal": lambda x: tf.where(tf.equal(x, c(*S[1:])), x, -x),
     "mean": lambda x: tf.reduce_mean(x, [1, 2], keepdims=True), "sum": lambda x: tf.reduce_sum(x, [1, 2], keepdims=True),
     "rmax": lambda x: tf.reduce_max(x, [1, 2], keepdims=True), "rmin": lambda x: tf.reduce_min(x, [1, 2], keepdims=True),
     "rprod": lambda x: tf.reduce_prod(x, [1, 2], keepdims=True),
     "argmax64": lambda x: tf.argmax(x, -1), "argmax32": lambda x: tf.argmax(x, -1, output_type=tf.int32),
     "argmin32": lambda x: tf.argmin(x, -1, output_type=tf.int32),
     "reshape": lambda x: tf.reshape(x, (1, 64, 4)), "transpose": lambda x: tf.transpose(x, (0, 3, 1, 2)),
     "concat": lambda x: tf.concat([x, x * 2], -1), "stack": lambda x: tf.stack([x, x * 2], 1),
     "unstack": lambda x: tf.unstack(x, axis=3)[1], "split": lambda x: tf.split(x, 2, -1)[1],
     "split_v": lambda x: tf.split(x, [1, 3], -1)[1], "slice": lambda x: tf.slice(x, [0, 1, 1, 0], [1, 4, 4, 4]),
     "strided": lambda x: x[:, ::2, 1:, :], "tile": lambda x: tf.tile(x, [1, 2, 1, 1]),
     "pad": lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]),
     "mirror_pad": lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT"),
     "gather": lambda x: tf.gather(x, [0, 2, 3], axis=3), "gather_nd": lambda x: tf.gather_nd(x, [[0, 1], [0, 3]]),
     "d2s": lambda x: tf.nn.depth_to_space(x, 2), "s2d": lambda x: tf.nn.space_to_depth(x, 2),
     "b2s": lambda x: tf.compat.v1.batch_to_space_nd(tf.compat.v1.space_to_batch_nd(x, [2, 2], [[0, 0], [0, 0]]), [2, 2], [[0, 0], [0, 0]]),
     "resize_bilinear": lambda x: tf.image.resize(x, (16, 16)), "resize_nearest": lambda x: tf.image.resize(x, (16, 16), "nearest"),
     "broadcast_to": lambda x: tf.broadcast_to(tf.reduce_mean(x, -1, keepdims=True), S),
     "reverse": lambda x: tf.reverse(x, [2]), "cumsum": lambda x: tf.cumsum(x, axis=2),
     "one_hot": lambda x: tf.one_hot(tf.argmax(x, -1, output_type=tf.int32), 4),
     "topk": lambda x: tf.math.top_k(tf.reshape(x, (1, 256)), 4).values,
     "batch_matmul": lambda x: tf.matmul(tf.reshape(x, (1, 16, 16)), tf.reshape(x, (1, 16, 16))),
     "matmul_const": lambda x: tf.matmul(tf.reshape(x, (64, 4)), c(4, 8)),
     "conv": lambda x: tf.nn.conv2d(x, c(3, 3, 4, 8), 1, "SAME"),
     "conv_relu6": lambda x: tf.nn.relu6(tf.nn.conv2d(x, c(3, 3, 4, 8), 1, "SAME") + c(8)),
     "conv_dil": lambda x: tf.nn.conv2d(x, c(3, 3, 4, 8), 1, "SAME", dilations=2),
     "conv_s4": lambda x: tf.nn.conv2d(x, c(3, 3, 4, 8), 4, "SAME"),
     "dwconv": lambda x: tf.nn.depthwise_conv2d(x, c(3, 3, 4, 1), [1, 1, 1, 1], "SAME"),
     "dwconv_m2": lambda x: tf.nn.depthwise_conv2d(x, c(3, 3, 4, 2), [1, 1, 1, 1], "SAME"),
     "tconv": lambda x: tf.nn.conv2d_transpose(x, c(3, 3, 8, 4), (1, 16, 16, 8), 2, "SAME"),
     "conv3d": lambda x: tf.nn.conv3d(tf.reshape(x, (1, 4, 4, 4, 4)), c(2, 2, 2, 4, 4), [1, 1, 1, 1, 1], "SAME"),
     "maxpool": lambda x: tf.nn.max_pool2d(x, 2, 2, "VALID"), "avgpool": lambda x: tf.nn.avg_pool2d(x, 2, 2, "VALID"),
     "fc": lambda x: tf.matmul(tf.reshape(x, (1, 256)), c(256, 8)) + c(8),
     "squeeze": lambda x: tf.squeeze(tf.reduce_mean(x, [1, 2], keepdims=True), [1, 2]),
     "expand_dims": lambda x: tf.expand_dims(x, 1), "zeros_like": lambda x: x + tf.zeros_like(x),
     "select": lambda x: tf.where(x > 1.0, x, c(*S[1:])), "prelu": lambda x: tf.maximum(x, 0.0) + c(4) * tf.minimum(x, 0.0),
     "rank5": lambda x: tf.reshape(tf.reshape(x, (1, 2, 4, 8, 4)) * 2, S),
     "hardsigmoid": lambda x: tf.nn.relu6(x + 3) / 6, "sign": lambda x: tf.sign(x) * x,
     "logical": lambda x: tf.where(tf.logical_and(x > 0.5, x < 1.2), x, -x),
    }
    return OPS


NAMES = ("exp", "log", "sqrt", "rsqrt", "square", "abs", "neg", "sin", "cos", "tanh", "sigmoid",
         "relu", "relu6", "leaky_relu", "elu", "gelu", "hard_swish", "floor", "ceil", "round",
         "log_softmax", "softmax", "l2norm", "lrn", "add", "sub", "mul", "div", "maximum",
         "minimum", "pow", "sqdiff", "floor_div", "floor_mod", "atan2", "greater", "less",
         "equal", "mean", "sum", "rmax", "rmin", "rprod", "argmax64", "argmax32", "argmin32",
         "reshape", "transpose", "concat", "stack", "unstack", "split", "split_v", "slice",
         "strided", "tile", "pad", "mirror_pad", "gather", "gather_nd", "d2s", "s2d", "b2s",
         "resize_bilinear", "resize_nearest", "broadcast_to", "reverse", "cumsum", "one_hot",
         "topk", "batch_matmul", "matmul_const", "conv", "conv_relu6", "conv_dil", "conv_s4",
         "dwconv", "dwconv_m2", "tconv", "conv3d", "maxpool", "avgpool", "fc", "squeeze",
         "expand_dims", "zeros_like", "select", "prelu", "rank5", "hardsigmoid", "sign", "logical")


def _key() -> str:
    """This file and the converter's version, read without importing TensorFlow."""
    from importlib.metadata import PackageNotFoundError, version

    found = ""
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            found = version(dist)
            break
        except PackageNotFoundError:
            continue
    return hashlib.sha256(Path(__file__).read_bytes() + found.encode()).hexdigest()[:12]


def probe(name: str, mode: str) -> bytes | None:
    """The converted probe (None when the converter refuses that op in that mode)."""
    path = CACHE / f"{name}.{mode}-{_key()}.tflite"
    refused = path.with_suffix(".refused")
    if path.exists():
        return path.read_bytes()
    if refused.exists():
        return None
    from tflc.tf_env import import_tensorflow

    tf = import_tensorflow()
    fn = tf.function(_ops(tf)[name], input_signature=[tf.TensorSpec(S, tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    if mode != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([np.random.RandomState(i).uniform(-1, 2, S)
                                                .astype(np.float32)] for i in range(8))
        ints = (tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8" else
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8)
        conv.target_spec.supported_ops = [ints, tf.lite.OpsSet.TFLITE_BUILTINS]
        if mode == "int8":
            conv.inference_input_type = conv.inference_output_type = tf.int8
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        data = conv.convert()
    except Exception as exc:  # noqa: BLE001 - the converter's refusal is an answer, cached
        refused.write_text(str(exc)[:300])
        return None
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data
