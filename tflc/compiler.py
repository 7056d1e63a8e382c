"""`tflc compile`: load -> (optimize) -> convert -> verify -> evaluate -> (check, export) -> write.

`compile_model` is the one entry point for the CLI and for Python users (`tflc.compile`). It
validates everything cheap first (paths, options, data shapes) so that bad input fails in a
second, not after a conversion, and writes `model.tflite` and `report.json` only at the very end,
atomically: an interrupted or failed run leaves any earlier results untouched.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tflc.errors import BadInput
from tflc.version import __version__

DEFAULT_CALIBRATION_SAMPLES = 200


@dataclass
class CompileReport:
    """Everything `report.json` holds; `config` is enough to run the same compile again."""

    config: dict
    model: dict
    options: dict
    calibration: dict
    sizes: dict
    op_histogram: dict
    inputs: list
    outputs: list
    verifier: dict
    output_dir: str
    tflite_sha256: str
    evaluation: dict | None = None
    gate: dict | None = None
    check: dict | None = None
    export: dict | None = None
    stages: list | None = None
    pipeline: dict | None = None  # the stages' settings as run: the request with defaults filled in
    warnings: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    tflc_version: str = __version__
    artifact_id: str | None = None

    @property
    def passed(self) -> bool:
        """False when a gate the user set (accuracy drop, --strict mapping) was not met."""
        return self.gate is None or bool(self.gate.get("passed", True))

    @property
    def tflite_path(self) -> Path:
        return Path(self.output_dir) / "model.tflite"

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    def summary(self) -> str:
        return format_summary(self)


def compile_model(
    model,
    out_dir,
    *,
    calibration_data=None,
    calibration: str = "data",
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    random_range: tuple[float, float] = (0.0, 1.0),
    normalize: str = "unit",
    seed: int = 0,
    weights: str = "per-channel",
    activations: str = "int8",
    io_type: str | None = None,
    static_batch: bool = False,
    eval_data=None,
    max_accuracy_drop: float | None = None,
    input_shapes: dict | None = None,
    custom_objects: tuple[str, ...] | list[str] = (),
    allow_unsafe_code: bool = False,
    allow_float_ops: bool = False,
    target: str | None = None,
    strict: bool = False,
    export: str | None = None,
    pipeline=None,
    train_data=None,
    log=None,
) -> CompileReport:
    """Compile a Keras model into a verified fully-integer TFLite model in `out_dir`.

    Returns the report; `report.passed` is False when `max_accuracy_drop` or `strict` was not met
    (the model and report are written all the same, so a CI job can inspect them).
    """
    from tflc.convert.converter import (
        ConvertOptions,
        convert_float,
        convert_int8,
        explain_float_ops,
        frozen_function,
    )
    from tflc.convert.integer_verifier import verify_integer
    from tflc.fileio import atomic_write_bytes, atomic_write_json, ensure_writable_dir, sha256_bytes
    from tflc.load import data as data_io
    from tflc.load.models import load_model
    from tflc.tflite.reader import read_model

    say = log or (lambda message: None)
    config = {
        "model": os.fspath(model), "out_dir": os.fspath(out_dir),
        "calibration_data": _path_or_none(calibration_data), "calibration": calibration,
        "calibration_samples": calibration_samples, "random_range": list(random_range),
        "normalize": normalize, "seed": seed, "weights": weights, "activations": activations,
        "io_type": io_type, "static_batch": static_batch, "eval_data": _path_or_none(eval_data),
        "max_accuracy_drop": max_accuracy_drop,
        "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
        "custom_objects": list(custom_objects), "allow_unsafe_code": allow_unsafe_code,
        "allow_float_ops": allow_float_ops,
        "target": target, "strict": strict, "export": export,
        "pipeline": _path_or_none(pipeline) if not isinstance(pipeline, dict) else pipeline,
        "train_data": _path_or_none(train_data),
    }
    options = ConvertOptions(weights, activations, io_type, static_batch).validate()
    if calibration not in ("data", "random"):
        raise BadInput(f"--calibration {calibration}: expected 'data' (with --calibration-data) or 'random'")
    if calibration == "data" and calibration_data is None:
        raise BadInput(
            "no calibration data: pass --calibration-data FILE (.npz, .npy or an image folder) with "
            "~200 representative inputs, or --calibration random to accept synthetic data and lost accuracy"
        )
    if max_accuracy_drop is not None and eval_data is None:
        raise BadInput("--max-accuracy-drop needs labelled --eval-data to measure the drop")
    if export is not None and target is None:
        raise BadInput("--export needs --target (the microcontroller whose budget the package must fit)")
    target_spec = _load_target(target) if target else None
    pipeline_config = _resolve_pipeline(pipeline)  # a mistake in it costs no model loading
    out = ensure_writable_dir(out_dir)
    timings: dict[str, float] = {}
    warnings: list[str] = []

    clock = time.perf_counter()
    say(f"loading {model}")
    loaded = load_model(model, custom_objects, allow_unsafe_code, input_shapes)
    if calibration == "data":
        calib = data_io.load_calibration(calibration_data, loaded.inputs, calibration_samples, seed, normalize)
    else:
        calib = data_io.random_calibration(loaded.inputs, calibration_samples, seed, *random_range)
        warnings.append(
            "calibration used synthetic random data: activation ranges are guesses and accuracy "
            "will suffer; pass --calibration-data with real inputs for a deployable model"
        )
    evaluation_set = None
    if eval_data is not None:
        evaluation_set = data_io.load_labelled(eval_data, loaded.inputs, require_labels=False)
        if max_accuracy_drop is not None and evaluation_set.y is None:
            raise BadInput(f"{eval_data}: --max-accuracy-drop needs labels; add an array y to the file")
    timings["load"] = time.perf_counter() - clock

    original = loaded
    stages = None
    pipeline_result = None
    if pipeline_config is not None:
        from tflc.optimize.pipeline import run_pipeline

        say("running the optimization pipeline")
        clock = time.perf_counter()
        # (issue 4) log=say: one line per stage; the pipeline's warnings (rolled-back stages,
        # layers left in float) go into the report's warnings.
        result = run_pipeline(loaded, pipeline_config, train_data, evaluation_set, seed, log=say,
                              normalize=normalize)
        loaded, stages = result.loaded, [s.to_dict() for s in result.stages]
        pipeline_result = result
        warnings.extend(result.warnings)
        timings["optimize"] = time.perf_counter() - clock

    clock = time.perf_counter()
    say("converting to float TFLite (size baseline)")
    frozen = frozen_function(loaded, static_batch)
    # the baseline is the user's float model, not what optimization stages made of it
    float_bytes = convert_float(original, static_batch, frozen if original is loaded else None)
    timings["convert_float"] = time.perf_counter() - clock
    clock = time.perf_counter()
    say(f"calibrating on {len(calib)} samples and converting to {activations} TFLite")
    tflite_bytes = convert_int8(loaded, calib.x, options, frozen)
    timings["convert_int8"] = time.perf_counter() - clock

    view = read_model(tflite_bytes)
    verdict = verify_integer(view)
    if not verdict.integer_core:
        if not allow_float_ops:
            raise explain_float_ops(loaded, view, verdict)
        warnings.append(f"verifier: {verdict.verdict}")

    evaluation = None
    if evaluation_set is not None:
        say(f"evaluating float and {activations} models on {len(evaluation_set)} samples")
        clock = time.perf_counter()
        from tflc.convert.evaluate import evaluate

        baseline = original if original is not loaded else None
        evaluation = evaluate(loaded, tflite_bytes, evaluation_set, baseline).to_dict()
        timings["evaluate"] = time.perf_counter() - clock

    gate = _accuracy_gate(evaluation, max_accuracy_drop)
    check = None
    if target_spec is not None:
        from tflc.check import check_model

        check = check_model(view, target_spec).to_dict()  # the view already parsed above
        mapped = check["summary"]["ops_on_target"] == check["summary"]["ops_total"]
        if strict and not mapped:
            gate = {**(gate or {}), "passed": False,
                    "strict": f"only {check['summary']['ops_on_target']} of {check['summary']['ops_total']} ops map to {target}"}

    report = CompileReport(
        config=config,
        # the model the user gave, not what optimization stages (and TF-MOT's wrappers) made of it
        model={"path": os.fspath(original.path), "format": original.format, "sha256": original.sha256,
               "params": original.param_count},
        options=options.to_dict(),
        calibration=calib.to_dict(),
        sizes={"float_tflite_bytes": len(float_bytes), "int8_tflite_bytes": len(tflite_bytes),
               "ratio": round(len(float_bytes) / len(tflite_bytes), 3)},
        op_histogram=view.op_histogram(),
        inputs=[_io_entry(t) for t in view.input_tensors()],
        outputs=[_io_entry(t) for t in view.output_tensors()],
        verifier=verdict.to_dict(),
        output_dir=os.fspath(out),
        tflite_sha256=sha256_bytes(tflite_bytes),
        evaluation=evaluation,
        gate=gate,
        check=check,
        stages=stages,
        pipeline=pipeline_config.to_dict() if pipeline_config is not None else None,
        warnings=warnings,
        timings={k: round(v, 3) for k, v in timings.items()},
    )
    atomic_write_bytes(out / "model.tflite", tflite_bytes)
    if pipeline_result is not None:  # (issue 4) accuracy against compressed size, per stage
        atomic_write_bytes(out / "pipeline.png", pipeline_result.plot_png())
    if export is not None:
        from tflc.export import export_c

        report.export = export_c(out / "model.tflite", out / "c", target=target).to_dict()
    # Run registry (tflc/store, issue 7): keep this result as a versioned artifact; its id goes
    # into report.json. A registry that cannot be written only warns.
    from tflc.store import record_compile

    report.artifact_id = record_compile(report)
    atomic_write_json(out / "report.json", report.to_dict())
    return report


def _path_or_none(value):
    return None if value is None else os.fspath(value)


def _load_target(name: str):
    from tflc.check import load_target

    return load_target(name)


def _resolve_pipeline(pipeline):
    if pipeline is None:
        return None
    from tflc.optimize.pipeline import resolve_config

    return resolve_config(pipeline)


def _accuracy_gate(evaluation: dict | None, max_drop: float | None) -> dict | None:
    if max_drop is None:
        return None
    drop = (evaluation or {}).get("accuracy_drop")
    if drop is None:
        return {"max_accuracy_drop": max_drop, "passed": False,
                "reason": "the evaluation data has no labels, so the drop cannot be measured"}
    passed = drop <= max_drop
    return {"max_accuracy_drop": max_drop, "accuracy_drop": drop, "passed": passed,
            "reason": None if passed else f"int8 accuracy dropped {drop:.2f} points, more than {max_drop}"}


def _io_entry(tensor) -> dict:
    quant = tensor.quantization
    return {
        "name": tensor.name, "dtype": tensor.dtype, "shape": list(tensor.shape),
        "scale": quant.scales[0] if quant and not quant.per_channel else (list(quant.scales) if quant else None),
        "zero_point": quant.zero_points[0] if quant and not quant.per_channel else (list(quant.zero_points) if quant else None),
    }


def format_summary(report: CompileReport) -> str:
    """The short human summary `tflc compile` prints."""
    sizes = report.sizes
    lines = [
        f"model       {report.model['path']} ({report.model['format']}, {report.model['params']:,} parameters)",
        f"size        float {_kb(sizes['float_tflite_bytes'])} -> {report.options['activations']} "
        f"{_kb(sizes['int8_tflite_bytes'])} ({sizes['ratio']:.2f}x smaller)",
        "operators   " + ", ".join(f"{op} x{n}" for op, n in report.op_histogram.items()),
    ]
    for role, entries in (("input", report.inputs), ("output", report.outputs)):
        for entry in entries:
            lines.append(
                f"{role:<11} {entry['name']}: {entry['dtype']} {entry['shape']} "
                f"scale={_num(entry['scale'])} zero_point={entry['zero_point']}"
            )
    lines.append(f"verifier    {report.verifier['verdict']}")
    for ft in report.verifier["float_tensors"][:10]:
        lines.append(f"            float tensor #{ft['index']} {ft['name']} ({ft['dtype']}, {ft['role']})")
    evaluation = report.evaluation
    if evaluation:
        if evaluation.get("float_accuracy") is not None:
            lines.append(
                f"accuracy    float {evaluation['float_accuracy']:.2f}%  int8 {evaluation['int8_accuracy']:.2f}%  "
                f"drop {evaluation['accuracy_drop']:+.2f} points ({evaluation['samples']} samples)"
            )
        for f in evaluation["fidelity"]:
            lines.append(f"fidelity    {f['name']}: top-1 agreement {f['top1_agreement']:.2f}%, SQNR {f['sqnr_db']} dB")
    if report.stages:  # (issue 4) the compression pipeline's stage table
        from tflc.optimize.stage_report import stage_table

        lines.append("stages      (accuracy of each stage's model; sizes of it converted to int8)")
        lines.extend("            " + line for line in stage_table(report.stages).splitlines())
    if report.check:
        s = report.check["summary"]
        lines.append(f"target      {report.check['target']}: {s['ops_on_target']} of {s['ops_total']} ops on target, "
                     f"{s['segments']} segment(s)")
    if report.export:
        lines.append(f"export      {report.export.get('output_dir', '')}")
    if report.gate:
        state = "passed" if report.passed else "FAILED"
        reasons = "; ".join(str(v) for k, v in report.gate.items() if k in ("reason", "strict") and v)
        lines.append(f"gate        {state}{': ' + reasons if reasons else ''}")
    for warning in report.warnings:
        lines.append(f"warning     {warning}")
    if report.artifact_id:
        lines.append(f"artifact    {report.artifact_id}")
    lines.append(f"wrote       {report.tflite_path} and {Path(report.output_dir) / 'report.json'}")
    return "\n".join(lines)


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def _num(value) -> str:
    if isinstance(value, list):
        return f"per-channel[{len(value)}]"
    return "-" if value is None else f"{value:.6g}"
