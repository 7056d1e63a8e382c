"""`search()`: architecture and compression candidates under the target's budgets -> Pareto front.

    search(SearchOptions(model, target, train_data, eval_data, out_dir, trials=8, workers=2))
        -> SearchResult (.trials, .pareto, .recommended, .seed, .to_dict())

The driver (this process) owns the Optuna study: it asks for a candidate (the automatic space of
`space.py`, or the user's builder), hands the candidate to an executor (local worker processes
or Ray tasks), and tells the study what came back. The study lives in the run registry's folder
(`.tflc/search/NAME.journal`, Optuna's journal file storage), so the same command after Ctrl-C or
a crash resumes it: finished trials are kept and never re-run; trials that were running are
marked failed and their candidates asked again. Each trial is an artifact (`tflc runs list
--kind search`) and `DIR/search.json` is rewritten after every trial, so an interrupted search
leaves every finished result on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tflc.errors import BadInput

OBJECTIVES = ("accuracy", "latency_ms", "arena_bytes")  # maximise, minimise, minimise
FIELDS = ("number", "params", "status", "accuracy", "macs", "arena_bytes", "flash_bytes",
          "latency_ms", "model")
MAX_TRIALS = 100_000
MAX_WORKERS = 256


@dataclass(frozen=True)
class SearchOptions:
    model: str
    target: str
    train_data: str
    eval_data: str
    out_dir: str
    calibration_data: str | None = None
    trials: int = 20
    workers: int = 1
    ray: str | None = None
    max_arena: int | None = None
    max_flash: int | None = None
    max_latency_ms: float | None = None
    max_accuracy_drop: float | None = None
    device: str | None = None
    builder: str | None = None
    compression: bool = True
    # () : int8 and int16, and mixed where the target's descriptor allows it (default_precisions)
    precisions: tuple[str, ...] = ()
    epochs: int = 10
    fine_tune_epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 0.005
    seed: int = 0
    study_name: str | None = None
    normalize: str = "unit"
    custom_objects: tuple[str, ...] = ()
    allow_unsafe_code: bool = False

    def __post_init__(self):
        for name in ("model", "train_data", "eval_data", "calibration_data"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))
                if ":" not in os.fspath(value) or Path(value).exists():
                    if not Path(value).exists():
                        flag = "MODEL" if name == "model" else _flag(name)
                        raise BadInput(f"{flag} {value}: no such file or folder")
        object.__setattr__(self, "out_dir", os.fspath(self.out_dir))
        _whole("trials", self.trials, 1, MAX_TRIALS)
        _whole("workers", self.workers, 1, MAX_WORKERS)
        _whole("epochs", self.epochs, 1, 10_000)
        _whole("fine_tune_epochs", self.fine_tune_epochs, 1, 10_000)
        _whole("batch_size", self.batch_size, 1, 1 << 20)
        _whole("seed", self.seed, 0, 2**32 - 1)
        if self.ray is not None and self.workers != 1:
            raise BadInput("--workers and --ray: choose one (--ray runs trials on the cluster's "
                           "CPUs)")
        for name in ("max_arena", "max_flash"):
            if getattr(self, name) is not None:
                _whole(name, getattr(self, name), 1, 1 << 50)
        for name, low in (("max_latency_ms", 0.0), ("max_accuracy_drop", -100.0),
                          ("learning_rate", 0.0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= low
                                      or value > 1e9):
                raise BadInput(f"{_flag(name)} {value!r}: expected a finite number above {low:g}")
        if self.builder is not None and (":" not in self.builder or
                                         not all(self.builder.split(":", 1))):
            raise BadInput(f"--builder {self.builder}: expected module:function (or file.py:function)")
        from tflc.search.space import PRECISIONS

        for p in self.precisions:
            if p not in PRECISIONS:
                raise BadInput(f"--precision {p}: expected one of {', '.join(PRECISIONS)}")


@dataclass
class SearchResult:
    study: dict
    seed: dict
    space: list[str]
    trials: list[dict]
    pareto: list[dict]
    recommended: dict | None
    executor: str
    evaluated_this_run: list[int] = field(default_factory=list)
    trials_wall_s: float = 0.0  # wall time of this run's trials (first submit to last result)
    out_dir: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _whole(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadInput(f"{_flag(name)} {value!r}: expected a whole number from {low} to {high:,}")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise BadInput("tflc search needs Optuna, which is not installed: pip install "
                       "'tflc[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --------------------------------------------------------------------------- the entry


def default_precisions(spec) -> tuple[str, ...]:
    """What candidates may take when `--precision` is not given: int8 and 16x8, and mixed
    (16x8 only where it pays) on a target whose descriptor allows int8 and int16 layers in one
    model."""
    return ("int8", "int16") + (("mixed",) if spec.mixed_precision else ())


def search(options: SearchOptions, log=None, on_trial=None) -> SearchResult:
    """Run (or resume) a search; see the module docstring. `on_trial(outcome, metrics,
    model_path, options)` is called for each finished trial with a model (`tflc.api.search`
    records it there) and may return an artifact id. Nothing is recorded here."""
    from tflc.check import load_target
    from tflc.fileio import ensure_writable_dir

    say = log or (lambda message: None)
    started = time.perf_counter()
    o = options
    spec = load_target(o.target)  # an unknown target costs nothing
    if not o.precisions:
        o = replace(o, precisions=default_precisions(spec))
    if "mixed" in o.precisions:  # a target that cannot run it: one line now
        from tflc.convert.mixed import check_target

        check_target(spec)
    optuna = _optuna()
    if o.ray:
        from tflc.search.executors import probe_address

        probe_address(o.ray)  # a cluster nobody runs: one line now, not after the seed's compile
    out = ensure_writable_dir(o.out_dir)
    seed_model, data, flavor = _load(o)
    from tflc.search import space as sp

    if o.builder:
        builder, auto_space = _builder(o.builder), None
        space_lines = [f"builder {o.builder}"]
    else:
        builder = None
        auto_space = sp.analyze(seed_model.model.get_config(), *_layer_shapes(seed_model.model))
        space_lines = auto_space.describe()
    name = o.study_name or _study_name(o, seed_model, data, space_lines)
    journal = _study_path(out, name)
    with _study_lock(journal):
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal)))
        sampler = optuna.samplers.TPESampler(seed=o.seed, constant_liar=True,
                                             n_startup_trials=max(4, min(10, o.trials // 2)))
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    directions=["maximize", "minimize", "minimize"],
                                    load_if_exists=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental in Optuna 5; the names are ours
            study.set_metric_names(list(OBJECTIVES))
        _retry_interrupted(study, optuna)
        if auto_space is not None and not study.get_trials(deepcopy=False):
            study.enqueue_trial(_warm_start(auto_space, o, seed_model.model.get_config()))
        seed_info = study.user_attrs.get("seed")
        if seed_info is None:
            say("compiling the seed model (the reference for accuracy and MACs)")
            seed_info = _seed_baseline(o, seed_model, out / "seed", data["x_calib"])
            study.set_user_attr("seed", seed_info)
        say(f"seed: int8 accuracy {_pct(seed_info.get('accuracy'))}, "
            f"{seed_info.get('macs') or 0:,} MACs, arena {seed_info.get('arena_bytes')} B")
        say("space: " + "; ".join(space_lines))
        clock = time.perf_counter()
        evaluated, executor_name = _run_trials(o, study, optuna, auto_space, builder,
                                               seed_model, flavor, data, seed_info, out, say,
                                               on_trial)
        trials = _trial_rows(study, optuna, out)
        pareto = pareto_front(trials)
        recommended = _recommend(pareto, seed_info, o)
        study_info = {"name": name, "storage": str(journal), "directions":
                      ["maximize", "minimize", "minimize"], "objectives": list(OBJECTIVES)}
        result = SearchResult(study_info, seed_info, space_lines, trials, pareto, None,
                              executor_name, evaluated_this_run=evaluated, out_dir=str(out),
                              trials_wall_s=round(time.perf_counter() - clock, 3))
        if recommended is not None:
            result.recommended = _publish_recommended(recommended, out, spec, say)
        result.seconds = round(time.perf_counter() - started, 3)
        write_outputs(result, out)
        return result


# --------------------------------------------------------------------------- loading


def _load(o: SearchOptions):
    from tflc.load import data as data_io
    from tflc.load.models import load_model

    loaded = load_model(o.model, o.custom_objects, o.allow_unsafe_code, {})
    if not loaded.is_keras:
        raise BadInput(f"{o.model}: a SavedModel folder has no Keras configuration to search; "
                       "pass the Keras file (.keras or .h5)")
    if len(loaded.inputs) != 1 or len(loaded.outputs) != 1:
        raise BadInput(f"{o.model}: tflc search trains single-input, single-output classifiers "
                       f"(this model has {len(loaded.inputs)} inputs and {len(loaded.outputs)} "
                       "outputs); use --builder for others")
    classes = data_io.output_classes(loaded.outputs)
    train = data_io.load_labelled(o.train_data, loaded.inputs, classes, role="--train-data",
                                  normalize=o.normalize)
    evaluation = data_io.load_labelled(o.eval_data, loaded.inputs, classes, role="--eval-data",
                                       normalize=o.normalize)
    for role, samples in (("--train-data", train), ("--eval-data", evaluation)):
        if not samples.in_memory:
            raise BadInput(f"{role} {samples.source}: tflc search needs the data in memory "
                           "(.npz or an image folder), not a tf.data pipeline")
    if o.calibration_data:
        calib = data_io.load_calibration(o.calibration_data, loaded.inputs, 200, o.seed,
                                         o.normalize).x[0]
    else:
        calib = train.x[0][:200]
    data = {"x_train": train.x[0], "y_train": train.y, "x_eval": evaluation.x[0],
            "y_eval": evaluation.y, "x_calib": calib,
            "sha256": {"train": train.sha256, "eval": evaluation.sha256}}
    return loaded, data, loaded.format


def _layer_shapes(model):
    out, ins = {}, {}
    for layer in model.layers:
        with contextlib.suppress(Exception):
            out[layer.name] = tuple(layer.output.shape)
        with contextlib.suppress(Exception):
            tensor = layer.input
            if not isinstance(tensor, (list, tuple)):
                ins[layer.name] = tuple(tensor.shape)
    return out, ins


def _builder(text: str):
    import importlib
    import importlib.util

    module_name, attr = text.rsplit(":", 1)
    try:
        if module_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location("tflc_user_builder", module_name)
            if spec is None or not Path(module_name).exists():
                raise ImportError(module_name)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        function = getattr(module, attr)
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise BadInput(f"--builder {text}: cannot import it ({type(exc).__name__}: {exc})") from None
    if not callable(function):
        raise BadInput(f"--builder {text}: {attr} is not a function")
    return function


def _study_name(o: SearchOptions, loaded, data, space_lines) -> str:
    """Same model, data, target and search settings: the same study (so it resumes)."""
    key = {"model": loaded.sha256, "data": data["sha256"], "target": o.target,
           # the compression space's shape, not only whether it is searched: a study made when
           # sparsity was one value for the whole model is not resumed with per-layer params
           "space": space_lines, "compression": "per-layer sparsity" if o.compression else False,
           "precisions": list(o.precisions),
           "epochs": [o.epochs, o.fine_tune_epochs, o.batch_size, o.learning_rate],
           "budgets": [o.max_arena, o.max_flash, o.max_latency_ms, o.max_accuracy_drop],
           "seed": o.seed, "device": o.device, "builder": o.builder}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"{Path(o.model).stem}-{o.target}-{digest}"


def _study_path(out: Path, name: str) -> Path:
    from tflc.store import registry_root
    from tflc.store.recording import NO_RECORD_ENV

    if os.environ.get(NO_RECORD_ENV, "") not in ("", "0"):
        folder = out / ".study"
    else:
        folder = registry_root() / "search"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"{folder}: the search study cannot be stored there "
                       f"({exc.strerror or exc}); use tflc --registry PATH") from None
    return folder / f"{name}.journal"


@contextlib.contextmanager
def _study_lock(journal: Path):
    import fcntl

    with open(journal.with_suffix(".lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BadInput(f"{journal}: another tflc search is running this study; wait for it "
                           "or pass --study-name NAME") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _warm_start(space, o: SearchOptions, seed_config: dict) -> dict:
    """A fresh study's first candidate: the seed's own architecture at half width everywhere, in
    int8 without compression (MCUNet-style scaling of the seed: a point every model has)."""
    params = {k: (0.5 if k.startswith("width_") else v) for k, v in space.identity.items()}
    if o.compression:
        from tflc.search import space as sp

        params.update({f"{sp.SPARSITY_PREFIX}{name}": 0.0
                       for name in sp.prunable_layers(seed_config)})
        params.update({"clusters": 0, "qat": False})
    if "int8" in o.precisions and len(o.precisions) > 1:
        params["precision"] = "int8"
    return params


def _retry_interrupted(study, optuna) -> None:
    """Trials left RUNNING by a killed driver: failed, and their candidates asked again."""
    state = optuna.trial.TrialState
    for trial in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(trial._trial_id, state.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, skip_if_exists=False)


def _seed_baseline(o: SearchOptions, loaded, out: Path, calib_x) -> dict:
    """The user's model compiled as it is: the accuracy and MACs every candidate is held to."""
    import io

    import numpy as np

    from tflc.compiler import compile_model
    from tflc.fileio import atomic_write_bytes
    from tflc.options import CompileOptions
    from tflc.profile.core import ProfileOptions, profile

    calib = o.calibration_data
    if calib is None:
        buffer = io.BytesIO()
        np.savez(buffer, x=calib_x)
        out.parent.mkdir(parents=True, exist_ok=True)
        calib = str(atomic_write_bytes(out.parent / "seed-calibration.npz", buffer.getvalue()))
    report = compile_model(o.model, out, CompileOptions(
        calibration_data=calib, eval_data=o.eval_data, target=o.target, seed=o.seed,
        normalize=o.normalize, custom_objects=o.custom_objects,
        allow_unsafe_code=o.allow_unsafe_code))
    prof = profile(ProfileOptions(str(report.tflite_path), o.target, device=o.device, runs=20))
    memory = (report.check or {}).get("summary", {}).get("memory", {})
    evaluation = report.evaluation or {}
    return {"model": str(report.tflite_path), "accuracy": evaluation.get("int8_accuracy"),
            "float_accuracy": evaluation.get("float_accuracy"), "macs": int(prof.total.macs),
            "arena_bytes": memory.get("arena_bytes") or prof.total.peak_arena_bytes,
            "flash_bytes": report.tflite_path.stat().st_size,
            "latency_ms": prof.total.latency_ms, "params_count": loaded.param_count}


# --------------------------------------------------------------------------- the loop


class _HParams:
    """What a builder receives: named choices, backed by the Optuna trial."""

    def __init__(self, trial):
        self._trial = trial

    def choice(self, name, options):
        return self._trial.suggest_categorical(name, list(options))

    def int(self, name, low, high, step=1):
        return self._trial.suggest_int(name, low, high, step=step)

    def float(self, name, low, high, log=False):
        return self._trial.suggest_float(name, low, high, log=log)


def _candidate(o, trial, auto_space, builder, seed_model, flavor):
    """(params, config, flavor, resize_hw) for one asked trial."""
    from tflc.search import space as sp

    if builder is not None:
        model = builder(_HParams(trial))
        flavor = "keras3" if type(model).__module__.startswith("keras.") else "tf_keras"
        config, hw = json.loads(json.dumps(model.get_config())), None
        params = dict(trial.params)
    else:
        params = auto_space.suggest(trial)
        config = sp.apply(seed_model.model.get_config(), auto_space, params)
        factor = params.get("resolution")
        hw = auto_space.scaled_hw(factor) if factor not in (None, 1.0) else None
    if o.compression:
        params.update(sp.suggest_compression(trial, o.precisions, sp.prunable_layers(config)))
    elif len(o.precisions) > 1:
        params["precision"] = trial.suggest_categorical("precision", list(o.precisions))
    else:
        params["precision"] = o.precisions[0]
    return params, config, flavor, hw


def _run_trials(o, study, optuna, auto_space, builder, seed_model, flavor, data, seed_info, out,
                say, on_trial):
    from tqdm import tqdm

    from tflc.search.executors import make_executor
    from tflc.search.progress import TrialProgress
    from tflc.search.trial import TrialTask

    state = optuna.trial.TrialState
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    remaining = max(0, o.trials - len(done))
    if done:
        say(f"resuming study: {len(done)} trial(s) finished before, {remaining} to go")
    evaluated: list[int] = []
    if remaining == 0:
        return evaluated, "none (all trials finished)"
    executor = make_executor(o.workers, o.ray)
    say(f"running {remaining} trial(s) on {executor.name}")
    payload = {k: v for k, v in data.items() if k != "sha256"}
    running: dict = {}  # handle -> (optuna trial, started)
    asked = 0
    bar = tqdm(total=remaining, desc="search", unit="trial", disable=None, dynamic_ncols=True,
               file=sys.stderr)
    trial_bars = TrialProgress(out)
    stop = _InterruptFlag()
    try:
        while asked < remaining or running:
            stop.check()
            while not stop.raised and asked < remaining and len(running) < executor.slots:
                trial = study.ask()
                asked += 1
                try:
                    params, config, cand_flavor, hw = _candidate(o, trial, auto_space, builder,
                                                                 seed_model, flavor)
                except Exception as exc:  # noqa: BLE001 - a builder that fails: a failed trial
                    _tell_failed(study, trial, state, f"building the candidate: "
                                 f"{type(exc).__name__}: {exc}")
                    bar.update(1)
                    continue
                task = TrialTask(trial.number, params, config, cand_flavor, payload, o.target,
                                 {"max_arena": o.max_arena, "max_flash": o.max_flash,
                                  "max_latency_ms": o.max_latency_ms}, hw, o.epochs,
                                 o.fine_tune_epochs, o.batch_size, o.learning_rate, o.seed,
                                 o.device, seed_info.get("accuracy"), o.max_accuracy_drop,
                                 trial_bars.start(trial.number))
                running[executor.submit(task)] = (trial, time.perf_counter())
            finished, _ = executor.wait_any(list(running), timeout=2.0)
            trial_bars.poll()
            now = time.perf_counter()  # each running trial and how long it has been going
            bar.set_postfix_str(", ".join(f"#{t.number} {now - since:.0f}s"
                                          for t, since in running.values()), refresh=True)
            for handle, outcome in finished:
                trial, _started = running.pop(handle)
                trial_bars.finish(trial.number)
                _tell(study, trial, outcome, state, out, o, on_trial)
                evaluated.append(trial.number)
                bar.update(1)
                bar.write(_trial_line(trial.number, outcome), file=sys.stderr)
                _write_partial(study, optuna, out, interrupted=False)
    except BaseException:
        executor.close(kill=True, handles=list(running))
        for trial, _ in running.values():  # asked again on resume
            with contextlib.suppress(Exception):
                study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
                study.tell(trial, state=state.FAIL)
                study.enqueue_trial(trial.params, skip_if_exists=False)
        trial_bars.close()
        bar.close()
        with contextlib.suppress(Exception):
            _write_partial(study, optuna, out)
        raise
    finally:
        stop.restore()
    trial_bars.close()
    bar.close()
    executor.close()
    return evaluated, executor.name


class _InterruptFlag:
    """Ctrl-C (SIGINT) noted, acted on between trials: a trial that came back is always told to
    the study and written before the search stops, never lost half-recorded."""

    def __init__(self):
        import signal
        import threading

        self.raised = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._note)

    def _note(self, signum, frame):
        self.raised = True

    def check(self):
        if self.raised:
            raise KeyboardInterrupt

    def restore(self):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _tell_failed(study, trial, state, error: str) -> None:
    trial.set_user_attr("status", "failed")
    trial.set_user_attr("error", " ".join(error.split())[:500])
    study.tell(trial, state=state.FAIL)


def _tell(study, trial, outcome, state, out: Path, o, on_trial) -> None:
    if isinstance(outcome, BaseException):
        _tell_failed(study, trial, state, f"the worker died: {type(outcome).__name__}: {outcome}")
        return
    metrics = outcome.metrics()
    model_path = None
    if outcome.tflite is not None:
        model_path = _write_trial(out, outcome, metrics)
        metrics["model"] = str(model_path)
        if on_trial is not None:
            metrics["artifact_id"] = on_trial(outcome, metrics, model_path, o)
    for key, value in metrics.items():
        trial.set_user_attr(key, value)
    if outcome.status == "complete":
        latency = outcome.latency_ms if outcome.latency_ms is not None else float(outcome.macs)
        study.tell(trial, [float(outcome.accuracy or 0.0), float(latency),
                           float(outcome.arena_bytes or 0)])
    elif outcome.status == "infeasible":
        study.tell(trial, state=state.PRUNED)
    else:
        study.tell(trial, state=state.FAIL)


def _trial_line(number: int, outcome) -> str:
    if isinstance(outcome, BaseException):
        return f"trial {number}: failed: the worker died ({type(outcome).__name__})"
    head = f"trial {number}: {outcome.status}"
    if outcome.status == "complete":
        return (f"{head}: int8 {_pct(outcome.accuracy)}, {outcome.macs:,} MACs, arena "
                f"{outcome.arena_bytes:,} B, {_ms(outcome.latency_ms)} ({outcome.seconds:.0f} s)")
    return f"{head}: {outcome.error} ({outcome.seconds:.0f} s)"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.4g} ms"


def _write_trial(out: Path, outcome, metrics) -> Path:
    from tflc.fileio import atomic_write_bytes, atomic_write_json

    folder = out / "trials" / f"{outcome.number:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = atomic_write_bytes(folder / "model.tflite", outcome.tflite)
    if outcome.report is not None:
        atomic_write_json(folder / "report.json", outcome.report)
    atomic_write_json(folder / "trial.json", {**metrics, "model": str(path)})
    return path


def options_dict(o: SearchOptions) -> dict:
    d = asdict(o)
    d["precisions"] = list(o.precisions)
    d["custom_objects"] = list(o.custom_objects)
    return d


# --------------------------------------------------------------------------- results


def _trial_rows(study, optuna, out: Path) -> list[dict]:
    state = optuna.trial.TrialState
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("interrupted") or t.state == state.RUNNING:
            continue
        a = t.user_attrs
        status = a.get("status") or {state.COMPLETE: "complete", state.PRUNED: "infeasible"}.get(
            t.state, "failed")
        rows.append({"number": t.number, "params": dict(t.params), "status": status,
                     "accuracy": a.get("accuracy"), "macs": a.get("macs"),
                     "arena_bytes": a.get("arena_bytes"), "flash_bytes": a.get("flash_bytes"),
                     "latency_ms": a.get("latency_ms"), "model": a.get("model"),
                     "error": a.get("error"), "float_accuracy": a.get("float_accuracy"),
                     "seconds": a.get("seconds"), "artifact_id": a.get("artifact_id")})
    return rows


def _dominates(a: dict, b: dict) -> bool:
    """a is at least as good as b on every objective and better on one."""
    ka = (-a["accuracy"], _lat(a), a["arena_bytes"])
    kb = (-b["accuracy"], _lat(b), b["arena_bytes"])
    return all(x <= y for x, y in zip(ka, kb)) and ka != kb


def _lat(row: dict) -> float:
    return row["latency_ms"] if row.get("latency_ms") is not None else float(row.get("macs") or 0)


def pareto_front(trials: list[dict]) -> list[dict]:
    """The complete trials no other complete trial dominates (accuracy up; latency, arena down),
    by latency."""
    pool = [t for t in trials if t["status"] == "complete" and t.get("accuracy") is not None]
    front = [t for t in pool if not any(_dominates(o, t) for o in pool if o is not t)]
    unique = {}
    for t in front:  # identical points: keep the first
        unique.setdefault((t["accuracy"], _lat(t), t["arena_bytes"]), t)
    return sorted(unique.values(), key=lambda t: (_lat(t), -t["accuracy"]))


def _recommend(pareto: list[dict], seed_info: dict, o: SearchOptions) -> dict | None:
    """The fastest front point within the accuracy budget (default 1 point) of the seed's int8
    accuracy; without one, the most accurate point."""
    if not pareto:
        return None
    allowed = o.max_accuracy_drop if o.max_accuracy_drop is not None else 1.0
    reference = seed_info.get("accuracy")
    within = [t for t in pareto if reference is None or t["accuracy"] >= reference - allowed]
    if within:
        return min(within, key=lambda t: (_lat(t), t["macs"] or 0, -t["accuracy"]))
    return max(pareto, key=lambda t: t["accuracy"])


def _publish_recommended(row: dict, out: Path, spec, say) -> dict:
    """The recommended trial's compile (model.tflite, report.json) copied to DIR/recommended,
    replacing an earlier one whole."""
    folder = out / "recommended"
    tmp = out / ".recommended.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(Path(row["model"]).parent, tmp)
    old = out / ".recommended.old"
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    say(f"recommended: trial {row['number']} -> {folder / 'model.tflite'}")
    return {**row, "model": str(folder / "model.tflite"), "trial_model": row["model"],
            "export": None}


def _write_partial(study, optuna, out: Path, interrupted: bool = True) -> None:
    """search.json while the search runs (after every trial) or after it was interrupted."""
    from tflc.fileio import atomic_write_json

    trials = _trial_rows(study, optuna, out)
    atomic_write_json(out / "search.json", {"trials": [_public(t) for t in trials],
                                            "pareto": [_public(t) for t in pareto_front(trials)],
                                            "running": not interrupted,
                                            "interrupted": interrupted})


def _public(row: dict) -> dict:
    return {k: row.get(k) for k in FIELDS} | {k: row[k] for k in ("error",) if row.get(k)}


def write_outputs(result: SearchResult, out: Path) -> None:
    """search.json (the documented fields first), pareto.png, report.html."""
    from tflc.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
    from tflc.search.report import to_html, to_png

    data = {"trials": [_public(t) for t in result.trials],
            "pareto": [_public(t) for t in result.pareto],
            "recommended": result.recommended, "seed": result.seed, "study": result.study,
            "space": result.space, "executor": result.executor,
            "evaluated_this_run": result.evaluated_this_run, "seconds": result.seconds,
            "trials_wall_s": result.trials_wall_s}
    png = to_png(result)
    if png is not None:
        atomic_write_bytes(out / "pareto.png", png)
    atomic_write_text(out / "report.html", to_html(result, png))
    atomic_write_json(out / "search.json", data)


def pareto_table(result: SearchResult) -> str:
    from tflc.search.report import table

    return table(result)
