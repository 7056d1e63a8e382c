"""`tflc bench`: time models on the device they ship to and bring back one trustworthy record.

The pipeline of one call to `bench()`:

1. check the settings, the output path, the models and data files here (each model is read as
   a TFLite flatbuffer, the .npz files against the models' inputs and labels against their
   outputs), so mistakes fail fast, before anything is measured, with the user's own names;
2. build the runner's request (protocol 1, see `runner.py`);
3. push the runner, the models and the data to a private folder on the device and run it
   (`transports.py`); only connection failures are retried, each time from a clean start, and
   all attempts together keep to the time-out; device errors name the user's files;
4. turn every (model, trial) into a `BenchRecord`: latency statistics computed here
   (`stats.py`), device facts and conditions, peak memory, an output checksum, and where asked
   for, fidelity against this machine's LiteRT, input saturation and estimated energy;
5. pool each model's trials, with ratios to the first model (`summary.py`).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tflc.bench import runner as runner_module
from tflc.bench.stats import LatencyStats, summarize
from tflc.bench.summary import ModelSummary, fidelity, summarize_models
from tflc.bench.transports import (
    DeviceError,
    DeviceSpec,
    TransportError,
    Upload,
    cancelled,
    make_transport,
    parse_device,
    run_on_device,
)
from tflc.errors import BadInput
from tflc.fileio import atomic_write_json, sha256_file
from tflc.version import __version__

# Upper bounds far beyond any real benchmark and low enough that durations, timers and sample
# lists stay exact numbers in memory: (flag, limit, what the limit means).
LIMITS = {
    "runs": ("--runs", 10**7, "timed runs per model and trial"),
    "max_runs": ("--max-runs", 10**7, "timed runs per model and trial"),
    "warmup": ("--warmup", 10**6, "warm-up runs"),
    "repeat": ("--repeat", 1000, "trials"),
    "threads": ("--threads", 1024, "interpreter threads"),
    "min_duration_s": ("--min-duration", 86400.0, "seconds (a day) per model and trial"),
    "timeout_s": ("--timeout", 7 * 86400.0, "seconds (a week)"),
}


@dataclass
class BenchRecord:
    """One model in one trial on one device: what the store keeps next to the model."""

    model: str  # the path as given
    model_name: str
    model_sha256: str
    model_bytes: int
    trial: int
    device: str  # "local" or "ssh://user@host:port"
    device_facts: dict  # OS, arch, CPU, cores, board, Python, numpy (see runner.device_facts)
    runtime: dict  # {"name", "version"} of the interpreter on the device
    threads: int | None
    delegate: dict
    warmup: int
    latency_ms: LatencyStats
    samples_ms: list[float]  # every timed inference, in the order they ran
    load_ms: float
    allocate_ms: float
    first_inference_ms: float
    warmup_mean_ms: float | None
    peak_rss_bytes: int | None
    baseline_rss_bytes: int | None  # the worker before loading the model (Python, numpy, runtime)
    output_sha256: str  # of the outputs for the first input batch
    outputs: list | None  # those outputs, with `return_outputs`
    tensors: dict  # {"inputs": [...], "outputs": [...]}: name, shape, dtype, scale, zero_point
    inputs: dict  # {"kind": "random", "seed"} or {"kind": "npz", "path"}
    input_saturation: list | None
    fidelity: dict | None
    energy: dict | None
    conditions: dict  # {"before": ..., "after": ...}: temperature, throttling, clock, load
    warnings: list[str]
    model_key: str = field(default="", repr=False)  # groups trials of the same model argument

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("model_key")
        data["latency_ms"] = self.latency_ms.to_dict()
        return data


@dataclass
class BenchResult:
    """Everything one `tflc bench` call measured: per-trial records and per-model summaries."""

    device: str
    device_facts: dict
    runtime: dict
    target: str | None
    settings: dict
    records: list[BenchRecord]
    models: list[ModelSummary]
    warnings: list[str]
    tflc_version: str = __version__
    runner_version: str = runner_module.RUNNER_VERSION
    protocol: int = runner_module.PROTOCOL
    started_at: float = 0.0
    seconds: float = 0.0
    attempts: int = 1
    artifact_id: str | None = None  # set when the run registry recorded it (tflc/store)

    def to_dict(self) -> dict:
        return {
            "kind": "bench", "artifact_id": self.artifact_id,
            "tflc_version": self.tflc_version, "runner_version": self.runner_version,
            "protocol": self.protocol, "device": self.device, "device_facts": self.device_facts,
            "runtime": self.runtime, "target": self.target, "settings": self.settings,
            "started_at": self.started_at, "seconds": self.seconds, "attempts": self.attempts,
            "warnings": self.warnings,
            "models": [summary.to_dict() for summary in self.models],
            "records": [record.to_dict() for record in self.records],
        }

    def write(self, path) -> Path:
        """Save as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())


# ------------------------------------------------------------------------------ checking input
def _tensor_infos(path: Path) -> list[dict]:
    """The model's inputs in the runner's format, read from the flatbuffer (no interpreter)."""
    from tflc.tflite.reader import read_model

    view = read_model(path)
    infos = []
    for tensor in view.input_tensors(0):
        quant = tensor.quantization
        infos.append({"name": tensor.name, "index": tensor.index, "shape": list(tensor.shape),
                      "dtype": tensor.dtype,
                      "scale": float(quant.scales[0]) if quant and quant.scales else 0.0,
                      "zero_point": int(quant.zero_points[0]) if quant and quant.zero_points
                      else 0})
    return infos


def _check_npz(path: Path, infos_by_model: dict, flag: str) -> None:
    if not path.is_file():
        raise BadInput(f"{path}: {flag} file not found")
    for model, infos in infos_by_model.items():
        try:
            runner_module.read_npz_inputs(str(path), infos)
        except runner_module.RunnerError as exc:
            detail = exc.message.split(": ", 1)[-1]
            raise BadInput(f"{path} ({flag}) does not fit {model.name}: {detail}") from None


def check_settings(*, runs, warmup, min_duration_s, max_runs, repeat, threads, timeout_s,
                   retries) -> None:
    """Refuse numbers no benchmark needs before anything runs: past `LIMITS` the device would
    overflow its timers or fill its memory with samples, long after the user has left."""
    values = {"runs": runs, "max_runs": max_runs, "warmup": warmup, "repeat": repeat,
              "threads": threads, "min_duration_s": min_duration_s, "timeout_s": timeout_s}
    for key, value in values.items():
        flag, limit, unit = LIMITS[key]
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInput(f"{flag} {value}: give a finite number of {unit}")
        if value > limit:
            shown = f"{limit:g}" if isinstance(limit, float) else str(limit)
            raise BadInput(f"{flag} {value}: at most {shown} {unit}")
    if runs < 1 and min_duration_s <= 0:
        raise BadInput("--runs must be at least 1 (or give --min-duration)")
    if warmup < 0 or repeat < 1 or (threads is not None and threads < 1) or max_runs < 1:
        raise BadInput("--warmup must be >= 0, --repeat, --max-runs and --threads >= 1")
    if min_duration_s < 0 or (timeout_s is not None and timeout_s <= 0) or retries < 0:
        raise BadInput("--min-duration and --retries must be >= 0, --timeout > 0")


def check_output_path(path) -> Path:
    """Prove the results file can be written (creating its folder) before the device spends
    minutes measuring: a result lost at the last step is the worst way to fail."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{path}: -o names a folder; give a file such as {path / 'bench.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BadInput(f"{path}: the results file cannot be written there "
                       f"({exc.strerror or exc}); choose another path with -o") from None
    return path


def _output_classes(model: Path) -> int:
    """How many classes the model's first output scores per sample (1 for a single score)."""
    from tflc.tflite.reader import read_model

    shape = read_model(model).output_tensors(0)[0].shape
    return int(math.prod(max(int(d), 1) for d in shape[1:])) if len(shape) > 1 else 1


def _label_problem(y, samples: int, classes: int) -> str | None:
    """What is wrong with labels `y` for `samples` samples of a `classes`-way output, if any."""
    import numpy as np

    if y.dtype.kind in "USO":
        return f"holds text ({y.dtype}); give class indices as integers 0-{classes - 1}"
    if y.dtype.kind not in "biuf":
        return f"holds {y.dtype} values; give class indices as integers 0-{classes - 1}"
    if y.ndim == 0 or y.ndim > 2:
        return (f"has shape {list(y.shape)}; give one class index per sample, or one row of "
                f"{classes} scores (one-hot) per sample")
    if len(y) != samples:
        return f"holds {len(y)} labels for {samples} samples in `x`; give one label per sample"
    values = y.astype(np.float64)
    if not np.all(np.isfinite(values)):
        return "holds NaN or infinite values"
    if y.ndim == 2 and y.shape[1] > 1:
        if y.shape[1] != classes:
            return (f"has {y.shape[1]} columns (one-hot), the model's output has {classes} "
                    "classes")
        return None
    if not np.all(values == np.round(values)):
        bad = values[values != np.round(values)][0]
        return f"holds {bad:g}; class indices are whole numbers 0-{max(classes, 2) - 1}"
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= max(classes, 2):
        bad = low if low < 0 else high
        return (f"holds {bad}, out of range for the {classes} classes of the model's output "
                f"(0-{max(classes, 2) - 1})")
    return None


def check_eval_labels(path: Path, infos_by_model: dict, flag: str) -> None:
    """Labels must fit each model's output: a wrong one would give a silently wrong accuracy."""
    for model, infos in infos_by_model.items():
        arrays, labels = runner_module.read_npz_inputs(str(path), infos)
        if labels is None:
            continue  # no labels: agreement with the host only
        import numpy as np

        problem = _label_problem(np.asarray(labels), len(arrays[0]), _output_classes(model))
        if problem:
            raise BadInput(f"{path} ({flag}) does not fit {model.name}: `y` {problem}")


def _delegate(delegate: str | None, options: dict | None) -> dict:
    if delegate in (None, "default", "xnnpack"):
        kind = {"kind": "default"}
    elif delegate == "none":
        kind = {"kind": "none"}
    else:  # a library path or name, loaded on the device (e.g. libedgetpu.so.1)
        kind = {"kind": "external", "library": str(delegate), "options": dict(options or {})}
    if options and kind["kind"] != "external":
        raise BadInput("--delegate-option applies to an external delegate library only; "
                       "pass --delegate LIBRARY")
    return kind


def _energy(target_spec, latency: LatencyStats) -> dict | None:
    power = getattr(getattr(target_spec, "device", None), "active_power_w", None)
    if not power:
        return None
    return {"mj_per_inference": float(power) * latency.mean, "estimate": True,
            "active_power_w": float(power), "target": target_spec.name,
            "method": "target active power (W) x mean latency (ms)"}


# ------------------------------------------------------------------------------------- bench
@dataclass
class Plan:
    """What one `tflc bench` call measures, checked and built once, whatever the devices: the
    models, the files to copy, the runner's request and the settings the records keep."""

    paths: list[Path]
    uploads: list[Upload]
    request: dict
    settings: dict
    target_spec: object | None
    delegate_spec: dict
    inputs_path: Path | None
    eval_path: Path | None
    timeout_s: float
    retries: int
    ssh: dict
    started: float
    _host_evals: dict | None = field(default=None, repr=False)
    _host_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def host_evaluations(self, warnings: list) -> dict:
        """This machine's reference outputs for --eval-data, computed once for every device."""
        with self._host_lock:
            if self._host_evals is None:
                self._host_warnings: list = []
                self._host_evals = _host_evaluations(
                    self.paths, self.eval_path, self.settings["threads"], self._host_warnings)
        warnings.extend(self._host_warnings)
        return self._host_evals


def bench(models, device: str = "local", *, target=None, python: str | None = None,
          threads: int | None = 1, warmup: int = 5, runs: int = 50, min_duration_s: float = 0.0,
          max_runs: int = 100000, repeat: int = 1, rounds: int | None = None,
          delegate: str | None = "default", delegate_options: dict | None = None, inputs=None,
          eval_data=None, seed: int = 0, return_outputs: bool = False, runtime: str = "auto",
          timeout_s: float | None = None, retries: int = 2, ssh_config=None, ssh_options=(),
          remote_tmp: str | None = None, connect_timeout: float = 10.0,
          busy_load_per_core: float = 0.5, progress: bool = True,
          output=None) -> BenchResult:
    """Benchmark one or more .tflite models on a device; see the module docstring for the steps.

    `models`: paths (several run interleaved, ratios are to the first). `device`: "local",
    "ssh://user@host[:port]" or an ssh_config alias, each optionally with `?python=PATH`.
    `python`: the device's interpreter (default: the Python running tflc locally, `python3`
    over SSH; a device's own `?python=` wins). `inputs`: an .npz of field
    data to feed instead of random inputs (reports input saturation). `eval_data`: a labelled
    .npz (`x`, `y`) run once on the device, compared with LiteRT here. `target`: a target name or
    descriptor whose `device.active_power_w` gives an energy estimate. `output`: a file the
    result is written to (JSON), checked for writability before anything is measured.
    """
    spec = parse_device(device)
    plan = make_plan(
        models, target=target, python=python, threads=threads, warmup=warmup, runs=runs,
        min_duration_s=min_duration_s, max_runs=max_runs, repeat=repeat, rounds=rounds,
        delegate=delegate, delegate_options=delegate_options, inputs=inputs,
        eval_data=eval_data, seed=seed, return_outputs=return_outputs, runtime=runtime,
        timeout_s=timeout_s, retries=retries, ssh_config=ssh_config, ssh_options=ssh_options,
        remote_tmp=remote_tmp, connect_timeout=connect_timeout,
        busy_load_per_core=busy_load_per_core, output=output)
    result = measure(plan, spec, python, progress=progress)
    if output is not None:
        result.write(output)
    return result


def make_plan(models, *, target=None, python=None, threads=1, warmup=5, runs=50,
              min_duration_s=0.0, max_runs=100000, repeat=1, rounds=None, delegate="default",
              delegate_options=None, inputs=None, eval_data=None, seed=0, return_outputs=False,
              runtime="auto", timeout_s=None, retries=2, ssh_config=None, ssh_options=(),
              remote_tmp=None, connect_timeout=10.0, busy_load_per_core=0.5,
              output=None) -> Plan:
    """Check everything that can be checked here (settings, output path, models, data files)
    and build the request; raises BadInput before any device is touched."""
    started = time.time()
    paths = [Path(m) for m in ([models] if isinstance(models, (str, Path)) else models)]
    if not paths:
        raise BadInput("no model given; name one or more .tflite files")
    check_settings(runs=runs, warmup=warmup, min_duration_s=min_duration_s, max_runs=max_runs,
                   repeat=repeat, threads=threads, timeout_s=timeout_s, retries=retries)
    if output is not None:
        check_output_path(output)
    if runtime not in ("auto", *runner_module.RUNTIMES):
        choices = ", ".join(runner_module.RUNTIMES)
        raise BadInput(f"--runtime {runtime}: use auto or one of {choices}")
    infos = {}
    for path in paths:
        if not path.is_file():
            raise BadInput(f"{path}: model file not found")
        infos[path] = _tensor_infos(path)  # raises BadInput for anything but a TFLite model
    inputs_path = Path(inputs) if inputs else None
    eval_path = Path(eval_data) if eval_data else None
    if inputs_path:
        _check_npz(inputs_path, infos, "--inputs")
    if eval_path:
        _check_npz(eval_path, infos, "--eval-data")
        check_eval_labels(eval_path, infos, "--eval-data")
    target_spec = None
    if target is not None:
        from tflc.check import load_target

        target_spec = load_target(target)

    delegate_spec = _delegate(delegate, delegate_options)
    uploads = [Upload(path, f"m{i}.tflite") for i, path in enumerate(paths)]
    request = {
        "protocol": runner_module.PROTOCOL,
        "models": [{"id": f"m{i}", "path": f"m{i}.tflite"} for i in range(len(paths))],
        "runtime": runtime, "threads": threads, "delegate": delegate_spec, "warmup": warmup,
        "runs": runs, "min_duration_s": min_duration_s, "max_runs": max_runs, "repeat": repeat,
        "rounds": rounds,
        "inputs": {"kind": "random", "seed": seed}, "eval": None,
        "return_outputs": return_outputs, "busy_load_per_core": busy_load_per_core,
    }
    if inputs_path:
        uploads.append(Upload(inputs_path, "inputs.npz"))
        request["inputs"] = {"kind": "npz", "path": "inputs.npz"}
    if eval_path:
        uploads.append(Upload(eval_path, "eval.npz"))
        request["eval"] = {"path": "eval.npz"}
    if timeout_s is None:
        timeout_s = 600.0 + 1.5 * repeat * len(paths) * min_duration_s
    settings = {"threads": threads, "warmup": warmup, "runs": runs,
                "min_duration_s": min_duration_s, "max_runs": max_runs, "repeat": repeat,
                "rounds": rounds,
                "delegate": delegate_spec, "runtime": runtime, "seed": seed,
                "inputs": str(inputs_path) if inputs_path else None,
                "eval_data": str(eval_path) if eval_path else None,
                "python": python, "timeout_s": timeout_s}
    ssh = dict(ssh_config=ssh_config, ssh_options=tuple(ssh_options), remote_tmp=remote_tmp,
               connect_timeout=connect_timeout)
    return Plan(paths=paths, uploads=uploads, request=request, settings=settings,
                target_spec=target_spec, delegate_spec=delegate_spec, inputs_path=inputs_path,
                eval_path=eval_path, timeout_s=timeout_s, retries=retries, ssh=ssh,
                started=started)


def measure(plan: Plan, spec: DeviceSpec, python: str | None = None, *,
            progress: bool = True) -> BenchResult:
    """Run a plan on one device and turn its answer into records; the device's own
    `?python=` beats `python` (a fleet's devices may keep their runtimes in different places)."""
    started = time.time() if plan.started is None else plan.started
    python = spec.python or python
    try:
        response, attempts = _run_with_retries(
            spec, python, plan.uploads, plan.request, plan.timeout_s, plan.retries, progress,
            plan.ssh)
    except DeviceError as exc:
        exc.message = name_user_files(exc.message, plan.uploads)
        raise
    label = spec.label
    request, paths = plan.request, plan.paths
    inputs_path, threads = plan.inputs_path, plan.settings["threads"]
    device_warnings = [*(response.get("warnings") or []), *emulation_warnings(response["device"])]
    warnings = list(device_warnings)
    host_evals = plan.host_evaluations(warnings) if plan.eval_path else {}
    labels = _eval_labels(plan.eval_path) if plan.eval_path else None
    records = []
    for trial in response["trials"]:
        for entry in trial["models"]:
            path = paths[int(entry["id"][1:])]
            latency = summarize(entry["latencies_ms"])
            fid = None
            if "eval" in entry and path in host_evals:
                host_eval, host_runtime = host_evals[path]
                fid = fidelity(entry["eval"], host_eval, labels, host_runtime)
            warm = entry.get("warmup_ms") or []
            records.append(BenchRecord(
                model=str(path), model_name=path.name, model_sha256=sha256_file(path),
                model_bytes=path.stat().st_size, trial=int(trial["trial"]), device=label,
                device_facts=response["device"], runtime=entry.get("runtime") or {},
                threads=threads, delegate=plan.delegate_spec, warmup=plan.settings["warmup"],
                latency_ms=latency,
                samples_ms=[round(v, 6) for v in entry["latencies_ms"]],
                load_ms=entry["load_ms"], allocate_ms=entry["allocate_ms"],
                first_inference_ms=entry["first_inference_ms"],
                warmup_mean_ms=sum(warm) / len(warm) if warm else None,
                peak_rss_bytes=entry.get("peak_rss_bytes"),
                baseline_rss_bytes=entry.get("baseline_rss_bytes"),
                output_sha256=entry["output_sha256"], outputs=entry.get("outputs"),
                tensors=entry.get("tensors") or {},
                inputs=dict(request["inputs"], path=str(inputs_path)) if inputs_path
                else dict(request["inputs"]),
                input_saturation=entry.get("saturation"), fidelity=fid,
                energy=_energy(plan.target_spec, latency),
                conditions={"before": trial["conditions_before"],
                            "after": trial["conditions_after"]},
                warnings=list(device_warnings), model_key=entry["id"],
            ))
    if plan.target_spec is not None and not any(r.energy for r in records):
        warnings.append(f"target {plan.target_spec.name} gives no device.active_power_w: "
                        "no energy estimate")
    settings = dict(plan.settings, python=python)
    return BenchResult(
        device=label, device_facts=response["device"], runtime=response.get("runtime") or {},
        target=getattr(plan.target_spec, "name", None), settings=settings, records=records,
        models=summarize_models(records), warnings=warnings, started_at=round(started, 3),
        seconds=round(time.time() - started, 3), attempts=attempts)


def emulation_warnings(facts: dict) -> list[str]:
    """A device that runs its CPU under an emulator (qemu-user) measures the emulator: say so
    in every result, with the signs the runner found."""
    emulation = facts.get("emulation") or {}
    if not emulation.get("emulated"):
        return []
    signs = "; ".join(emulation.get("signs") or []) or "no detail"
    return [f"emulated: {facts.get('arch')} runs under an emulator on this device ({signs}); "
            "latencies measure the emulator, not the hardware"]


def _run_with_retries(device, python, uploads, request, timeout_s, retries, progress, ssh):
    """Run on the device; a lost or refused connection is retried from a clean start.

    `timeout_s` bounds the whole: connecting, copying, running and every retry, so a host that
    accepts connections and never answers costs the time-out, not the time-out per attempt.
    """
    from tqdm import tqdm

    deadline = time.monotonic() + timeout_s
    first_error = None
    for attempt in range(retries + 1):
        bar = tqdm(total=None, desc="bench", unit="slice", disable=not progress or None,
                   leave=False)

        def on_event(event, bar=bar):
            if event.get("event") == "progress":
                bar.total = event.get("total")
                bar.n = event.get("done", 0)
                bar.refresh()

        if cancelled():
            raise DeviceError("interrupted", "interrupted before the run on this device started")
        transport = make_transport(device, python, **ssh)
        try:
            return run_on_device(transport, uploads, request, timeout_s=timeout_s,
                                 on_event=on_event, deadline=deadline), attempt + 1
        except TransportError as exc:
            first_error = first_error or exc
            pause = min(2.0 ** attempt, 8.0)
            out_of_time = deadline - time.monotonic() < pause + 1.0
            if attempt == retries or out_of_time or cancelled():
                tries = _attempts(attempt + 1)
                if out_of_time:
                    tries += f" within the --timeout of {timeout_s:g} s"
                if exc.message != first_error.message:
                    exc.message = (f"{exc.message} (after {tries}; the first "
                                   f"failure: {first_error.message})")
                else:
                    exc.message = f"{exc.message} (after {tries})"
                raise
            time.sleep(pause)
        finally:
            bar.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def name_user_files(message: str, uploads: list[Upload]) -> str:
    """The device only knows its private copies (`m0.tflite`, `eval.npz`, model `m0`): put the
    user's own paths back into its messages, and keep them on one line."""
    for upload in uploads:
        user_path = str(upload.source)
        # The copy's name, with any device folder before it, but not inside a longer name.
        copy = rf"(?:/[^\s:'\"]*/)?(?<![\w.-]){re.escape(upload.name)}(?![\w.-])"
        message = re.sub(copy, lambda _match, path=user_path: path, message)
        model_id = upload.name.rsplit(".", 1)[0]
        if re.fullmatch(r"m\d+", model_id):
            message = re.sub(rf"\bmodel {model_id}\b",
                             lambda _match, path=user_path: f"model {path}", message)
    return " ".join(message.split())


def _host_evaluations(paths, eval_path: Path, threads, warnings: list) -> dict:
    """Each model's outputs on the evaluation samples with this machine's LiteRT; a model this
    machine cannot run (a delegate's custom op) gets None and a warning."""
    from tflc.tf_env import quiet_native_output

    results = {}
    with quiet_native_output():  # LiteRT announces its XNNPACK delegate on stderr
        try:
            runtime = runner_module.load_runtime("auto")
        except runner_module.RunnerError as exc:
            warnings.append(f"no host reference for --eval-data: {exc.message}")
            return {path: (None, None) for path in paths}
        for path in paths:
            try:
                session = runner_module.ModelSession(runtime, str(path), threads,
                                                     {"kind": "default"})
                results[path] = (session.evaluate(str(eval_path)), runtime.describe())
            except runner_module.RunnerError as exc:
                warnings.append(f"{path.name}: no host reference for --eval-data ({exc.message})")
                results[path] = (None, None)
    return results


def _eval_labels(eval_path: Path):
    import numpy as np

    with np.load(eval_path, allow_pickle=False) as data:
        return data["y"] if "y" in data.files else None
