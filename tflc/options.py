"""`CompileOptions`: every setting of `tflc compile`, written out once.

The CLI builds one from its flags, `tflc.compile(...)` builds one from keyword arguments (or takes
one), the manifest stores `to_dict()`, and `tflc rebuild` reads it back with `from_dict()`. A new
compile option is one field here: its default, its validation and its place in the manifest come
with it.

Validation happens when the object is made, so a bad value fails in a millisecond with one line
naming the flag (`--max-accuracy-drop nan: ...`), never after a conversion. Paths stay as given
(strings); whether the files exist and fit the model is the loaders' business.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tflc.errors import BadInput

CALIBRATION_MODES = ("data", "random")
NORMALIZATIONS = ("unit", "symmetric", "raw")
WEIGHT_MODES = ("per-channel", "per-tensor")
ACTIVATION_MODES = ("int8", "int16", "mixed")
IO_TYPES = ("int8", "uint8", "int16", "float32")
EXPORT_FORMATS = ("c",)
PTQ_MODES = ("minmax", "percentile", "mse", "kl", "auto")  # tflc.convert.ptq.PTQ_MODES
MAX_SEED = 2**32 - 1  # numpy and TensorFlow both take 32-bit seeds
MAX_CALIBRATION_SAMPLES = 1_000_000

# Fields that ask for an optimization stage (the shortcut flags); `epochs` tunes them.
STAGE_FLAGS = ("prune", "prune_structure", "qat", "qat_skip_unsupported", "cluster", "distill")


@dataclass(frozen=True)
class CompileOptions:
    """What `tflc compile MODEL -o OUT` does besides reading MODEL and writing OUT."""

    # calibration: real samples (a file or image folder), or synthetic ones in random_range
    calibration_data: str | None = None
    calibration: str = "data"
    calibration_samples: int = 200
    random_range: tuple[float, float] = (0.0, 1.0)
    normalize: str = "unit"
    seed: int = 0
    # quantization
    weights: str = "per-channel"
    activations: str = "int8"  # int8 | int16 (16x8) | mixed (int8, 16x8 where it pays)
    int16_budget: float | None = None  # mixed: share of the compute in 16x8 (tflc.convert.mixed)
    io_type: str | None = None
    static_batch: bool = False
    allow_float_ops: bool = False
    # post-training quantization methods (tflc.convert.ptq): None is the converter's own min-max
    ptq: str | None = None  # minmax | percentile | mse | kl | auto
    bias_correction: bool = False
    # weight-side corrections on the float Keras model (tflc.convert.weights)
    cross_layer_equalization: bool = False
    adaround: int | None = None  # coordinate-descent sweeps per layer; None: round to nearest
    # loading
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    custom_objects: tuple[str, ...] = ()
    allow_unsafe_code: bool = False
    # evaluation and gates
    eval_data: str | None = None
    max_accuracy_drop: float | None = None
    target: str | None = None
    strict: bool = False
    export: str | None = None
    aot: tuple[str, ...] = ()  # SoCs to compile ahead of time for (--target's runtime.aot compiler)
    # optimization pipeline: a YAML file, or the shortcut stages below
    pipeline: str | None = None
    train_data: str | None = None
    prune: float | str | None = None  # a sparsity in (0, 1), or "auto"
    prune_structure: str | None = None  # "N:M", e.g. "2:4"
    qat: bool = False
    qat_skip_unsupported: bool = False
    cluster: int | None = None
    distill: str | None = None  # a student Keras file
    epochs: int | None = None  # fine-tuning epochs of every stage

    def __post_init__(self):
        _normalise(self)
        _validate(self)

    @property
    def stage_flags(self) -> dict[str, Any]:
        """The shortcut stages asked for, as `resolve_config` takes them (unset ones left out)."""
        flags = {name: getattr(self, name) for name in STAGE_FLAGS}
        flags = {k: v for k, v in flags.items() if v not in (None, False)}
        if self.epochs is not None:
            flags["epochs"] = self.epochs
        return flags

    @property
    def wants_pipeline(self) -> bool:
        return self.pipeline is not None or any(k != "epochs" for k in self.stage_flags)

    def to_dict(self) -> dict:
        """Plain JSON values (lists for tuples), in field order: what the manifest stores."""
        data = asdict(self)
        data["random_range"] = list(self.random_range)
        data["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        data["custom_objects"] = list(self.custom_objects)
        data["aot"] = list(self.aot)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CompileOptions:
        """Read back `to_dict()`; a key this tflc does not know is refused by name."""
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise BadInput(f"compile option '{unknown[0]}' is not known to this tflc "
                           f"(known: {', '.join(cls.field_names())})")
        return cls(**data)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _normalise(options: CompileOptions) -> None:
    """Accept what Python callers naturally pass (Paths, lists) and store plain values."""
    set_ = object.__setattr__.__get__(options)  # frozen: only __post_init__ may set fields
    for name in ("calibration_data", "eval_data", "pipeline", "train_data", "distill", "target"):
        value = getattr(options, name)
        if isinstance(value, os.PathLike):
            set_(name, os.fspath(value))
    try:
        low, high = options.random_range
        set_("random_range", (float(low), float(high)))
    except (TypeError, ValueError):
        raise BadInput(f"--random-range {options.random_range!r}: expected two numbers LO,HI") from None
    if isinstance(options.custom_objects, str):
        set_("custom_objects", (options.custom_objects,))
    set_("custom_objects", tuple(options.custom_objects or ()))
    set_("aot", (options.aot,) if isinstance(options.aot, str) else tuple(options.aot or ()))
    shapes = {}
    for name, shape in dict(options.input_shapes or {}).items():
        try:
            shapes[str(name)] = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise BadInput(f"--input-shape {name}={shape!r}: expected whole numbers such as 1,96,96,3"
                           ) from None
    set_("input_shapes", shapes)
    if isinstance(options.prune, str) and options.prune != "auto":
        try:
            set_("prune", float(options.prune))
        except ValueError:
            raise BadInput(f"--prune {options.prune}: expected a sparsity between 0 and 1, or auto"
                           ) from None


def _validate(o: CompileOptions) -> None:
    _choice("calibration", o.calibration, CALIBRATION_MODES)
    _choice("normalize", o.normalize, NORMALIZATIONS)
    _choice("weights", o.weights, WEIGHT_MODES)
    _choice("activations", o.activations, ACTIVATION_MODES)
    if o.io_type is not None:
        _choice("io_type", o.io_type, IO_TYPES)
    if o.export is not None:
        _choice("export", o.export, EXPORT_FORMATS)
    if o.ptq is not None:
        _choice("ptq", o.ptq, PTQ_MODES)
    _whole("seed", o.seed, 0, MAX_SEED)
    _whole("calibration_samples", o.calibration_samples, 1, MAX_CALIBRATION_SAMPLES)
    low, high = o.random_range
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise BadInput(f"--random-range {low},{high}: expected finite numbers with LO below HI")
    if o.int16_budget is not None:
        _finite("int16_budget", o.int16_budget, 0.0, 1.0)
    if o.max_accuracy_drop is not None:
        _finite("max_accuracy_drop", o.max_accuracy_drop, -100.0, 100.0)
    if isinstance(o.prune, float):
        _finite("prune", o.prune, 0.0, 1.0, open_ends=True)
    if o.cluster is not None:
        _whole("cluster", o.cluster, 2, 256)
    if o.epochs is not None:
        _whole("epochs", o.epochs, 1, 10_000)
    if o.adaround is not None:
        _whole("adaround", o.adaround, 1, 1_000)
    for name in ("static_batch", "allow_float_ops", "allow_unsafe_code", "strict", "qat",
                 "qat_skip_unsupported", "bias_correction", "cross_layer_equalization"):
        if not isinstance(getattr(o, name), bool):
            raise BadInput(f"{_flag(name)}: expected true or false, got {getattr(o, name)!r}")
    _pairs(o)


def _pairs(o: CompileOptions) -> None:
    """Options that only make sense together: refused before any model is loaded."""
    if o.calibration == "data" and o.calibration_data is None:
        raise BadInput(
            "no calibration data: pass --calibration-data FILE (.npz, .npy or an image folder) with "
            "~200 representative inputs, or --calibration random to accept synthetic data and lost accuracy"
        )
    if o.max_accuracy_drop is not None and o.eval_data is None:
        raise BadInput("--max-accuracy-drop needs labelled --eval-data to measure the drop")
    if o.export is not None and o.target is None:
        raise BadInput("--export needs --target (the microcontroller whose budget the package must fit)")
    if o.strict and o.target is None:
        raise BadInput("--strict needs --target (the target whose full mapping it demands)")
    for soc in o.aot:
        if not (isinstance(soc, str) and re.fullmatch(r"[A-Za-z0-9_-]{2,32}", soc)):
            raise BadInput(f"--aot {soc!r}: expected a SoC model name such as SM8650")
    if o.aot and o.target is None:
        raise BadInput("--aot needs --target (a target whose descriptor names an ahead-of-time "
                       "compiler, such as qualcomm-htp)")
    if o.pipeline is not None and any(k != "epochs" for k in o.stage_flags):
        stages = [k for k in o.stage_flags if k != "epochs"]
        raise BadInput(f"--config {o.pipeline}: give the stages either in the config file or as flags "
                       f"({', '.join(_flag(k) for k in stages)}), not both")
    if o.activations == "mixed" and (o.ptq == "auto" or o.bias_correction):
        flag = "--ptq auto" if o.ptq == "auto" else "--bias-correction"
        raise BadInput(f"{flag}: works on the converter's int8 model; with --activations mixed "
                       "give a range method (--ptq percentile, mse or kl) or drop it")
    if (o.ptq is not None or o.bias_correction) and o.activations == "int16":
        flag = f"--ptq {o.ptq}" if o.ptq is not None else "--bias-correction"
        raise BadInput(f"{flag}: the range and bias methods quantize int8 activations; drop it or "
                       "use --activations int8")
    if o.int16_budget is not None and o.activations != "mixed":
        raise BadInput("--int16-budget: sets how much of the model --activations mixed may run "
                       "in 16x8; add --activations mixed or drop it")
    if o.activations == "mixed" and o.adaround:
        raise BadInput("--adaround: its rounding is learned for the converter's int8 scales; "
                       "with --activations mixed use --cross-layer-equalization, or drop it")
    if o.epochs is not None and not o.wants_pipeline:
        raise BadInput("--epochs: sets the fine-tuning of pipeline stages; add a stage "
                       "(--prune, --qat, --cluster, --distill) or --config")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise BadInput(f"{_flag(name)} {value!r}: expected one of {', '.join(allowed)}")


def _whole(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadInput(f"{_flag(name)} {value!r}: expected a whole number from {low} to {high:,}")


def _finite(name: str, value, low: float, high: float, open_ends: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = low < value < high if open_ends else low <= value <= high
    if not ok:
        ends = f"between {low:g} and {high:g}" + (" (exclusive)" if open_ends else "")
        raise BadInput(f"{_flag(name)} {value!r}: expected a number {ends}")
