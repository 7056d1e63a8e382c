"""The automatic search space: read from any Keras model's own configuration, applied to it.

`analyze(config, shapes)` walks a functional (or Sequential) model's `get_config()` and finds
what can change without the user writing code:

- **width** per stage: every layer with an integer `filters` or `units` is scaled by its
  stage's multiplier. A stage is a spatial resolution (the layers whose 4-D output has the same
  height and width, in order of appearance) or the "head" (layers with flat outputs). Layers
  whose outputs meet in an elementwise merge (Add, Multiply, ...) are tied to one multiplier; a
  merge fed by the model input, and the layers producing the model outputs (the classifier), keep
  their width.
- **depth** per stage: a layer with one input whose output shape equals its input shape (a
  repeated block) may be dropped; consumers are rewired to its input.
- **separable** per stage: Conv2D with a kernel larger than 1x1 becomes SeparableConv2D
  (depthwise + pointwise), same filters, strides, padding, activation.
- **resolution**: for a model with one image input (N, H, W, C) a smaller H and W; the data are
  resized in the trial.

`apply(config, space, params)` returns the new configuration (a plain dict, rebuilt with
`model_from_config`-style `Model.from_config` in the trial). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

WIDTHS = (0.25, 0.5, 0.75, 1.0)
RESOLUTIONS = (0.5, 0.75, 1.0)
MIN_RESOLUTION = 4  # pixels: a smaller image leaves nothing for a 3x3 kernel to see
MERGE_CLASSES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
SEPARABLE_FROM = "Conv2D"


@dataclass
class Stage:
    name: str
    layers: list[str] = field(default_factory=list)  # scalable layers in this stage
    droppable: list[str] = field(default_factory=list)
    separable: list[str] = field(default_factory=list)
    fixed: bool = False  # tied to the model input or output: its width stays


@dataclass
class Space:
    """What the automatic space found in one model (JSON-friendly: the trial re-reads it)."""

    stages: list[Stage]
    input_hw: tuple[int, int] | None  # the image input's height and width, or None
    resolutions: tuple[float, ...] = ()

    def describe(self) -> list[str]:
        lines = []
        for s in self.stages:
            parts = [f"{len(s.layers)} scalable" + (" (fixed width)" if s.fixed else "")]
            if s.droppable:
                parts.append(f"{len(s.droppable)} droppable")
            if s.separable:
                parts.append(f"{len(s.separable)} Conv2D -> separable")
            lines.append(f"{s.name}: " + ", ".join(parts))
        if self.resolutions:
            lines.append("resolution: " + ", ".join(f"{self.scaled_hw(r)[0]}x{self.scaled_hw(r)[1]}"
                                                    for r in self.resolutions))
        return lines

    def scaled_hw(self, factor: float) -> tuple[int, int]:
        h, w = self.input_hw
        return max(1, round(h * factor)), max(1, round(w * factor))

    def suggest(self, trial) -> dict:
        """Ask an Optuna trial (or anything with `suggest_categorical`) for one candidate."""
        params = {}
        for i, s in enumerate(self.stages):
            if s.layers and not s.fixed:
                params[f"width_{i}"] = trial.suggest_categorical(f"width_{i}", list(WIDTHS))
            if s.droppable:
                params[f"drop_{i}"] = trial.suggest_categorical(
                    f"drop_{i}", list(range(len(s.droppable) + 1)))
            if s.separable:
                params[f"separable_{i}"] = trial.suggest_categorical(f"separable_{i}", [False, True])
        if self.resolutions:
            params["resolution"] = trial.suggest_categorical("resolution", list(self.resolutions))
        return params

    @property
    def identity(self) -> dict:
        """The parameters that give back the seed model's architecture."""
        params = {}
        for i, s in enumerate(self.stages):
            if s.layers and not s.fixed:
                params[f"width_{i}"] = 1.0
            if s.droppable:
                params[f"drop_{i}"] = 0
            if s.separable:
                params[f"separable_{i}"] = False
        if self.resolutions:
            params["resolution"] = 1.0
        return params


# --------------------------------------------------------------------------- the graph


@dataclass
class _Node:
    name: str
    class_name: str
    config: dict
    inputs: list[str]  # producing layer names


def _layers(config: dict) -> list[dict]:
    return config.get("layers") or []


def is_sequential(config: dict) -> bool:
    return bool(_layers(config)) and "inbound_nodes" not in _layers(config)[0] and \
        "input_layers" not in config


def _layer_name(layer: dict) -> str:
    return layer.get("name") or layer["config"]["name"]


def _refs(obj) -> list[str]:
    """Producer names in an inbound-nodes structure (tf_keras lists or Keras 3 keras_history)."""
    found: list[str] = []
    if isinstance(obj, dict):
        if "keras_history" in obj:
            found.append(obj["keras_history"][0])
        for value in obj.values():
            found.extend(_refs(value))
    elif isinstance(obj, list):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int) \
                and isinstance(obj[2], int):
            found.append(obj[0])
        else:
            for value in obj:
                found.extend(_refs(value))
    return found


def _graph(config: dict) -> tuple[list[_Node], list[str]]:
    """The layers in order with their producers, and the names producing model outputs."""
    layers = _layers(config)
    nodes = []
    if is_sequential(config):
        previous: list[str] = []
        for layer in layers:
            name = _layer_name(layer)
            nodes.append(_Node(name, layer["class_name"], layer["config"], previous))
            previous = [name]
        return nodes, previous
    for layer in layers:
        seen: list[str] = []
        for ref in _refs(layer.get("inbound_nodes", [])):
            if ref not in seen:
                seen.append(ref)
        nodes.append(_Node(_layer_name(layer), layer["class_name"], layer["config"], seen))
    return nodes, _refs(config.get("output_layers", []))


def _weighted(node: _Node) -> bool:
    for key in ("filters", "units"):
        value = node.config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return True
    return False


def _spatial(shape) -> tuple | None:
    if shape is not None and len(shape) == 4:
        return tuple(shape[1:3])
    return None


def analyze(config: dict, shapes: dict[str, tuple], in_shapes: dict[str, tuple]) -> Space:
    """The space of one model. `shapes`/`in_shapes`: each layer's output/input shape (batch
    first) from the loaded model, for stages and for which blocks may be dropped."""
    config = json.loads(json.dumps(config))  # tuples as lists, as in a saved file
    nodes, outputs = _graph(config)
    by_name = {n.name: n for n in nodes}
    inputs = [n.name for n in nodes if n.class_name == "InputLayer"]

    def producer(name: str, seen=()) -> list[str]:
        """The weighted layers (or inputs) whose channels reach `name` unchanged."""
        node = by_name.get(name)
        if node is None or node.class_name == "InputLayer" or _weighted(node) or name in seen:
            return [name]
        found = []
        for src in node.inputs:
            found.extend(producer(src, (*seen, name)))
        return found or [name]

    stage_of: dict[str, int] = {}
    stage_keys: list = []
    for node in nodes:
        if not _weighted(node):
            continue
        key = _spatial(shapes.get(node.name)) or "head"
        if key not in stage_keys:
            stage_keys.append(key)
        stage_of[node.name] = stage_keys.index(key)
    parent = list(range(len(stage_keys)))
    fixed = [False] * len(stage_keys)

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    def tie(names: list[str]) -> None:
        roots = {find(stage_of[n]) for n in names if n in stage_of}
        pinned = any(n not in stage_of for n in names)
        roots = sorted(roots)
        for r in roots[1:]:
            parent[r] = roots[0]
            fixed[roots[0]] = fixed[roots[0]] or fixed[r]
        if roots and pinned:
            fixed[roots[0]] = True

    pinned = _output_producers(outputs, producer)  # the classifier: its width is the task's
    for node in nodes:
        if node.class_name in MERGE_CLASSES:
            tie([p if p not in pinned else "<output>"
                 for src in node.inputs for p in producer(src)])
    groups: dict[int, Stage] = {}
    for node in nodes:
        if node.name not in stage_of:
            continue
        root = find(stage_of[node.name])
        key = stage_keys[root]
        stage = groups.setdefault(root, Stage(name="head" if key == "head"
                                              else f"stage {key[0]}x{key[1]}"))
        stage.fixed = fixed[root]
        if node.name not in pinned:
            stage.layers.append(node.name)
        consumers = [n for n in nodes if node.name in n.inputs]
        same = shapes.get(node.name) is not None and \
            tuple(shapes[node.name]) == tuple(in_shapes.get(node.name) or ())
        if same and len(node.inputs) == 1 and consumers and node.name not in pinned:
            stage.droppable.append(node.name)
        kernel = node.config.get("kernel_size")
        if node.class_name == SEPARABLE_FROM and isinstance(kernel, list) and \
                any(k > 1 for k in kernel) and node.config.get("groups", 1) == 1:
            stage.separable.append(node.name)
    stages = [groups[k] for k in sorted(groups)]
    input_hw = None
    resolutions: tuple[float, ...] = ()
    if len(inputs) == 1:
        shape = shapes.get(inputs[0])
        if shape is not None and len(shape) == 4 and all(isinstance(d, int) for d in shape[1:3]):
            input_hw = (int(shape[1]), int(shape[2]))
            resolutions = tuple(r for r in RESOLUTIONS
                                if min(round(input_hw[0] * r), round(input_hw[1] * r))
                                >= MIN_RESOLUTION)
            if resolutions == (1.0,):
                resolutions = ()
    return Space(stages, input_hw, resolutions)


def _output_producers(outputs, producer) -> set[str]:
    return {p for name in outputs for p in producer(name)}


# --------------------------------------------------------------------------- applying


def apply(config: dict, space: Space, params: dict) -> dict:
    """The seed's configuration with one candidate's parameters applied (a new dict)."""
    new = json.loads(json.dumps(config))
    layers = _layers(new)
    by_name = {_layer_name(layer): layer for layer in layers}
    dropped: list[str] = []
    for i, stage in enumerate(space.stages):
        width = float(params.get(f"width_{i}", 1.0))
        if not stage.fixed and width != 1.0:
            for name in stage.layers:
                cfg = by_name[name]["config"]
                key = "filters" if "filters" in cfg else "units"
                cfg[key] = max(1, int(round(cfg[key] * width)))
        count = int(params.get(f"drop_{i}", 0))
        if count:
            dropped.extend(stage.droppable[-count:])
        if params.get(f"separable_{i}"):
            for name in stage.separable:
                if name not in dropped:
                    _to_separable(by_name[name])
    for name in dropped:
        _drop(new, name)
    factor = params.get("resolution")
    if factor not in (None, 1.0) and space.input_hw:
        h, w = space.scaled_hw(float(factor))
        for layer in _layers(new):
            cfg = layer["config"]
            for key in ("batch_shape", "batch_input_shape"):
                if isinstance(cfg.get(key), list) and len(cfg[key]) == 4:
                    cfg[key] = [cfg[key][0], h, w, cfg[key][3]]
            break  # the input: the first layer (InputLayer, or a Sequential's first layer)
    for layer in _layers(new):
        layer.pop("build_config", None)  # shapes of the seed's build: stale after a change
    return new


def _to_separable(layer: dict) -> None:
    cfg = layer["config"]
    keep = ("name", "trainable", "dtype", "filters", "kernel_size", "strides", "padding",
            "data_format", "dilation_rate", "activation", "use_bias", "bias_initializer",
            "bias_regularizer", "activity_regularizer", "bias_constraint")
    new = {k: cfg[k] for k in keep if k in cfg}
    new["depth_multiplier"] = 1
    for part in ("depthwise", "pointwise"):
        for what in ("initializer", "regularizer", "constraint"):
            if f"kernel_{what}" in cfg:
                new[f"{part}_{what}"] = copy.deepcopy(cfg[f"kernel_{what}"])
    layer["class_name"] = "SeparableConv2D"
    layer["config"] = new


def _drop(config: dict, name: str) -> None:
    """Remove one single-input layer and rewire its consumers to its input."""
    layers = _layers(config)
    index = next(i for i, layer in enumerate(layers) if _layer_name(layer) == name)
    layer = layers.pop(index)
    if is_sequential(config):
        return
    source = _first_ref(layer.get("inbound_nodes", []))

    def rewire(obj):
        if isinstance(obj, dict):
            if "keras_history" in obj and obj["keras_history"][0] == name:
                obj["keras_history"] = list(source)
            for value in obj.values():
                rewire(value)
        elif isinstance(obj, list):
            if len(obj) >= 3 and obj[0] == name and isinstance(obj[1], int):
                obj[0:3] = list(source)
            else:
                for value in obj:
                    rewire(value)

    for other in layers:
        rewire(other.get("inbound_nodes", []))
    rewire(config.get("output_layers", []))


def _first_ref(obj):
    if isinstance(obj, dict):
        if "keras_history" in obj:
            return obj["keras_history"][:3]
        for value in obj.values():
            found = _first_ref(value)
            if found:
                return found
    elif isinstance(obj, list):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
            return obj[:3]
        for value in obj:
            found = _first_ref(value)
            if found:
                return found
    return None


# --------------------------------------------------------------------------- compression knobs

SPARSITIES = (0.0, 0.5, 0.75)
CLUSTERS = (0, 16, 32)
# The activation precisions a candidate may take: int8, 16x8, or mixed (int8 with the tensors
# that gain most carried in int16, chosen per layer by `tflc.convert.mixed` within its default
# budget); `--precision` picks among them, and the default leaves mixed out (it needs a target
# whose descriptor allows it).
PRECISIONS = ("int8", "int16", "mixed")
SPARSITY_PREFIX = "sparsity_"  # a candidate's per-layer sparsity: params["sparsity_conv1"]


def prunable_layers(config: dict) -> list[str]:
    """The weighted layers (filters or units) of a configuration, in model order: the layers a
    candidate gives a sparsity each. Read from the candidate's own configuration, so a dropped
    block is asked nothing and a builder's model works the same as the automatic space."""
    nodes, _ = _graph(json.loads(json.dumps(config)))
    return [n.name for n in nodes if _weighted(n)]


def layer_sparsities(params: dict) -> dict[str, float]:
    """layer -> sparsity from a candidate's params (the `sparsity_<layer>` entries)."""
    return {k[len(SPARSITY_PREFIX):]: float(v) for k, v in params.items()
            if k.startswith(SPARSITY_PREFIX)}


def suggest_compression(trial, precisions=PRECISIONS, layers=()) -> dict:
    """A sparsity per weighted layer (`layers`: each from SPARSITIES, 0 keeps it dense), clusters,
    QAT and the activation precision. Per layer, because a classifier or a thin first layer loses
    more accuracy per weight pruned than a wide middle one; the few levels keep the space small
    enough for a handful of trials. QAT trains int8 fake quantization (TF-MOT's scheme), so a
    QAT candidate is int8: 16x8 is asked for only without QAT."""
    params = {f"{SPARSITY_PREFIX}{name}": trial.suggest_categorical(
        f"{SPARSITY_PREFIX}{name}", list(SPARSITIES)) for name in layers}
    params["clusters"] = trial.suggest_categorical("clusters", list(CLUSTERS))
    params["qat"] = trial.suggest_categorical("qat", [False, True]) if "int8" in precisions \
        else False
    if params["qat"] or len(precisions) == 1:
        params["precision"] = "int8" if params["qat"] else precisions[0]
    else:
        params["precision"] = trial.suggest_categorical("precision", list(precisions))
    return params
