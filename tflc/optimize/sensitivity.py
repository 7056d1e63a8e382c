"""Which layers can be compressed cheaply: accuracy drop when one layer alone is changed.

For every layer with prunable weights, on the evaluation data:

  - prune it alone (its smallest-magnitude weights set to zero, no fine-tuning) at a few
    sparsities, everything else untouched;
  - quantize it alone: its kernel fake-quantized to int8 per output channel, its output to int8
    per tensor over the range it takes on the data, as the int8 converter would.

One-shot pruning without fine-tuning overstates what pruning with fine-tuning costs, but it
ranks the layers the same way, in seconds; that ranking is what `prune: {sparsity: auto}` uses:
`choose_sparsities` raises each layer's sparsity where it costs least accuracy per weight removed
until the overall target is met, never taking a step that alone breaks the budget.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from tflc.errors import BadInput
from tflc.optimize.layers import copy_model, kernels, weighted_layers
from tflc.optimize.training import accuracy, predict

DEFAULT_SPARSITIES = (0.25, 0.5, 0.75, 0.9)
AUTO_SPARSITIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass
class LayerSensitivity:
    layer: str
    type: str
    weights: int
    prune_drop: dict[float, float]  # sparsity -> accuracy drop in points (float minus pruned)
    quantize_drop: float | None  # points; None when the layer's output could not be isolated
    quantize_sqnr_db: float | None = None  # model output, float vs this layer alone in int8

    def to_dict(self) -> dict:
        return {"layer": self.layer, "type": self.type, "weights": self.weights,
                "prune_drop": {f"{s:g}": round(d, 4) for s, d in self.prune_drop.items()},
                "quantize_drop": None if self.quantize_drop is None else round(self.quantize_drop, 4),
                "quantize_sqnr_db": self.quantize_sqnr_db}


@dataclass
class SensitivityResult:
    float_accuracy: float
    samples: int
    sparsities: list[float]
    layers: list[LayerSensitivity] = field(default_factory=list)
    model: str | None = None

    def to_dict(self) -> dict:
        return {"model": self.model, "float_accuracy": self.float_accuracy,
                "samples": self.samples, "sparsities": self.sparsities,
                "layers": [layer.to_dict() for layer in self.layers]}

    def table(self) -> str:
        """The per-layer drops as a fixed-width text table (points of accuracy)."""
        head = (["layer", "type", "weights"] + [f"prune {s:.0%}" for s in self.sparsities]
                + ["int8", "int8 SQNR"])
        rows = [[layer.layer, layer.type, f"{layer.weights:,}"]
                + [f"{layer.prune_drop[s]:+.2f}" for s in self.sparsities]
                + ["-" if layer.quantize_drop is None else f"{layer.quantize_drop:+.2f}",
                   "-" if layer.quantize_sqnr_db is None else f"{layer.quantize_sqnr_db:.1f} dB"]
                for layer in self.layers]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [f"accuracy drop in points when one layer alone is pruned or quantized "
                 f"(float accuracy {self.float_accuracy:.2f}% on {self.samples} samples); "
                 "int8 SQNR: model output against float, lower is more sensitive"]
        for row in [head, *rows]:
            lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        return "\n".join(lines)

    def plot_png(self) -> bytes:
        """Accuracy drop against sparsity, one line per layer, plus each layer's int8 drop."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5),
                                          gridspec_kw={"width_ratios": [3, 2]})
        for layer in self.layers:
            left.plot([s * 100 for s in self.sparsities],
                      [layer.prune_drop[s] for s in self.sparsities], marker="o", label=layer.layer)
        left.set_xlabel("sparsity of the layer (%)")
        left.set_ylabel("accuracy drop (points)")
        left.set_title("pruning one layer alone")
        left.axhline(0, color="grey", linewidth=0.8)
        left.legend(fontsize="small", ncol=2)
        names = [layer.layer for layer in self.layers]
        sqnr = [min(layer.quantize_sqnr_db or 0.0, 100.0) for layer in self.layers]
        bars = right.barh(names, sqnr, color="tab:orange")
        for bar, layer in zip(bars, self.layers, strict=True):
            if layer.quantize_drop is not None:
                right.annotate(f"drop {layer.quantize_drop:+.2f}", (bar.get_width(), bar.get_y()
                               + bar.get_height() / 2), xytext=(3, 0), textcoords="offset points",
                               va="center", fontsize=8)
        right.invert_yaxis()
        right.set_xlabel("model output SQNR (dB; lower = more sensitive)")
        right.set_title("int8 quantization of one layer alone")
        fig.suptitle(f"layer sensitivity ({self.model or 'model'}, float accuracy "
                     f"{self.float_accuracy:.2f}%)")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        return buffer.getvalue()


def analyze(model, x: list[np.ndarray], y: np.ndarray, task, sparsities=DEFAULT_SPARSITIES,
            quantize: bool = True, layers=None, progress: str | None = "sensitivity"):
    """Accuracy drop per layer (pruned alone at each sparsity; quantized alone)."""
    from tqdm import tqdm

    from tflc.optimize.prune import prunable

    sparsities = _checked_sparsities(sparsities)
    from tflc.optimize.training import accuracy_of_outputs

    work = copy_model(model)  # weights are changed and restored here; the caller's stay intact
    reference = predict(work, x)
    base = accuracy_of_outputs(reference, y, task)
    chosen = [layer for layer in weighted_layers(work, prunable)
              if layers is None or layer.name in layers]
    result = SensitivityResult(float_accuracy=base, samples=len(y), sparsities=sparsities)
    steps = len(chosen) * (len(sparsities) + (1 if quantize else 0))
    with tqdm(total=steps, desc=progress, unit="eval", disable=None if progress else True,
              leave=False) as bar:
        for layer in chosen:
            original = layer.get_weights()
            drops = {}
            for sparsity in sparsities:
                layer.set_weights(_pruned_weights(layer, original, sparsity))
                drops[sparsity] = base - accuracy(work, x, y, task)
                bar.update(1)
            layer.set_weights(original)
            quant = (None, None)
            if quantize:
                quant = _quantize_alone(work, layer, x, y, task, base, reference)
                bar.update(1)
            result.layers.append(LayerSensitivity(
                layer=layer.name, type=type(layer).__name__,
                weights=int(sum(np.prod(k.shape) for k in kernels(layer))),
                prune_drop=drops, quantize_drop=quant[0], quantize_sqnr_db=quant[1]))
    return result


def _checked_sparsities(sparsities) -> list[float]:
    sparsities = sorted(float(s) for s in sparsities)
    if not sparsities or any(not 0 < s < 1 for s in sparsities):
        raise BadInput(f"--sparsities: expected values between 0 and 1, got {sparsities}")
    return sparsities


def choose_sparsities(result: SensitivityResult, candidates, target: float,
                      max_drop: float | None) -> tuple[dict[str, float], float]:
    """Per-layer sparsities reaching `target` overall sparsity over `candidates` at least cost.

    Greedy: repeatedly raise the sparsity of the layer whose next step costs the fewest points
    of (one-shot) accuracy per weight removed; a step whose own drop exceeds `max_drop` is never
    taken. Returns (layer -> sparsity, the overall sparsity reached).
    """
    layers = [s for s in result.layers if s.layer in candidates]
    if not layers:
        return {}, 0.0
    levels = [0.0] + list(result.sparsities)
    position = {s.layer: 0 for s in layers}
    total = sum(s.weights for s in layers)
    removed = 0.0
    while removed < target * total - 1e-9:
        best = None
        for s in layers:
            i = position[s.layer]
            if i + 1 >= len(levels):
                continue
            drop = s.prune_drop[levels[i + 1]]
            if max_drop is not None and drop > max_drop:
                continue
            gain = s.weights * (levels[i + 1] - levels[i])
            key = (max(drop, 0.0) / gain, -gain)
            if best is None or key < best[0]:
                best = (key, s, gain)
        if best is None:
            break  # every further step alone breaks the budget
        _, chosen, gain = best
        position[chosen.layer] += 1
        removed += gain
    sparsities = {name: levels[i] for name, i in position.items()}
    return sparsities, removed / total


def _pruned_weights(layer, weights: list[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """`weights` with the smallest-magnitude `sparsity` of each kernel set to zero."""
    kernel_shapes = {tuple(k.shape) for k in kernels(layer)}
    pruned = []
    for w in weights:
        if tuple(w.shape) in kernel_shapes and w.ndim >= 2:
            w = w.copy()
            flat = w.reshape(-1)
            count = int(round(sparsity * flat.size))
            flat[np.argsort(np.abs(flat), kind="stable")[:count]] = 0.0
        pruned.append(w)
    return pruned


def _quantize_alone(work, layer, x, y, task, base: float, reference):
    """(accuracy drop, output SQNR) when `layer` alone runs in simulated int8 (weights per
    channel, output per tensor); (None, None) when the layer's output cannot be isolated."""
    from tflc.convert.evaluate import sqnr_db
    from tflc.optimize.training import accuracy_of_outputs
    from tflc.tf_env import import_tensorflow, import_tf_keras

    tf = import_tensorflow()
    keras = import_tf_keras()
    try:
        probe = keras.Model(work.inputs, layer.output)
    except (AttributeError, ValueError):  # a layer used at several places has no single output
        return None, None
    outputs = predict(probe, x)
    low, high = float(min(outputs.min(), 0.0)), float(max(outputs.max(), 0.0))
    original = layer.get_weights()
    layer.set_weights(_fake_quant_weights(layer, original))

    class QuantizedOutput(keras.layers.Layer):
        def __init__(self, inner):
            super().__init__(name=inner.name + "_int8")
            self.inner = inner

        def call(self, *args, **kwargs):
            return tf.quantization.fake_quant_with_min_max_args(
                self.inner(*args, **kwargs), min=low, max=high, num_bits=8)

    try:
        swapped = keras.models.clone_model(
            work, clone_function=lambda other: QuantizedOutput(other) if other is layer else other)
        outputs = predict(swapped, x)
        return base - accuracy_of_outputs(outputs, y, task), sqnr_db(reference, outputs)
    finally:
        layer.set_weights(original)


def _fake_quant_weights(layer, weights: list[np.ndarray]) -> list[np.ndarray]:
    """Symmetric int8 per output channel (last Keras axis), as the converter quantizes kernels."""
    kernel_shapes = {tuple(k.shape) for k in kernels(layer)}
    result = []
    for w in weights:
        if tuple(w.shape) in kernel_shapes and w.ndim >= 2:
            axes = tuple(range(w.ndim - 1))
            scale = np.maximum(np.abs(w).max(axis=axes, keepdims=True), 1e-12) / 127.0
            w = (np.clip(np.round(w / scale), -127, 127) * scale).astype(w.dtype)
        result.append(w)
    return result


def sensitivity_report(model_path, eval_data, out_dir=None, sparsities=DEFAULT_SPARSITIES,
                       quantize: bool = True, custom_objects=(), allow_unsafe_code: bool = False,
                       normalize: str = "unit") -> SensitivityResult:
    """`tflc sensitivity`: load the model and data, analyze, write sensitivity.json and .png.

    Keras 3 models are rebuilt as tf_keras (and verified) first, like the pipeline does.
    """
    from tflc.fileio import atomic_write_bytes, atomic_write_json, ensure_writable_dir
    from tflc.load.data import load_labelled, materialize
    from tflc.load.models import load_model
    from tflc.optimize.keras_rebuild import tf_keras_model
    from tflc.optimize.training import describe_task

    sparsities = _checked_sparsities(sparsities)  # before anything is created or loaded
    out = ensure_writable_dir(out_dir) if out_dir is not None else None
    loaded = load_model(model_path, custom_objects, allow_unsafe_code)
    model, _ = tf_keras_model(loaded, None)
    task = describe_task(model, str(model_path))
    data = materialize(load_labelled(eval_data, loaded.inputs, task.classes,
                                          role="--eval-data", normalize=normalize))
    result = analyze(model, data.x, data.y, task, sparsities, quantize=quantize)
    result.model = str(model_path)
    if out is not None:
        atomic_write_bytes(out / "sensitivity.png", result.plot_png())
        atomic_write_json(out / "sensitivity.json", result.to_dict())
    return result
