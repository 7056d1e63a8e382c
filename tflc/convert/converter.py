"""Convert: a loaded model and calibration data into a fully-integer TFLite flatbuffer.

Every model flavour (Keras 3, tf_keras, a bare SavedModel signature) goes the same way: wrapped in
a `tf.function` with the inputs' shapes (the batch dimension free by default, as
`TFLiteConverter.from_keras_model` leaves it; pinned to 1 with `static_batch`, which the Edge
TPU and microcontrollers need), its variables frozen into constants, then TFLiteConverter with the builtin int8 (or 16x8) op set
only. Restricting the op set makes the converter fail loudly on anything it cannot lower to
integer kernels instead of leaving float ops behind; that failure is translated into which layer
and which op are at fault.

The converter is deterministic for the same graph, weights and calibration samples in the same
order, which is what makes `tflc compile` reproducible byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from tflc.errors import BadInput, PipelineError
from tflc.options import ACTIVATION_MODES, WEIGHT_MODES  # one list of each
from tflc.tf_env import import_tensorflow, quiet_native_output


@dataclass(frozen=True)
class ConvertOptions:
    """How to quantize. `activations='int16'` is the 16x8 mode (int16 activations, int8 weights)."""

    weights: str = "per-channel"
    activations: str = "int8"
    io_type: str | None = None  # None: the activation type (int8, or int16 in 16x8 mode)
    # False keeps the batch dimension free (shape_signature -1), as TFLiteConverter.from_keras_model
    # does; True pins it to 1, for delegates that accept only static shapes (the Edge TPU's).
    static_batch: bool = False

    def resolved_io_type(self) -> str:
        return self.io_type or ("int8" if self.activations == "mixed" else self.activations)

    def validate(self) -> ConvertOptions:
        if self.weights not in WEIGHT_MODES:
            raise BadInput(f"--weights {self.weights}: expected one of {', '.join(WEIGHT_MODES)}")
        if self.activations not in ACTIVATION_MODES:
            raise BadInput(f"--activations {self.activations}: expected one of {', '.join(ACTIVATION_MODES)}")
        io = self.resolved_io_type()
        allowed = {"int8": ("int8", "uint8", "float32"), "int16": ("int16", "float32"),
                   # ai-edge-quantizer quantizes the inputs and outputs as int8
                   "mixed": ("int8",)}[self.activations]
        if io not in allowed:
            raise BadInput(
                f"--io-type {io}: with --activations {self.activations} the model's inputs and outputs "
                f"can be {' or '.join(allowed)}"
            )
        return self

    def to_dict(self) -> dict:
        return {**asdict(self), "io_type": self.resolved_io_type()}


def frozen_function(loaded, static_batch: bool = False):
    """The model as a concrete function of fixed-shape inputs, with its weights as constants."""
    tf = import_tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    batch = 1 if static_batch else None
    specs = [tf.TensorSpec((batch,) + tuple(spec.shape[1:]), tf.as_dtype(spec.dtype), name=_tf_name(spec.name, i))
             for i, spec in enumerate(loaded.inputs)]

    if loaded.format == "saved_model":
        signature = loaded.model
        names = [spec.name for spec in loaded.inputs]
        output_names = [spec.name for spec in loaded.outputs]

        def call(*args):
            outputs = signature(**dict(zip(names, args)))
            return [outputs[name] for name in output_names]
    else:
        model = loaded.model

        def call(*args):
            return model(list(args) if len(args) > 1 else args[0], training=False)

    function = tf.function(call, input_signature=specs)
    if fused_composites(loaded):  # the converter fuses them before it freezes the variables
        return function.get_concrete_function()
    with quiet_native_output():
        return convert_variables_to_constants_v2(function.get_concrete_function())


# tf_keras layers whose TensorFlow function carries an `_implements` attribute that the converter
# fuses into one TFLite op (UNIDIRECTIONAL_SEQUENCE_LSTM): only on a function it freezes itself.
_COMPOSITE_LAYERS = frozenset({"LSTM"})


def fused_composites(loaded) -> list[str]:
    """The layers (by class) the converter lowers to fused ops; empty for most models.

    For these the concrete function is handed over unfrozen, with the model as its trackable
    object: freezing it first inlines the function the fusion looks for (and the calibrator then
    crashes on the TensorList loop left behind).
    """
    if loaded.format != "tf_keras":
        return []
    return [layer.name for layer in _all_layers(loaded.model)
            if type(layer).__name__ in _COMPOSITE_LAYERS and not getattr(layer, "unroll", False)]


def _all_layers(model):
    """Every layer, wrapped and nested ones included (Bidirectional's two directions)."""
    for layer in getattr(model, "layers", []) or []:
        yield layer
        for attribute in ("forward_layer", "backward_layer", "layer"):
            inner = getattr(layer, attribute, None)
            if inner is not None and hasattr(inner, "name") and inner is not layer:
                yield inner
        if getattr(layer, "layers", None):
            yield from _all_layers(layer)


def convert_float(loaded, static_batch: bool = False, frozen=None, signature: bool = False) -> bytes:
    """The float32 TFLite model: the baseline for size and for fidelity.

    `frozen` is a `frozen_function(loaded, static_batch)` to reuse: tracing and freezing a large
    model costs about as much as converting it, so compile does it once for both conversions.
    `signature` adds a SignatureDef (`serving_default`), which ai-edge-quantizer calibrates by;
    off by default, as the file is then a few bytes larger than the converter's usual one.
    """
    tf = import_tensorflow()
    frozen = frozen or frozen_function(loaded, static_batch)
    return _run(_converter(tf, loaded, frozen, signature), loaded)


def convert_int8(loaded, calibration: list[np.ndarray], options: ConvertOptions = ConvertOptions(),
                 frozen=None, calibration_hook=None) -> bytes:
    """The fully-integer model: int8 (or 16x8) kernels only, I/O as `options.io_type` says.

    `calibration_hook(calibrated_bytes) -> bytes` (int8 only) sees the calibrated float model,
    whose tensors carry the recorded min/max, before the quantizer reads it; it may return the
    model with other ranges (`tflc.convert.ptq`). Everything else runs as without it.
    """
    options.validate()
    tf = import_tensorflow()
    frozen = frozen or frozen_function(loaded, options.static_batch)
    converter = _converter(tf, loaded, frozen)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    count = len(calibration[0])

    def representative_dataset():
        for i in range(count):
            yield [x[i:i + 1] for x in calibration]

    converter.representative_dataset = representative_dataset
    if options.activations == "int16":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io_type = {"int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16, "float32": tf.float32}[
        options.resolved_io_type()
    ]
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    if options.weights == "per-tensor":
        converter._experimental_disable_per_channel = True
    if calibration_hook is not None:
        if options.activations != "int8":
            raise BadInput("activation range methods (--ptq) work with --activations int8 only")
        converter._quantize = _hooked_quantize(converter, calibration_hook)
    return _run(converter, loaded)


def _hooked_quantize(converter, hook):
    """The converter's own quantize step, calibrating only, then the hook, then its quantizer.

    Mirrors `TFLiteConverterBase._quantize` for int8 with the MLIR quantizer (the default), so
    that an identity hook gives the same bytes as no hook (tested).
    """
    from tensorflow.lite.python import lite as tf_lite

    original = converter._quantize

    def quantize(result, input_type, output_type, activations_type, bias_type, allow_float,
                 enable_variable_quantization, debug_options):
        converter._experimental_calibrate_only = True
        try:
            calibrated = original(result, input_type, output_type, activations_type, bias_type,
                                  allow_float, enable_variable_quantization, debug_options)
        finally:
            converter._experimental_calibrate_only = False
        return tf_lite._mlir_quantize(
            hook(bytes(calibrated)),
            converter._experimental_disable_per_channel,
            input_data_type=input_type,
            output_data_type=output_type,
            enable_variable_quantization=enable_variable_quantization,
            disable_per_channel_for_dense_layers=(
                converter._experimental_disable_per_channel_quantization_for_dense_layers),
            debug_options_str=debug_options.SerializeToString(),
        )

    return quantize


def _converter(tf, loaded, function, signature: bool = False):
    """A converter of the concrete function; with the model as trackable for fused composites.

    Given a trackable object, the converter also writes a signature; any object will do.
    """
    if fused_composites(loaded):
        return tf.lite.TFLiteConverter.from_concrete_functions([function], loaded.model)
    if signature:
        return tf.lite.TFLiteConverter.from_concrete_functions([function], tf.Module())
    return tf.lite.TFLiteConverter.from_concrete_functions([function])


def _run(converter, loaded) -> bytes:
    try:
        with quiet_native_output():
            return bytes(converter.convert())
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        raise explain_converter_error(loaded, exc) from None


_OP_PATTERNS = (
    re.compile(r"'(tf\.\w+|tfl\.\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"Quantization not yet supported for op: '?(\w+)'?"),
    re.compile(r"failed to legalize operation '([\w.]+)'"),
    re.compile(r"'([\w.]+)' op (?:is not supported|requires)"),
)
_LOCATION = re.compile(r'loc\((?:callsite\()?(?:fused\[)?"([^"]+)"')


def explain_converter_error(loaded, exc: Exception) -> PipelineError:
    """Name the layer and the op behind a converter failure, and what to do about it."""
    text = str(exc)
    op = next((m.group(1) for p in _OP_PATTERNS if (m := p.search(text))), None)
    layer = _layer_from_location(loaded, text)
    loop = _loop_layer(loaded) if op and "TensorList" in op else None
    if loop is not None:
        return PipelineError(f"{loaded.path}: {_loop_fix(loop, op)}")
    if op:
        where = f"layer {layer!r} uses" if layer else "the model uses"
        return PipelineError(
            f"{loaded.path}: {where} op {op}, which has no builtin TFLite integer kernel; "
            "replace it with supported layers (see `tflc check` targets) or keep it out of the model"
        )
    first = next((line.strip() for line in text.splitlines() if "error" in line.lower()), text.strip()[:300])
    return PipelineError(f"{loaded.path}: the TFLite converter failed: {first[:400]}")


# How to get rid of a `while` loop over TensorLists, by the class of the layer that traces it.
_LOOP_FIXES = {
    "ConvLSTM1D": "replace it with TimeDistributed(Conv1D) followed by LSTM (fused by tflc)",
    "ConvLSTM2D": "replace it with TimeDistributed(Conv2D) followed by LSTM (fused by tflc)",
    "ConvLSTM3D": "replace it with TimeDistributed(Conv3D) followed by LSTM (fused by tflc)",
}


def _loop_layer(loaded):
    """The first layer (in model order) that runs a recurrent loop: it has a `cell`."""
    for layer in _all_layers(loaded.model) if loaded.is_keras else []:
        if getattr(layer, "cell", None) is not None:
            return layer
    return None


def _loop_fix(layer, op: str) -> str:
    kind = type(layer).__name__
    fix = _LOOP_FIXES.get(kind, "build it with unroll=True (the sequence length is static), "
                                "or use LSTM, which tflc lowers to the fused TFLite op")
    return (f"layer '{layer.name}' ({kind}) runs a while loop (TensorFlow op {op}), which has no "
            f"builtin TFLite integer kernel; {fix}")


def _layer_from_location(loaded, text: str) -> str | None:
    names = set()
    model = loaded.model
    for layer in getattr(model, "layers", []) or []:
        names.add(layer.name)
    for match in _LOCATION.finditer(text):
        for part in re.split(r"[/@;]", match.group(1)):
            if part in names:
                return part
    return None


def _tf_name(name: str, index: int) -> str:
    """A TensorFlow-legal placeholder name derived from the Keras input name."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name).lstrip("_-/") or f"input_{index}"
    return cleaned


def explain_float_ops(loaded, view, verdict) -> PipelineError:
    """Name the layers (and their TensorFlow ops) behind float ops the converter left in the graph.

    With the int8-only op set the converter still keeps an op in float when it has no integer
    kernel, silently; the float tensors it leaves carry the layer's name scope (model/LAYER/Op).
    """
    # in model order: the first layer that stays float is the cause, later ones inherit float inputs
    layer_order = {layer.name: i for i, layer in enumerate(getattr(loaded.model, "layers", []) or [])}
    culprits: dict[str, set[str]] = {}
    tensors = view.subgraphs[0].tensors
    for ft in verdict.float_tensors:
        parts = re.split(r"[/;]", tensors[ft.index].name) if ft.subgraph == 0 else []
        for i, part in enumerate(parts):
            if part in layer_order:
                op = re.sub(r"\d+$", "", parts[i + 1]) if i + 1 < len(parts) else "?"
                culprits.setdefault(part, set()).add(op)
                break
    inner = sorted({op.op for op in verdict.float_ops if not op.boundary})
    ops_text = ", ".join(inner[:6]) + (" ..." if len(inner) > 6 else "")
    if culprits:
        layer, tf_ops = min(culprits.items(), key=lambda item: layer_order[item[0]])
        what = f"layer {layer!r} (TensorFlow op {', '.join(sorted(tf_ops))})"
    else:
        what = "part of the model"
    return PipelineError(
        f"{loaded.path}: {what} cannot be lowered to builtin int8 ops; the converter left "
        f"{sum(not op.boundary for op in verdict.float_ops)} float ops ({ops_text}) in the graph. "
        "Replace that layer with supported ones, or pass --allow-float-ops to keep a hybrid model"
    )
