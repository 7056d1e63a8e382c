"""Lowering: put the layers TFLite's converter cannot lower by itself into a form it can.

Keras 3 recurrent layers trace to a `while` loop over TensorLists, which the int8 op set has no
kernel for ("tf.TensorListReserve"); tf_keras' LSTM traces to a function the converter fuses
into one `UNIDIRECTIONAL_SEQUENCE_LSTM` (a `Bidirectional` LSTM into two of them). So a model
with recurrent layers is rebuilt as tf_keras (`tflc.optimize.keras_rebuild`, which checks the
rebuilt model gives the same outputs), and:

- `LSTM` (alone or in `Bidirectional`) stays a loop and is fused by the converter; in 16x8 mode,
  which has no fused-LSTM kernel, it is unrolled like the others;
- `GRU` and `SimpleRNN` have no fused TFLite op: they are unrolled over the static sequence
  length (one copy of the cell per time step, all builtin integer ops);
- the batch is pinned to 1: the loops need a static element shape.

`LayerNormalization` (transformer blocks, ConvNeXt) is written out in elementary ops,
(x - mean) * rsqrt(variance + epsilon) * gamma + beta, by replacing the layer in a clone of the
model (every other layer is kept as it is, Keras 3 custom layers included): Keras 3's own trace
has a `Neg` the int8 quantizer rejects, and tf_keras' fused form subtracts an all-zero constant
that 16x8 quantizes with scale 0, which LiteRT's int16 SUB aborts the process preparing. A
tf_keras LayerNormalization converts in int8 as it is and is written out in 16x8 only. In a
Keras 3 model with recurrent layers the whole model is rebuilt as tf_keras (above), its
LayerNormalization with it.

Everything is decided by layer class, never by name, and recorded in the report (`lowering`).
A model without such layers passes through untouched: its conversion does not change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tflc.errors import BadInput

RECURRENT = ("LSTM", "GRU", "SimpleRNN")
_WRAPPERS = ("Bidirectional", "TimeDistributed")


@dataclass
class LoweredLayer:
    layer: str
    cls: str
    lowered_to: str


@dataclass
class LoweringReport:
    """What was done to the model before conversion, and that it still computes the same."""

    route: str
    layers: list[LoweredLayer] = field(default_factory=list)
    static_batch: bool = False  # True: the batch was pinned to 1 for these layers
    max_abs_difference: float = 0.0  # rebuilt vs given model, on sample inputs
    notes: list[str] = field(default_factory=list)
    fidelity: list[dict] = field(default_factory=list)  # the given float model vs the int8 file
    stateful: bool = False  # then the rebuilt, stateless twin is the float reference

    def to_dict(self) -> dict:
        return asdict(self)


def recurrent_layers(model) -> list[tuple[object, str]]:
    """(layer, class name) of every recurrent layer, wrapped ones as their wrapper."""
    found = []
    for layer in _layers(model):
        kind = type(layer).__name__
        inner = getattr(layer, "forward_layer", None) or getattr(layer, "layer", None)
        if kind in RECURRENT or (kind in _WRAPPERS and type(inner).__name__ in RECURRENT):
            found.append((layer, kind))
    return found


# Keras 3 layers whose Keras 3 trace the int8 quantizer cannot take. Written out in the Keras 3
# model where it can be (`_write_out_keras3`); when the model is rebuilt as tf_keras anyway
# (recurrent layers beside, or rms_scaling) they become tf_keras', which converts in int8.
_REBUILT = {"LayerNormalization": "tf_keras LayerNormalization (MEAN, SQUARED_DIFFERENCE, RSQRT)"}


def lower(loaded, activations: str = "int8", seed: int = 0):
    """(model to convert, LoweringReport or None): None when nothing needed lowering."""
    found = recurrent_layers(loaded.model) if loaded.is_keras else []
    rebuilt = [(layer, type(layer).__name__) for layer in _layers(loaded.model)
               if type(layer).__name__ in _REBUILT] if loaded.format == "keras3" else []
    written = [(layer, type(layer).__name__) for layer in _layers(loaded.model)
               if type(layer).__name__ in _WRITTEN_OUT] \
        if activations == "int16" and loaded.is_keras else []
    if not found and not rebuilt and not written:
        return loaded, None
    if loaded.format == "keras3" and not found and all(_writable(layer) for layer, _ in rebuilt):
        model, difference = _write_out_keras3(loaded, seed)
        report = LoweringReport(route="Keras 3, LayerNormalization written out",
                                max_abs_difference=difference)
        report.layers = [LoweredLayer(layer.name, kind, _WRITTEN_OUT[kind]) for layer, kind in rebuilt]
        return loaded.with_model(model), report
    _require_static_time(loaded, found)
    overrides = _overrides(found, activations)
    report = LoweringReport(route="rebuilt as tf_keras" if loaded.format == "keras3"
                            else "tf_keras, layers cloned", static_batch=bool(found))
    try:
        model, difference = _rebuild(loaded, overrides, seed)
    except BadInput as exc:  # a layer with no tf_keras twin: the route is closed, say which
        layer, kind = (found or rebuilt or written)[0]
        detail = str(exc).split(": ", 1)[-1].split(";")[0].split(", so TF-MOT")[0]
        raise BadInput(f"{loaded.path}: layer '{layer.name}' ({kind}) is lowered by rebuilding "
                       f"the model as tf_keras, which fails: {detail}; build the model with "
                       "tf_keras, or without that layer") from None
    if written:
        model, written_difference = _write_out(model, loaded, seed)
        difference = max(difference, written_difference)
    report.max_abs_difference = difference
    steps = loaded.inputs[0].shape[1] if len(loaded.inputs[0].shape) > 1 else None
    for layer, kind in found:
        report.layers.append(LoweredLayer(layer.name, kind, _lowered_to(layer, overrides, steps)))
    for layer, kind in written or rebuilt:
        report.layers.append(LoweredLayer(layer.name, kind, (_WRITTEN_OUT if written
                                                             else _REBUILT)[kind]))
    if found:
        report.notes.append("batch pinned to 1: recurrent loops need a static shape")
    if activations == "int16" and any(_cell(layer) == "LSTM" for layer, _ in found):
        report.notes.append("16x8 has no fused-LSTM kernel: LSTM unrolled over the time steps")
    if any(_cell(layer) == "LSTM" and not overrides["LSTM"].get("unroll") for layer, _ in found):
        report.notes.append("the fused LSTM keeps its state in variable tensors from one "
                            "invocation to the next (as stateful=True does): reset them between "
                            "independent sequences (interpreter.reset_all_variables(); TFLite "
                            "Micro: ResetVariableTensors())")
    if any(getattr(_inner(layer), "stateful", False) for layer, _ in found):
        report.stateful = True
        if any(overrides[_cell(layer)].get("unroll") for layer, _ in found):
            report.notes.append("stateful unrolled layers start every inference from the zero "
                                "state; carry the state yourself between calls")
    return loaded.with_model(model), report


def _overrides(found, activations: str) -> dict[str, dict]:
    """Config values per recurrent class: unrolled where no fused op exists, never stateful.

    A converted model starts each inference from the initial state (the state variables are
    frozen), so the rebuilt layers are stateless: the same computation, callable on any batch.
    """
    if not found:
        return {}
    overrides = {kind: {"stateful": False} for kind in RECURRENT}
    overrides["GRU"]["unroll"] = overrides["SimpleRNN"]["unroll"] = True
    # implementation=1: one matmul per gate. implementation=2 splits one activation per step
    # into the gates, and the quantizer leaves that SPLIT in float in some runs, not others.
    overrides["GRU"]["implementation"] = 1
    if activations == "int16":  # 16x8 has no UNIDIRECTIONAL_SEQUENCE_LSTM kernel
        overrides["LSTM"].update(unroll=True, implementation=1)
    return overrides


def measure_fidelity(loaded, tflite_bytes: bytes, inputs, samples: int = 64) -> list[dict]:
    """Top-1 agreement and SQNR per output of the int8 file against the model the user gave.

    Measured on every lowered model, with or without --eval-data: a lowering is only as good
    as the numbers it reproduces.
    """
    from tflc.convert.evaluate import run_tflite, sqnr_db, top1_agreement

    x = [a[:samples] for a in inputs]
    reference = loaded.predict(x)
    got = run_tflite(tflite_bytes, x)
    return [{"name": spec.name, "top1_agreement": top1_agreement(r, g), "sqnr_db": sqnr_db(r, g)}
            for spec, r, g in zip(loaded.outputs, reference, got, strict=True)]


def _rebuild(loaded, overrides: dict, seed: int):
    """The tf_keras twin with `overrides` applied, and its largest output difference."""
    from tflc.optimize.keras_rebuild import rebuild_as_tf_keras

    if loaded.format == "keras3":
        model, rebuilt = rebuild_as_tf_keras(loaded.model, source=str(loaded.path), seed=seed,
                                             overrides=overrides)
        return model, rebuilt.max_abs_difference
    return _clone_tf_keras(loaded.model, overrides), 0.0


def _clone_tf_keras(model, overrides: dict):
    """A tf_keras model with `overrides` set on its layers by class (weights copied)."""
    from tflc.tf_env import import_tf_keras

    keras2 = import_tf_keras()

    def clone(layer):
        config = layer.get_config()
        for key in ("layer", "backward_layer"):
            inner = config.get(key)
            if isinstance(inner, dict) and inner.get("class_name") in overrides:
                inner["config"].update(overrides[inner["class_name"]])
        config.update(overrides.get(type(layer).__name__, {}))
        return type(layer).from_config(config)

    cloned = keras2.models.clone_model(model, clone_function=clone)
    cloned.set_weights(model.get_weights())
    return cloned


def _lowered_to(layer, overrides: dict, steps) -> str:
    cell = _cell(layer)
    if overrides.get(cell, {}).get("unroll"):
        return f"unrolled over {steps} time steps (builtin integer ops)"
    if type(layer).__name__ == "Bidirectional":
        return "two fused UNIDIRECTIONAL_SEQUENCE_LSTM (or BIDIRECTIONAL_SEQUENCE_LSTM)"
    return "fused UNIDIRECTIONAL_SEQUENCE_LSTM"


# Layers written out in elementary ops, each with an int8 and an int16 kernel in LiteRT. tf_keras'
# LayerNormalization is FusedBatchNormV3 with a zero offset, which the converter expands into
# SUB(zeros, mean * rsqrt(variance)); 16x8 quantizes the all-zero constant with scale 0.0, and
# LiteRT's int16 SUB aborts the process preparing it (TFLITE_CHECK in
# QuantizeMultiplierSmallerThanOneExp, called by sub.cc's PrepareGeneralSubOp). Keras 3's trace
# has a Neg (of the mean) with no int8 kernel. Written out, neither is there, and no op takes an
# all-zero constant: identity steps (gamma all ones, beta all zeros) are left out.
_WRITTEN_OUT = {"LayerNormalization": "written out: MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL "
                                      "(then MUL gamma, ADD beta where not identity)"}


def _writable(layer) -> bool:
    """Keras 3's rms_scaling variant computes something else: it keeps the tf_keras route."""
    return not getattr(layer, "rms_scaling", False)


def _write_out_keras3(loaded, seed: int):
    """The Keras 3 model with its LayerNormalization layers written out (weights copied; every
    other layer is the given one, shared), and the largest output difference between the two."""
    from tflc.tf_env import import_keras3

    keras = import_keras3()
    cls = _written_out_layer_normalization_keras3()
    pairs = []

    def clone(layer):
        if isinstance(layer, keras.Model):  # nested models: their layers are replaced too
            return keras.models.clone_model(layer, clone_function=clone)
        if type(layer).__name__ == "LayerNormalization":
            made = cls.from_config(layer.get_config())
            pairs.append((layer, made))
            return made
        return layer

    written = keras.models.clone_model(loaded.model, clone_function=clone)
    for layer, made in pairs:
        made.set_weights(layer.get_weights())
        made.identity_steps(layer.get_weights())
    return written, _difference(loaded.model, written, loaded, seed)


def _difference(model, other, loaded, seed: int) -> float:
    import numpy as np

    rng = np.random.default_rng(seed)
    batch = model.inputs[0].shape[0] or 8
    samples = [rng.standard_normal((batch,) + tuple(d or 1 for d in spec.shape[1:]))
               .astype(np.float32) for spec in loaded.inputs]
    expected, got = (_as_list(m(samples if len(samples) > 1 else samples[0], training=False))
                     for m in (model, other))
    return max((float(np.max(np.abs(np.asarray(e) - np.asarray(g)))) for e, g
                in zip(expected, got, strict=True)), default=0.0)


def _write_out(model, loaded, seed: int):
    """`model` (tf_keras) with every layer of `_WRITTEN_OUT` replaced by its written-out twin
    (same config and weights), and the largest output difference between the two."""
    from tflc.tf_env import import_tf_keras

    keras2 = import_tf_keras()
    replacement = {"LayerNormalization": _written_out_layer_normalization()}

    def clone(layer):
        if isinstance(layer, keras2.Model):  # nested models: their layers are replaced too
            return keras2.models.clone_model(layer, clone_function=clone)
        cls = replacement.get(type(layer).__name__, type(layer))
        return cls.from_config(layer.get_config())

    written = keras2.models.clone_model(model, clone_function=clone)
    written.set_weights(model.get_weights())
    return written, _difference(model, written, loaded, seed)


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


_WRITTEN_OUT_CLASSES: dict = {}


def _written_out_layer_normalization():
    """A tf_keras LayerNormalization computing the same, in ops with int16 kernels in LiteRT."""
    if "LayerNormalization" in _WRITTEN_OUT_CLASSES:
        return _WRITTEN_OUT_CLASSES["LayerNormalization"]
    import numpy as np

    from tflc.tf_env import import_tensorflow, import_tf_keras

    tf, keras2 = import_tensorflow(), import_tf_keras()

    class WrittenOutLayerNormalization(keras2.layers.LayerNormalization):
        def call(self, inputs):
            rank = inputs.shape.rank
            axes = sorted(a % rank for a in self.axis)
            mean = tf.reduce_mean(inputs, axis=axes, keepdims=True)
            centered = inputs - mean
            variance = tf.reduce_mean(centered * centered, axis=axes, keepdims=True)
            outputs = centered * tf.math.rsqrt(variance + self.epsilon)
            shape = [inputs.shape[d] if d in axes else 1 for d in range(rank)]
            with tf.init_scope():  # the weights' values decide which steps are identities
                gamma = self.gamma.numpy() if self.gamma is not None else None
                beta = self.beta.numpy() if self.beta is not None else None
            if gamma is not None and not np.all(gamma == 1):
                outputs = outputs * tf.reshape(tf.cast(self.gamma, outputs.dtype), shape)
            if beta is not None and np.any(beta != 0):
                outputs = outputs + tf.reshape(tf.cast(self.beta, outputs.dtype), shape)
            return outputs

    _WRITTEN_OUT_CLASSES["LayerNormalization"] = WrittenOutLayerNormalization
    return WrittenOutLayerNormalization


def _written_out_layer_normalization_keras3():
    """The Keras 3 twin of `_written_out_layer_normalization` (keras.ops, Keras 3 variables)."""
    if "keras3 LayerNormalization" in _WRITTEN_OUT_CLASSES:
        return _WRITTEN_OUT_CLASSES["keras3 LayerNormalization"]
    import numpy as np

    from tflc.tf_env import import_keras3

    keras = import_keras3()
    ops = keras.ops

    class WrittenOutLayerNormalization(keras.layers.LayerNormalization):
        skip_gamma = skip_beta = False

        def identity_steps(self, weights) -> None:
            """Leave out multiplying by all ones and adding all zeros (set once weights are in)."""
            values = iter(weights)
            gamma = next(values) if self.scale else None
            beta = next(values) if self.center else None
            self.skip_gamma = gamma is None or bool(np.all(gamma == 1))
            self.skip_beta = beta is None or not np.any(beta != 0)

        def call(self, inputs):
            rank = len(inputs.shape)
            axis = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
            axes = sorted(a % rank for a in axis)
            mean = ops.mean(inputs, axis=axes, keepdims=True)
            centered = ops.subtract(inputs, mean)
            variance = ops.mean(ops.multiply(centered, centered), axis=axes, keepdims=True)
            outputs = ops.multiply(centered, ops.rsqrt(ops.add(variance, self.epsilon)))
            shape = [inputs.shape[d] if d in axes else 1 for d in range(rank)]
            if not self.skip_gamma:
                outputs = ops.multiply(outputs, ops.reshape(ops.cast(self.gamma, outputs.dtype), shape))
            if not self.skip_beta:
                outputs = ops.add(outputs, ops.reshape(ops.cast(self.beta, outputs.dtype), shape))
            return outputs

    _WRITTEN_OUT_CLASSES["keras3 LayerNormalization"] = WrittenOutLayerNormalization
    return WrittenOutLayerNormalization


def _require_static_time(loaded, found) -> None:
    """Unrolling and the fused loop both need the sequence length: refuse without it."""
    for spec in loaded.inputs:
        if len(spec.shape) >= 3 and spec.shape[1] is None:
            layer, kind = found[0]
            raise BadInput(
                f"{loaded.path}: layer '{layer.name}' ({kind}) runs over a free sequence length "
                f"(TensorFlow op TensorListReserve needs a static one); fix the length with "
                f"--input-shape {spec.name}=1,T,{','.join(str(d) for d in spec.shape[2:])}")


def _inner(layer):
    return getattr(layer, "forward_layer", None) or getattr(layer, "layer", None) or layer


def _cell(layer) -> str:
    return type(_inner(layer)).__name__


def _layers(model):
    for layer in getattr(model, "layers", []) or []:
        yield layer
        if getattr(layer, "layers", None):
            yield from _layers(layer)
