"""Weight-side corrections on the float Keras model, before conversion: CLE and AdaRound.

Both return a copy of the model (the user's is left as it was) that the converter then quantizes
with its own per-channel scheme (scale = max|w| / 127 per output channel).

- Cross-layer equalization (Nagel et al. 2019): for a conv/depthwise layer whose output feeds
  only one conv/dense layer, through nothing or a ReLU / ReLU6 (fused or a layer of its own;
  batch normalization in between is not folded here, so such pairs are skipped), output channel
  i of the first is divided by s_i (weights and bias) and input channel i of the second
  multiplied by s_i, s_i = sqrt(r1_i / r2_i) with r the channel's max |w|. ReLU commutes with a
  positive scale, so the float function is unchanged. ReLU6 does not: a channel is scaled only
  when its activation stays under 6 on the calibration set both before and after scaling (s_i
  is raised to max_i / 6 where needed; a channel that reaches 6 keeps s_i = 1).
- AdaRound, greedy variant (not the learned soft rounding of Nagel et al. 2020): per Conv2D /
  DepthwiseConv2D / Dense layer, with the per-channel scale the converter will compute kept fixed (the
  max-magnitude weight keeps its rounding, +-127), each weight is rounded up or down by
  coordinate descent on the layer's output error on the calibration inputs,
  ||X (W_q - W)||^2 per output channel (X the layer's float input patches), starting from
  round-to-nearest; a flip is taken only when it lowers that error. Each float weight is then
  set to exactly integer x scale, so the converter reproduces the chosen integers. A depthwise
  output channel c * mult + m reads only input channel c, so its error is measured on that
  channel's kh x kw patches alone: one small problem per input channel instead of one shared X.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EQUALIZE_FIRST = ("Conv2D", "DepthwiseConv2D", "Dense")
EQUALIZE_SECOND = ("Conv2D", "Dense")
ADAROUND_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")
ADAROUND_SAMPLES = 64  # calibration samples whose inputs AdaRound measures the error on
MAX_ROWS = 20_000  # input patches kept per layer (a strided subsample)
RELU6_LIMIT = 6.0


@dataclass
class WeightReport:
    folded: list = field(default_factory=list)  # (conv/dense, batch norm folded into it)
    equalized: list = field(default_factory=list)  # (first, second, channels scaled)
    skipped: list = field(default_factory=list)  # (first, second, why)
    rounded: dict = field(default_factory=dict)  # layer -> {"flipped": n, "mse_nearest", "mse"}
    integers: dict = field(default_factory=dict, repr=False)  # layer -> int8 kernel chosen
    scales: dict = field(default_factory=dict, repr=False)  # layer -> per-channel scale

    def to_dict(self) -> dict:
        return {"folded": self.folded, "equalized": [list(e) for e in self.equalized],
                "skipped": [list(s) for s in self.skipped],
                "adaround": self.rounded}


def keras_module(model):
    """The Keras package `model` belongs to (Keras 3 or tf_keras)."""
    from tflc.tf_env import import_keras3, import_tf_keras

    return import_tf_keras() if type(model).__module__.startswith("tf_keras") else import_keras3()


def copy_loaded(loaded):
    """The loaded model around a copy of its Keras model (same architecture, weights, names)."""
    from dataclasses import replace

    from tflc.errors import BadInput

    if not loaded.is_keras:
        raise BadInput("--cross-layer-equalization / --adaround edit Keras weights: give the "
                       "Keras model (.keras or .h5), not a SavedModel")
    keras = keras_module(loaded.model)
    if type(loaded.model).__module__.startswith("tf_keras"):
        from tflc.optimize.layers import copy_model

        return replace(loaded, model=copy_model(loaded.model))
    clone = keras.models.clone_model(loaded.model)
    clone.set_weights(loaded.model.get_weights())
    return replace(loaded, model=clone)


def correct_weights(loaded, calibration: list[np.ndarray], equalize: bool, adaround_sweeps,
                    per_tensor: bool = False, log=None):
    """(a copy of `loaded` with CLE and/or AdaRound applied, WeightReport)."""
    from dataclasses import replace

    say = log or (lambda message: None)
    loaded = copy_loaded(loaded)
    report = WeightReport()
    if equalize:
        say("cross-layer equalization")
        model, folded = fold_batchnorms(loaded.model)
        loaded = replace(loaded, model=model)
        report.folded = [list(f) for f in folded]
        equalize_model(loaded.model, calibration, report)
    if adaround_sweeps:
        say(f"adaround: {adaround_sweeps} sweeps per layer")
        adaround_model(loaded.model, calibration, adaround_sweeps, report, per_tensor)
    return loaded, report


# ------------------------------------------------------------------------- the layer graph


def _inbound(layer) -> list:
    layers = []
    for node in getattr(layer, "_inbound_nodes", []) or []:
        tensors = node.input_tensors
        tensors = tensors if isinstance(tensors, (list, tuple)) else [tensors]
        for t in tensors:
            history = getattr(t, "_keras_history", None)
            if history is not None:
                layers.append(history[0])
    return layers


def _graph(model) -> tuple[list, dict]:
    """The model's layers and, for each, the layers that consume its output (by id)."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    consumers: dict[int, list] = {id(layer): [] for layer in model.layers}
    for layer in layers:
        for source in _inbound(layer):
            if id(source) in consumers:
                consumers[id(source)].append(layer)
    return layers, consumers


def _activation_kind(layer) -> str | None:
    """'relu', 'relu6', 'linear' for a layer that is such an activation, else None."""
    kind = type(layer).__name__
    if kind == "ReLU":
        config = layer.get_config()
        if config.get("negative_slope", 0) or config.get("threshold", 0):
            return None
        top = config.get("max_value")
        return "relu" if top is None else ("relu6" if float(top) == RELU6_LIMIT else None)
    if kind == "Activation":
        name = _fn_name(layer.get_config().get("activation"))
        return name if name in ("relu", "relu6", "linear") else None
    return None


def _fn_name(activation) -> str:
    if isinstance(activation, dict):
        activation = activation.get("config", activation.get("class_name"))
    name = getattr(activation, "__name__", activation)
    return str(name or "linear").lower()


def _fused(layer) -> str | None:
    name = _fn_name(layer.get_config().get("activation", "linear"))
    return name if name in ("relu", "relu6", "linear") else None


def equalizable_pairs(model) -> tuple[list, list]:
    """[(first, activation layer or None, second, kind)] and [(first, second, why skipped)]."""
    layers, consumers = _graph(model)
    outputs = {id(t._keras_history[0]) for t in model.outputs}
    pairs, skipped = [], []
    for first in layers:
        if type(first).__name__ not in EQUALIZE_FIRST or id(first) in outputs:
            continue
        fused = _fused(first)
        users = consumers.get(id(first), [])
        if fused is None or len(users) != 1:
            continue
        act, second = None, users[0]
        if type(second).__name__ == "BatchNormalization":
            skipped.append((first.name, second.name, "batch normalization follows (not folded)"))
            continue
        kinds = {fused}
        while _activation_kind(second) is not None:  # a chain of activations, linear ones too
            act = second
            kinds.add(_activation_kind(act))
            nxt = consumers.get(id(act), [])
            if len(nxt) != 1 or id(act) in outputs:
                break
            second = nxt[0]
        if second is act:
            continue
        kinds.discard("linear")
        if type(second).__name__ not in EQUALIZE_SECOND or len(kinds) > 1:
            if type(second).__name__ in EQUALIZE_SECOND:
                skipped.append((first.name, second.name, "two activations in a row"))
            continue
        if getattr(second, "groups", 1) != 1 or getattr(first, "groups", 1) != 1:
            skipped.append((first.name, second.name, "grouped convolution"))
            continue
        pairs.append((first, act, second, kinds.pop() if kinds else "linear"))
    return pairs, skipped


# -------------------------------------------------------------------- cross-layer equalization


FOLDABLE = ("Conv2D", "DepthwiseConv2D", "Dense")


def fold_batchnorms(model):
    """A copy of `model` with each batch norm that alone follows a conv/dense folded into it.

    The conv gets w * g and (b - mean) * g + beta, g = gamma / sqrt(var + eps) per output
    channel (as the converter folds them); the batch norm becomes a linear Activation of the
    same name, so layer names and the graph stay. Returns (model, names of the folded pairs).
    """
    keras = keras_module(model)
    layers, consumers = _graph(model)
    outputs = {id(t._keras_history[0]) for t in model.outputs}
    fold = {}  # conv name -> batch norm layer
    for layer in layers:
        users = consumers.get(id(layer), [])
        if (type(layer).__name__ in FOLDABLE and len(users) == 1 and id(layer) not in outputs
                and _fused(layer) == "linear" and type(users[0]).__name__ == "BatchNormalization"):
            bn = users[0]
            axis = bn.axis if isinstance(bn.axis, int) else (list(bn.axis) + [None])[0]
            if axis in (-1, len(bn.input.shape) - 1) and len(_inbound(bn)) == 1:
                fold[layer.name] = bn
    if not fold:
        return model, []
    bn_names = {bn.name for bn in fold.values()}

    def clone(layer):
        config = layer.get_config()
        if layer.name in bn_names:
            return keras.layers.Activation("linear", name=layer.name)
        if layer.name in fold:
            config["use_bias"] = True
        return type(layer).from_config(config)

    if type(model).__module__.startswith("tf_keras"):
        from tflc.optimize.layers import in_memory_cloning

        with in_memory_cloning():
            new = keras.models.clone_model(model, clone_function=clone)
    else:
        new = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = new.get_layer(layer.name)
        if layer.name in bn_names:
            continue
        weights = layer.get_weights()
        if layer.name in fold:
            bn = fold[layer.name]
            values = dict(zip(("gamma", "beta", "mean", "var"), _bn_weights(bn)))
            g = values["gamma"] / np.sqrt(values["var"] + bn.epsilon)
            kernel = np.asarray(weights[0], np.float64)
            if type(layer).__name__ == "DepthwiseConv2D":
                kernel = kernel * g.reshape(kernel.shape[2:])
            else:
                kernel = kernel * g
            bias = np.asarray(weights[1], np.float64) if layer.use_bias else np.zeros(g.size)
            weights = [kernel.astype(np.float32),
                       ((bias - values["mean"]) * g + values["beta"]).astype(np.float32)]
        if weights:
            target.set_weights(weights)
    return new, [(name, bn.name) for name, bn in fold.items()]


def _bn_weights(bn):
    """gamma, beta, moving mean, moving variance (gamma 1 / beta 0 when not learned)."""
    weights = [np.asarray(w, np.float64) for w in bn.get_weights()]
    n = weights[-1].size
    gamma = weights.pop(0) if bn.scale else np.ones(n)
    beta = weights.pop(0) if bn.center else np.zeros(n)
    return gamma, beta, weights[0], weights[1]



def _first_kernel(layer) -> np.ndarray:
    """The first layer's kernel as (..., output channels)."""
    kernel = np.asarray(layer.get_weights()[0], np.float64)
    if type(layer).__name__ == "DepthwiseConv2D":  # (kh, kw, cin, mult): channel c*mult + m
        kernel = kernel.reshape(kernel.shape[:2] + (-1,))
    return kernel


def equalize_model(model, calibration: list[np.ndarray], report: WeightReport) -> None:
    pairs, skipped = equalizable_pairs(model)
    report.skipped.extend(skipped)
    for first, act, second, kind in pairs:
        w1 = _first_kernel(first)
        w2 = np.asarray(second.get_weights()[0], np.float64)  # (..., cin, cout)
        channels = w1.shape[-1]
        if w2.shape[-2] != channels:
            report.skipped.append((first.name, second.name, "channel counts differ"))
            continue
        r1 = np.abs(w1).reshape(-1, channels).max(0)
        r2 = np.abs(np.moveaxis(w2, -2, 0)).reshape(channels, -1).max(1)
        ok = (r1 > 0) & (r2 > 0)
        s = np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)), 1.0)
        if kind == "relu6":  # the clip at 6 must not be reached, before or after scaling
            peak = _channel_peak(model, act if act is not None else first, calibration)
            s = np.where(peak < RELU6_LIMIT, np.maximum(s, peak / RELU6_LIMIT), 1.0)
            s = np.where(s > 0, s, 1.0)
        weights1 = first.get_weights()
        kernel1 = np.asarray(weights1[0], np.float64)
        # a depthwise kernel (kh, kw, cin, mult) holds output channel c * mult + m at [..., c, m]
        per_channel = s.reshape(kernel1.shape[2:]) if type(first).__name__ == "DepthwiseConv2D" else s
        weights1[0] = (kernel1 / per_channel).astype(np.float32)
        if len(weights1) > 1:
            weights1[1] = (np.asarray(weights1[1], np.float64) / s).astype(np.float32)
        first.set_weights(weights1)
        weights2 = second.get_weights()
        weights2[0] = (w2 * s[:, None]).astype(np.float32)
        second.set_weights(weights2)
        report.equalized.append((first.name, second.name, int(np.sum(s != 1.0))))


def _channel_peak(model, layer, calibration) -> np.ndarray:
    keras = keras_module(model)
    probe = keras.Model(model.inputs, layer.output)
    values = probe.predict(calibration if len(calibration) > 1 else calibration[0], verbose=0)
    values = np.asarray(values)
    return values.reshape(-1, values.shape[-1]).max(0)


def channel_ranges(layer) -> np.ndarray:
    """Per-output-channel max |w| of a conv/depthwise/dense layer."""
    kernel = _first_kernel(layer)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).max(0)


# ---------------------------------------------------------------------------------- AdaRound


def layer_inputs(model, layer, calibration: list[np.ndarray]) -> np.ndarray:
    """The layer's input on the calibration samples, as rows matching its kernel's rows.

    Conv2D and DepthwiseConv2D: its input patches (kh * kw * cin per row, in the kernel's
    order: cin varies fastest); Dense: its input.
    """
    from tflc.tf_env import import_tensorflow

    tf = import_tensorflow()
    keras = keras_module(model)
    n = min(ADAROUND_SAMPLES, len(calibration[0]))
    probe = keras.Model(model.inputs, layer.input)
    x = np.asarray(probe.predict([c[:n] for c in calibration] if len(calibration) > 1
                                 else calibration[0][:n], verbose=0), np.float32)
    if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D"):
        kh, kw = layer.kernel_size
        sh, sw = layer.strides
        dh, dw = layer.dilation_rate
        x = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1],
                                     rates=[1, dh, dw, 1], padding=layer.padding.upper()).numpy()
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    step = max(1, len(rows) // MAX_ROWS)
    return rows[::step]


def weight_scales(kernel2d: np.ndarray, per_tensor: bool = False) -> np.ndarray:
    """The converter's symmetric int8 weight scale: max|w| / 127 per output channel."""
    top = np.abs(kernel2d).max() if per_tensor else np.abs(kernel2d).max(0)
    scale = np.broadcast_to(np.asarray(top, np.float64) / 127.0, kernel2d.shape[1:]).copy()
    return np.where(scale > 0, scale, 1.0)


def greedy_rounding(w: np.ndarray, scale: np.ndarray, x: np.ndarray, sweeps: int) -> np.ndarray:
    """Integers (K, C) for weights `w` (K, C) that lower ||x (q * scale - w)||^2 per column.

    Coordinate descent from round-to-nearest: each weight may be its floor or its ceiling; the
    max-magnitude weight of every column keeps its rounding (the scale stays the converter's).
    """
    h = x.T @ x  # (K, K): the error of column c is d_c^T h d_c, d = q * scale - w
    v = w / scale
    q = np.clip(np.round(v), -127, 127)
    low, high = np.clip(np.floor(v), -127, 127), np.clip(np.ceil(v), -127, 127)
    frozen = np.zeros_like(q, bool)
    frozen[np.argmax(np.abs(w), 0), np.arange(w.shape[1])] = True
    d = (q - v) * scale
    g = h @ d  # (K, C)
    diag = np.diag(h)
    for _ in range(sweeps):
        flips = 0
        for k in range(w.shape[0]):
            alt = np.where(q[k] == low[k], high[k], low[k])
            delta = (alt - q[k]) * scale
            gain = 2.0 * delta * g[k] + delta * delta * diag[k]
            take = (gain < -1e-12 * np.maximum(1.0, np.abs(g[k] * delta))) & ~frozen[k] & (delta != 0)
            if not take.any():
                continue
            change = np.where(take, delta, 0.0)
            q[k] = np.where(take, alt, q[k])
            g += np.outer(h[:, k], change)
            flips += int(take.sum())
        if flips == 0:
            break
    return q.astype(np.int8)


def adaround_model(model, calibration: list[np.ndarray], sweeps: int, report: WeightReport,
                   per_tensor: bool = False) -> None:
    layers, _ = _graph(model)
    for layer in layers:
        kind = type(layer).__name__
        if kind not in ADAROUND_LAYERS or getattr(layer, "groups", 1) != 1:
            continue
        weights = layer.get_weights()
        kernel = np.asarray(weights[0], np.float64)
        depthwise = kind == "DepthwiseConv2D"
        # a depthwise kernel (kh, kw, cin, mult) read as 2-D has output channel c * mult + m
        w = (kernel.reshape(kernel.shape[0] * kernel.shape[1], -1) if depthwise
             else kernel.reshape(-1, kernel.shape[-1]))
        try:
            x = layer_inputs(model, layer, calibration)
        except Exception as exc:  # a layer Keras cannot probe (shared, nested): left nearest
            report.skipped.append((layer.name, "", f"adaround: input not reachable ({exc!s:.80})"))
            continue
        rows = w.shape[0] * (kernel.shape[2] if depthwise else 1)
        if x.shape[1] != rows:
            report.skipped.append((layer.name, "", "adaround: input patches do not match the kernel"))
            continue
        scale = weight_scales(w, per_tensor)
        nearest = np.clip(np.round(w / scale), -127, 127)
        if depthwise:
            q, error_near, error = _depthwise_rounding(w, scale, x, kernel.shape[2], sweeps)
        else:
            q = greedy_rounding(w, scale, x, sweeps).astype(np.float64)
            error_near = np.square(x @ (nearest * scale - w)).sum()
            error = np.square(x @ (q * scale - w)).sum()
        mse_near = float(error_near / (len(x) * w.shape[1]))
        mse = float(error / (len(x) * w.shape[1]))
        weights[0] = (q * scale).reshape(kernel.shape).astype(np.float32)
        layer.set_weights(weights)
        report.integers[layer.name] = q.astype(np.int8).reshape(kernel.shape)
        report.scales[layer.name] = scale
        report.rounded[layer.name] = {"flipped": int(np.sum(q != nearest)),
                                      "mse_nearest": mse_near, "mse": mse}


def _depthwise_rounding(w: np.ndarray, scale: np.ndarray, x: np.ndarray, channels: int,
                        sweeps: int) -> tuple[np.ndarray, float, float]:
    """Greedy rounding of a depthwise kernel `w` (kh * kw, cin * mult), per input channel.

    `x` holds the patches (rows, kh * kw * cin) with cin fastest, so input channel c's taps are
    columns c, c + cin, ...; they feed output channels c * mult .. c * mult + mult - 1 only.
    Returns (integers, squared error of round-to-nearest, squared error of the result).
    """
    mult = w.shape[1] // channels
    q = np.empty_like(w)
    error_near = error = 0.0
    for c in range(channels):
        xc = x[:, c::channels]
        cols = slice(c * mult, (c + 1) * mult)
        wc, sc = w[:, cols], scale[cols]
        q[:, cols] = greedy_rounding(wc, sc, xc, sweeps)
        error_near += float(np.square(xc @ (np.clip(np.round(wc / sc), -127, 127) * sc - wc)).sum())
        error += float(np.square(xc @ (q[:, cols] * sc - wc)).sum())
    return q, error_near, error
