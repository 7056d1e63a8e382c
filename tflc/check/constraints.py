"""The constraint library: every condition a target descriptor can put on an operator.

A descriptor names constraints (`- stride_range: {max: 2}`); each is a function here that looks
at one operator of the model and returns None when the operator satisfies it, or a dict of what
it found when it does not. The function's docstring is the sentence the user reads in
`tflc check`, formatted with the descriptor's parameters and the dict the function returned, so
the sentence is written once, beside the code that decides it.

Constraint functions read the model only through `OpContext` (a ModelView plus the operator), so
they work without TensorFlow and never copy weight buffers (only small constant tensors such as
axes or paddings are read).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tflite

from tflc.errors import BadInput
from tflc.schema import DESCRIPTOR, field_path, validate
from tflc.tflite.reader import ModelView, OperatorInfo, SubgraphInfo, TensorInfo

BUILTIN_OPS = frozenset(k for k in vars(tflite.BuiltinOperator) if not k.startswith("_"))


@dataclass
class OpContext:
    """One operator seen in its model: what constraint functions look at."""

    view: ModelView
    subgraph: SubgraphInfo
    op: OperatorInfo
    # Tensors that are constant only once the runtime has normalized the graph (the output of a
    # DEQUANTIZE of fp16 weights): `is_constant` is set on them, but they hold no data.
    static_tensors: frozenset = frozenset()

    @property
    def options(self) -> dict:
        return self.op.options

    def tensor(self, index: int) -> TensorInfo | None:
        return self.subgraph.tensors[index] if index >= 0 else None

    @property
    def inputs(self) -> list[TensorInfo | None]:
        return [self.tensor(i) for i in self.op.inputs]

    @property
    def outputs(self) -> list[TensorInfo | None]:
        return [self.tensor(i) for i in self.op.outputs]

    def input(self, k: int) -> TensorInfo | None:
        return self.inputs[k] if k < len(self.op.inputs) else None

    def output(self, k: int = 0) -> TensorInfo | None:
        return self.outputs[k] if k < len(self.op.outputs) else None

    @property
    def feature_maps(self) -> list[TensorInfo]:
        """Non-constant inputs and all outputs: the tensors the op computes on."""
        return [t for t in self.inputs + self.outputs if t is not None and not t.is_constant]

    def values(self, tensor: TensorInfo | None) -> np.ndarray | None:
        """A small constant tensor's values (axes, paddings, shapes); None if not constant."""
        if tensor is None or not tensor.is_constant or tensor.index in self.static_tensors:
            return None
        return self.view.tensor_data(tensor)


@dataclass(frozen=True)
class Constraint:
    name: str
    check: Callable
    message: str  # the docstring's first paragraph: a sentence with {placeholders}
    params: dict  # parameter name -> default (inspect.Parameter.empty when required)
    types: dict  # parameter name -> its annotation as written ("int | None", "list[str]")

    def to_dict(self) -> dict:
        """The entry `tflc targets constraints --format json` prints for this constraint."""
        return {"name": self.name, "message": self.message, "params": [
            {"name": key, "type": self.types[key], "required": default is inspect.Parameter.empty,
             **({} if default is inspect.Parameter.empty else {"default": _plain(default)})}
            for key, default in self.params.items()]}

    def signature(self) -> str:
        """`stride_range(min: int = 1, max: int | None = None)`, as the vocabulary lists it."""
        shown = [f"{key}: {self.types[key]}" + (
            "" if default is inspect.Parameter.empty else f" = {json.dumps(_plain(default))}")
            for key, default in self.params.items()]
        return f"{self.name}({', '.join(shown)})"


def _plain(value):
    """A default as YAML would write it (tuples are lists)."""
    return list(value) if isinstance(value, tuple) else value


REGISTRY: dict[str, Constraint] = {}

# What a descriptor may give a parameter, by the word its annotation uses: the words a message
# says and the JSON Schema the value is validated against.
_TYPES: dict[str, tuple[str, dict]] = {
    "int": ("an integer", {"type": "integer"}),
    "float": ("a number", {"type": "number"}),  # finite: tflc.schema refuses NaN and infinity
    "bool": ("true or false", {"type": "boolean"}),
    "str": ("text", {"type": "string"}),
    "None": ("null", {"type": "null"}),
}
_LIST = re.compile(r"^list\[(\w+)\]$")


def _alternatives(annotation: str) -> list[str]:
    return [a.strip() for a in annotation.split("|")]


def _schema_of(word: str) -> dict:
    item = _LIST.match(word)
    return {"type": "array", "items": _TYPES[item.group(1)][1]} if item else _TYPES[word][1]


def _described(word: str) -> str:
    item = _LIST.match(word)
    return f"a list of {_TYPES[item.group(1)][0]}" if item else _TYPES[word][0]


def param_schema(annotation: str) -> dict:
    """The JSON Schema for a parameter annotated `annotation` ("int | None", "list[str]"),
    described in the words an error shows ("an integer or null")."""
    words = _alternatives(annotation)
    return {"anyOf": [_schema_of(w) for w in words],
            "description": " or ".join(_described(w) for w in words)}


def _known_type(word: str) -> bool:
    item = _LIST.match(word)
    return (item.group(1) if item else word) in _TYPES


def constraint(fn: Callable) -> Callable:
    """Register `fn` under its own name; its docstring's first paragraph is the user message.

    Every parameter's annotation must be one `_TYPES` can check (`int`, `float`, `bool`, `str`,
    `list[T]`, joined with `|`): descriptors are validated against it when they are loaded.
    """
    doc = inspect.getdoc(fn) or ""
    message = " ".join(doc.split("\n\n")[0].split())
    parameters = list(inspect.signature(fn).parameters.items())[1:]
    types = {name: str(p.annotation) for name, p in parameters}
    for name, annotation in types.items():
        if not all(_known_type(word) for word in _alternatives(annotation)):
            raise TypeError(f"constraint {fn.__name__}: parameter {name} has annotation "
                            f"{annotation!r}; use int, float, bool, str or list[T], joined by |")
    params = {name: p.default for name, p in parameters}
    REGISTRY[fn.__name__] = Constraint(fn.__name__, fn, message, params, types)
    return fn


def validate_ref(name: str, params: dict, path, field: str) -> None:
    """Check a descriptor's reference to a constraint: known name, known and required
    parameters, and each value of the type the function's signature states, so a wrong value is
    reported when the descriptor is loaded rather than as a crash in the middle of a check."""
    where = f"{path}: field '{field}'"
    found = REGISTRY.get(name)
    if found is None:
        import difflib

        near = difflib.get_close_matches(name, list(REGISTRY), n=1, cutoff=0.6)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise BadInput(f"{where} names unknown constraint '{name}'{hint} (see `tflc targets constraints`)")
    for key in params:
        if key not in found.params:
            allowed = ", ".join(found.params) or "none"
            raise BadInput(f"{where} gives constraint '{name}' unknown parameter '{key}' (allowed: {allowed})")
    for key, default in found.params.items():
        if default is inspect.Parameter.empty and key not in params:
            raise BadInput(f"{where} must give constraint '{name}' its parameter '{key}'")
    schema = {"type": "object", "properties": {
        key: param_schema(annotation) for key, annotation in found.types.items()}}
    validate(params, schema, str(path), DESCRIPTOR,
             name=lambda parts: field_path([field, name, *parts]))


def vocabulary() -> list[Constraint]:
    """Every constraint a descriptor can name, in the order the library defines them."""
    return list(REGISTRY.values())


def evaluate(name: str, params: dict, ctx: OpContext) -> str | None:
    """Run one constraint on one operator: None if satisfied, else the user-facing sentence."""
    found = REGISTRY[name]
    failure = found.check(ctx, **params)
    if failure is None:
        return None
    values = {k: v for k, v in found.params.items() if v is not inspect.Parameter.empty}
    values.update(params)
    values.update(failure)
    return format_message(found.message, values)


class _Blank(dict):
    def __missing__(self, key):
        return "?"


def format_message(template: str, values: dict) -> str:
    shown = {k: _show(v) for k, v in values.items()}
    return string.Formatter().vformat(template, (), _Blank(shown))


def _show(value) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(str(v) for v in value) if value else "none"
    if value is None:
        return "none"
    return str(value)


# ----------------------------------------------------------------------------- shared helpers


def shown_name(t: TensorInfo, limit: int = 48) -> str:
    """A tensor's name as messages show it: the converter joins fused names with ';', keep one."""
    name = t.name.split(";")[0] or f"tensor {t.index}"
    if len(name) > limit:
        name = "..." + name[-(limit - 3):]
    return f"'{name}'"


_HW_KEYS = {
    "stride": ("stride_h", "stride_w"),
    "filter": ("filter_height", "filter_width"),
    "dilation": ("dilation_h_factor", "dilation_w_factor"),
}


def _hw(options: dict, what: str) -> tuple[int, int]:
    """(height, width) of a stride, pooling window or dilation from an op's options (1 if unset)."""
    keys = _HW_KEYS[what]
    return int(options.get(keys[0], 1) or 1), int(options.get(keys[1], 1) or 1)


def _outside(h: int, w: int, min: int, max: int | None) -> bool:
    """Whether height or width falls outside [min, max] (max None: no upper bound)."""
    return h < min or w < min or (max is not None and (h > max or w > max))


def _activation(ctx: OpContext) -> str:
    return str(ctx.options.get("fused_activation_function", "NONE"))


WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1,
              "CONV_3D": 1}
BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3,
              "CONV_3D": 2}


def weights_of(ctx: OpContext) -> TensorInfo | None:
    """The filter/weights tensor of a weight-bearing op (TRANSPOSE_CONV keeps it at input 1)."""
    k = WEIGHT_OPS.get(ctx.op.op)
    return ctx.input(k) if k is not None else None


def bias_of(ctx: OpContext) -> TensorInfo | None:
    k = BIAS_INPUT.get(ctx.op.op)
    return ctx.input(k) if k is not None else None


# ------------------------------------------------------------------------- geometry of kernels


@constraint
def stride_range(ctx: OpContext, min: int = 1, max: int | None = None):
    """Stride must be between {min} and {max} in both directions (found {found})."""
    h, w = _hw(ctx.options, "stride")
    return {"found": f"{w}x{h}"} if _outside(h, w, min, max) else None


@constraint
def dilation_max(ctx: OpContext, max: int = 1):
    """Dilation must be at most {max} (found {found})."""
    h, w = _hw(ctx.options, "dilation")
    return {"found": f"{w}x{h}"} if h > max or w > max else None


@constraint
def equal_dilation(ctx: OpContext):
    """Dilation must be the same in x and y (found {found})."""
    h, w = _hw(ctx.options, "dilation")
    return {"found": f"{w}x{h}"} if h != w else None


# ------------------------------------------------------------------------- fused activations


@constraint
def fused_activation_in(ctx: OpContext, allowed: list[str]):
    """Fused activation must be one of {allowed} (found {found})."""
    act = _activation(ctx)
    return {"found": act} if act not in allowed else None


@constraint
def no_fused_activation(ctx: OpContext):
    """No fused activation function is allowed (found {found})."""
    act = _activation(ctx)
    return {"found": act} if act != "NONE" else None


# ---------------------------------------------------------------------------- tensor shapes


@constraint
def max_rank(ctx: OpContext, max: int):
    """Tensors must have at most {max} dimensions (found {found}-D {name})."""
    for t in ctx.inputs + ctx.outputs:
        if t is not None and len(t.shape) > max:
            return {"found": len(t.shape), "name": shown_name(t)}
    return None


@constraint
def innermost_dims_only(ctx: OpContext, count: int = 3):
    """Only the {count} innermost dimensions of a tensor may be larger than 1 (found shape {found})."""
    for t in ctx.feature_maps:
        if len(t.shape) > count and any(d > 1 for d in t.shape[: len(t.shape) - count]):
            return {"found": list(t.shape)}
    return None


@constraint
def static_shapes(ctx: OpContext, allow_dynamic_batch: bool = False):
    """Tensor shapes must be fixed when the model is compiled (found dynamic {name})."""
    for t in ctx.inputs + ctx.outputs:
        if t is None or not t.is_dynamic:
            continue
        dims = t.shape_signature[1:] if allow_dynamic_batch else t.shape_signature
        if any(d < 0 for d in dims):
            return {"name": f"{shown_name(t)} {list(t.shape_signature)}"}
    return None


@constraint
def batch_one(ctx: OpContext):
    """Batch size must be 1 (found {found})."""
    for t in ctx.feature_maps:
        if len(t.shape) >= 2 and t.shape[0] > 1:
            return {"found": t.shape[0]}
    return None


# ------------------------------------------------------------------------- constant operands


@constraint
def constant_weights(ctx: OpContext):
    """Weights (the filter) must be constant in the model, not computed at run time."""
    weights = weights_of(ctx)
    return {} if weights is not None and not weights.is_constant else None


@constraint
def constant_bias(ctx: OpContext):
    """Bias must be constant in the model, not computed at run time."""
    bias = bias_of(ctx)
    return {} if bias is not None and not bias.is_constant else None


@constraint
def constant_input(ctx: OpContext, index: int, what: str = "parameter"):
    """The {what} (input {index}) must be a constant in the model."""
    t = ctx.input(index)
    return {} if t is not None and not t.is_constant else None


# ---------------------------------------------------------------------------- quantization


@constraint
def per_tensor_weights(ctx: OpContext):
    """Weights must be quantized per tensor; this op has per-channel weights ({found} scales)."""
    weights = weights_of(ctx)
    if weights is not None and weights.quantization and weights.quantization.per_channel:
        return {"found": len(weights.quantization.scales)}
    return None


@constraint
def per_tensor_activations(ctx: OpContext):
    """Activations must be quantized per tensor (found per-axis quantization on {name})."""
    for t in ctx.feature_maps:
        if t.quantization and t.quantization.per_channel:
            return {"name": shown_name(t)}
    return None


@constraint
def quantized_tensors(ctx: OpContext, exempt: list[str] = ()):
    """Input, output and weight tensors must carry quantization parameters ({name} has none)."""
    if ctx.op.op in exempt:
        return None
    for t in ctx.inputs + ctx.outputs:
        # Integer index and shape data (int32 shapes, argmax results) is not quantized, constant
        # or computed: vela runs RESHAPE, MUL and SUB of int32 tensors without parameters.
        if t is None or t.dtype in ("int32", "int64", "bool"):
            continue
        if t.is_float:
            continue  # the dtype policy reports float tensors
        if t.quantization is None:
            return {"name": shown_name(t)}
    return None


# --------------------------------------------------------------------------- op-specific rules


def _axes(ctx: OpContext, index: int = 1) -> list[int] | None:
    values = ctx.values(ctx.input(index))
    if values is None:
        return None
    rank = len(ctx.input(0).shape)
    return sorted({int(a) % rank for a in np.asarray(values).reshape(-1)}) if rank else []


@constraint
def no_batch_reduction(ctx: OpContext):
    """Reduction over the batch dimension is not supported (found axes {found})."""
    axes = _axes(ctx)
    if axes is not None and 0 in axes and len(ctx.input(0).shape) > 1:
        return {"found": axes}
    return None


@constraint
def concat_constant_zero_pad(ctx: OpContext):
    """A constant input of CONCATENATION is allowed only as an all-zero second input (zero padding)."""
    constants = [t for t in ctx.inputs if t is not None and t.is_constant]
    if not constants:
        return None
    if len(ctx.op.inputs) != 2:
        return {}
    for t in constants:
        values = ctx.values(t)
        zp = t.quantization.zero_points[0] if t.quantization else 0
        if values is None or np.any(values.astype(np.int64) != zp):
            return {}
    return None


@constraint
def fc_output_one_dimensional(ctx: OpContext):
    """The output of FULLY_CONNECTED must be one-dimensional apart from the batch (found {found})."""
    out = ctx.output(0)
    if out is not None and sum(1 for d in out.shape[1:] if d > 1) > 1 or (
            out is not None and len(out.shape) > 2 and ctx.options.get("keep_num_dims")):
        return {"found": list(out.shape)}
    return None


@constraint
def fc_default_weights_format(ctx: OpContext):
    """Fully-connected weights must use the default format (found {found})."""
    fmt = ctx.options.get("weights_format", 0)
    return {"found": fmt} if fmt not in (0, "DEFAULT") else None


@constraint
def softmax_beta(ctx: OpContext, value: float = 1.0):
    """Softmax beta must be {value} (found {found})."""
    beta = float(ctx.options.get("beta", 1.0))
    return {"found": beta} if abs(beta - value) > 1e-6 else None


@constraint
def axis_last(ctx: OpContext):
    """The operation must run along the last (channel) axis (found axis {found})."""
    axis = ctx.options.get("axis")
    rank = len(ctx.output(0).shape) if ctx.output(0) is not None else 0
    if axis is None and "axis" not in ctx.options and len(ctx.op.inputs) > 1:
        # ARG_MAX and ARG_MIN take the axis as a constant second input, over the first's rank
        values = ctx.values(ctx.input(1))
        if values is None or np.asarray(values).size != 1 or ctx.input(0) is None:
            return None
        axis, rank = int(np.asarray(values).reshape(-1)[0]), len(ctx.input(0).shape)
    if axis is None:
        return None
    if rank and int(axis) % rank != rank - 1:
        return {"found": axis}
    return None


@constraint
def pool_1x1_unit_stride(ctx: OpContext):
    """1x1 pooling is supported only with stride 1 (found stride {found})."""
    fh, fw = _hw(ctx.options, "filter")
    sh, sw = _hw(ctx.options, "stride")
    if fh == 1 and fw == 1 and (sh != 1 or sw != 1):
        return {"found": f"{sw}x{sh}"}
    return None


@constraint
def input_count_range(ctx: OpContext, min: int = 1, max: int | None = None):
    """The op must have between {min} and {max} inputs (found {found})."""
    n = sum(1 for t in ctx.op.inputs if t >= 0)
    return {"found": n} if n < min or (max is not None and n > max) else None


@constraint
def output_count_range(ctx: OpContext, min: int = 1, max: int | None = None):
    """The op must have between {min} and {max} outputs (found {found})."""
    n = len(ctx.op.outputs)
    return {"found": n} if n < min or (max is not None and n > max) else None


@constraint
def runtime_inputs(ctx: OpContext, min: int = 1, max: int | None = None):
    """The op must have between {min} and {max} non-constant inputs (found {found})."""
    n = sum(1 for t in ctx.inputs if t is not None and not t.is_constant)
    return {"found": n} if n < min or (max is not None and n > max) else None


@constraint
def const_inputs_max(ctx: OpContext, max: int = 0):
    """At most {max} of the op's inputs may be constants (found {found})."""
    n = sum(1 for t in ctx.inputs if t is not None and t.is_constant)
    return {"found": n} if n > max else None


@constraint
def first_input_not_constant(ctx: OpContext):
    """The op's first input must be computed at run time, not a constant."""
    t = ctx.input(0)
    return {} if t is not None and t.is_constant else None


def _scale(t: TensorInfo | None) -> float | None:
    if t is None or t.quantization is None or t.is_float or not t.quantization.scales:
        return None
    return t.quantization.scales[0]


@constraint
def scale_ratio_range(ctx: OpContext, min: float, max: float):
    """Each input's quantization scale divided by the output's must lie in [{min}, {max}) (found {found})."""
    out = _scale(ctx.output(0))
    if out is None:
        return None
    for t in ctx.inputs:
        s = _scale(t)
        if s is not None and not min <= s / out < max:
            return {"found": f"{s / out:.3g}"}
    return None


@constraint
def product_scale_ratio_range(ctx: OpContext, min: float, max: float):
    """The product of the input scales divided by the output scale must lie in [{min}, {max}) (found {found})."""
    a, b, out = _scale(ctx.input(0)), _scale(ctx.input(1)), _scale(ctx.output(0))
    if None in (a, b, out):
        return None
    ratio = a * b / out
    return {"found": f"{ratio:.3g}"} if not min <= ratio < max else None


@constraint
def resize_scale_factors(ctx: OpContext, allowed: list[float], half_pixel_allowed: list[float] | None = None):
    """Resize must scale by one of {allowed} in both directions ({half_pixel_allowed} with half-pixel centers; found {found})."""
    a, b = ctx.input(0), ctx.output(0)
    if a is None or b is None or len(a.shape) != 4 or len(b.shape) != 4:
        return None
    (ih, iw), (oh, ow) = a.shape[1:3], b.shape[1:3]
    if (ih == iw == 1) or (ih, iw) == (oh, ow):
        return None
    align = bool(ctx.options.get("align_corners", False))
    half = bool(ctx.options.get("half_pixel_centers", False))

    def factor(i: int, o: int) -> float | None:
        if align:
            return (o - 1) / (i - 1) if i > 1 else None
        return o / i

    fh, fw = factor(ih, oh), factor(iw, ow)
    allowed_now = half_pixel_allowed if half and half_pixel_allowed is not None else allowed
    if fh is None or fw is None or fh != fw or fh not in allowed_now:
        shown = f"{fw:.3g}x{fh:.3g}" if fh is not None and fw is not None else "undefined"
        return {"found": shown + (", align_corners" if align else "") + (", half_pixel_centers" if half else "")}
    return None


@constraint
def depth_multiplier_one(ctx: OpContext, unless_single_channel: bool = True):
    """Depth multiplier must be 1 (or the input must have one channel; found multiplier {found})."""
    m = int(ctx.options.get("depth_multiplier", 1) or 1)
    a = ctx.input(0)
    if m != 1 and not (unless_single_channel and a is not None and a.shape and a.shape[-1] == 1):
        return {"found": m}
    return None


@constraint
def input_rank_in(ctx: OpContext, allowed: list[int]):
    """The first input must have {allowed} dimensions (found {found})."""
    a = ctx.input(0)
    return {"found": len(a.shape)} if a is not None and len(a.shape) not in allowed else None


@constraint
def slice_masks_zero(ctx: OpContext, masks: list[str] = ("ellipsis_mask", "new_axis_mask", "shrink_axis_mask")):
    """STRIDED_SLICE must not use {masks} (found {found})."""
    used = [m for m in masks if int(ctx.options.get(m, 0) or 0)]
    return {"found": used} if used else None


@constraint
def unit_slice_strides(ctx: OpContext):
    """All slice strides must be 1 (found {found})."""
    values = ctx.values(ctx.input(3))
    if values is None:
        return {"found": "not constant"}
    if np.any(np.asarray(values) != 1):
        return {"found": np.asarray(values).tolist()}
    return None


@constraint
def mirror_pad_mode(ctx: OpContext, allowed: list[str]):
    """Mirror padding mode must be one of {allowed} (found {found})."""
    mode = ctx.options.get("mode", 0)
    name = {0: "REFLECT", 1: "SYMMETRIC"}.get(mode, str(mode))
    return {"found": name} if name not in allowed else None


@constraint
def no_keep_num_dims(ctx: OpContext):
    """FULLY_CONNECTED must not keep the input's extra dimensions (keep_num_dims is set)."""
    return {} if ctx.options.get("keep_num_dims") else None


@constraint
def keep_num_dims_same_rank(ctx: OpContext):
    """With keep_num_dims, input and output must have the same rank (found {found})."""
    a, b = ctx.input(0), ctx.output(0)
    if ctx.options.get("keep_num_dims") and a is not None and b is not None and len(a.shape) != len(b.shape):
        return {"found": f"{len(a.shape)} and {len(b.shape)}"}
    return None


@constraint
def block_size_min(ctx: OpContext, min: int = 2):
    """Block size must be at least {min} (found {found})."""
    size = int(ctx.options.get("block_size", 0) or 0)
    return {"found": size} if size < min else None


@constraint
def kernel_height_min(ctx: OpContext, min: int):
    """Kernel height must be at least {min} (found {found})."""
    weights = weights_of(ctx)
    if weights is not None and len(weights.shape) == 4 and weights.shape[1] < min:
        return {"found": weights.shape[1]}
    return None


@constraint
def same_padding_filter_max(ctx: OpContext, max: int):
    """With SAME padding the pooling window must be at most {max} in both directions (found {found})."""
    if str(ctx.options.get("padding")) != "SAME":
        return None
    h, w = _hw(ctx.options, "filter")
    return {"found": f"{w}x{h}"} if h > max or w > max else None


@constraint
def softmax_1d_max(ctx: OpContext, max: int):
    """Softmax input must be one-dimensional (apart from batch) with at most {max} elements (found shape {found})."""
    a = ctx.input(0)
    if a is None:
        return None
    inner = [d for d in a.shape[1:] if d > 1]
    if len(inner) > 1 or (inner and inner[0] > max):
        return {"found": list(a.shape)}
    return None


@constraint
def no_batch_axis(ctx: OpContext):
    """The op must not work along a batch dimension larger than 1 (found axis {found} of size {size})."""
    axis = ctx.options.get("axis")
    if ctx.op.op == "SPLIT":
        values = ctx.values(ctx.input(0))
        axis = int(np.asarray(values).reshape(-1)[0]) if values is not None else None
    if axis is None:
        return None
    tensor = ctx.output(0) if ctx.op.op == "PACK" else ctx.input(1 if ctx.op.op == "SPLIT" else 0)
    shape = tensor.shape if tensor is not None else ()
    # Along a batch of 1 (a SPLIT into one piece, a PACK of one tensor) nothing is split or joined.
    if shape and int(axis) % len(shape) == 0 and shape[0] > 1:
        return {"found": axis, "size": shape[0]}
    return None


@constraint
def no_batch_padding(ctx: OpContext):
    """Padding the batch dimension is not supported (found paddings {found})."""
    values = ctx.values(ctx.input(1))
    if values is None:
        return {"found": "not constant"}
    values = np.asarray(values).reshape(-1, 2)
    if len(values) and values[0].any():
        return {"found": values.tolist()}
    return None


@constraint
def depth_reduction_multiple(ctx: OpContext, multiple: int = 4):
    """A reduction over the channel axis needs a channel count that is a multiple of {multiple} (found {found})."""
    axes = _axes(ctx)
    a = ctx.input(0)
    if axes is None or a is None or not a.shape:
        return None
    if len(a.shape) - 1 in axes and a.shape[-1] % multiple:
        return {"found": a.shape[-1]}
    return None


@constraint
def prelu_alpha_channel_only(ctx: OpContext):
    """PReLU alpha may vary only along the channel axis (use shared_axes=[1, 2]; found shape {found})."""
    alpha = ctx.input(1)
    if alpha is not None and any(d > 1 for d in alpha.shape[:-1]):
        return {"found": list(alpha.shape)}
    return None


@constraint
def large_stride_needs_valid(ctx: OpContext, max: int = 3):
    """A stride above {max} needs dilation 1 and VALID padding (found stride {found})."""
    h, w = _hw(ctx.options, "stride")
    if h <= max and w <= max:
        return None
    dh, dw = _hw(ctx.options, "dilation")
    if dh == dw == 1 and str(ctx.options.get("padding", "VALID")) == "VALID":
        return None
    return {"found": f"{w}x{h}, dilation {dw}x{dh}, padding {ctx.options.get('padding')}"}


@constraint
def resize_size_limits(ctx: OpContext, max_factor: float, max_output_dim: int):
    """Resize must scale height and width by at most {max_factor} and give an output of at most {max_output_dim} in both (found {found}); larger resizes stay on the CPU to avoid a loss of precision."""
    a, b = ctx.input(0), ctx.output(0)
    if a is None or b is None or len(a.shape) != 4 or len(b.shape) != 4:
        return None
    (ih, iw), (oh, ow) = a.shape[1:3], b.shape[1:3]
    align = bool(ctx.options.get("align_corners", False))

    def factor(i: int, o: int) -> float:
        if o == i:
            return 1.0
        if align:  # corners map onto corners: the step is (o - 1) / (i - 1), none from one pixel
            return (o - 1) / (i - 1) if i > 1 else math.inf
        return o / i if i else math.inf

    fh, fw = factor(ih, oh), factor(iw, ow)
    if max(fh, fw) > max_factor or max(oh, ow) > max_output_dim:
        return {"found": f"{iw}x{ih} -> {ow}x{oh}, factor {max(fh, fw):.3g}"}
    return None


@constraint
def resize_flags_exclusive(ctx: OpContext):
    """Resize cannot use align_corners and half_pixel_centers together."""
    if ctx.options.get("align_corners") and ctx.options.get("half_pixel_centers"):
        return {}
    return None


@constraint
def requantize_same_type(ctx: OpContext, min: float, max: float):
    """An integer-to-integer QUANTIZE must keep its type (int8 to int8, uint8 to uint8) and an input-to-output scale ratio in [{min}, {max}] (found {found}); the CPU runs the others."""
    a, b = ctx.input(0), ctx.output(0)
    if a is None or b is None or a.is_float:
        return None  # float -> integer quantization is another rule's business
    if a.dtype != b.dtype:
        return {"found": f"{a.dtype} to {b.dtype}"}
    sa, sb = _scale(a), _scale(b)
    if sa is not None and sb is not None and not min <= sa / sb <= max:
        return {"found": f"{a.dtype} to {b.dtype}, scale ratio {sa / sb:.3g}"}
    return None


@constraint
def no_hybrid_weights(ctx: OpContext):
    """With float activations the weights must be float too (found {found} weights: a hybrid, dynamic-range kernel the CPU runs)."""
    a, weights = ctx.input(0), weights_of(ctx)
    if a is not None and weights is not None and a.is_float and not weights.is_float:
        return {"found": weights.dtype}
    return None


@constraint
def input_dtype_in(ctx: OpContext, allowed: list[str], index: int = 0):
    """Input {index} must be one of {allowed} (found {found})."""
    t = ctx.input(index)
    return {"found": t.dtype} if t is not None and t.dtype not in allowed else None


@constraint
def depth_reduction_needs_unit_dim(ctx: OpContext):
    """A reduction over the channel axis needs height, width or channels of 1 (found shape {found})."""
    axes, a = _axes(ctx), ctx.input(0)
    if axes is None or a is None or len(a.shape) != 4:
        return None
    if 3 in axes and all(d > 1 for d in a.shape[1:]):
        return {"found": list(a.shape)}
    return None


@constraint
def fused_activation_for_dtype(ctx: OpContext, dtypes: list[str], allowed: list[str]):
    """With {dtype} activations the fused activation must be one of {allowed} (found {found})."""
    a = ctx.input(0)
    if a is None or a.dtype not in dtypes:
        return None
    act = _activation(ctx)
    return {"found": act, "dtype": a.dtype} if act not in allowed else None


@constraint
def activations_not_in(ctx: OpContext, dtypes: list[str]):
    """The target runs this op on no {dtypes} activations (found {found})."""
    for t in (*ctx.inputs, *ctx.outputs):
        if t is not None and not t.is_constant and t.dtype in dtypes:
            return {"found": t.dtype}
    return None
