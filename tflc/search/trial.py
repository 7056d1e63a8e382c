"""One candidate, start to end, in whichever process runs it (a local worker or a Ray task).

`run_trial(TrialTask) -> TrialOutcome`: rebuild the candidate from its Keras configuration,
resize the data if its input resolution changed, then **constraints first**: convert the
untrained candidate to int8 (a few calibration samples) and read its arena (TFLite Micro's static
planner), flash and op coverage (`tflc check`) and its latency (`tflc profile`'s estimate, or a
measurement); a candidate over a budget is returned `infeasible` before any training. Otherwise
it is trained from scratch on one thread, compressed and compiled by `compile_model` (the same
stages as `tflc compile --prune/--cluster/--qat`), and measured again on the final int8 file.

Everything the driver needs comes back in the outcome (the .tflite bytes and the compile report
included), so a Ray worker on another machine needs no shared folder. A failure is an outcome
too (`failed`, with its error): the search goes on.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

STATUSES = ("complete", "infeasible", "failed")


@dataclass
class TrialTask:
    number: int
    params: dict
    config: dict  # the candidate's Keras configuration
    flavor: str  # "tf_keras" | "keras3"
    data: dict  # x_train, y_train, x_eval, y_eval, x_calib: numpy arrays
    target: str
    budgets: dict  # max_arena, max_flash, max_latency_ms (None: only the target's own)
    resize_hw: tuple | None = None
    epochs: int = 10
    fine_tune_epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 0.005
    seed: int = 0
    device: str | None = None  # measure latency there; None: the profile's estimate/measurement
    seed_accuracy: float | None = None  # the seed's int8 accuracy, for max_accuracy_drop
    max_accuracy_drop: float | None = None
    # where the worker notes its phase and epochs for the driver's bar (a file in the trial's
    # folder); written only when that folder exists here (not on a remote Ray node)
    progress_path: str | None = None


@dataclass
class TrialOutcome:
    number: int
    params: dict
    status: str  # complete | infeasible | failed
    error: str | None = None
    accuracy: float | None = None  # int8, percent
    float_accuracy: float | None = None
    macs: int | None = None
    arena_bytes: int | None = None
    flash_bytes: int | None = None
    latency_ms: float | None = None
    params_count: int | None = None
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)
    check: dict | None = None
    tflite: bytes | None = field(default=None, repr=False)
    report: dict | None = field(default=None, repr=False)
    worker: str = ""

    def metrics(self) -> dict:
        d = asdict(self)
        for key in ("tflite", "report", "check"):
            d.pop(key)
        return d


def configure_threads(threads: int = 1) -> None:
    """One training thread per trial (TensorFlow must not have started its runtime yet)."""
    from tflc.tf_env import import_tensorflow

    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised in this process (a reused Ray worker)
        pass


def run_trial(task: TrialTask) -> TrialOutcome:
    """Evaluate one candidate; never raises for a candidate's own failure."""
    started = time.perf_counter()
    outcome = TrialOutcome(task.number, task.params, "failed", worker=f"{os.uname().nodename}:"
                           f"{os.getpid()}")
    try:
        with tempfile.TemporaryDirectory(prefix="tflc-trial-") as tmp:
            _run(task, Path(tmp), outcome)
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, the search goes on
        from tflc.errors import TflcError

        outcome.status = "failed"
        text = exc.message if isinstance(exc, TflcError) else f"{type(exc).__name__}: {exc}"
        outcome.error = " ".join(str(text).split())[:500]
        if not isinstance(exc, TflcError):
            outcome.phases["traceback"] = traceback.format_exc()[-2000:]
    outcome.seconds = round(time.perf_counter() - started, 3)
    return outcome


class Progress:
    """The trial's phase and epochs, written as a small JSON file the driver polls. Best effort:
    a progress note that cannot be written never fails the trial.

    The note holds the latest state and the last RECENT steps, numbered: a driver that polls
    less often than a fast trial steps still prints every step (a log shows each epoch)."""

    RECENT = 32

    def __init__(self, path: str | None):
        self.path = Path(path) if path and Path(path).parent.is_dir() else None
        self.steps: list[dict] = []
        self.seq = 0

    def __call__(self, phase: str, done: int = 0, total: int = 0) -> None:
        if self.path is None:
            return
        from tflc.fileio import atomic_write_json

        self.seq += 1
        step = {"seq": self.seq, "phase": phase, "done": done, "total": total}
        self.steps = (self.steps + [step])[-self.RECENT:]
        try:
            atomic_write_json(self.path, {**step, "recent": self.steps})
        except OSError:
            self.path = None


_STAGE_LINE = re.compile(r"^stage (\d+)/(\d+): (.+)$")


def _stage_progress(progress):
    """compile's log lines turned into the trial's phase: a compression stage being fine-tuned
    ("stage 2/3: prune 2:4") shows as that stage, with how many of the stages have begun."""
    def log(message: str) -> None:
        match = _STAGE_LINE.match(message)
        if match:
            progress(f"fine-tuning {match.group(3)}", int(match.group(1)), int(match.group(2)))
    return log


def _run(task: TrialTask, tmp: Path, outcome: TrialOutcome) -> None:
    from tflc.compiler import compile_model
    from tflc.options import CompileOptions

    progress = Progress(task.progress_path)
    progress("building", 0, task.epochs)
    clock = time.perf_counter()
    configure_threads(1)
    keras = _keras(task.flavor)
    model = _build(keras, task.config)
    outcome.params_count = int(model.count_params())
    data = _resized(task.data, task.resize_hw)
    files = _write_data(tmp, data)
    candidate = tmp / "candidate.keras"
    model.save(candidate)
    outcome.phases["build_s"] = round(time.perf_counter() - clock, 3)

    # constraints first: the untrained candidate's int8 file has the final file's ops and arena
    clock = time.perf_counter()
    progress("checking", 0, task.epochs)
    precision = task.params.get("precision", "int8")
    pre = compile_model(candidate, tmp / "pre", CompileOptions(
        calibration_data=str(files["calib"]), calibration_samples=min(32, len(data["x_calib"])),
        activations=precision, target=task.target, seed=task.seed))
    reasons = _measure(pre.tflite_path, pre.check, task, outcome)
    outcome.phases["feasibility_s"] = round(time.perf_counter() - clock, 3)
    if reasons:
        outcome.status = "infeasible"
        outcome.error = "; ".join(reasons)
        return

    clock = time.perf_counter()
    progress("training", 0, task.epochs)
    _train(keras, model, data, task, progress)
    trained = tmp / "trained.keras"
    model.save(trained)
    outcome.phases["train_s"] = round(time.perf_counter() - clock, 3)

    clock = time.perf_counter()
    progress("compiling", task.epochs, task.epochs)
    sparsity = float(task.params.get("sparsity", 0) or 0)  # one for the model (a builder's knob)
    clusters = int(task.params.get("clusters", 0) or 0)
    qat = bool(task.params.get("qat", False))
    per_layer = _per_layer_sparsities(model, task.params)
    compress = bool(per_layer) or sparsity > 0 or clusters > 0 or qat
    if per_layer:  # the flags have one sparsity: a pipeline config names each layer's
        stages = {"pipeline": str(_pipeline_file(tmp, per_layer, clusters, qat, task))}
    else:
        stages = {"prune": sparsity if sparsity > 0 else None, "cluster": clusters or None,
                  "qat": qat, "epochs": task.fine_tune_epochs if compress else None}
    report = compile_model(trained, tmp / "out", CompileOptions(
        calibration_data=str(files["calib"]), eval_data=str(files["eval"]),
        train_data=str(files["train"]) if compress else None, activations=precision,
        target=task.target, seed=task.seed, **stages), log=_stage_progress(progress))
    outcome.phases["compile_s"] = round(time.perf_counter() - clock, 3)
    progress("checking", task.epochs, task.epochs)
    evaluation = report.evaluation or {}
    outcome.accuracy = _percent(evaluation, "int8")
    outcome.float_accuracy = _percent(evaluation, "float")
    reasons = _measure(report.tflite_path, report.check, task, outcome)
    if task.max_accuracy_drop is not None and task.seed_accuracy is not None and \
            outcome.accuracy is not None and \
            task.seed_accuracy - outcome.accuracy > task.max_accuracy_drop:
        reasons.append(f"int8 accuracy {outcome.accuracy:.2f}% is "
                       f"{task.seed_accuracy - outcome.accuracy:.2f} points below the seed's "
                       f"(--max-accuracy-drop {task.max_accuracy_drop:g})")
    outcome.tflite = report.tflite_path.read_bytes()
    outcome.report = report.to_dict()
    outcome.status = "infeasible" if reasons else "complete"
    outcome.error = "; ".join(reasons) or None


def _per_layer_sparsities(model, params: dict) -> dict[str, float]:
    """The candidate's `sparsity_<layer>` choices above 0, for layers TF-MOT can prune (a layer
    it cannot wrap stays dense rather than failing the trial)."""
    from tflc.search.space import layer_sparsities

    chosen = {name: value for name, value in layer_sparsities(params).items() if value > 0}
    if not chosen:
        return {}
    from tflc.optimize.prune import prunable

    layers = {layer.name: layer for layer in model.layers}
    return {name: value for name, value in chosen.items()
            if name in layers and prunable(layers[name])}


def _pipeline_file(tmp: Path, sparsities: dict, clusters: int, qat: bool, task) -> Path:
    """The stages `--prune/--cluster/--qat` would run, in the same order, with a sparsity per
    layer (a JSON document is a YAML one)."""
    from tflc.fileio import atomic_write_json

    epochs = task.fine_tune_epochs
    stages: list[dict] = [{"prune": {"sparsities": sparsities, "epochs": epochs}}]
    if clusters:
        stages.append({"cluster": {"clusters": clusters, "epochs": epochs}})
    if qat:
        stages.append({"qat": {"epochs": epochs}})
    return atomic_write_json(tmp / "stages.yaml", {"stages": stages, "seed": task.seed})


def _percent(evaluation: dict, which: str):
    value = evaluation.get(f"{which}_accuracy")
    return None if value is None else round(float(value), 4)


def _measure(tflite: Path, check: dict | None, task: TrialTask, outcome: TrialOutcome) -> list[str]:
    """Fill MACs, arena, flash, latency from the file; the budgets it misses, one line each."""
    from tflc.profile.core import ProfileOptions, profile

    summary = (check or {}).get("summary", {})
    memory = summary.get("memory", {})
    outcome.check = {"runs": summary.get("runs"), "coverage": summary.get("coverage"),
                     "ops_total": summary.get("ops_total"),
                     "ops_on_target": summary.get("ops_on_target"),
                     "within_budget": summary.get("within_budget"),
                     "budgets": memory.get("budgets", [])}
    result = profile(ProfileOptions(str(tflite), task.target, device=task.device, runs=20))
    outcome.macs = int(result.total.macs)
    outcome.arena_bytes = memory.get("arena_bytes") or result.total.peak_arena_bytes
    outcome.flash_bytes = tflite.stat().st_size
    outcome.latency_ms = result.total.latency_ms
    reasons = []
    if summary.get("ops_total") != summary.get("ops_on_target"):
        missing = summary.get("ops_total", 0) - summary.get("ops_on_target", 0)
        reasons.append(f"{missing} op(s) not on {task.target} (full op coverage required)")
    for line in memory.get("budgets", []):
        if not line.get("ok", True):
            reasons.append(f"{line['name']} {line['needed_bytes']:,} B over {task.target}'s "
                           f"{line['budget_bytes']:,} B")
    b = task.budgets
    if b.get("max_arena") is not None and (outcome.arena_bytes or 0) > b["max_arena"]:
        reasons.append(f"arena {outcome.arena_bytes:,} B over --max-arena {b['max_arena']:,} B")
    if b.get("max_flash") is not None and outcome.flash_bytes > b["max_flash"]:
        reasons.append(f"model {outcome.flash_bytes:,} B over --max-flash {b['max_flash']:,} B")
    if b.get("max_latency_ms") is not None and outcome.latency_ms is not None and \
            outcome.latency_ms > b["max_latency_ms"]:
        reasons.append(f"latency {outcome.latency_ms:.4g} ms over --max-latency-ms "
                       f"{b['max_latency_ms']:g}")
    return reasons


def _keras(flavor: str):
    from tflc.tf_env import import_keras3, import_tf_keras

    return import_keras3() if flavor == "keras3" else import_tf_keras()


def _build(keras, config: dict):
    from tflc.search.space import is_sequential

    cls = keras.Sequential if is_sequential(config) else keras.Model
    return cls.from_config(json.loads(json.dumps(config)))


def _resized(data: dict, hw) -> dict:
    if not hw:
        return data
    from tflc.tf_env import import_tensorflow

    tf = import_tensorflow()
    out = dict(data)
    for key in ("x_train", "x_eval", "x_calib"):
        out[key] = tf.image.resize(data[key], hw, antialias=True).numpy().astype(np.float32)
    return out


def _write_data(tmp: Path, data: dict) -> dict[str, Path]:
    from tflc.fileio import atomic_write_bytes

    def save(name, **arrays):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return atomic_write_bytes(tmp / name, buffer.getvalue())

    return {"train": save("train.npz", x=data["x_train"], y=data["y_train"]),
            "eval": save("eval.npz", x=data["x_eval"], y=data["y_eval"]),
            "calib": save("calib.npz", x=data["x_calib"])}


def _train(keras, model, data: dict, task: TrialTask, progress=None) -> None:
    """Train the candidate from scratch: the loss matches its output (probabilities or logits)."""
    keras.utils.set_random_seed(task.seed)
    layer = model.outputs[0]._keras_history[0]
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    probabilities = activation in ("softmax", "sigmoid") or type(layer).__name__ == "Softmax"
    classes = int(model.outputs[0].shape[-1])
    if classes == 1:
        loss = keras.losses.BinaryCrossentropy(from_logits=not probabilities)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)
    model.compile(optimizer=keras.optimizers.Adam(task.learning_rate), loss=loss)
    callbacks = []
    if progress is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: progress("training", epoch + 1, task.epochs)))
    model.fit(data["x_train"], data["y_train"], epochs=task.epochs, batch_size=task.batch_size,
              shuffle=True, verbose=0, callbacks=callbacks)
