"""The pipeline configuration: a YAML file (or compile flags) -> a validated `PipelineConfig`.

    seed: 0                          # optional; else compile's --seed
    budget:
      max_accuracy_drop: 1.0         # percentage points of accuracy lost against the float model
      on_exceed: rollback            # rollback (default): undo the stage and go on | fail: stop
    stages:                          # run in this order
      - distill: {student: student.keras, temperature: 4, alpha: 0.7}
      - prune:
          sparsity: 0.8              # or `auto` (per-layer, from the sensitivity analysis)
          # sparsities: {conv1: 0.5, dense: 0.75}   # or each layer its own (names or globs)
          schedule: polynomial       # or constant
          structure: "2:4"           # at most 2 non-zero weights in every 4 (needs no sparsity)
          layers: {types: [Dense], exclude: ["probs"]}
          epochs: 4
          max_accuracy_drop: 2.0     # this stage's own bound (still against the float model)
      - cluster: {clusters: 16, init: kmeans++}
      - qat                          # a bare name runs the stage with its defaults
                                     # (qat fields: skip_unsupported, init_ranges)

Every mistake is reported as one line that names the file, the field's path
(`stages[1].prune.sparsity`), what was given and what is allowed, with a close spelling suggested
for misspelt names. The fields, types and bounds are `SCHEMA` (JSON Schema, checked by
`tflc.schema`, as target descriptors are); the code keeps the rules between fields. The dataclasses hold plain values; `to_dict()` gives them back as JSON.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tflc.errors import BadInput
from tflc.options import MAX_SEED
from tflc.schema import CONFIG, check_schema, field_path, shown, suggestion, validate

STAGE_KINDS = ("prune", "qat", "cluster", "distill")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("polynomial", "constant")
CENTROID_INITS = ("kmeans++", "linear", "density", "random")
ON_EXCEED = ("rollback", "fail")

# Fine-tuning defaults per stage: a few epochs at a learning rate well below a from-scratch one,
# because every stage starts from a trained model and should only nudge it.
TRAIN_DEFAULTS = {
    "prune": {"epochs": 4, "learning_rate": 1e-3},
    "qat": {"epochs": 2, "learning_rate": 1e-4},
    "cluster": {"epochs": 2, "learning_rate": 1e-4},
    "distill": {"epochs": 10, "learning_rate": 1e-3},
}


@dataclass
class TrainSettings:
    """How a stage fine-tunes: optimizer, learning rate, epochs, batch size."""

    epochs: int
    learning_rate: float
    batch_size: int = 32
    optimizer: str = "adam"


@dataclass
class LayerSelection:
    """Which layers a stage touches. Empty = the stage's default (see prune.py)."""

    names: list[str] = field(default_factory=list)  # glob patterns on layer names
    types: list[str] = field(default_factory=list)  # Keras class names, e.g. Conv2D, Dense
    exclude: list[str] = field(default_factory=list)  # glob patterns, applied last

    @property
    def is_default(self) -> bool:
        return not (self.names or self.types or self.exclude)


@dataclass
class StageConfig:
    kind: str
    train: TrainSettings
    max_accuracy_drop: float | None = None

    @property
    def label(self) -> str:
        return self.kind


@dataclass
class PruneConfig(StageConfig):
    sparsity: float | None = 0.5  # None when `auto`
    auto: bool = False
    target_sparsity: float = 0.5  # overall sparsity `auto` aims for
    schedule: str = "polynomial"
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int | None = None  # None: 75% of the fine-tuning steps
    frequency: int | None = None  # None: about 4 mask updates per epoch
    power: float = 3.0
    structure: tuple[int, int] | None = None  # (kept, block): "2:4" = 2 non-zero in every 4
    layers: LayerSelection = field(default_factory=LayerSelection)
    # layer name (or glob) -> its own final sparsity; 0 keeps a layer dense. Only these layers
    # are pruned. What `tflc search` writes for a candidate with a sparsity per layer.
    sparsities: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.sparsities:
            return "prune per layer"
        if self.structure:
            return f"prune {self.structure[0]}:{self.structure[1]}"
        if self.auto:
            return f"prune auto {self.target_sparsity:.0%}"
        return f"prune {self.sparsity:.0%}"


@dataclass
class QatConfig(StageConfig):
    skip_unsupported: bool = False  # leave layers TF-MOT cannot quantize in float
    init_ranges: bool = True  # start activation ranges from the data, not TF-MOT's [-6, 6]


@dataclass
class ClusterConfig(StageConfig):
    clusters: int = 16
    init: str = "kmeans++"
    layers: LayerSelection = field(default_factory=LayerSelection)

    @property
    def label(self) -> str:
        return f"cluster {self.clusters}"


@dataclass
class DistillConfig(StageConfig):
    student: str | None = None  # a Keras file; None = the model as the previous stage left it
    teacher: str | None = None  # a Keras file; None = the pipeline's input float model
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the soft-label KL term; 1 - alpha on the hard labels

    @property
    def label(self) -> str:
        return "distill" + (f" -> {Path(self.student).name}" if self.student else "")


@dataclass
class Budget:
    max_accuracy_drop: float | None = None
    on_exceed: str = "rollback"


@dataclass
class PipelineConfig:
    stages: list[StageConfig]
    budget: Budget = field(default_factory=Budget)
    seed: int | None = None
    source: str = "flags"  # the YAML file's path, or "flags"

    def to_dict(self) -> dict:
        def stage_dict(stage):
            data = asdict(stage)
            if data.get("structure"):
                data["structure"] = f"{data['structure'][0]}:{data['structure'][1]}"
            return data

        return {
            "source": self.source,
            "seed": self.seed,
            "budget": asdict(self.budget),
            "stages": [stage_dict(s) for s in self.stages],
        }


# ----------------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike) -> PipelineConfig:
    """Read and validate a pipeline YAML file."""
    from tflc.fileio import read_yaml

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such pipeline config file")
    data = read_yaml(path, "pipeline config")
    return parse_config(data, source=str(path), base_dir=path.parent)


def parse_config(data, source: str = "<config>", base_dir: str | os.PathLike | None = None) -> PipelineConfig:
    """Validate a config given as plain data (what the YAML file holds).

    The schema (`SCHEMA`) checks every field's type and bounds; the code below adds what a
    schema cannot say: the shorthands (`- qat`, `budget: 1.0`), the rules between fields, the
    stage order and that model files exist.
    """
    v = _Validator(source, Path(base_dir) if base_dir else None)
    if not isinstance(data, dict):
        v.fail("", f"expected a mapping with `stages:` at the top, got {shown(data)}")
    data = _expand_shorthands(v, data)
    validate(data, SCHEMA, None if source == "flags" else source, CONFIG, name=v.field_name)
    stages = [_parse_stage(v, i, item) for i, item in enumerate(data["stages"])]
    _check_order(v, stages)
    raw_budget = data.get("budget") or {}
    budget = Budget(max_accuracy_drop=_float(raw_budget.get("max_accuracy_drop")),
                    on_exceed=raw_budget.get("on_exceed", _default(Budget, "on_exceed")))
    return PipelineConfig(stages=stages, budget=budget, seed=data.get("seed"), source=source)


def _expand_shorthands(v: _Validator, data: dict) -> dict:
    """`budget: 1.0` and `- qat` (a bare stage name) as the mappings they stand for."""
    data = dict(data)
    if isinstance(data.get("budget"), (int, float)) and not isinstance(data["budget"], bool):
        data["budget"] = {"max_accuracy_drop": data["budget"]}
    if isinstance(data.get("stages"), list):
        data["stages"] = [_stage_item(v, i, item) for i, item in enumerate(data["stages"])]
    return data


def _stage_item(v: _Validator, index: int, item) -> dict:
    """One `stages` entry as {kind: body}; an unknown stage name is named with a close spelling."""
    where = f"stages[{index}]"
    if isinstance(item, str):
        kind, body = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        kind, body = next(iter(item.items()))
        body = {} if body is None else body
    else:
        v.fail(where, f"expected one stage name ({', '.join(STAGE_KINDS)}) with its fields "
                      "beneath it, e.g. `- prune: {sparsity: 0.5}`")
    if kind not in STAGE_KINDS:
        hint = suggestion(CONFIG, kind, STAGE_KINDS)
        v.fail(where, f"unknown stage '{kind}'{hint}; allowed: {', '.join(STAGE_KINDS)}")
    return {kind: body}


def config_from_flags(*, prune=None, prune_structure=None, qat=False, qat_skip_unsupported=False,
                      cluster=None, distill=None, epochs=None, max_accuracy_drop=None,
                      seed=None) -> PipelineConfig | None:
    """The compile flags as a config: distill -> prune -> cluster -> qat, each with defaults.

    `prune` is a sparsity (0.5), the text "auto", or None; `prune_structure` is "2:4".
    Returns None when no stage flag is set (plain post-training quantization).
    """
    stages: list[dict | str] = []
    if distill:
        stages.append({"distill": {"student": None if distill in ("self", True) else str(distill)}})
    if prune is not None or prune_structure:
        spec: dict = {}
        if prune_structure:
            spec["structure"] = prune_structure
        if prune is not None:
            spec["sparsity"] = prune
        stages.append({"prune": spec})
    if cluster:
        stages.append({"cluster": {"clusters": cluster}})
    if qat or qat_skip_unsupported:
        stages.append({"qat": {"skip_unsupported": True} if qat_skip_unsupported else {}})
    if not stages:
        return None
    if epochs is not None:
        for stage in stages:
            if isinstance(stage, dict):
                next(iter(stage.values()))["epochs"] = epochs
    data: dict = {"stages": stages}
    if max_accuracy_drop is not None:
        data["budget"] = {"max_accuracy_drop": max_accuracy_drop}
    if seed is not None:
        data["seed"] = seed
    return parse_config(data, source="flags", base_dir=Path.cwd())


# ------------------------------------------------------------------------------ the validator


_FLAG_FOR_FIELD = {
    "prune.sparsity": "--prune", "prune.structure": "--prune-structure",
    "cluster.clusters": "--cluster", "distill.student": "--distill",
    "budget.max_accuracy_drop": "--max-accuracy-drop", "seed": "--seed",
    **{f"{kind}.epochs": "--epochs" for kind in STAGE_KINDS},
}


class _Validator:
    """Names a field in one BadInput line: the file and the field's path, or the compile flag."""

    def __init__(self, source: str, base_dir: Path | None):
        self.source, self.base_dir = source, base_dir

    def field_name(self, parts) -> str:
        """A field's path as the user knows it: the flag they typed, for a config from flags."""
        where = field_path(parts)
        if self.source != "flags":
            return where
        field_name = where.split(".", 1)[-1] if where.startswith("stages[") else where
        return _FLAG_FOR_FIELD.get(field_name, field_name)

    def fail(self, where: str, message: str):
        if self.source == "flags":
            raise BadInput(f"{self.field_name([where])}: {message}")
        prefix = f"{self.source}: {where}: " if where else f"{self.source}: "
        raise BadInput(prefix + message)

    def path(self, where, value) -> str:
        """A model file, relative to the config file; it must exist."""
        path = Path(value).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        if not path.exists():
            self.fail(where, f"{path}: no such file; give a Keras model (.keras, .h5 or SavedModel)")
        return str(path)


# ------------------------------------------------------------------------------- the schema


def _integer(minimum: int, maximum: int | None = None) -> dict:
    return {"type": "integer", "minimum": minimum} | ({} if maximum is None else {"maximum": maximum})


def _number(low=None, high=None, low_open=False, high_open=False) -> dict:
    out: dict = {"type": "number"}
    if low is not None:
        out["exclusiveMinimum" if low_open else "minimum"] = low
    if high is not None:
        out["exclusiveMaximum" if high_open else "maximum"] = high
    return out


def _fields(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "additionalProperties": False}


_NAMES = {"type": ["string", "array"], "minLength": 1, "items": {"type": "string", "minLength": 1},
          "description": "a name or a list of names"}
_LAYERS = {"type": ["string", "array", "object"], "minLength": 1,
           "items": {"type": "string", "minLength": 1},
           "properties": {"names": _NAMES, "types": _NAMES, "exclude": _NAMES},
           "additionalProperties": False,
           "description": "a list of layer-name patterns or a mapping with names/types/exclude"}
_MODEL = {"type": ["string", "null"], "minLength": 1, "description": "a path to a Keras model file"}
_DROP = _number(0, 100)
_COMMON = {
    "epochs": _integer(1), "batch_size": _integer(1), "optimizer": {"enum": list(OPTIMIZERS)},
    "learning_rate": _number(0, 10, low_open=True), "max_accuracy_drop": _DROP,
}
_STAGES = {
    "prune": _COMMON | {
        "sparsity": {"type": ["number", "string"], "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                     "pattern": "^auto$", "description": "a number in (0, 1)"},
        "target_sparsity": _number(0, 1, low_open=True, high_open=True),
        "schedule": {"enum": list(SCHEDULES)},
        "initial_sparsity": _number(0, 1, high_open=True),
        "begin_step": _integer(0), "end_step": _integer(1), "frequency": _integer(1),
        "power": _number(0, 10, low_open=True),
        "structure": {"type": "string", "pattern": r"^\s*\d+\s*:\s*\d+\s*$",
                      "description": "'N:M' (at most N non-zero weights in every M), e.g. '2:4'"},
        "layers": _LAYERS,
        "sparsities": {"type": "object", "minProperties": 1,
                       "additionalProperties": _number(0, 1, high_open=True),
                       "description": "a mapping of layer names to sparsities in [0, 1)"},
    },
    "qat": _COMMON | {"skip_unsupported": {"type": "boolean"}, "init_ranges": {"type": "boolean"}},
    "cluster": _COMMON | {"clusters": _integer(2, 256), "init": {"enum": list(CENTROID_INITS)},
                          "layers": _LAYERS},
    "distill": _COMMON | {"student": _MODEL, "teacher": _MODEL,
                          "temperature": _number(0, 100, low_open=True), "alpha": _number(0, 1)},
}
SCHEMA = check_schema(_fields({
    "stages": {"type": "array", "minItems": 1,
               "description": f"a non-empty list of stages ({', '.join(STAGE_KINDS)})",
               "items": {"type": "object", "properties": {k: _fields(v) for k, v in _STAGES.items()}}},
    "budget": _fields({"max_accuracy_drop": _DROP, "on_exceed": {"enum": list(ON_EXCEED)}}),
    "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED,
             "description": f"a whole number between 0 and {MAX_SEED}"},
}) | {"required": ["stages"]})
"""The pipeline config's fields, types and bounds, as JSON Schema (stage shorthands expanded)."""


# ------------------------------------------------------------------ building the dataclasses


def _parse_stage(v: _Validator, index: int, item: dict) -> StageConfig:
    """One schema-valid `{kind: body}` entry as its dataclass, defaults filled in."""
    kind, body = next(iter(item.items()))
    where = f"stages[{index}].{kind}"
    defaults = TRAIN_DEFAULTS[kind]
    train = TrainSettings(
        epochs=body.get("epochs", defaults["epochs"]),
        learning_rate=float(body.get("learning_rate", defaults["learning_rate"])),
        batch_size=body.get("batch_size", _default(TrainSettings, "batch_size")),
        optimizer=body.get("optimizer", _default(TrainSettings, "optimizer")),
    )
    common = {"kind": kind, "train": train,
              "max_accuracy_drop": _float(body.get("max_accuracy_drop"))}
    return _STAGE_PARSERS[kind](v, where, body, common)


def _parse_prune(v, where, body, common) -> PruneConfig:
    structure = None
    if body.get("structure") is not None:
        structure = _parse_structure(v, f"{where}.structure", body["structure"])
    sparsities = {str(k): float(v) for k, v in (body.get("sparsities") or {}).items()}
    if sparsities:
        for other in ("sparsity", "target_sparsity", "structure", "layers"):
            if other in body:
                v.fail(f"{where}.{other}", "`sparsities` names each pruned layer and its "
                                           f"sparsity; remove `{other}`")
    raw = body.get("sparsity", None if structure or sparsities
                   else _default(PruneConfig, "sparsity"))
    auto = raw == "auto"
    if structure and raw is not None:
        v.fail(f"{where}.sparsity", "a structured prune ('structure: 2:4') fixes the sparsity; "
                                    "remove `sparsity`")
    if "target_sparsity" in body and not auto:
        v.fail(f"{where}.target_sparsity", "only used with `sparsity: auto`; "
                                           "set `sparsity: auto` or remove this field")
    schedule = body.get("schedule", _default(PruneConfig, "schedule"))
    if schedule == "constant" and "initial_sparsity" in body:
        v.fail(f"{where}.initial_sparsity", "only used by the polynomial schedule")
    config = PruneConfig(
        **common,
        sparsity=None if auto else _float(raw),
        auto=auto,
        target_sparsity=float(body.get("target_sparsity", _default(PruneConfig, "target_sparsity"))),
        schedule=schedule,
        initial_sparsity=float(body.get("initial_sparsity", _default(PruneConfig, "initial_sparsity"))),
        begin_step=body.get("begin_step", _default(PruneConfig, "begin_step")),
        end_step=body.get("end_step"),
        frequency=body.get("frequency"),
        power=float(body.get("power", _default(PruneConfig, "power"))),
        structure=structure,
        layers=_parse_layers(body.get("layers")),
        sparsities=sparsities,
    )
    _check_steps(v, where, config)
    return config


def _check_steps(v: _Validator, where: str, config: PruneConfig) -> None:
    """The rules between prune fields, which a schema of single fields cannot state."""
    if config.sparsity is not None and config.initial_sparsity >= config.sparsity:
        v.fail(f"{where}.initial_sparsity", f"must be below sparsity ({config.sparsity:g}), "
                                            f"got {config.initial_sparsity:g}")
    if config.end_step is not None and config.end_step <= config.begin_step:
        v.fail(f"{where}.end_step", f"must be after begin_step ({config.begin_step}), "
                                    f"got {config.end_step}")


def _parse_structure(v, where, raw: str) -> tuple[int, int]:
    """'N:M' (its shape already checked by the schema) as (N, M), with 0 < N < M."""
    kept, block = (int(p) for p in raw.replace(" ", "").split(":"))
    if not 0 < kept < block:
        v.fail(where, f"expected 0 < N < M in 'N:M', got {raw!r}")
    return kept, block


def _parse_layers(raw) -> LayerSelection:
    if raw is None:
        return LayerSelection()
    if not isinstance(raw, dict):
        return LayerSelection(names=_names(raw))
    return LayerSelection(**{key: _names(value) for key, value in raw.items()})


def _names(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _parse_qat(v, where, body, common) -> QatConfig:
    return QatConfig(**common, skip_unsupported=body.get(
        "skip_unsupported", _default(QatConfig, "skip_unsupported")),
        init_ranges=body.get("init_ranges", _default(QatConfig, "init_ranges")))


def _parse_cluster(v, where, body, common) -> ClusterConfig:
    return ClusterConfig(
        **common,
        clusters=body.get("clusters", _default(ClusterConfig, "clusters")),
        init=body.get("init", _default(ClusterConfig, "init")),
        layers=_parse_layers(body.get("layers")),
    )


def _parse_distill(v, where, body, common) -> DistillConfig:
    student, teacher = body.get("student"), body.get("teacher")
    return DistillConfig(
        **common,
        student=None if student is None else v.path(f"{where}.student", student),
        teacher=None if teacher is None else v.path(f"{where}.teacher", teacher),
        temperature=float(body.get("temperature", _default(DistillConfig, "temperature"))),
        alpha=float(body.get("alpha", _default(DistillConfig, "alpha"))),
    )


_STAGE_PARSERS = {"prune": _parse_prune, "qat": _parse_qat, "cluster": _parse_cluster,
                  "distill": _parse_distill}


def _check_order(v: _Validator, stages: list[StageConfig]) -> None:
    """QAT puts fake-quantization wrappers in the model; no other stage can wrap it again."""
    for i, stage in enumerate(stages):
        if stage.kind == "qat" and i != len(stages) - 1:
            later = stages[i + 1].kind
            v.fail(f"stages[{i + 1}].{later}", f"'{later}' after 'qat' is not supported (TF-MOT "
                                               "cannot re-wrap a quantization-aware model); "
                                               "move qat to the end")


def _default(cls, name: str):
    """A field's default, read from its dataclass: each default is written once, there."""
    return next(f.default for f in fields(cls) if f.name == name)


def _float(value) -> float | None:
    return None if value is None else float(value)
