"""Which layers a stage may touch, and copying a model so a stage never changes its input.

TF-MOT wraps layers it knows (Conv*, Dense, DepthwiseConv2D, ...); `weighted_layers` lists the
ones holding a kernel the stage can act on. Unless the config names layers, the defaults spare
the layers where compression costs most accuracy for least size:

  - the first weighted layer reads the raw input and holds few weights;
  - the last one is the classifier, every class depends on each of its weights;
  - depthwise convolutions hold a handful of weights per channel (pruning: spared).

`copy_model` gives each stage its own model: TF-MOT's wrappers share weights with the layers
they wrap, and the pipeline must be able to go back to a stage's input when it is rolled back.
"""

from __future__ import annotations

import fnmatch

from tflc.errors import BadInput, first_line

KERNEL_ATTRIBUTES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def kernels(layer) -> list:
    """The layer's weight tensors a stage compresses (kernels, not biases or BN statistics)."""
    return [getattr(layer, a) for a in KERNEL_ATTRIBUTES if getattr(layer, a, None) is not None]


def weighted_layers(model, supports) -> list:
    """Layers in model order that hold a kernel and that `supports(layer)` accepts."""
    return [layer for layer in model.layers if kernels(layer) and supports(layer)]


def select_layers(model, selection, supports, what: str, spare_types=()) -> list[str]:
    """Names of the layers a stage acts on: the config's selection, or the sparing default."""
    candidates = weighted_layers(model, supports)
    names = [layer.name for layer in candidates]
    if not candidates:
        raise BadInput(f"{what}: the model has no layers TF-MOT can act on (it handles Conv, "
                       "Dense and DepthwiseConv layers); remove this stage")
    by_name = {layer.name: layer for layer in model.layers}
    if selection.is_default:
        spared = {names[0], names[-1]} if len(names) > 2 else set()
        chosen = [layer.name for layer in candidates
                  if layer.name not in spared and type(layer).__name__ not in spare_types]
        return chosen or names[-2:-1] or names
    chosen = list(names)
    if selection.names:
        for pattern in selection.names:
            matched = fnmatch.filter(by_name, pattern)
            if not matched:
                raise BadInput(f"{what}.layers: no layer matches '{pattern}'; "
                               f"layers this stage can act on: {', '.join(names)}")
            if not any(name in names for name in matched):  # '*' may match pools too: fine
                name = matched[0]
                raise BadInput(f"{what}.layers: layer '{name}' ({type(by_name[name]).__name__})"
                               f" has no weights this stage can act on; choose among: "
                               f"{', '.join(names)}")
        chosen = [n for n in chosen if any(fnmatch.fnmatchcase(n, p) for p in selection.names)]
    if selection.types:
        known = {type(layer).__name__ for layer in model.layers}
        for kind in selection.types:
            if kind not in known:
                raise BadInput(f"{what}.layers.types: the model has no {kind} layer; "
                               f"its layer types: {', '.join(sorted(known))}")
        chosen = [n for n in chosen if type(by_name[n]).__name__ in selection.types]
    chosen = [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in selection.exclude)]
    if not chosen:
        raise BadInput(f"{what}.layers: the selection leaves no layer; layers this stage can act "
                       f"on: {', '.join(names)}")
    return chosen


def copy_model(model):
    """A new model with the same architecture and weights, sharing nothing with `model`."""
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    with in_memory_cloning():
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def wrapped_copy(model, wrap, what: str, action: str):
    """A copy of `model` in which each layer is replaced by `wrap(layer)` (a TF-MOT wrapper, or
    the layer itself); the input model is left as it was."""
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    base = copy_model(model)
    try:
        with in_memory_cloning():
            return keras.models.clone_model(base, clone_function=wrap)
    except ValueError as exc:
        raise BadInput(f"{what}: TF-MOT cannot {action} this model ({first_line(exc)}); choose "
                       "layers with `layers:` or remove the stage") from None


def in_memory_cloning():
    """Allow cloning Lambda layers: the model is already in memory, no file's code is run.

    Keras refuses to rebuild a Lambda layer from its config unless safe mode is off, to protect
    loading untrusted files; a user's model that reached us holds its Lambda functions already
    (they were allowed when it was loaded), and TF-MOT's wrappers rebuild layers from configs.
    """
    from tflc.tf_env import import_tf_keras

    import_tf_keras()
    from tf_keras.src.saving import serialization_lib

    return serialization_lib.SafeModeScope(False)


def zero_fractions(model, names=None) -> dict[str, float]:
    """Fraction of exact zeros in each layer's kernels, measured on the Keras model."""
    import numpy as np

    result = {}
    for layer in model.layers:
        if names is not None and layer.name not in names:
            continue
        values = [np.asarray(k) for k in kernels(layer)]
        if values:
            total = sum(v.size for v in values)
            result[layer.name] = float(sum((v == 0).sum() for v in values) / total)
    return result

