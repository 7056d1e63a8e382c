"""What a stage's model becomes once converted: measured in the int8 flatbuffer, not assumed.

Pruning and clustering change Keras kernels; whether that survives conversion (constant folding,
per-channel requantization, a converter that densifies) is only known by reading the .tflite.
For each stage's model this converts to fully-integer int8, reads the flatbuffer back with
`tflc.tflite.reader` and reports:

  - .tflite size, and gzip size (TF-MOT's measure of what pruning and clustering buy: the
    flatbuffer stores zeros and repeated values uncompressed, gzip does not);
  - zero fraction of every layer's int8 weights, and overall;
  - the largest number of distinct int8 values in one output channel (clustering: <= clusters);
  - for N:M structure, whether every block of M weights along the input channels holds at most
    N non-zeros;
  - the int8 model's accuracy on the evaluation data (LiteRT, as on a device).
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LayerWeights:
    layer: str
    tensor: str
    shape: tuple
    zero_fraction: float
    max_distinct_per_channel: int
    structure_ok: bool | None = None  # N:M respected (None: not asked)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "tensor": self.tensor, "shape": list(self.shape),
                "zero_fraction": round(self.zero_fraction, 4),
                "max_distinct_per_channel": self.max_distinct_per_channel,
                "structure_ok": self.structure_ok}


@dataclass
class Measurement:
    tflite_bytes: int
    gzip_bytes: int
    sparsity: float  # zero fraction over all weight tensors
    int8_accuracy: float | None
    layers: list[LayerWeights] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"tflite_bytes": self.tflite_bytes, "gzip_bytes": self.gzip_bytes,
                "sparsity": round(self.sparsity, 4), "int8_accuracy": self.int8_accuracy,
                "layers": [w.to_dict() for w in self.layers]}


def measure(loaded, calibration: list[np.ndarray], eval_x=None, eval_y=None, task=None,
            structure: tuple[int, int] | None = None):
    """Convert `loaded` to int8 and measure it; returns (Measurement, tflite bytes)."""
    from tflc.convert.converter import ConvertOptions, convert_int8

    tflite = convert_int8(loaded, calibration, ConvertOptions())
    measurement = measure_bytes(tflite, _layer_names(loaded.model), structure)
    if eval_x is not None and eval_y is not None:
        from tflc.convert.evaluate import run_tflite
        from tflc.optimize.training import accuracy_of_outputs

        outputs = run_tflite(tflite, eval_x)[0]
        measurement.int8_accuracy = accuracy_of_outputs(outputs, eval_y, task)
    return measurement, tflite


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def measure_bytes(tflite: bytes, layer_names=(), structure=None) -> Measurement:
    """Sizes and per-layer weight statistics of an int8 flatbuffer."""
    from tflc.tflite.reader import read_model

    view = read_model(tflite)
    layers, zeros, total = [], 0, 0
    for tensor in view.main.tensors:
        if not (tensor.is_constant and tensor.dtype == "int8" and len(tensor.shape) >= 2):
            continue  # weights: int8 and at least 2-D (biases are int32 vectors)
        values = np.asarray(view.tensor_data(tensor))
        zeros += int((values == 0).sum())
        total += values.size
        per_channel = values.reshape(values.shape[0], -1)  # TFLite puts output channels first
        distinct = max(len(np.unique(row)) for row in per_channel)
        layers.append(LayerWeights(
            layer=_layer_of(tensor.name, layer_names), tensor=tensor.name, shape=tensor.shape,
            zero_fraction=float((values == 0).mean()), max_distinct_per_channel=int(distinct),
            structure_ok=_structure_ok(values, structure)))
    return Measurement(tflite_bytes=len(tflite), gzip_bytes=gzip_size(tflite),
                       sparsity=zeros / total if total else 0.0, int8_accuracy=None, layers=layers)


def _structure_ok(values: np.ndarray, structure) -> bool | None:
    """N:M verdict for tensors that were pruned to it; None for the ones left dense."""
    if structure is None:
        return None
    kept, block = structure
    if (values == 0).mean() < (1 - kept / block) - 0.01:
        return None  # a spared layer: not pruned, nothing to check
    return _respects(values, structure)


def _respects(values: np.ndarray, structure: tuple[int, int]) -> bool:
    """At most `kept` non-zeros in every `block` consecutive weights along the last axis.

    TFLite stores conv filters as (out, h, w, in) and FC weights as (out, in): the last axis is
    the input channels, the axis N:M sparse kernels group along. A trailing partial block is
    checked as if padded with zeros (TF-MOT pads the same way).
    """
    kept, block = structure
    rows = values.reshape(-1, values.shape[-1])
    pad = (-rows.shape[1]) % block
    rows = np.pad(rows, ((0, 0), (0, pad)))
    nonzero = (rows.reshape(rows.shape[0], -1, block) != 0).sum(axis=-1)
    return bool((nonzero <= kept).all())


def _layer_names(model) -> list[str]:
    names = []
    for layer in getattr(model, "layers", []) or []:
        names.append(layer.name)
        inner = getattr(layer, "layer", None)  # TF-MOT wrappers: quant_conv1 wraps conv1
        if inner is not None:
            names.append(inner.name)
    return names


def _layer_of(tensor_name: str, layer_names) -> str:
    """The Keras layer a weight tensor came from, read off its name scope."""
    known = set(layer_names)
    for part in re.split(r"[/;]", tensor_name):
        if part in known:
            return part.removeprefix("quant_")
    return tensor_name
