"""Post-training quantization methods: activation ranges, bias correction, and `--ptq auto`.

All of them keep the converter's own output format: a standard fully-integer TFLite file.

- Ranges (`percentile`, `mse`, `kl`): the converter calibrates only (a float model whose
  tensors carry the recorded min/max); tflc runs that model in LiteRT on the calibration set with
  every intermediate tensor kept, chooses each activation's range from its values
  (`tflc.convert.ranges`), writes the ranges into the calibrated model and hands it to the
  converter's quantizer (`convert_int8(calibration_hook=...)`). Only op outputs change: model
  inputs keep their min-max range (clipping them would saturate real data), and so do the
  outputs, state and intermediates of fused recurrent ops (their state is requantized every
  step); ops with fixed output ranges (softmax, logistic, tanh) follow their own rule.
- Bias correction (empirical, as in AIMET): the quantized model's error has a mean per output
  channel; for each CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED in graph order tflc measures
  that mean on the calibration set (where neither output is clipped by the fused activation),
  keeps it where it exceeds three standard errors (a shift the data shows, not noise),
  subtracts it from the int32 bias (in units of input scale x weight scale), and moves on to the
  next layer with the corrected model, so later layers correct what earlier ones left.
- `auto`: every combination on `--eval-data`, best accuracy (output SQNR against the float model
  when there are no labels, and as the tie-break), restricted to candidates that map to the target
  as well as plain PTQ does. For a Keras model two more: the best of those with cross-layer
  equalization, and with AdaRound (AUTO_ADAROUND_SWEEPS), each on a corrected copy of the
  weights; not the full product, which would double or triple the cost for rare gains.

The same model, data and settings give the same bytes: calibration order is fixed, the range
choices are deterministic numpy, LiteRT runs single-threaded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tflc.convert.ranges import RANGE_METHODS, choose_range

PTQ_MODES = RANGE_METHODS + ("auto",)
BIAS_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
FIXED_RANGE_OPS = frozenset({"SOFTMAX", "LOGISTIC", "TANH", "LOG_SOFTMAX"})
# fused recurrent ops: their outputs feed their own state, whose scale must hold every step
STATEFUL_OPS = frozenset({"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM",
                          "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN"})
MAX_VALUES_PER_TENSOR = 1 << 20  # values kept per tensor to choose its range
BIAS_SAMPLES = 64  # calibration samples bias correction measures on
SIGNIFICANCE = 3.0  # a channel's mean error must exceed this many standard errors to be corrected
AUTO_ADAROUND_SWEEPS = 2  # auto's AdaRound candidate: most flips happen in the first sweeps


@dataclass(frozen=True)
class PTQSettings:
    """One quantization recipe: how activation ranges are chosen, and bias correction."""

    ranges: str = "minmax"
    bias_correction: bool = False
    equalize: bool = False  # auto only: on a cross-layer-equalized copy of the weights
    adaround: int = 0  # auto only: on a copy with AdaRound weights (sweeps)

    @property
    def plain(self) -> bool:
        return (self.ranges == "minmax" and not self.bias_correction and not self.equalize
                and not self.adaround)

    @property
    def label(self) -> str:
        return (self.ranges + ("+bias" if self.bias_correction else "")
                + ("+cle" if self.equalize else "") + ("+adaround" if self.adaround else ""))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidate:
    settings: PTQSettings
    accuracy: float | None
    sqnr_db: float
    size_bytes: int
    seconds: float
    on_target: int | None = None

    def to_dict(self) -> dict:
        return {"method": self.settings.label, **self.settings.to_dict(), "accuracy": self.accuracy,
                "sqnr_db": self.sqnr_db, "size_bytes": self.size_bytes,
                "seconds": round(self.seconds, 3), "ops_on_target": self.on_target}


@dataclass
class PTQResult:
    model: bytes = field(repr=False)
    chosen: PTQSettings
    calibrated: bytes | None = field(default=None, repr=False)  # float, with min/max: a reference
    candidates: list[Candidate] = field(default_factory=list)
    float_accuracy: float | None = None
    corrected_biases: int = 0
    biases: dict = field(default_factory=dict, repr=False)  # tensor index -> int32 bias written

    def to_dict(self) -> dict:
        return {"chosen": self.chosen.label, "settings": self.chosen.to_dict(),
                "float_accuracy": self.float_accuracy, "corrected_biases": self.corrected_biases,
                "candidates": [c.to_dict() for c in self.candidates]}

    def table(self) -> str:
        return format_table(self.to_dict())


def format_table(ptq: dict) -> str:
    """method, accuracy, drop, SQNR, size, time: one row per candidate of `PTQResult.to_dict()`."""
    rows = [f"{'method':<18}{'accuracy':>9}{'drop':>8}{'SQNR dB':>9}{'size':>10}{'time s':>8}"]
    base = ptq.get("float_accuracy")
    for c in ptq["candidates"]:
        acc = "-" if c["accuracy"] is None else f"{c['accuracy']:.2f}"
        drop = "-" if c["accuracy"] is None or base is None else f"{base - c['accuracy']:+.2f}"
        mark = " *" if c["method"] == ptq["chosen"] else ""
        rows.append(f"{c['method']:<18}{acc:>9}{drop:>8}{c['sqnr_db']:>9.2f}"
                    f"{c['size_bytes']:>10,}{c['seconds']:>8.2f}{mark}")
    return "\n".join(rows)


def quantize(loaded, calibration: list[np.ndarray], convert_options, frozen,
             settings: PTQSettings) -> PTQResult:
    """The int8 model with `settings`; plain settings take exactly the converter's own path."""
    from tflc.convert.converter import convert_int8

    if settings.equalize or settings.adaround:
        from dataclasses import replace

        from tflc.convert.converter import frozen_function
        from tflc.convert.weights import correct_weights

        loaded, _ = correct_weights(loaded, calibration, settings.equalize, settings.adaround)
        frozen = frozen_function(loaded, convert_options.static_batch)
        settings = replace(settings, equalize=False, adaround=0)
        return quantize(loaded, calibration, convert_options, frozen, settings)
    if settings.plain:
        return PTQResult(convert_int8(loaded, calibration, convert_options, frozen), settings)
    seen: dict[str, bytes] = {}

    def hook(calibrated: bytes) -> bytes:
        seen["calibrated"] = calibrated
        if settings.ranges == "minmax":
            return calibrated
        return set_ranges(calibrated, calibration, settings.ranges)

    model = convert_int8(loaded, calibration, convert_options, frozen, calibration_hook=hook)
    result = PTQResult(model, settings, seen["calibrated"])
    if settings.bias_correction:
        result.model, result.biases = correct_biases(seen["calibrated"], model, calibration)
        result.corrected_biases = len(result.biases)
    return result


# ------------------------------------------------------------------------------ ranges


_CAPTURED: dict = {}  # the last calibrated model's captured values: auto tries several methods


def set_ranges(calibrated: bytes, calibration: list[np.ndarray], method: str) -> bytes:
    """The calibrated model with each activation's min/max chosen by `method`."""
    from tensorflow.lite.tools import flatbuffer_utils

    from tflc.tflite.reader import read_model

    view = read_model(calibrated)
    sg = view.subgraphs[0]
    inputs = set(sg.inputs)
    outputs = {out for op in sg.operators if op.op not in FIXED_RANGE_OPS | STATEFUL_OPS
               for out in op.outputs}
    wanted = [t.index for t in sg.tensors
              if not t.is_constant and not t.is_variable and t.dtype == "float32"
              and t.index not in inputs and t.index in outputs]
    from tflc.fileio import sha256_bytes

    key = sha256_bytes(calibrated + b"".join(np.ascontiguousarray(x).tobytes() for x in calibration))
    if key not in _CAPTURED:
        _CAPTURED.clear()
        _CAPTURED[key] = capture(calibrated, calibration, wanted)
    values = _CAPTURED[key]
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    for index in wanted:
        q = tensors[index].quantization
        if q is None or q.min is None or q.max is None or len(q.min) != 1 or index not in values:
            continue
        lo, hi = choose_range(values[index], method)
        q.min = np.array([lo], np.float32)
        q.max = np.array([hi], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def capture(model_bytes: bytes, calibration: list[np.ndarray], indices: list[int]) -> dict:
    """Values of the given tensors over the calibration set (a strided subsample of each)."""
    from tflc.convert.layer_report import feed, preserving_interpreter

    interpreter = preserving_interpreter(model_bytes)
    n = len(calibration[0])
    parts: dict[int, list[np.ndarray]] = {i: [] for i in indices}
    for s in range(n):
        feed(interpreter, [x[s:s + 1] for x in calibration])
        for index in indices:
            try:
                v = interpreter.get_tensor(index).ravel()
            except ValueError:  # a tensor LiteRT does not expose (no data)
                continue
            step = max(1, v.size * n // MAX_VALUES_PER_TENSOR)
            parts[index].append(np.array(v[::step], np.float32))
    return {i: np.concatenate(p) for i, p in parts.items() if p}


# ------------------------------------------------------------------------- bias correction


def correct_biases(calibrated: bytes, model: bytes, calibration: list[np.ndarray],
                   samples: int = BIAS_SAMPLES) -> tuple[bytes, dict]:
    """Subtract each layer's mean output error per channel from its int32 bias, layer by layer.

    Returns the corrected model and the biases written ({bias tensor index: int32 values}). The
    float reference is the calibrated model (the same graph and tensor names, in float).
    """
    from tflc.convert.layer_report import dequantized, feed, preserving_interpreter
    from tflc.tflite.reader import read_model

    fview = read_model(calibrated)
    float_index = {}
    for t in fview.subgraphs[0].tensors:
        if not t.is_constant:
            float_index.setdefault(t.name, t.index)
    view = read_model(model)
    sg = view.subgraphs[0]
    layers = []
    for op in sg.operators:
        if op.op not in BIAS_OPS or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        out, bias = sg.tensors[op.outputs[0]], sg.tensors[op.inputs[2]]
        weights, source = sg.tensors[op.inputs[1]], sg.tensors[op.inputs[0]]
        if (bias.dtype != "int32" or not bias.is_constant or out.name not in float_index
                or out.quantization is None or weights.quantization is None
                or source.quantization is None):
            continue
        layers.append((op, out, bias, weights, source))
    n = min(samples, len(calibration[0]))
    reference = preserving_interpreter(calibrated)
    float_outputs = {}
    for s in range(n):
        feed(reference, [x[s:s + 1] for x in calibration])
        for _, out, *_ in layers:
            float_outputs.setdefault(out.index, []).append(
                reference.get_tensor(float_index[out.name]).astype(np.float64))
    written: dict[int, np.ndarray] = {}
    for op, out, bias, weights, source in layers:
        interpreter = preserving_interpreter(model)
        total = np.zeros(out.shape[-1])
        squares = np.zeros(out.shape[-1])
        count = np.zeros(out.shape[-1])
        low, high = _active_range(op.options.get("fused_activation_function"))
        for s in range(n):
            feed(interpreter, [x[s:s + 1] for x in calibration])
            got = dequantized(interpreter, out)
            ref = float_outputs[out.index][s]
            if got.shape != ref.shape:
                break
            mask = (ref > low) & (ref < high) & (got > low) & (got < high)
            error = np.where(mask, got - ref, 0.0).reshape(-1, out.shape[-1])
            total += error.sum(0)
            squares += np.square(error).sum(0)
            count += mask.reshape(-1, out.shape[-1]).sum(0)
        mean_error = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        # only a shift the calibration set shows clearly: |mean| above SIGNIFICANCE standard errors
        spread = np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean_error ** 2, 0.0))
        significant = np.abs(mean_error) > SIGNIFICANCE * spread / np.sqrt(np.maximum(count, 1))
        mean_error = np.where(significant & (count > 1), mean_error, 0.0)
        in_scale = source.quantization.scales[0]
        w_scales = np.asarray(weights.quantization.scales, np.float64)
        step = in_scale * (w_scales if w_scales.size == mean_error.size else w_scales[0])
        delta = np.round(mean_error / step).astype(np.int64)
        if not delta.any():
            continue
        current = view.tensor_data(bias).astype(np.int64)
        new = np.clip(current - delta, np.iinfo(np.int32).min, np.iinfo(np.int32).max)
        written[bias.index] = new.astype(np.int32)
        model = write_constant(model, bias.index, written[bias.index])
        view = read_model(model)
    return model, written


def _active_range(activation) -> tuple[float, float]:
    """Where a fused activation is the identity (outside it the output is clipped)."""
    name = str(activation or "NONE").upper()
    if name.endswith("RELU6"):
        return 0.0, 6.0
    if name.endswith("RELU_N1_TO_1"):
        return -1.0, 1.0
    if name.endswith("RELU"):
        return 0.0, np.inf
    return -np.inf, np.inf


def write_constant(model: bytes, tensor_index: int, values: np.ndarray) -> bytes:
    """The model with a main-subgraph constant tensor's data replaced (its own buffer if shared)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    tensor = obj.subgraphs[0].tensors[tensor_index]
    users = sum(t.buffer == tensor.buffer for sg in obj.subgraphs for t in sg.tensors)
    data = np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8)
    if users > 1:
        buffer = schema.BufferT()
        buffer.data = data
        obj.buffers.append(buffer)
        tensor.buffer = len(obj.buffers) - 1
    else:
        obj.buffers[tensor.buffer].data = data
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


# ------------------------------------------------------------------------------ auto


def candidates_for(mode: str, bias_correction: bool) -> list[PTQSettings]:
    if mode != "auto":
        return [PTQSettings(mode, bias_correction)]
    return [PTQSettings(r, b) for r in RANGE_METHODS for b in (False, True)]


def run_ptq(loaded, calibration: list[np.ndarray], convert_options, frozen, mode: str | None,
            bias_correction: bool, evaluation_set=None, target_spec=None, log=None) -> PTQResult:
    """The model `--ptq MODE [--bias-correction]` asks for; for `auto`, the best candidate.

    Candidates are scored on `evaluation_set`, else on the calibration set: with labels, those
    within one sample of the best accuracy are kept (a difference of one sample is noise), and
    of them the one with the highest output SQNR against the float model wins; without labels,
    the highest SQNR.
    """
    from tflc.convert.evaluate import mean_sqnr_db, run_tflite, top1_accuracy

    say = log or (lambda message: None)
    settings = candidates_for(mode or "minmax", bias_correction)
    if len(settings) == 1:
        return quantize(loaded, calibration, convert_options, frozen, settings[0])
    data = evaluation_set.x if evaluation_set is not None else calibration
    labels = evaluation_set.y if evaluation_set is not None else None
    reference = loaded.predict(data)
    float_accuracy = top1_accuracy(reference[0], labels) if labels is not None else None
    results = []

    def attempt(s: PTQSettings) -> None:
        say(f"ptq auto: trying {s.label}")
        clock = time.perf_counter()
        result = quantize(loaded, calibration, convert_options, frozen, s)
        result.chosen = s
        seconds = time.perf_counter() - clock
        outputs = run_tflite(result.model, data)
        sqnr = mean_sqnr_db(reference, outputs)
        accuracy = top1_accuracy(outputs[0], labels) if labels is not None else None
        candidate = Candidate(s, accuracy, round(sqnr, 3), len(result.model), seconds,
                              _ops_on_target(result.model, target_spec))
        results.append((candidate, result))

    for s in settings:
        attempt(s)
    if getattr(loaded, "is_keras", False):  # weight corrections edit Keras weights only
        from dataclasses import replace

        ranged = _best(results, labels, target_spec).settings
        attempt(replace(ranged, equalize=True))
        attempt(replace(ranged, adaround=AUTO_ADAROUND_SWEEPS))
    chosen = _best(results, labels, target_spec, with_result=True)
    chosen.candidates = [c for c, _ in results]
    chosen.float_accuracy = float_accuracy
    return chosen


def _best(results: list, labels, target_spec, with_result: bool = False):
    """The winning candidate (or its result): most ops on the target, then accuracy within one
    sample of the best, then the highest SQNR (plain PTQ wins an exact tie)."""
    floor = max((c.on_target or 0) for c, _ in results) if target_spec is not None else None
    eligible = [(c, r) for c, r in results if floor is None or (c.on_target or 0) >= floor]
    if labels is not None:  # within one sample of the best accuracy counts as a tie
        top = max(c.accuracy for c, _ in eligible)
        eligible = [(c, r) for c, r in eligible if c.accuracy >= top - 100.0 / len(labels) - 1e-3]
    best = max(eligible, key=lambda item: (item[0].sqnr_db, item[0].settings.plain))
    return best[1] if with_result else best[0]


def _ops_on_target(model: bytes, target_spec) -> int | None:
    if target_spec is None:
        return None
    from tflc.check.verdicts import check_model
    from tflc.tflite.reader import read_model

    return check_model(read_model(model), target_spec).to_dict()["summary"]["ops_on_target"]
