"""The compression pipeline: stages in order, each checked against the float model's accuracy.

    resolve_config(config or flags)          -> PipelineConfig (or None: plain PTQ)
    run_pipeline(loaded, config, train, eval) -> PipelineResult (.loaded goes on to conversion)

For each stage: start from the model the last accepted stage produced, run the stage on a copy,
evaluate the result on the evaluation data, convert it to int8 to measure what it really weighs
(.tflite size, gzip size, zeros per layer; see measure.py), and compare its accuracy with the
float model's. A stage that loses more than its budget (`max_accuracy_drop` of the stage, else
of the pipeline, in points) is rolled back: the next stage starts from that stage's input, and
the report says which stage, by how much and against which budget. With `on_exceed: fail` the
run stops there instead.

What each stage knows from the ones before: QAT after an accepted prune preserves sparsity
(PQAT), after an accepted cluster preserves clusters (CQAT); cluster after prune keeps zeros.
A Keras 3 model is rebuilt as tf_keras first (TF-MOT needs it), verified output for output.
Nothing is written to disk here: the compiler writes the final model and report atomically.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tflc.errors import BadInput, GateFailed
from tflc.optimize.config import PipelineConfig, config_from_flags, load_config, parse_config
from tflc.optimize.keras_rebuild import tf_keras_model

CALIBRATION_SAMPLES = 200  # for the per-stage int8 measurement (the final model uses the user's)
_FLAG_NAMES = ("prune", "prune_structure", "qat", "qat_skip_unsupported", "cluster", "distill",
               "epochs", "max_accuracy_drop", "seed")


@dataclass
class StageReport:
    index: int  # 0 is the input float model
    stage: str  # "float", "prune", "qat", "cluster", "distill"
    label: str  # e.g. "prune 80%", "cluster 16"
    status: str  # "input", "accepted", "rolled back"
    accuracy: float  # % on the eval data, of the stage's Keras model
    accuracy_change: float  # points against the float model (negative: lost)
    int8_accuracy: float | None  # % of the stage's model converted to int8 (LiteRT)
    tflite_bytes: int
    gzip_bytes: int
    sparsity: float  # zero fraction of the int8 weights
    seconds: float
    reason: str | None = None  # why it was rolled back
    details: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)  # per weight tensor, measured in the .tflite

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class PipelineResult:
    loaded: object  # LoadedModel around the final tf_keras model
    config: PipelineConfig
    float_accuracy: float
    stages: list[StageReport]
    final_index: int  # the StageReport whose model `loaded` holds
    warnings: list[str] = field(default_factory=list)
    rebuild: dict | None = None  # Keras 3 -> tf_keras verification, when it happened

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "float_accuracy": self.float_accuracy,
                "final_stage": self.final_index, "stages": [s.to_dict() for s in self.stages],
                "warnings": self.warnings, "rebuild": self.rebuild}

    def table(self) -> str:
        from tflc.optimize.stage_report import stage_table

        return stage_table([s.to_dict() for s in self.stages])

    def plot_png(self) -> bytes:
        from tflc.optimize.stage_report import stage_plot_png

        return stage_plot_png([s.to_dict() for s in self.stages])


def resolve_config(config=None, **flags) -> PipelineConfig | None:
    """A PipelineConfig from a YAML path, a dict, a PipelineConfig or the compile flags.

    Compile passes `CompileOptions.pipeline` (a path or None) and its shortcut flags: prune (a
    sparsity or "auto"), prune_structure ("2:4"), qat, qat_skip_unsupported, cluster (clusters),
    distill (a student file, or "self"), epochs, max_accuracy_drop and seed. Returns None when
    nothing asks for a stage.
    """
    unknown = set(flags) - set(_FLAG_NAMES)
    if unknown:
        raise BadInput(f"pipeline flags: unknown {', '.join(sorted(unknown))}; "
                       f"allowed: {', '.join(_FLAG_NAMES)}")
    stage_flags = {k: v for k, v in flags.items()
                   if k not in ("epochs", "max_accuracy_drop", "seed") and v not in (None, False)}
    if config is not None and stage_flags:
        raise BadInput(f"--config {config}: give the stages either in the config file or as flags "
                       f"(--{', --'.join(k.replace('_', '-') for k in stage_flags)}), not both")
    if config is None and not stage_flags and flags.get("epochs") is not None:
        raise BadInput("--epochs: sets the fine-tuning of pipeline stages; add a stage "
                       "(--prune, --qat, --cluster, --distill) or --config")
    if config is None:
        prune = flags.get("prune")
        if isinstance(prune, str) and prune != "auto":
            try:
                prune = float(prune)
            except ValueError:
                raise BadInput(f"--prune {prune}: expected a sparsity between 0 and 1, or auto"
                               ) from None
        return config_from_flags(**{**flags, "prune": prune})
    if isinstance(config, PipelineConfig):
        resolved = copy.deepcopy(config)  # the flags below must not change the caller's object
    elif isinstance(config, dict):
        resolved = parse_config(config, source="<config>", base_dir=Path.cwd())
    elif isinstance(config, (str, os.PathLike)):
        resolved = load_config(config)
    else:
        raise BadInput(f"pipeline: expected a YAML path or a mapping, got {type(config).__name__}")
    if flags.get("max_accuracy_drop") is not None and resolved.budget.max_accuracy_drop is None:
        resolved.budget.max_accuracy_drop = float(flags["max_accuracy_drop"])
    if flags.get("seed") is not None and resolved.seed is None:
        resolved.seed = int(flags["seed"])
    if flags.get("epochs") is not None:  # a flag typed for this run beats the file's settings
        for stage in resolved.stages:
            stage.train.epochs = int(flags["epochs"])
    return resolved


def run_pipeline(loaded, config, train_data, eval_data, seed: int = 0, log=None,
                 normalize: str = "unit") -> PipelineResult:
    """Run the configured stages on `loaded` (a keras_io.LoadedModel); see the module doc.

    `train_data`: a .npz path, image folder, `module:function`, or arrays with .x/.y;
    `eval_data`: the same, or the compiler's labelled SampleSet. Image folders are scaled as
    `normalize` says (compile's --normalize, so training sees what calibration sees). Seeds make
    a run repeatable.
    """
    from tflc.load.data import load_labelled, materialize
    from tflc.optimize import training
    from tflc.tf_env import import_tensorflow

    say = log or (lambda message: None)
    config = config if isinstance(config, PipelineConfig) else resolve_config(config)
    if config is None or not config.stages:
        raise BadInput("pipeline: no stages to run")
    if eval_data is None:
        raise BadInput("the optimization pipeline needs labelled --eval-data (.npz with x and y): "
                       "every stage is checked against the float model's accuracy on it")
    if train_data is None:
        raise BadInput("the optimization pipeline needs --train-data (.npz with x and y, a folder "
                       "of class subfolders, or module:function returning a tf.data.Dataset)")
    seed = config.seed if config.seed is not None else int(seed)
    import_tensorflow().config.experimental.enable_op_determinism()

    model, rebuild = tf_keras_model(loaded, eval_data)
    task = training.describe_task(model, str(loaded.path))
    evaluation = materialize(load_labelled(eval_data, loaded.inputs, task.classes,
                                                role="--eval-data", normalize=normalize))
    train = load_labelled(train_data, loaded.inputs, task.classes, role="--train-data",
                               normalize=normalize)
    calibration = train.sample_inputs(CALIBRATION_SAMPLES)
    run = _Run(loaded, config, train, evaluation, calibration, task, seed, say)

    say("measuring the float model")
    float_report = run.report(0, "float", "float", model, time.perf_counter(), status="input")
    float_accuracy = float_report.accuracy
    reports, accepted = [float_report], [(float_report, model)]
    history: list = []  # accepted stages (configs) since the model last changed identity
    current = model
    for i, stage in enumerate(config.stages, start=1):
        say(f"stage {i}/{len(config.stages)}: {stage.label}")
        clock = time.perf_counter()
        training.set_seed(seed + i)
        produced, details, structure = run.stage(i, stage, current, model, history)
        report = run.report(i, stage.kind, stage.label, produced, clock, details=details,
                            structure=structure)
        limit, whose = _limit(stage, config)
        lost = float_accuracy - report.accuracy
        if limit is not None and lost > limit + 1e-9:
            report.status = "rolled back"
            report.reason = (f"stage {i} ({stage.label}) lost {lost:.2f} points against the float "
                             f"model ({float_accuracy:.2f}% -> {report.accuracy:.2f}%), over the "
                             f"{whose} budget of {limit:g} points")
            reports.append(report)
            if config.budget.on_exceed == "fail":
                raise GateFailed(f"{config.source}: {report.reason}; stopped (budget.on_exceed: "
                                 "fail), nothing was written")
            run.warnings.append(report.reason + "; rolled back, the next stage starts from its "
                                "input")
            continue
        report.status = "accepted"
        reports.append(report)
        accepted.append((report, produced))
        current = produced
        history = _history_after(history, stage)

    final_report, final_model = accepted[-1]
    overall = config.budget.max_accuracy_drop
    if overall is not None and float_accuracy - final_report.accuracy > overall + 1e-9:
        # A stage with a looser bound of its own was kept, and no later stage won it back.
        within = [(r, m) for r, m in accepted if float_accuracy - r.accuracy <= overall + 1e-9]
        fallback_report, final_model = within[-1]
        run.warnings.append(
            f"the last accepted model (stage {final_report.index}, {final_report.label}) is "
            f"{float_accuracy - final_report.accuracy:.2f} points below the float model, over "
            f"the overall budget of {overall:g}; using stage {fallback_report.index} "
            f"({fallback_report.label}) instead")
        final_report = fallback_report
    return PipelineResult(loaded=loaded.with_model(final_model), config=config,
                          float_accuracy=float_accuracy, stages=reports,
                          final_index=final_report.index, warnings=run.warnings, rebuild=rebuild)


class _Run:
    """What every stage of one run shares: data, task, seed, and how a stage is measured."""

    def __init__(self, loaded, config, train, evaluation, calibration, task, seed, say):
        self.loaded, self.config, self.train, self.evaluation = loaded, config, train, evaluation
        self.calibration, self.task, self.seed, self.say = calibration, task, seed, say
        self.warnings: list[str] = []
        self.float_accuracy: float | None = None  # set by the first report (stage 0)

    def where(self, index: int, stage) -> str:
        if self.config.source == "flags":
            return f"--{stage.kind}"
        return f"{self.config.source}: stages[{index - 1}].{stage.kind}"

    def stage(self, index, stage, current, float_model, history):
        """Run one stage on `current`; returns (model, details dict, N:M structure or None)."""
        from tflc.optimize import cluster, distill, prune, qat

        what = self.where(index, stage)
        seed = self.seed + index
        structure = _last_structure(history)
        if stage.kind == "prune":
            auto = self._auto_sparsities(stage, current, what) if stage.auto else None
            model, info = prune.prune(current, stage, self.train, self.task, seed, what,
                                      auto_sparsities=auto[0] if auto else None)
            details = info.to_dict()
            if auto:
                details["auto"] = {"target_sparsity": stage.target_sparsity,
                                   "planned_sparsity": round(auto[1], 4)}
            self.warnings.extend(f"stage {index} ({stage.label}): {w}" for w in info.warnings)
            return model, details, stage.structure or structure
        if stage.kind == "cluster":
            model, info = cluster.cluster(current, stage, self.train, self.task, seed,
                                          preserve_sparsity="prune" in _kinds(history), what=what)
            return model, info.to_dict(), structure
        if stage.kind == "qat":
            model, info = qat.quantize_aware(current, stage, self.train, self.task, seed,
                                             after_prune="prune" in _kinds(history),
                                             after_cluster="cluster" in _kinds(history), what=what)
            if info.left_in_float:
                self.warnings.append(f"stage {index} (qat): layers {', '.join(info.left_in_float)} "
                                     "were trained in float (TF-MOT cannot quantize them); the "
                                     "int8 conversion quantizes them from calibration data")
            return model, info.to_dict(), structure
        teacher, teacher_name = float_model, "the input float model"
        if stage.teacher:
            teacher, teacher_name = self._keras_file(stage.teacher, f"{what}.teacher"), stage.teacher
        student, student_name = current, "the previous stage's model"
        if stage.student:
            student, student_name = self._keras_file(stage.student, f"{what}.student"), stage.student
        elif history:
            self.warnings.append(f"stage {index} (distill): distilling into the model as "
                                 f"{', '.join(_kinds(history))} left it retrains every weight; its zeros "
                                 "and clusters are not kept (put distill first)")
        model, info = distill.distill(teacher, student, stage, self.train, seed, teacher_name,
                                      student_name)
        return model, info.to_dict(), None

    def _auto_sparsities(self, stage, current, what):
        from tflc.optimize import sensitivity
        from tflc.optimize.layers import select_layers
        from tflc.optimize.prune import prunable

        candidates = select_layers(current, stage.layers, prunable, what,
                                   spare_types=("DepthwiseConv2D",))
        self.say(f"{what}: sensitivity analysis for sparsity: auto")
        result = sensitivity.analyze(current, self.evaluation.x, self.evaluation.y, self.task,
                                     sensitivity.AUTO_SPARSITIES, quantize=False,
                                     layers=set(candidates), progress="sensitivity")
        limit, _ = _limit(stage, self.config)
        return sensitivity.choose_sparsities(result, candidates, stage.target_sparsity, limit)

    def _keras_file(self, path: str, what: str):
        from tflc.load.models import load_model

        loaded = load_model(path)
        model, _ = tf_keras_model(loaded, None, what)
        return model

    def report(self, index, kind, label, model, clock, status="", details=None,
               structure=None) -> StageReport:
        from tflc.optimize.measure import measure
        from tflc.optimize.training import accuracy

        accuracy_now = accuracy(model, self.evaluation.x, self.evaluation.y, self.task)
        measured, _ = measure(self.loaded.with_model(model), self.calibration, self.evaluation.x,
                              self.evaluation.y, self.task, structure)
        float_accuracy = accuracy_now if index == 0 else self.float_accuracy
        if index == 0:
            self.float_accuracy = accuracy_now
        return StageReport(
            index=index, stage=kind, label=label, status=status, accuracy=accuracy_now,
            accuracy_change=round(accuracy_now - float_accuracy, 4),
            int8_accuracy=measured.int8_accuracy, tflite_bytes=measured.tflite_bytes,
            gzip_bytes=measured.gzip_bytes, sparsity=round(measured.sparsity, 4),
            seconds=round(time.perf_counter() - clock, 2), details=details or {},
            layers=[w.to_dict() for w in measured.layers])


def _limit(stage, config) -> tuple[float | None, str]:
    if stage.max_accuracy_drop is not None:
        return stage.max_accuracy_drop, "stage's"
    return config.budget.max_accuracy_drop, "overall"


def _history_after(history: list, stage) -> list:
    """The accepted stages (their configs) that shaped the current weights; a new student
    starts afresh."""
    return [] if stage.kind == "distill" else [*history, stage]


def _kinds(history: list) -> list[str]:
    return [stage.kind for stage in history]


def _last_structure(history: list):
    """The N:M structure of the latest structured prune, which later stages must keep."""
    return next((s.structure for s in reversed(history) if s.kind == "prune" and s.structure), None)
