"""Per-layer quantization error: SQNR of every op's output, float against quantized.

Both models run in LiteRT on the same calibration samples with every intermediate tensor kept
(`experimental_preserve_all_tensors`); tensors are matched by name (the converter keeps the float
graph's names through quantization). The quantized tensor is dequantized with its own scale and
zero point. Errors accumulate along the graph, as on the device, so the first layers whose SQNR
falls are the ones to look at. `worst` names them; `advice` says whether 16x8 (int16
activations) may help, judged from the target descriptor's int16 kernels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

# below this SQNR (dB) a layer's output is called lossy and named in the advice
LOSSY_SQNR_DB = 20.0
REPORT_SAMPLES = 32
WORST_COUNT = 3


@dataclass
class LayerError:
    index: int  # the op's position in the quantized model's main subgraph
    op: str
    tensor: str
    sqnr_db: float

    @property
    def layer(self) -> str:
        """The tensor's first name part (the converter joins fused ops' names with ';')."""
        return self.tensor.split(";")[0]


@dataclass
class LayerReport:
    samples: int
    layers: list[LayerError] = field(default_factory=list)
    worst: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        for entry, layer in zip(data["layers"], self.layers):
            entry["layer"] = layer.layer
            if not math.isfinite(entry["sqnr_db"]):
                entry["sqnr_db"] = None if math.isnan(entry["sqnr_db"]) else str(entry["sqnr_db"])
        return data

    def lowest(self, count: int = WORST_COUNT) -> list[LayerError]:
        return sorted(self.layers, key=lambda e: e.sqnr_db)[:count]


def preserving_interpreter(model_bytes: bytes):
    """A LiteRT interpreter that keeps every intermediate tensor readable after invoke."""
    from ai_edge_litert.interpreter import Interpreter

    from tflc.tf_env import quiet_native_output

    with quiet_native_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "intended for debugging": here it is the point
        interpreter = Interpreter(model_content=model_bytes, num_threads=1,
                                  experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
    return interpreter


def feed(interpreter, sample: list[np.ndarray]) -> None:
    from tflc.convert.evaluate import quantize

    interpreter.reset_all_variables()
    for detail, x in zip(interpreter.get_input_details(), sample):
        interpreter.set_tensor(detail["index"], quantize(x, detail))
    interpreter.invoke()


def op_outputs(view) -> list[tuple[int, str, int]]:
    """(op position, op name, output tensor index) for the main subgraph's ops, in order."""
    sg = view.subgraphs[0]
    return [(i, op.op, out) for i, op in enumerate(sg.operators) for out in op.outputs if out >= 0]


def measure_layers(float_bytes: bytes, quant_bytes: bytes, inputs: list[np.ndarray],
                   samples: int = REPORT_SAMPLES) -> LayerReport:
    """SQNR of each quantized op's output against the float tensor of the same name."""
    from tflc.tflite.reader import read_model

    qview, fview = read_model(quant_bytes), read_model(float_bytes)
    float_index = {}
    for t in fview.subgraphs[0].tensors:
        if not t.is_constant:
            float_index.setdefault(t.name, t.index)
    pairs = []
    for position, op, out in op_outputs(qview):
        tensor = qview.subgraphs[0].tensors[out]
        if op in ("QUANTIZE", "DEQUANTIZE") or tensor.name not in float_index:
            continue
        pairs.append((position, op, tensor, float_index[tensor.name]))
    n = min(samples, len(inputs[0]))
    fint, qint = preserving_interpreter(float_bytes), preserving_interpreter(quant_bytes)
    signal = np.zeros(len(pairs))
    noise = np.zeros(len(pairs))
    for i in range(n):
        sample = [x[i:i + 1] for x in inputs]
        feed(fint, sample)
        feed(qint, sample)
        for k, (_, _, tensor, f_index) in enumerate(pairs):
            ref = fint.get_tensor(f_index).astype(np.float64)
            got = dequantized(qint, tensor)
            if ref.shape != got.shape:
                continue
            signal[k] += float(np.sum(ref * ref))
            noise[k] += float(np.sum((ref - got) ** 2))
    report = LayerReport(samples=n)
    for k, (position, op, tensor, _) in enumerate(pairs):
        report.layers.append(LayerError(position, op, tensor.name, _db(signal[k], noise[k])))
    return report


def dequantized(interpreter, tensor) -> np.ndarray:
    values = interpreter.get_tensor(tensor.index)
    quant = tensor.quantization
    if quant is None or np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float64)
    scales = np.asarray(quant.scales, np.float64)
    zeros = np.asarray(quant.zero_points, np.float64)
    if len(scales) > 1:  # per-channel activations do not occur; keep the shape logic simple
        shape = [1] * values.ndim
        shape[quant.axis] = -1
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    return (values.astype(np.float64) - zeros) * scales


def _db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return round(10.0 * math.log10(signal / noise), 3)


def advise(report: LayerReport, view, activations: str, target_spec=None,
           accuracy_drop: float | None = None, max_drop: float | None = None,
           tried_ptq: bool = False) -> LayerReport:
    """Name the worst layers; suggest 16x8 where int8 loses too much and the target can run it.

    int8 loses too much when a layer's SQNR is under LOSSY_SQNR_DB, or the measured accuracy
    drop exceeds the gate (or 1 point without one). Whether the target has int16 kernels for
    those ops is read from its descriptor (per-op dtypes, else the target's policy); without a
    target the advice says which runtimes have them.
    """
    lowest = report.lowest()
    report.worst = [f"#{e.index} {e.op} {e.layer} ({_fmt_db(e.sqnr_db)})" for e in lowest]
    if activations != "int8" or not report.layers:
        return report
    lossy = [e for e in lowest if e.sqnr_db < LOSSY_SQNR_DB]
    too_much = accuracy_drop is not None and accuracy_drop > (1.0 if max_drop is None else max_drop)
    if not lossy and not too_much:
        return report
    named = ", ".join(f"{e.layer} ({_fmt_db(e.sqnr_db)})" for e in (lossy or lowest))
    auto = "" if tried_ptq else "try --ptq auto (activation ranges, bias correction), or "
    ops = sorted({op.op for op in view.subgraphs[0].operators} - {"QUANTIZE", "DEQUANTIZE"})
    if target_spec is None:
        report.advice.append(
            f"int8 loses most in {named}: {auto}--activations int16 (16x8) where the runtime has "
            "int16 kernels (TFLite Micro, LiteRT's builtin CPU kernels; not the Edge TPU or Hexagon)")
        return report
    missing = [op for op in ops if not int16_supported(target_spec, op)]
    if missing:
        report.advice.append(
            f"int8 loses most in {named}: {auto or 'int8 is what remains: '}{target_spec.name} has "
            f"no int16 kernels for {', '.join(missing[:5])}, so 16x8 is not an option there")
    else:
        report.advice.append(
            f"int8 loses most in {named}: {auto}--activations int16 (16x8): {target_spec.name} "
            "runs every op of this model with int16 activations")
    if target_spec.mixed_precision and len(missing) < len(ops):
        report.advice.append(
            f"or --activations mixed: int8, with 16x8 only for the layers that gain most "
            f"(--int16-budget sets how much of the compute; {target_spec.name} allows it)")
    return report


def int16_supported(target_spec, op: str) -> bool:
    """Whether the descriptor lets `op` run with int16 activations: its rule's dtypes, else the
    target's policy (an empty list means any type, as everywhere in the descriptors)."""
    rule = target_spec.ops.get(op)
    if rule is None:
        return False
    allowed = rule.dtypes.activations if rule.dtypes and rule.dtypes.activations else \
        target_spec.dtypes.activations
    return not allowed or "int16" in allowed


def _fmt_db(value: float) -> str:
    return f"{value:.1f} dB" if math.isfinite(value) else f"{value} dB"
