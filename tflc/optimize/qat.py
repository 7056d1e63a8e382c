"""The `qat` stage: TF-MOT quantization-aware training (fake int8 in the loop while fine-tuning).

The scheme follows what earlier accepted stages did to the weights, so QAT does not undo them:

  - after `prune`: the prune-preserving scheme (PQAT) keeps every zero at zero;
  - after `cluster`: the cluster-preserving scheme (CQAT) keeps the shared values shared (and
    the zeros too, when a prune came before);
  - otherwise: TF-MOT's default 8-bit scheme.

Layers TF-MOT cannot quantize are found by asking TF-MOT itself (it names one per attempt), so
the message lists all of them at once. With `skip_unsupported` they stay unannotated: trained in
float here, then quantized from calibration data by the int8 conversion like any PTQ layer.
The result keeps its fake-quant wrappers; the converter turns them into a fully-integer model.

Activation ranges: TF-MOT learns each activation's int8 range as a moving average (decay 0.999)
starting from [-6, 6]. That needs thousands of steps; a short fine-tune on a small data set
ends with ranges still near [-6, 6], which quantizes an input in [0, 1] to ~20 levels and costs
more accuracy than post-training quantization. So before fine-tuning, every moving-average
range is initialised from the training data (`initialise_ranges`), as PTQ calibration would.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field

from tflc.errors import BadInput, first_line
from tflc.optimize.layers import copy_model, in_memory_cloning
from tflc.optimize.training import fit
from tflc.tf_env import import_tfmot

RANGE_SAMPLES = 256
_EMA_DECAY = 0.999  # MovingAverageQuantizer's decay in TF-MOT 0.8 (checked at run time below)
_UNSUPPORTED = re.compile(r"Layer (\S+?):<class '[\w.]*?(\w+)'> is not supported")


@dataclass
class QatInfo:
    scheme: str  # "qat", "pqat", "cqat" or "pcqat" (cluster- and sparsity-preserving)
    left_in_float: list[str] = field(default_factory=list)
    ranges_from_data: int = 0  # activation ranges initialised from the training data

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "left_in_float": self.left_in_float,
                "ranges_from_data": self.ranges_from_data}


def quantize_aware(model, config, data, task, seed: int, after_prune: bool = False,
                   after_cluster: bool = False, what: str = "qat"):
    """Quantization-aware fine-tuning of a copy of `model`; returns (model, QatInfo)."""
    tfmot = import_tfmot()
    scheme, name = _scheme(tfmot, after_prune, after_cluster)
    base = copy_model(model)
    model_q, unsupported = _annotate_and_apply(tfmot, base, scheme)
    if unsupported and not config.skip_unsupported:
        listed = ", ".join(f"'{n}' ({kind})" for n, kind in unsupported.items())
        raise BadInput(
            f"{what}: TF-MOT cannot quantize layer(s) {listed}; set `skip_unsupported: true` "
            "in the qat stage (or --qat-skip-unsupported) to train them in float and quantize "
            "them after training, or drop qat (post-training quantization works on this model)")
    ranges = 0
    if config.init_ranges:
        ranges = initialise_ranges(model_q, data.sample_inputs(RANGE_SAMPLES))
    fit(model_q, data, config.train, task, seed, description=f"{what} ({name})")
    return model_q, QatInfo(scheme=name, left_in_float=sorted(unsupported),
                            ranges_from_data=ranges)


def _scheme(tfmot, after_prune: bool, after_cluster: bool):
    if after_cluster:
        return _cluster_preserving_scheme(preserve_sparsity=after_prune), \
            ("pcqat" if after_prune else "cqat")
    if after_prune:
        return tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme(), "pqat"
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_scheme,
    )

    return default_8bit_quantize_scheme.Default8BitQuantizeScheme(), "qat"


@contextlib.contextmanager
def _quiet_root_logger():
    """CQAT logs "Input layer does not contain zero weights" for every unpruned layer (the
    spared first and last ones, expectedly) on the root logger; keep that off the terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _cluster_preserving_scheme(preserve_sparsity: bool):
    """TF-MOT's CQAT scheme, with one weight quantizer per layer instead of one per layer type.

    TF-MOT 0.8 hands every Conv2D (and every Dense) the same quantizer object, and that object
    switches sparsity preservation off for good when it meets a layer without zeros: one
    unpruned layer (the spared first or last layer) silently turns PCQAT into CQAT for all
    layers of its type, and the zeros are trained away. A copy per layer keeps the switch local.
    """
    import copy

    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.\
        cluster_preserve import cluster_preserve_quantize_registry as registry
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.\
        cluster_preserve import default_8bit_cluster_preserve_quantize_scheme as cqat

    class PerLayerRegistry(registry.Default8bitClusterPreserveQuantizeRegistry):
        def get_quantize_config(self, layer):
            config = super().get_quantize_config(layer)
            quantizer = getattr(config, "weight_quantizer", None)
            if isinstance(quantizer, registry.ClusterPreserveDefaultWeightsQuantizer):
                config.weight_quantizer = copy.copy(quantizer)
            return config

    class PerLayerScheme(cqat.Default8BitClusterPreserveQuantizeScheme):
        def get_quantize_registry(self):
            return PerLayerRegistry(self.preserve_sparsity)

    return PerLayerScheme(preserve_sparsity=preserve_sparsity)


def _annotate_and_apply(tfmot, base, scheme):
    """Annotate every layer and apply `scheme`, leaving out each layer TF-MOT refuses.

    TF-MOT stops at the first layer it cannot quantize and names it; retrying without it finds
    the next. Returns (quantized model, {refused layer name: class name}).
    """
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    refused: dict[str, str] = {}
    qapi = tfmot.quantization.keras
    while True:
        def annotate(layer):
            if layer.name in refused or isinstance(layer, keras.layers.InputLayer):
                return layer
            return qapi.quantize_annotate_layer(layer)

        try:
            with in_memory_cloning(), _quiet_root_logger():
                annotated = keras.models.clone_model(base, clone_function=annotate)
                with qapi.quantize_scope():
                    return qapi.quantize_apply(annotated, scheme), refused
        except RuntimeError as exc:
            found = _UNSUPPORTED.search(str(exc))
            if not found or found.group(1) in refused:
                raise BadInput(f"qat: TF-MOT cannot quantize this model ({first_line(exc)}); "
                               "drop qat (post-training quantization still works)") from None
            refused[found.group(1)] = found.group(2)
        except (ValueError, TypeError) as exc:
            raise BadInput(f"qat: TF-MOT cannot quantize this model ({first_line(exc)}); "
                           "drop qat (post-training quantization still works)") from None



def initialise_ranges(model_q, samples: list, max_passes: int = 12) -> int:
    """Set every moving-average activation range to the range seen on `samples`.

    TF-MOT offers no API for this. A training-mode pass moves each range variable from v to
    v + (1 - decay) * (observed - v), so `observed` can be read back from one pass. The pass
    also fake-quantizes with the current ranges, so a layer observes correct inputs only once
    the ranges before it are right: passes repeat until no range moves (about one per layer
    depth). State a training pass changes besides the ranges (batch-norm statistics) is put
    back after each pass. If the input range read back disagrees with the data's own min and
    max (a TF-MOT release with another decay), TF-MOT's defaults are left alone. Returns how
    many ranges were set.
    """
    import numpy as np

    pairs = _moving_average_ranges(model_q)
    if not pairs:
        return 0
    range_vars = {id(v) for pair in pairs for v in pair}
    others = [v for v in model_q.non_trainable_variables if id(v) not in range_vars]
    saved_others = [v.numpy() for v in others]
    defaults = [(low.numpy(), high.numpy()) for low, high in pairs]
    batch = samples[0] if len(samples) == 1 else samples
    gain = 1.0 / (1.0 - _EMA_DECAY)
    for _ in range(max_passes):
        before = [(low.numpy(), high.numpy()) for low, high in pairs]
        model_q(batch, training=True)
        for variable, value in zip(others, saved_others, strict=True):
            variable.assign(value)
        moved = 0.0
        for (low, high), (low0, high0) in zip(pairs, before, strict=True):
            # int8 ranges must hold 0 (TFLite's rule, and the quantizer's own clamp)
            new_low = np.minimum(low0 + (low.numpy() - low0) * gain, 0.0)
            new_high = np.maximum(high0 + (high.numpy() - high0) * gain, 0.0)
            new_low = np.where(np.abs(new_low) < 1e-9, 0.0, new_low)
            span = float(np.max(new_high - new_low)) or 1.0
            moved = max(moved, float(np.max(np.abs(new_low - low0))) / span,
                        float(np.max(np.abs(new_high - high0))) / span)
            low.assign(new_low.astype(np.float32))
            high.assign(new_high.astype(np.float32))
        if moved < 1e-3:
            break
    if not _first_range_matches(model_q, pairs, samples):
        for (low, high), (low0, high0) in zip(pairs, defaults, strict=True):
            low.assign(low0)
            high.assign(high0)
        return 0
    return len(pairs)


def _moving_average_ranges(model_q) -> list:
    """(min, max) variables of every moving-average quantizer, in layer (topological) order."""
    import_tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras import (
        quantize_layer,
        quantize_wrapper,
        quantizers,
    )

    moving = quantizers.MovingAverageQuantizer
    pairs = []
    for layer in model_q.layers:
        found = []
        if isinstance(layer, quantize_layer.QuantizeLayer) and isinstance(layer.quantizer, moving):
            found.append(layer.quantizer_vars)
        if isinstance(layer, quantize_wrapper.QuantizeWrapper):
            for activation in layer._quantize_activations:
                if isinstance(activation.quantizer, moving):
                    found += [getattr(activation, "_pre_activation_vars", None),
                              getattr(activation, "_post_activation_vars", None)]
            if layer._output_quantizers and isinstance(layer._output_quantizers[0], moving):
                found.append(layer._output_quantizer_vars)
        pairs += [(v["min_var"], v["max_var"]) for v in found if v]
    return pairs


def _first_range_matches(model_q, pairs, samples) -> bool:
    """Sanity check of the read-back: the first quantizer after the input sees the input data.

    Only checkable when the first layer is an input QuantizeLayer; otherwise trust the read-back.
    """
    import numpy as np

    first = next((layer for layer in model_q.layers if layer.weights), None)
    if first is None or type(first).__name__ != "QuantizeLayer" or len(samples) != 1:
        return True
    if not any(first.quantizer_vars["min_var"] is low for low, _ in pairs):
        return True
    want_low, want_high = min(float(samples[0].min()), 0.0), max(float(samples[0].max()), 0.0)
    span = max(want_high - want_low, 1e-6)
    low, high = pairs[0]
    return abs(float(np.min(low.numpy())) - want_low) < 1e-2 * span and \
        abs(float(np.max(high.numpy())) - want_high) < 1e-2 * span
