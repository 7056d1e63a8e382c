"""Rebuild a Keras 3 model as a tf_keras model with the same architecture and weights.

TF-MOT (pruning, clustering, quantization-aware training) only works on tf_keras models: on a
Keras 3 model `quantize_model` fails with "`to_quantize` can only either be a keras Sequential or
Functional model". Users save Keras 3 `.keras` files, so before any TF-MOT stage the model is
rebuilt layer by layer:

  1. walk the Keras 3 graph from its outputs back to its inputs (shared layers and nested
     models included) and create each layer again from its config with tf_keras' class of the
     same name (Keras 3-only config fields are dropped when they hold their default value);
  2. copy each layer's weights;
  3. run both models on the same sample inputs and require the same outputs. If they differ,
     the first layer whose output differs is named.

Whatever cannot be rebuilt is named in one line, with what still works: post-training
quantization converts Keras 3 models directly, without TF-MOT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tflc.errors import BadInput

_DEFAULTISH = (None, False, 0, "", (), [], {})
_INITIALIZER_KEY = re.compile(r"(^|_)initializer$")
_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'|Keyword argument not understood:\W*'?(\w+)")


@dataclass
class RebuildReport:
    layers: int
    samples: int
    max_abs_difference: float
    dropped_fields: dict[str, list[str]]  # layer -> Keras 3-only config fields left out

    def to_dict(self) -> dict:
        return dict(vars(self))


class CannotRebuild(BadInput):
    """A Keras 3 layer with no faithful tf_keras twin."""


def rebuild_as_tf_keras(model, sample_inputs: list[np.ndarray] | None = None, source: str = "",
                        seed: int = 0, tolerance: float = 1e-4,
                        overrides: dict[str, dict] | None = None):
    """A tf_keras model equal to Keras 3 `model`; returns (tf_keras model, RebuildReport).

    `sample_inputs` (one array per input) are used to verify both models agree; without them,
    random normal inputs of the model's input shapes are used. `overrides` maps a layer class
    name to config values set on every layer of that class (`{"GRU": {"unroll": True}}`): how
    the lowering for TFLite asks for a form the converter can lower, still verified here.
    """
    from tflc.tf_env import import_tf_keras

    keras2 = import_tf_keras()
    where = f"{source}: " if source else ""
    builder = _Builder(keras2, where, overrides or {})
    rebuilt = builder.model(model)
    for layer, made in builder.copies:  # every layer is built now: it was called on inputs
        _copy_weights(layer, made, where)
    if sample_inputs is None:
        rng = np.random.default_rng(seed)
        batch = model.inputs[0].shape[0] or 8  # a stateful model takes only its own batch size
        sample_inputs = [rng.standard_normal((batch,) + tuple(d or 1 for d in t.shape[1:]))
                         .astype(np.float32) for t in model.inputs]
    expected = _outputs(model, sample_inputs)
    got = _outputs(rebuilt, sample_inputs)
    worst = max(float(np.max(np.abs(e - g))) if e.size else 0.0
                for e, g in zip(expected, got, strict=True))
    scale = max(1.0, max(float(np.max(np.abs(e))) if e.size else 0.0 for e in expected))
    if not np.isfinite(worst) or worst > tolerance * scale:
        layer = _first_divergent_layer(model, rebuilt, sample_inputs, tolerance)
        culprit = f" from layer '{layer}' on" if layer else ""
        raise CannotRebuild(
            f"{where}the tf_keras rebuild of this Keras 3 model gives different outputs{culprit} "
            f"(max difference {worst:.3g}); TF-MOT stages need tf_keras, so use post-training "
            "quantization only (no pipeline), or save the model with tf_keras")
    report = RebuildReport(layers=len(builder.layers), samples=len(sample_inputs[0]),
                           max_abs_difference=worst, dropped_fields=builder.dropped)
    return rebuilt, report


class _Builder:
    def __init__(self, keras2, where: str, overrides: dict[str, dict] | None = None):
        self.keras2, self.where, self.overrides = keras2, where, overrides or {}
        self.layers: dict[int, object] = {}  # id(Keras 3 layer) -> tf_keras layer
        self.copies: list[tuple] = []  # (Keras 3 layer, tf_keras layer) whose weights to copy
        self.dropped: dict[str, list[str]] = {}

    def model(self, model):
        import keras as keras3

        if not (isinstance(model, keras3.Sequential) or type(model).__name__ == "Functional"):
            raise CannotRebuild(f"{self.where}'{model.name}' is a subclassed Keras 3 model "
                                f"({type(model).__name__}); only Sequential and functional "
                                "models can be rebuilt as tf_keras for TF-MOT; post-training "
                                "quantization still works without a pipeline")
        if not getattr(model, "inputs", None):
            raise CannotRebuild(f"{self.where}the Keras 3 model is not built (no inputs); build it "
                                "with its input shape before saving")
        tensors: dict[int, object] = {}
        new_inputs = []
        for tensor in model.inputs:
            history = tensor._keras_history
            layer = history.operation
            config = layer.get_config()
            shape = config.get("batch_shape") or config.get("batch_input_shape") or tensor.shape
            made = self.keras2.Input(batch_shape=tuple(shape), name=layer.name,
                                     dtype=_dtype_name(config.get("dtype")) or "float32")
            tensors[id(tensor)] = made
            new_inputs.append(made)
        outputs = [self._tensor(t, tensors) for t in model.outputs]
        rebuilt = self.keras2.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0],
                                    outputs if len(outputs) > 1 else outputs[0], name=model.name)
        return rebuilt

    def _tensor(self, tensor, tensors):
        """The tf_keras tensor standing for Keras 3 `tensor` (built on first request)."""
        if id(tensor) in tensors:
            return tensors[id(tensor)]
        operation, node_index, tensor_index = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        args = _map(node.arguments.args, lambda t: self._tensor(t, tensors))
        kwargs = _map(node.arguments.kwargs, lambda t: self._tensor(t, tensors))
        layer = self._layer(operation)
        result = layer(*args, **kwargs)
        outputs = result if isinstance(result, (list, tuple)) else [result]
        for k3, k2 in zip(node.outputs, outputs, strict=False):
            tensors[id(k3)] = k2
        return tensors[id(tensor)] if id(tensor) in tensors else outputs[tensor_index]

    def _layer(self, layer):
        if id(layer) in self.layers:
            return self.layers[id(layer)]
        import keras as keras3

        if isinstance(layer, keras3.Model):
            made = self.model(layer)  # a nested model is rebuilt whole and used as one layer
        elif not isinstance(layer, keras3.layers.Layer):
            made = _operation(layer)  # `x + y` on Keras 3 tensors: an op node, no weights
        else:
            made = self._from_config(layer)
            self.copies.append((layer, made))
        self.layers[id(layer)] = made
        return made

    def _from_config(self, layer):
        kind = type(layer).__name__
        return self._make(kind, layer.get_config(), layer.name)

    def _make(self, kind: str, raw_config: dict, name: str):
        """A tf_keras layer of class `kind` from a Keras 3 config; wrapped layers made first."""
        cls = getattr(self.keras2.layers, kind, None)
        if cls is None:
            raise CannotRebuild(
                f"{self.where}layer '{name}' ({kind}) has no tf_keras equivalent, so TF-MOT "
                "stages cannot run on this model; compile without a pipeline (post-training "
                "quantization works on Keras 3 models) or replace the layer")
        config = _translate(raw_config)
        config.update(self.overrides.get(kind, {}))
        config.update(_MISSING_DEFAULTS.get(kind, {}))
        dropped = [k for k in list(config) if _INITIALIZER_KEY.search(k)]
        for key in dropped:  # weights are copied over; initializers never run
            config.pop(key)
        wrapped = {k: self._make(v["class_name"], v["config"], v["config"].get("name", k))
                   for k, v in raw_config.items() if _is_layer_config(v)}
        for _ in range(20):
            try:
                made = cls(**{**config, **wrapped}) if wrapped else cls.from_config(dict(config))
                break
            except TypeError as exc:
                match = _UNEXPECTED.search(str(exc))
                key = match and (match.group(1) or match.group(2))
                if not key or key not in config or config[key] not in _DEFAULTISH:
                    raise CannotRebuild(
                        f"{self.where}layer '{name}' ({kind}) cannot be rebuilt as tf_keras "
                        f"({exc}); compile without a pipeline (post-training quantization works on "
                        "Keras 3 models)") from None
                config.pop(key)
                self.dropped.setdefault(name, []).append(key)
            except ValueError as exc:
                raise CannotRebuild(
                    f"{self.where}layer '{name}' ({kind}) cannot be rebuilt as tf_keras "
                    f"({str(exc).splitlines()[0]}); compile without a pipeline (post-training "
                    "quantization works on Keras 3 models)") from None
        return made


# Config keys tf_keras requires that Keras 3 no longer writes (None: known when first called).
_MISSING_DEFAULTS = {"MultiHeadAttention": {"query_shape": None, "key_shape": None, "value_shape": None}}


def _is_layer_config(value) -> bool:
    """A wrapped layer (Bidirectional's `layer`, `backward_layer`), serialised inside a config."""
    return (isinstance(value, dict) and isinstance(value.get("config"), dict)
            and isinstance(value.get("class_name"), str) and "module" in value
            and "layers" in str(value.get("module")))


def _operation(operation):
    """A callable standing for a Keras 3 op node that is not a layer (`x + y`, `ops.mean`).

    Applied to tf_keras tensors it runs the op's TensorFlow implementation, which tf_keras
    records as a TensorFlow-op layer: no code from the file runs, the op is Keras' own.
    """
    def call(*args, **kwargs):
        return operation.call(*args, **kwargs)

    return call


def _copy_weights(layer, made, where: str) -> None:
    weights, current = layer.get_weights(), made.get_weights()
    if len(current) != len(weights) or any(c.shape != w.shape for c, w in zip(current, weights,
                                                                              strict=True)):
        raise CannotRebuild(
            f"{where}layer '{layer.name}' ({type(layer).__name__}) holds weights "
            f"{[w.shape for w in weights]} in Keras 3 but {[c.shape for c in current]} in tf_keras; "
            "compile without a pipeline (post-training quantization works on Keras 3 models)")
    made.set_weights(weights)


def _translate(config):
    """Keras 3 config values that tf_keras reads differently: dtype policies, nested objects."""
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return _dtype_name(config)
        if set(config) >= {"class_name", "config"} and "module" in config:
            return {"class_name": config["class_name"], "config": _translate(config["config"])}
        return {k: (_dtype_name(v) if k == "dtype" else _translate(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [_translate(v) for v in config]
    return config


def _dtype_name(value):
    if isinstance(value, dict):
        return value.get("config", {}).get("name", "float32")
    return value


def _map(structure, fn):
    """Apply `fn` to every Keras 3 tensor in nested args (lists, tuples, dicts)."""
    if hasattr(structure, "_keras_history"):
        return fn(structure)
    if isinstance(structure, (list, tuple)):
        return type(structure)(_map(v, fn) for v in structure)
    if isinstance(structure, dict):
        return {k: _map(v, fn) for k, v in structure.items()}
    return structure


def _outputs(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    result = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    result = result if isinstance(result, (list, tuple)) else [result]
    return [np.asarray(r) for r in result]


def _first_divergent_layer(model, rebuilt, inputs, tolerance: float) -> str | None:
    """Name the first layer (in model order) whose output differs between the two models."""
    import keras as keras3

    from tflc.tf_env import import_tf_keras

    keras2 = import_tf_keras()
    twins = {layer.name: layer for layer in rebuilt.layers}
    for layer in model.layers:
        twin = twins.get(layer.name)
        if twin is None or type(layer).__name__ == "InputLayer":
            continue
        try:
            ref = _outputs(keras3.Model(model.inputs, layer.output), inputs)
            got = _outputs(keras2.Model(rebuilt.inputs, twin.output), inputs)
        except (AttributeError, ValueError):
            continue
        for r, g in zip(ref, got, strict=False):
            if r.shape != g.shape or np.max(np.abs(r - g)) > tolerance * max(1.0, np.max(np.abs(r))):
                return layer.name
    return None


def tf_keras_model(loaded, eval_data, what: str | None = None):
    """The tf_keras model TF-MOT can work on: as loaded, or rebuilt from Keras 3 and verified."""
    source = what or str(loaded.path)
    if loaded.format == "tf_keras":
        return loaded.model, None
    if loaded.format == "saved_model":
        raise BadInput(f"{source}: a SavedModel without Keras metadata has no layers to prune, "
                       "cluster or train; give the Keras model (.keras or .h5), or compile "
                       "without a pipeline (post-training quantization works)")
    samples = None
    if eval_data is not None and hasattr(eval_data, "x") and eval_data.x is not None:
        samples = [x[:32] for x in eval_data.x]
    model, report = rebuild_as_tf_keras(loaded.model, samples, source=source)
    return model, report.to_dict()
