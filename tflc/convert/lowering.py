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

Keras 3 `LayerNormalization` (transformer blocks) is rebuilt the same way: its Keras 3 trace
has a `Neg` the int8 quantizer rejects, tf_keras' converts to builtin int8 ops.

Everything is decided by layer class, never by name, and recorded in the report (`lowering`).
A model without recurrent layers passes through untouched: its conversion does not change.
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


# Keras 3 layers whose Keras 3 trace the int8 quantizer cannot take while tf_keras' trace of the
# same layer converts: LayerNormalization traces to a `Neg` with no int8 kernel, tf_keras' to
# MEAN, SQUARED_DIFFERENCE and RSQRT.
_REBUILT = {"LayerNormalization": "tf_keras LayerNormalization (MEAN, SQUARED_DIFFERENCE, RSQRT)"}


def lower(loaded, activations: str = "int8", seed: int = 0):
    """(model to convert, LoweringReport or None): None when nothing needed lowering."""
    found = recurrent_layers(loaded.model) if loaded.is_keras else []
    rebuilt = [(layer, type(layer).__name__) for layer in _layers(loaded.model)
               if type(layer).__name__ in _REBUILT] if loaded.format == "keras3" else []
    _refuse_16x8(loaded, activations)
    if not found and not rebuilt:
        return loaded, None
    _require_static_time(loaded, found)
    overrides = _overrides(found, activations)
    report = LoweringReport(route="rebuilt as tf_keras" if loaded.format == "keras3"
                            else "tf_keras, recurrent layers cloned", static_batch=bool(found))
    try:
        model, difference = _rebuild(loaded, overrides, seed)
    except BadInput as exc:  # a layer with no tf_keras twin: the route is closed, say which
        layer, kind = (found or rebuilt)[0]
        detail = str(exc).split(": ", 1)[-1].split(";")[0].split(", so TF-MOT")[0]
        raise BadInput(f"{loaded.path}: layer '{layer.name}' ({kind}) is lowered by rebuilding "
                       f"the model as tf_keras, which fails: {detail}; build the model with "
                       "tf_keras, or without that layer") from None
    report.max_abs_difference = difference
    steps = loaded.inputs[0].shape[1] if len(loaded.inputs[0].shape) > 1 else None
    for layer, kind in found:
        report.layers.append(LoweredLayer(layer.name, kind, _lowered_to(layer, overrides, steps)))
    for layer, kind in rebuilt:
        report.layers.append(LoweredLayer(layer.name, kind, _REBUILT[kind]))
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


# Layers whose 16x8 graph LiteRT cannot run: it aborts the process when allocating tensors.
_NO_16X8 = {"LayerNormalization": "Mean, SquaredDifference, Rsqrt"}


def _refuse_16x8(loaded, activations: str) -> None:
    if activations != "int16" or not loaded.is_keras:
        return
    for layer in _layers(loaded.model):
        kind = type(layer).__name__
        if kind in _NO_16X8:
            raise BadInput(
                f"{loaded.path}: layer '{layer.name}' ({kind}, TensorFlow ops {_NO_16X8[kind]}) "
                "has no 16x8 kernels LiteRT can run (it aborts allocating them); compile with "
                "--activations int8, which lowers it to builtin int8 ops")


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
