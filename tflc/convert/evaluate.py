"""Evaluate: how much did quantization cost? Accuracy and output fidelity of a .tflite.

The int8 model runs in LiteRT exactly as a device would run it: float inputs are quantized with
the model's own input scale and zero point, integer outputs dequantized with its output
parameters. With labels we report top-1 accuracy of the float Keras model and of the int8 model
and their difference in points; always, we report per-output fidelity against the float model:
top-1 agreement and SQNR, the signal-to-quantization-noise ratio in dB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from tflc.errors import PipelineError


@dataclass
class OutputFidelity:
    name: str
    top1_agreement: float
    sqnr_db: float


@dataclass
class EvalReport:
    samples: int
    float_accuracy: float | None = None
    int8_accuracy: float | None = None
    accuracy_drop: float | None = None  # points (percentage points), float minus int8
    fidelity: list[OutputFidelity] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def make_interpreter(model_bytes: bytes, num_threads: int = 1):
    """A LiteRT interpreter, or tf.lite's where ai-edge-litert is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is a dependency
        from tflc.tf_env import import_tensorflow

        Interpreter = import_tensorflow().lite.Interpreter
    from tflc.tf_env import quiet_native_output

    try:
        with quiet_native_output():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate"
            interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise PipelineError(f"LiteRT cannot load the model: {exc}") from None
    return interpreter


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float values to the tensor's dtype with its own scale and zero point (identity for floats)."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero_point) if scale else x
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.floating) or not scale:
        return q.astype(np.float32)
    return (q.astype(np.float32) - zero_point) * scale


def run_tflite(model_bytes: bytes, inputs: list[np.ndarray], progress: str | None = None) -> list[np.ndarray]:
    """Run every sample through the model (batch 1); dequantized outputs, one array per output."""
    interpreter = make_interpreter(model_bytes)
    in_details = interpreter.get_input_details()
    out_details = interpreter.get_output_details()
    if len(in_details) != len(inputs):
        raise PipelineError(f"the model has {len(in_details)} inputs, the data {len(inputs)}")
    outputs: list[list[np.ndarray]] = [[] for _ in out_details]
    for i in progress_bar(range(len(inputs[0])), progress):
        # samples are independent, as for the Keras model: a fused LSTM keeps its state in
        # variable tensors from one invocation to the next unless they are reset
        interpreter.reset_all_variables()
        for detail, x in zip(in_details, inputs):
            interpreter.set_tensor(detail["index"], quantize(x[i:i + 1], detail))
        interpreter.invoke()
        for j, detail in enumerate(out_details):
            outputs[j].append(dequantize(interpreter.get_tensor(detail["index"]), detail))
    return [np.concatenate(parts) for parts in outputs]


def evaluate(loaded, model_bytes: bytes, samples, baseline=None) -> EvalReport:
    """Compare the float model and the .tflite on `samples` (a data.SampleSet).

    Fidelity is measured against `loaded`, the float model that was quantized; accuracy against
    `baseline` when given (the user's original model, before optimization stages changed it), so
    that the reported drop is everything the user lost.
    """
    float_outputs = loaded.predict(samples.x)
    int8_outputs = run_tflite(model_bytes, samples.x, progress="evaluating int8 model")
    report = EvalReport(samples=len(samples))
    for spec, ref, got in zip(loaded.outputs, float_outputs, int8_outputs):
        report.fidelity.append(OutputFidelity(spec.name, top1_agreement(ref, got), sqnr_db(ref, got)))
    if samples.y is not None:
        reference = float_outputs if baseline is None else baseline.predict(samples.x)
        report.float_accuracy = top1_accuracy(reference[0], samples.y)
        report.int8_accuracy = top1_accuracy(int8_outputs[0], samples.y)
        report.accuracy_drop = round(report.float_accuracy - report.int8_accuracy, 4)
    return report


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray, probabilities: bool | None = None) -> float:
    """Percentage of samples whose predicted class is the label (labels may be one-hot).

    One score per class: the arg-max. One unit (a binary classifier): the class is 1 above 0.5
    for probabilities, above 0 for logits; `probabilities=None` decides by the scores' range.
    The float model, the int8 model and the pipeline's stages all count accuracy here, so a
    drop compares like with like.
    """
    outputs = np.asarray(outputs).reshape(len(outputs), -1)
    labels = np.asarray(labels)
    if labels.ndim > 1 and labels.shape[-1] > 1:
        labels = labels.argmax(-1)
    labels = labels.reshape(-1)
    classes = 2 if outputs.shape[-1] == 1 else outputs.shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise PipelineError(f"labels range {labels.min()}..{labels.max()} but the model has {classes} classes")
    if outputs.shape[-1] == 1:
        if probabilities is None:
            probabilities = bool(np.all((outputs >= 0) & (outputs <= 1)))
        predicted = (outputs[:, 0] > (0.5 if probabilities else 0.0)).astype(np.int64)
    else:
        predicted = outputs.argmax(-1)
    return round(100.0 * float(np.mean(predicted == labels)), 4)


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Percentage of samples whose arg-max agrees (100 for single-value outputs that match in sign)."""
    ref = reference.reshape(len(reference), -1)
    got = candidate.reshape(len(candidate), -1)
    if ref.shape[1] == 1:
        return round(100.0 * float(np.mean(np.sign(ref) == np.sign(got))), 4)
    return round(100.0 * float(np.mean(ref.argmax(-1) == got.argmax(-1))), 4)


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    signal = float(np.sum(np.square(reference.astype(np.float64))))
    noise = float(np.sum(np.square(reference.astype(np.float64) - candidate.astype(np.float64))))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return round(10.0 * np.log10(signal / noise), 3)


def mean_sqnr_db(references: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """The SQNR of each output against its reference, averaged over a model's outputs."""
    return float(np.mean([sqnr_db(r, o) for r, o in zip(references, outputs)]))


def progress_bar(iterable, label: str | None, unit: str = "sample"):
    """A progress bar over `iterable` (on a terminal only); none when `label` is None."""
    if label is None:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=label, unit=unit, disable=None, leave=False)
