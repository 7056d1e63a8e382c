"""Mixed precision: int8 activations everywhere except the layers that need int16 (16x8).

Why per layer: 16x8 (int16 activations, int8 weights) keeps 256 times finer activation steps, but
its kernels are slower and its tensors twice the size; most layers lose nothing in int8 and a
few lose most of what is lost. `--activations mixed` finds those few and promotes only them,
within a budget: `int16_budget`, the share of the model's compute (multiply-accumulates; an op
without them counts its output elements) that may run in 16x8 kernels, the latency knob; and on
a target with a RAM budget, the tensor arena must still fit it, the size knob.

How: the float .tflite is quantized by Google's ai-edge-quantizer with a per-op recipe (int8
for every op, int16 for the chosen ones, selected by output tensor name); it writes the
standard ops any TFLite runtime reads, with a requantizing QUANTIZE op (int8 <-> int16) where
the precision changes. The TFLiteConverter has no per-op precision, which is why it is not used
here. The choice is greedy on measured sensitivity:

1. calibrate once (min-max over the calibration set; the ranges serve every recipe);
2. units: a tensor with the op that writes it and the ops that read it (an op alone in int16
   between int8 neighbours gains nothing; its input was already rounded to int8);
3. sensitivity, two ways: the output SQNR (against the float model) gained with the unit alone
   in int16, and the SQNR lost with its producer alone in int8 while every other candidate is
   int16 (in a deep network each int8 layer adds a little noise, visible only from that side);
4. promotion: units by sensitivity per unit of compute; each is kept if the budget allows, the
   arena still fits and the combined model's output SQNR rises (by MIN_STEP_DB at least:
   gains do not simply add, a promoted unit can make its neighbour's promotion worthless).

Scores are output SQNR on calibration samples (no labels are used, so `--eval-data` stays a
held-out measurement). Calibration order, recipe order and LiteRT's single thread are fixed:
the same inputs give the same bytes.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from tflc.errors import BadInput, PipelineError, first_line

DEFAULT_INT16_BUDGET = 0.25  # share of the compute in 16x8 kernels when no budget is given
MIN_GAIN_DB = 0.05  # a unit must gain (alone) or lose (alone in int8) this much to be tried
MIN_STEP_DB = 0.01  # and raise the output SQNR of the model with the units kept so far
SCORE_SAMPLES = 64  # calibration samples the sensitivity and the promotions are scored on
_SKIP_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
# Ops that only move or select values: on an int16 tensor they keep its grid, and narrowing
# their output to int8 gives what narrowing their input would. A unit reaches through them to
# the ops that compute with the finer values (else promoting conv -> pool gains nothing).
_MOVE_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "MAX_POOL_2D", "PAD",
                       "PADV2", "SLICE", "STRIDED_SLICE", "GATHER", "SPLIT", "SPLIT_V",
                       "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "CONCATENATION", "PACK", "UNPACK",
                       "TILE", "RELU", "RELU6", "RELU_N1_TO_1", "MAXIMUM", "MINIMUM",
                       "REDUCE_MAX", "REDUCE_MIN", "BROADCAST_TO", "SPACE_TO_BATCH_ND",
                       "BATCH_TO_SPACE_ND", "MIRROR_PAD", "RESIZE_NEAREST_NEIGHBOR"})
_SCOPE_LIMIT = 10_000  # ai-edge-quantizer cuts an op's scope string here


@dataclass
class Promotion:
    """One tensor considered for int16: its producer and consumers run in 16x8 to carry it.

    Promoting an op alone gains nothing: its int8 input is only widened and its output narrowed
    again at once. What int16 buys is a finer *tensor*, so the unit is a tensor with the op
    that writes it and every op that reads it.
    """

    layer: str  # the tensor's first name part: the producing layer's name scope
    tensor: str  # the tensor's whole name (fused ops join their names with ';')
    op: str  # its producer
    producer: int  # the producer's position in the main subgraph
    ops: list[int]  # positions of the producer and the consumers in the main subgraph
    cost_share: float  # the unit's share of the model's compute
    gain_db: float  # output SQNR gain with this unit alone in int16
    loss_db: float | None = None  # output SQNR lost when its producer alone is int8, all else int16
    kept: bool = False
    sqnr_db: float | None = None  # output SQNR after the step (when tried)
    why: str = ""  # why it was not kept


@dataclass
class MixedResult:
    model: bytes = field(repr=False)
    budget: float
    int16_share: float
    int8_sqnr_db: float  # all-int8 (same quantizer, same ranges)
    sqnr_db: float  # the mixed model
    int16_ops: list[str] = field(default_factory=list)  # "#3 CONV_2D", in graph order
    promotions: list[Promotion] = field(default_factory=list)
    seconds: float = 0.0
    ranges: str = "minmax"

    @property
    def int16_layers(self) -> list[str]:
        return [p.layer for p in self.promotions if p.kept]

    def to_dict(self) -> dict:
        return {"budget": self.budget, "ranges": self.ranges,
                "int16_share": round(self.int16_share, 4),
                "int16_layers": self.int16_layers, "int16_ops": self.int16_ops,
                "int8_sqnr_db": self.int8_sqnr_db, "sqnr_db": self.sqnr_db,
                "seconds": round(self.seconds, 3), "quantizer": _quantizer_version(),
                "promotions": [asdict(p) for p in self.promotions]}


def quantize_mixed(float_bytes: bytes, calibration: list[np.ndarray], budget: float | None = None,
                   target_spec=None, per_tensor: bool = False, ranges: str | None = None,
                   log=None) -> MixedResult:
    """The mixed int8/16x8 model of `float_bytes` (a float .tflite) within `budget`.

    `target_spec` limits the candidates to ops its descriptor runs with int16 activations and
    keeps the arena within its RAM; it must allow mixed precision (`mixed_precision: true`).
    The model's inputs and outputs stay int8: no op that writes a model output is promoted.
    `ranges` is a range method of `tflc.convert.ranges` (percentile, mse, kl) for the op
    outputs, as `--ptq` chooses them for int8; None or minmax keeps each tensor's min and max.
    """
    from tflc.convert.evaluate import mean_sqnr_db, progress_bar, run_tflite
    from tflc.tflite.reader import read_model

    say = log or (lambda message: None)
    budget = DEFAULT_INT16_BUDGET if budget is None else budget
    check_target(target_spec)
    clock = time.perf_counter()
    quantizer = _Quantizer(float_bytes, calibration, per_tensor, ranges or "minmax")
    score_set = [x[:SCORE_SAMPLES] for x in calibration]
    reference = run_tflite(float_bytes, score_set)

    def score(model: bytes) -> float:
        return mean_sqnr_db(reference, run_tflite(model, score_set))

    base = quantizer.quantize(())
    base_sqnr = score(base)
    graph = _Graph(read_model(base))
    allowed = {i for i, op in enumerate(graph.ops)
               if target_spec is None or _int16_ok(target_spec, op)}
    units = graph.units(allowed)
    say(f"mixed precision: {len(units)} tensors may be carried in int16; measuring each one's gain")
    promotions = []
    for name, producer, ops in progress_bar(units, "sensitivity", unit="op"):
        gain, why = float("nan"), ""
        try:
            gain = round(score(quantizer.quantize(graph.scopes(ops))) - base_sqnr, 3)
        except PipelineError as exc:  # the quantizer or LiteRT refuses an op in int16
            why = f"not quantizable in 16x8: {exc}"
        promotions.append(Promotion(name.split(";")[0], name, graph.ops[producer], producer,
                                    sorted(ops), round(graph.share(ops), 4), gain, why=why))
    _measure_losses(promotions, quantizer, graph, score)
    promoted: set[int] = set()
    current, model = base_sqnr, base
    for p in sorted(promotions, key=_priority):
        if p.why:
            continue
        if _sensitivity(p) < MIN_GAIN_DB:
            p.why = "no gain alone, no loss alone"
            continue
        wanted = promoted | set(p.ops)
        if graph.share(wanted) > budget + 1e-9:
            p.why = f"over the budget ({graph.share(wanted):.2f} > {budget:.2f})"
            continue
        try:
            trial = quantizer.quantize(graph.scopes(wanted))
            p.sqnr_db = round(score(trial), 3)  # LiteRT loads it here: PipelineError otherwise
        except PipelineError as exc:
            p.why = f"not quantizable with the layers already promoted: {exc}"
            continue
        if p.sqnr_db < current + MIN_STEP_DB:
            p.why = "no gain with the layers already promoted"
            continue
        if target_spec is not None and not _fits_ram(trial, target_spec):
            p.why = f"the arena would exceed {target_spec.name}'s RAM"
            continue
        p.kept = True
        promoted, current, model = wanted, p.sqnr_db, trial
        say(f"mixed precision: {p.layer} in int16: output SQNR {current:.2f} dB, "
            f"{graph.share(promoted):.0%} of the compute in 16x8")
    return MixedResult(model, budget, graph.share(promoted), round(base_sqnr, 3), round(current, 3),
                       [f"#{i} {graph.ops[i]}" for i in sorted(promoted)], promotions,
                       time.perf_counter() - clock, ranges or "minmax")


def _measure_losses(promotions: list[Promotion], quantizer, graph, score) -> None:
    """Each unit's loss from the other side: everything int16 but its producer.

    Gains alone miss what a deep network shows: each int8 layer adds a little noise, and one
    layer promoted among thirty int8 ones changes the output little, while the same layer
    kept int8 among int16 ones stands out. The two together rank the layers."""
    usable = [p for p in promotions if not p.why]
    full_ops = set().union(*(p.ops for p in usable)) if usable else set()
    if not full_ops:
        return
    try:
        full = score(quantizer.quantize(graph.scopes(full_ops)))
    except PipelineError:
        return  # the units do not quantize together; gains alone rank them
    from tflc.convert.evaluate import progress_bar

    for p in progress_bar(usable, "sensitivity (int8 among int16)", unit="op"):
        try:
            demoted = graph.scopes(full_ops - {p.producer})
            p.loss_db = round(full - score(quantizer.quantize(demoted)), 3)
        except PipelineError:
            continue


def _sensitivity(p: Promotion) -> float:
    gain = p.gain_db if np.isfinite(p.gain_db) else -np.inf
    return max(gain, p.loss_db if p.loss_db is not None else -np.inf)


def _priority(p: Promotion):
    """Most sensitivity per unit of compute first; the name breaks ties: a stable order."""
    return (-_sensitivity(p) / max(p.cost_share, 1e-6), p.tensor)


def check_target(target_spec) -> None:
    """Refuse, in one line, a target whose descriptor does not allow mixed int8/int16 models."""
    if target_spec is not None and not target_spec.mixed_precision:
        raise BadInput(f"--activations mixed: {target_spec.name}'s descriptor does not allow "
                       "int8 and int16 layers in one model (mixed_precision); use --activations "
                       "int8" + ("" if not any(_int16_ok(target_spec, op) for op in
                                               ("CONV_2D", "FULLY_CONNECTED"))
                                 else " or int16"))


def _int16_ok(target_spec, op: str) -> bool:
    from tflc.convert.layer_report import int16_supported

    return int16_supported(target_spec, op)


class _Graph:
    """The all-int8 model's main subgraph as the selection sees it: ops, costs, tensors, scopes."""

    def __init__(self, view):
        from tflc.profile.counts import macs

        sg = view.subgraphs[0]
        self.sg = sg
        self.ops = [op.op for op in sg.operators]
        self.cost = []
        self.scope = []
        for op in sg.operators:
            outputs = [i for i in op.outputs if i >= 0]
            elements = sum(sg.tensors[i].num_elements for i in outputs)
            self.cost.append(0 if op.op in _SKIP_OPS else (macs(sg, op) or elements))
            # how ai-edge-quantizer names an op: its output names, each followed by ';', cut at
            # its length limit; the recipe matches it whole
            self.scope.append("".join(sg.tensors[i].name + ";" for i in outputs)[:_SCOPE_LIMIT])
        self.total = sum(self.cost) or 1

    def units(self, allowed: set[int]) -> list[tuple[str, int, frozenset[int]]]:
        """(tensor name, producer, {producer} | consumers) for each activation tensor whose
        producer and readers may all run in int16 and none writes a model output."""
        sg = self.sg
        graph_outputs = set(sg.outputs)
        readers: dict[int, set[int]] = {}
        for position, op in enumerate(sg.operators):
            for i in op.inputs:
                if i >= 0:
                    readers.setdefault(i, set()).add(position)
        writes_output = {position for position, op in enumerate(sg.operators)
                         if graph_outputs & set(op.outputs)}
        units = []
        for position, op in enumerate(sg.operators):
            if self.ops[position] in _SKIP_OPS:
                continue
            for i in op.outputs:
                tensor = sg.tensors[i] if i >= 0 else None
                if tensor is None or tensor.dtype != "int8" or i in graph_outputs:
                    continue
                ops = frozenset(self._reach(position, i, readers))
                if ops <= allowed and not ops & writes_output and len(ops) > 1:
                    units.append((tensor.name, position, ops))
        return units

    def _reach(self, producer: int, tensor: int, readers: dict) -> set[int]:
        """The producer, the tensor's readers and, through value-moving readers, theirs."""
        ops, frontier = {producer}, [tensor]
        while frontier:
            for reader in readers.get(frontier.pop(), ()):
                if reader in ops:
                    continue
                ops.add(reader)
                if self.ops[reader] in _MOVE_OPS:
                    frontier.extend(i for i in self.sg.operators[reader].outputs if i >= 0)
        return ops

    def share(self, ops) -> float:
        return sum(self.cost[i] for i in ops) / self.total

    def scopes(self, ops) -> tuple[str, ...]:
        return tuple(self.scope[i] for i in sorted(ops))


def _fits_ram(model: bytes, target_spec) -> bool:
    from tflc.check.verdicts import check_model

    lines = check_model(model, target_spec).memory.budgets
    return all(line.ok for line in lines if line.name == "ram")


class _Quantizer:
    """ai-edge-quantizer on one float model: calibrated once, then one recipe per call."""

    def __init__(self, float_bytes: bytes, calibration: list[np.ndarray], per_tensor: bool,
                 ranges: str = "minmax"):
        self.float_bytes = float_bytes
        self.per_tensor = per_tensor
        self.cache: dict[tuple[str, ...], bytes] = {}
        self.floats = _float_constants(float_bytes)
        from ai_edge_quantizer import calibrator
        from ai_edge_quantizer.utils import qsv_utils

        quantizer = self._recipe(())
        samples = _signature_samples(float_bytes, calibration)
        with _quiet():
            try:
                # each tensor's min and max over the whole set, as the TFLiteConverter takes them
                # (the quantizer's default, a moving average of per-sample extremes, clips real
                # values: on MLPerf's KWS it cost 10 dB of output SQNR); one thread: same bytes
                calib = calibrator.Calibrator(float_bytes, num_threads=1,
                                              qsv_update_func=qsv_utils.min_max_update)
                calib.calibrate(samples, quantizer._recipe_manager)
                self.calibration = calib.get_model_qsvs()
                if ranges != "minmax":
                    self.calibration = _chosen_ranges(float_bytes, calibration, self.calibration,
                                                      ranges)
            except Exception as exc:  # noqa: BLE001 - its errors are ValueError, RuntimeError...
                raise PipelineError(f"ai-edge-quantizer could not calibrate the model: "
                                    f"{first_line(exc)[:300]}") from None

    def quantize(self, int16_scopes: tuple[str, ...]) -> bytes:
        key = tuple(int16_scopes)
        if key not in self.cache:
            quantizer = self._recipe(key)
            with _quiet():
                try:
                    self.cache[key] = bytes(quantizer.quantize(self.calibration).quantized_model)
                except Exception as exc:  # noqa: BLE001
                    raise PipelineError(f"ai-edge-quantizer: {first_line(exc)[:300]}") from None
            self.cache[key] = _repair_small_weight_scales(self.cache[key], self.floats)
        return self.cache[key]

    def _recipe(self, int16_scopes: tuple[str, ...]):
        from ai_edge_quantizer import qtyping, quantizer

        granularity = (qtyping.QuantGranularity.TENSORWISE if self.per_tensor
                       else qtyping.QuantGranularity.CHANNELWISE)
        with _quiet():
            q = quantizer.Quantizer(self.float_bytes)
        q.add_static_config(".*", "*", 8, 8, granularity)
        for scope in int16_scopes:  # later entries take precedence over the catch-all
            q.add_static_config(f"^{re.escape(scope)}$", "*", 16, 8, granularity)
        return q


def _chosen_ranges(float_bytes: bytes, calibration: list[np.ndarray], qsvs: dict,
                   method: str) -> dict:
    """The calibration result with each op output's range chosen by `method`, by the rules of
    `tflc.convert.ptq.set_ranges`: model inputs keep min-max (clipping them saturates real
    data), fixed-range ops (softmax, logistic, tanh) and fused recurrent state keep theirs."""
    from tflc.convert.ptq import FIXED_RANGE_OPS, STATEFUL_OPS, capture
    from tflc.convert.ranges import choose_range
    from tflc.tflite.reader import read_model

    sg = read_model(float_bytes).subgraphs[0]
    kept = FIXED_RANGE_OPS | STATEFUL_OPS
    outputs = {i for op in sg.operators if op.op not in kept for i in op.outputs if i >= 0}
    wanted = [t.index for t in sg.tensors if t.index in outputs and t.index not in sg.inputs
              and not t.is_constant and t.dtype == "float32" and t.name in qsvs]
    values = capture(float_bytes, calibration, wanted)
    out = dict(qsvs)
    for index in wanted:
        if index not in values:
            continue
        name = sg.tensors[index].name
        lo, hi = choose_range(values[index], method)
        out[name] = {**qsvs[name], "min": np.full_like(np.asarray(qsvs[name]["min"]), lo),
                     "max": np.full_like(np.asarray(qsvs[name]["max"]), hi)}
    return out


def _float_constants(float_bytes: bytes) -> dict[str, np.ndarray]:
    """The float model's float constants (weights and biases), by tensor name."""
    from tflc.tflite.reader import read_model

    view = read_model(float_bytes)
    out = {}
    for t in view.subgraphs[0].tensors:
        if t.is_constant and t.dtype == "float32":
            data = view.tensor_data(t)
            if data is not None:
                out[t.name] = np.array(data, np.float64)
    return out


_BIASED_OPS = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": 3}  # weight channel axis
_BIAS_LIMIT = 2**31 - 1


def _repair_small_weight_scales(model: bytes, floats: dict[str, np.ndarray]) -> bytes:
    """Channels whose weights are too small for their bias, rescaled as the converter does.

    A channel with near-zero weights and a real bias (a dead filter after batch-norm folding:
    its output is the bias) gets a tiny weight scale; bias / (input scale x weight scale) then
    passes 2^31, and ai-edge-quantizer 0.10 clips it (its float32 bound casts to -2^31: the
    sign flips) while the output multiplier underflows to 0. The TFLiteConverter raises such a
    channel's weight scale to |bias| / (input scale x (2^31 - 1)) and requantizes its weights
    and bias; so does this, from the float model's own weights and biases. On MLPerf's VWW
    (three such depthwise channels) this took the int16 model from below its int8 one to the
    converter's 16x8 figures."""
    from tflc.tflite.reader import read_model

    view = read_model(model)
    sg = view.subgraphs[0]
    fixes = []  # (weight index, bias index, weight scales, bias scales, int weights, int bias)
    for op in sg.operators:
        axis = _BIASED_OPS.get(op.op)
        if axis is None or len(op.inputs) < 3 or min(op.inputs[:3]) < 0:
            continue
        x, w, b = (sg.tensors[i] for i in op.inputs[:3])
        if not (w.is_constant and b.is_constant and w.quantization and b.quantization
                and x.quantization and w.name in floats and b.name in floats):
            continue
        scales = np.asarray(w.quantization.scales, np.float64)
        x_scale = float(x.quantization.scales[0])
        bias = floats[b.name]
        need = np.abs(bias) / (x_scale * _BIAS_LIMIT)
        if len(scales) != len(bias) or not np.any(scales < need):
            continue
        scales = np.maximum(scales, need)
        weights = floats[w.name]
        shape = [1] * weights.ndim
        shape[axis] = -1
        q_w = np.clip(np.round(weights / scales.reshape(shape)), -127, 127).astype(np.int8)
        q_b = np.round(bias / (x_scale * scales)).astype(np.int64 if b.dtype == "int64" else np.int32)
        fixes.append((w.index, b.index, scales, x_scale * scales, q_w, q_b))
    if not fixes:
        return model
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    tensors = obj.subgraphs[0].tensors
    for w_index, b_index, scales, bias_scales, q_w, q_b in fixes:
        tensors[w_index].quantization.scale = scales.astype(np.float32).tolist()
        tensors[b_index].quantization.scale = bias_scales.astype(np.float32).tolist()
        for index, values in ((w_index, q_w), (b_index, q_b)):
            little = values.astype(values.dtype.newbyteorder("<"))
            obj.buffers[tensors[index].buffer].data = np.frombuffer(little.tobytes(), np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def _signature_samples(float_bytes: bytes, calibration: list[np.ndarray]) -> dict:
    """The calibration set as the quantizer takes it: per signature, a dict per sample."""
    from tflc.convert.evaluate import make_interpreter

    interpreter = make_interpreter(float_bytes)
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise PipelineError("the float model has no signature; ai-edge-quantizer needs one")
    key = sorted(signatures)[0]
    runner = interpreter.get_signature_runner(key)
    by_index = {d["index"]: name for name, d in runner.get_input_details().items()}
    names = [by_index[d["index"]] for d in interpreter.get_input_details()]
    count = len(calibration[0])
    return {key: [{name: x[i:i + 1] for name, x in zip(names, calibration)}
                  for i in range(count)]}


class _quiet:
    """The quantizer's prints, progress bars and warnings hidden, as the converter's are."""

    def __enter__(self):
        from tflc.tf_env import quiet_native_output

        self.native = quiet_native_output()
        self.native.__enter__()
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self.warnings.__exit__(*exc)
        return self.native.__exit__(*exc)


def _quantizer_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-quantizer")
    except PackageNotFoundError:  # pragma: no cover - it is a compile dependency
        return None
