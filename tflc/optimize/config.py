"""The pipeline configuration: a YAML file (or compile flags) -> a validated `PipelineConfig`.

    seed: 0                          # optional; else compile's --seed
    budget:
      max_accuracy_drop: 1.0         # percentage points of accuracy lost against the float model
      on_exceed: rollback            # rollback (default): undo the stage and go on | fail: stop
    stages:                          # run in this order
      - distill: {student: student.keras, temperature: 4, alpha: 0.7}
      - prune:
          sparsity: 0.8              # or `auto` (per-layer, from the sensitivity analysis)
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
for misspelt names. The dataclasses hold plain values; `to_dict()` gives them back as JSON.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tflc.errors import BadInput
from tflc.options import MAX_SEED

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

    @property
    def label(self) -> str:
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
    """Validate a config given as plain data (what the YAML file holds)."""
    v = _Validator(source, Path(base_dir) if base_dir else None)
    if not isinstance(data, dict):
        v.fail("", f"expected a mapping with `stages:` at the top, got {_kind(data)}")
    v.check_fields("", data, ("stages", "budget", "seed"))
    seed = v.integer("seed", data.get("seed"), minimum=0, maximum=MAX_SEED) if data.get("seed") is not None else None
    budget = _parse_budget(v, data.get("budget"))
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        v.fail("stages", f"expected a non-empty list of stages ({', '.join(STAGE_KINDS)}), "
                         f"got {_kind(raw_stages)}")
    stages = [_parse_stage(v, i, item) for i, item in enumerate(raw_stages)]
    _check_order(v, stages)
    return PipelineConfig(stages=stages, budget=budget, seed=seed, source=source)


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
    """Turns a field path and a complaint into one BadInput line naming file and field."""

    def __init__(self, source: str, base_dir: Path | None):
        self.source, self.base_dir = source, base_dir

    def fail(self, where: str, message: str):
        if self.source == "flags":  # name the flag the user typed, not the field it became
            field_name = where.split(".", 1)[-1] if where.startswith("stages[") else where
            raise BadInput(f"{_FLAG_FOR_FIELD.get(field_name, field_name)}: {message}")
        prefix = f"{self.source}: {where}: " if where else f"{self.source}: "
        raise BadInput(prefix + message)

    def check_fields(self, where: str, mapping: dict, allowed) -> None:
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                place = f"{where}.{key}" if where else str(key)
                self.fail(place, f"unknown field{hint}; allowed: {', '.join(allowed)}")

    def number(self, where, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number{_range(low, high, low_open, high_open)}, "
                             f"got {value!r}")
        value = float(value)
        if not math.isfinite(value):  # NaN passes every comparison below, so say it first
            self.fail(where, f"expected a finite number{_range(low, high, low_open, high_open)}, "
                             f"got {value!r}")
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and (value >= high if high_open else value > high)
        if bad_low or bad_high:
            self.fail(where, f"expected a number{_range(low, high, low_open, high_open)}, "
                             f"got {value:g}")
        return value

    def integer(self, where, value, *, minimum=None, maximum=None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected a whole number, got {value!r}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            self.fail(where, f"expected a whole number {bounds}, got {value}")
        return value

    def choice(self, where, value, allowed) -> str:
        text = str(value).lower() if value is not None else None
        if text not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.fail(where, f"got {value!r}{hint}; allowed values: {', '.join(allowed)}")
        return text

    def boolean(self, where, value) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {value!r}")
        return value

    def names(self, where, value) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(where, f"expected a name or a list of names, got {value!r}")
        return list(value)

    def path(self, where, value) -> str:
        if not isinstance(value, str) or not value:
            self.fail(where, f"expected a path to a Keras model file, got {value!r}")
        path = Path(value).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        if not path.exists():
            self.fail(where, f"{path}: no such file; give a Keras model (.keras, .h5 or SavedModel)")
        return str(path)


def _parse_budget(v: _Validator, raw) -> Budget:
    if raw is None:
        return Budget()
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = {"max_accuracy_drop": raw}
    if not isinstance(raw, dict):
        v.fail("budget", f"expected a mapping with max_accuracy_drop, got {_kind(raw)}")
    v.check_fields("budget", raw, ("max_accuracy_drop", "on_exceed"))
    drop = raw.get("max_accuracy_drop")
    return Budget(
        max_accuracy_drop=None if drop is None else v.number(
            "budget.max_accuracy_drop", drop, low=0, high=100),
        on_exceed=v.choice("budget.on_exceed", raw.get("on_exceed", "rollback"), ON_EXCEED),
    )


_COMMON = ("epochs", "batch_size", "optimizer", "learning_rate", "max_accuracy_drop")
_FIELDS = {
    "prune": _COMMON + ("sparsity", "target_sparsity", "schedule", "initial_sparsity", "begin_step",
                        "end_step", "frequency", "power", "structure", "layers"),
    "qat": _COMMON + ("skip_unsupported", "init_ranges"),
    "cluster": _COMMON + ("clusters", "init", "layers"),
    "distill": _COMMON + ("student", "teacher", "temperature", "alpha"),
}


def _parse_stage(v: _Validator, index: int, item) -> StageConfig:
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
        close = difflib.get_close_matches(str(kind), STAGE_KINDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        v.fail(where, f"unknown stage '{kind}'{hint}; allowed: {', '.join(STAGE_KINDS)}")
    where = f"{where}.{kind}"
    if not isinstance(body, dict):
        v.fail(where, f"expected a mapping of fields, got {_kind(body)}")
    v.check_fields(where, body, _FIELDS[kind])
    defaults = TRAIN_DEFAULTS[kind]
    train = TrainSettings(
        epochs=v.integer(f"{where}.epochs", body.get("epochs", defaults["epochs"]), minimum=1),
        learning_rate=v.number(f"{where}.learning_rate",
                               body.get("learning_rate", defaults["learning_rate"]),
                               low=0, high=10, low_open=True),
        batch_size=v.integer(f"{where}.batch_size", body.get("batch_size", _default(TrainSettings, "batch_size")), minimum=1),
        optimizer=v.choice(f"{where}.optimizer", body.get("optimizer", _default(TrainSettings, "optimizer")), OPTIMIZERS),
    )
    drop = body.get("max_accuracy_drop")
    common = {
        "kind": kind,
        "train": train,
        "max_accuracy_drop": None if drop is None else v.number(
            f"{where}.max_accuracy_drop", drop, low=0, high=100),
    }
    return _STAGE_PARSERS[kind](v, where, body, common)


def _parse_prune(v, where, body, common) -> PruneConfig:
    structure = None
    if body.get("structure") is not None:
        structure = _parse_structure(v, f"{where}.structure", body["structure"])
    raw = body.get("sparsity", None if structure else _default(PruneConfig, "sparsity"))
    auto = raw == "auto"
    if structure and raw is not None:
        v.fail(f"{where}.sparsity", "a structured prune ('structure: 2:4') fixes the sparsity; "
                                    "remove `sparsity`")
    sparsity = None
    if not auto and raw is not None:
        sparsity = v.number(f"{where}.sparsity", raw, low=0, high=1, low_open=True, high_open=True)
    if auto and "target_sparsity" not in body:
        body = {**body, "target_sparsity": _default(PruneConfig, "target_sparsity")}
    if "target_sparsity" in body and not auto:
        v.fail(f"{where}.target_sparsity", "only used with `sparsity: auto`; "
                                           "set `sparsity: auto` or remove this field")
    schedule = v.choice(f"{where}.schedule", body.get("schedule", _default(PruneConfig, "schedule")), SCHEDULES)
    if schedule == "constant" and "initial_sparsity" in body:
        v.fail(f"{where}.initial_sparsity", "only used by the polynomial schedule")
    end_step = body.get("end_step")
    frequency = body.get("frequency")
    config = PruneConfig(
        **common,
        sparsity=sparsity,
        auto=auto,
        target_sparsity=v.number(f"{where}.target_sparsity", body.get("target_sparsity", _default(PruneConfig, "target_sparsity")),
                                 low=0, high=1, low_open=True, high_open=True),
        schedule=schedule,
        initial_sparsity=v.number(f"{where}.initial_sparsity", body.get("initial_sparsity", _default(PruneConfig, "initial_sparsity")),
                                  low=0, high=1, high_open=True),
        begin_step=v.integer(f"{where}.begin_step", body.get("begin_step", _default(PruneConfig, "begin_step")), minimum=0),
        end_step=None if end_step is None else v.integer(f"{where}.end_step", end_step, minimum=1),
        frequency=None if frequency is None else v.integer(f"{where}.frequency", frequency,
                                                           minimum=1),
        power=v.number(f"{where}.power", body.get("power", _default(PruneConfig, "power")), low=0, low_open=True, high=10),
        structure=structure,
        layers=_parse_layers(v, f"{where}.layers", body.get("layers")),
    )
    if sparsity is not None and config.initial_sparsity >= sparsity:
        v.fail(f"{where}.initial_sparsity", f"must be below sparsity ({sparsity:g}), "
                                            f"got {config.initial_sparsity:g}")
    if config.end_step is not None and config.end_step <= config.begin_step:
        v.fail(f"{where}.end_step", f"must be after begin_step ({config.begin_step}), "
                                    f"got {config.end_step}")
    return config


def _parse_structure(v, where, raw) -> tuple[int, int]:
    text = str(raw).replace(" ", "")
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        v.fail(where, f"expected 'N:M' (at most N non-zero weights in every M), e.g. '2:4', "
                      f"got {raw!r}")
    kept, block = int(parts[0]), int(parts[1])
    if not 0 < kept < block:
        v.fail(where, f"expected 0 < N < M in 'N:M', got {raw!r}")
    return kept, block


def _parse_layers(v, where, raw) -> LayerSelection:
    if raw is None:
        return LayerSelection()
    if isinstance(raw, (str, list)):
        return LayerSelection(names=v.names(where, raw))
    if not isinstance(raw, dict):
        v.fail(where, f"expected a list of layer-name patterns or a mapping with names/types/"
                      f"exclude, got {_kind(raw)}")
    v.check_fields(where, raw, ("names", "types", "exclude"))
    return LayerSelection(
        names=v.names(f"{where}.names", raw["names"]) if "names" in raw else [],
        types=v.names(f"{where}.types", raw["types"]) if "types" in raw else [],
        exclude=v.names(f"{where}.exclude", raw["exclude"]) if "exclude" in raw else [],
    )


def _parse_qat(v, where, body, common) -> QatConfig:
    return QatConfig(**common, skip_unsupported=v.boolean(
        f"{where}.skip_unsupported", body.get("skip_unsupported", _default(QatConfig, "skip_unsupported"))),
        init_ranges=v.boolean(f"{where}.init_ranges", body.get("init_ranges", _default(QatConfig, "init_ranges"))))


def _parse_cluster(v, where, body, common) -> ClusterConfig:
    return ClusterConfig(
        **common,
        clusters=v.integer(f"{where}.clusters", body.get("clusters", _default(ClusterConfig, "clusters")), minimum=2, maximum=256),
        init=v.choice(f"{where}.init", body.get("init", _default(ClusterConfig, "init")), CENTROID_INITS),
        layers=_parse_layers(v, f"{where}.layers", body.get("layers")),
    )


def _parse_distill(v, where, body, common) -> DistillConfig:
    student, teacher = body.get("student"), body.get("teacher")
    return DistillConfig(
        **common,
        student=None if student is None else v.path(f"{where}.student", student),
        teacher=None if teacher is None else v.path(f"{where}.teacher", teacher),
        temperature=v.number(f"{where}.temperature", body.get("temperature", _default(DistillConfig, "temperature")),
                             low=0, low_open=True, high=100),
        alpha=v.number(f"{where}.alpha", body.get("alpha", _default(DistillConfig, "alpha")), low=0, high=1),
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


def _range(low, high, low_open, high_open) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f" {'<' if high_open else '<='} {high:g}"
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    return f" in {left}{low:g}, {high:g}{right}"


def _kind(value) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"the text {value!r}"}.get(
        type(value), f"{type(value).__name__} {value!r}")
