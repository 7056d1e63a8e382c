"""`tflc compile`: load -> (optimize) -> convert -> verify -> evaluate -> (check, export) -> write.

`compile_model` is the one entry point for the CLI and for Python users (`tflc.compile`). It
validates everything cheap first (options, option pairs, the target, data shapes) so that bad
input fails in a second, not after a conversion. All outputs (`model.tflite`, `report.json`,
`pipeline.png`, the `c/` package) are written into a staging folder and published together at
the very end: an interrupted or failed run leaves any earlier results untouched.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tflc.errors import BadInput
from tflc.options import CompileOptions
from tflc.units import format_bytes
from tflc.version import __version__


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
    lowering: dict | None = None  # recurrent layers rebuilt, unrolled or fused for TFLite
    pipeline: dict | None = None  # the stages' settings as run: the request with defaults filled in
    ptq: dict | None = None  # --ptq / --bias-correction: the method chosen, its settings, the table
    weights: dict | None = None  # --cross-layer-equalization / --adaround: the layers they changed
    mixed: dict | None = None  # --activations mixed: the layers in 16x8, their gains, the budget
    layers: dict | None = None  # per-layer SQNR, float vs quantized, the worst layers, advice
    profile: dict | None = None  # profile.json: the calibration profile the device guard reads
    aot: list | None = None  # one entry per --aot SoC: the compiled file and what went to the NPU
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


def compile_model(model, out_dir, options: CompileOptions | None = None, *, log=None,
                  **settings) -> CompileReport:
    """Compile a Keras model into a verified fully-integer TFLite model in `out_dir`.

    Settings come as one `CompileOptions`, or as its fields by keyword (`calibration_data=...`).
    Returns the report; `report.passed` is False when a gate (accuracy drop, `strict`, the export
    budget) was not met: the outputs are written all the same, so a CI job can inspect them.
    Every output of the run is staged and published together at the end (`staged_outputs`): a
    failed or interrupted run leaves the previous results in `out_dir` as they were. Nothing is
    recorded here; `tflc.compile` (`tflc.api.compile`) records the result.
    """
    from tflc.convert.converter import (
        ConvertOptions,
        convert_float,
        convert_int8,
        explain_float_ops,
        frozen_function,
    )
    from tflc.convert.integer_verifier import verify_integer
    from tflc.fileio import atomic_write_bytes, atomic_write_json, sha256_bytes, staged_outputs
    from tflc.load import data as data_io
    from tflc.load.models import load_model
    from tflc.tf_env import import_tensorflow
    from tflc.tflite.reader import read_model

    if options is None:
        options = CompileOptions(**settings)
    elif settings:
        raise TypeError("compile_model: pass a CompileOptions or keyword settings, not both")
    o = options
    say = log or (lambda message: None)
    config = {"model": os.fspath(model), "out_dir": os.fspath(out_dir), **o.to_dict()}
    convert_options = ConvertOptions(o.weights, o.activations, o.io_type, o.static_batch).validate()
    target_spec = _load_target(o)
    if o.activations == "mixed":
        from tflc.convert.mixed import check_target

        check_target(target_spec)
    pipeline_config = _resolve_pipeline(o)  # a mistake in it costs no model loading
    import_tensorflow()  # a missing compile extra is one line, before any output or progress
    timings: dict[str, float] = {}
    warnings: list[str] = []
    if not o.static_batch and _needs_static_batch(target_spec):
        convert_options = replace(convert_options, static_batch=True)
        warnings.append(f"batch pinned to 1: {target_spec.name} needs static shapes "
                        "(its descriptor's runtime.static_batch)")

    with staged_outputs(out_dir) as stage:
        clock = time.perf_counter()
        say(f"loading {model}")
        loaded = load_model(model, o.custom_objects, o.allow_unsafe_code, o.input_shapes)
        if o.calibration == "data":
            calib = data_io.load_calibration(o.calibration_data, loaded.inputs, o.calibration_samples,
                                             o.seed, o.normalize)
        else:
            calib = data_io.random_calibration(loaded.inputs, o.calibration_samples, o.seed,
                                               *o.random_range)
            warnings.append(
                "calibration used synthetic random data: activation ranges are guesses and accuracy "
                "will suffer; pass --calibration-data with real inputs for a deployable model"
            )
        evaluation_set = None
        if o.eval_data is not None:
            evaluation_set = data_io.load_labelled(
                o.eval_data, loaded.inputs, require_labels=o.max_accuracy_drop is not None,
                num_classes=data_io.output_classes(loaded.outputs), role="--eval-data")
        timings["load"] = time.perf_counter() - clock

        original = loaded
        stages = None
        pipeline_result = None
        if pipeline_config is not None:
            from tflc.optimize.pipeline import run_pipeline

            say("running the optimization pipeline")
            clock = time.perf_counter()
            result = run_pipeline(loaded, pipeline_config, o.train_data, evaluation_set, o.seed,
                                  log=say, normalize=o.normalize)
            loaded, stages = result.loaded, [s.to_dict() for s in result.stages]
            pipeline_result = result
            warnings.extend(result.warnings)
            timings["optimize"] = time.perf_counter() - clock

        clock = time.perf_counter()
        user_model = loaded  # what the int8 model is compared with (before lowering)
        loaded, lowering = _lower(loaded, o, say)
        float_source = original
        if lowering is not None:
            convert_options = replace(convert_options, static_batch=lowering.static_batch
                                      or convert_options.static_batch)
            warnings.extend(f"lowering: {note}" for note in lowering.notes)
            float_source = loaded if original is user_model else _lower(original, o, say)[0]
            if lowering.stateful:  # a stateful model takes one batch size: use its stateless twin
                user_model = loaded
            timings["lower"] = time.perf_counter() - clock
            clock = time.perf_counter()
        say("converting to float TFLite (size baseline)")
        static_batch = convert_options.static_batch
        frozen = frozen_function(loaded, static_batch)
        # the baseline is the user's float model, not what optimization stages made of it
        # mixed precision quantizes a float file with a signature: when that file is this one
        # (no optimization stage or weight correction changes the model), it is made once
        float_bytes = convert_float(float_source, static_batch,
                                    frozen if float_source is loaded else None,
                                    signature=o.activations == "mixed")
        timings["convert_float"] = time.perf_counter() - clock
        clock = time.perf_counter()
        weight_report = None
        if o.cross_layer_equalization or o.adaround:  # a corrected copy is what gets quantized
            from tflc.convert.weights import correct_weights

            loaded, weight_report = correct_weights(loaded, calib.x, o.cross_layer_equalization,
                                                    o.adaround, o.weights == "per-tensor", log=say)
            frozen = frozen_function(loaded, static_batch)
            timings["weights"] = time.perf_counter() - clock
            clock = time.perf_counter()
        say(f"calibrating on {len(calib)} samples and converting to {o.activations} TFLite")
        ptq_result = mixed_result = mixed_float = None
        if o.activations == "mixed":  # int8, and 16x8 where it pays (ai-edge-quantizer)
            from tflc.convert.mixed import quantize_mixed

            mixed_float = (float_bytes if float_source is loaded
                           else convert_float(loaded, static_batch, frozen, signature=True))
            mixed_result = quantize_mixed(mixed_float, calib.x, o.int16_budget, target_spec,
                                          o.weights == "per-tensor", ranges=o.ptq, log=say)
            tflite_bytes = mixed_result.model
        elif o.ptq is None and not o.bias_correction:  # the converter's own min-max calibration
            tflite_bytes = convert_int8(loaded, calib.x, convert_options, frozen)
        else:
            from tflc.convert.ptq import run_ptq

            ptq_result = run_ptq(loaded, calib.x, convert_options, frozen, o.ptq, o.bias_correction,
                                 evaluation_set, target_spec, log=say)
            tflite_bytes = ptq_result.model
        timings["convert_int8"] = time.perf_counter() - clock

        view = read_model(tflite_bytes)
        verdict = verify_integer(view)
        if not verdict.integer_core:
            if not o.allow_float_ops:
                raise explain_float_ops(loaded, view, verdict)
            warnings.append(f"verifier: {verdict.verdict}")

        evaluation = None
        if evaluation_set is not None:
            say(f"evaluating float and {o.activations} models on {len(evaluation_set)} samples")
            clock = time.perf_counter()
            from tflc.convert.evaluate import evaluate

            baseline = original if original is not user_model else None
            evaluation = evaluate(user_model, tflite_bytes, evaluation_set, baseline).to_dict()
            timings["evaluate"] = time.perf_counter() - clock
        if lowering is not None:  # the lowered model, checked against the user's on real runs
            from tflc.convert.lowering import measure_fidelity

            lowering.fidelity = measure_fidelity(user_model, tflite_bytes, calib.x)

        gate = _accuracy_gate(evaluation, o.max_accuracy_drop)
        check = None
        if target_spec is not None:
            from tflc.check.verdicts import check_model

            check = check_model(view, target_spec).to_dict()  # the view already parsed above
            mapped = check["summary"]["ops_on_target"] == check["summary"]["ops_total"]
            if o.strict and not mapped:
                gate = _fail(gate, "strict", f"only {check['summary']['ops_on_target']} of "
                             f"{check['summary']['ops_total']} ops map to {o.target}")

        clock = time.perf_counter()
        reference = ptq_result.calibrated if ptq_result is not None else mixed_float
        if reference is None:  # a float file of the model that was quantized: same tensor names
            reference = float_bytes if float_source is loaded else convert_float(loaded, static_batch, frozen)
        layers = _layer_report(reference, tflite_bytes, view, calib.x, o, target_spec, evaluation)
        timings["layer_report"] = time.perf_counter() - clock
        report = CompileReport(
            config=config,
            # the model the user gave, not what optimization stages (and TF-MOT's wrappers) made of it
            model={"path": os.fspath(original.path), "format": original.format,
                   "sha256": original.sha256, "params": original.param_count},
            options=convert_options.to_dict(),
            calibration=calib.to_dict(),
            sizes={"float_tflite_bytes": len(float_bytes), "int8_tflite_bytes": len(tflite_bytes),
                   "ratio": round(len(float_bytes) / len(tflite_bytes), 3)},
            op_histogram=view.op_histogram(),
            inputs=[_io_entry(t) for t in view.input_tensors()],
            outputs=[_io_entry(t) for t in view.output_tensors()],
            verifier=verdict.to_dict(),
            output_dir=os.fspath(out_dir),
            tflite_sha256=sha256_bytes(tflite_bytes),
            evaluation=evaluation,
            gate=gate,
            check=check,
            stages=stages,
            lowering=lowering.to_dict() if lowering is not None else None,
            pipeline=pipeline_config.to_dict() if pipeline_config is not None else None,
            ptq=ptq_result.to_dict() if ptq_result is not None else None,
            weights=weight_report.to_dict() if weight_report is not None else None,
            mixed=mixed_result.to_dict() if mixed_result is not None else None,
            layers=layers,
            warnings=warnings,
            timings={k: round(v, 3) for k, v in timings.items()},
        )
        atomic_write_bytes(stage / "model.tflite", tflite_bytes)
        clock = time.perf_counter()
        try:
            report.profile = _write_profile(stage, calib, evaluation_set, o.seed)
        except (ValueError, RuntimeError, OSError) as exc:  # the model stands without it
            report.warnings.append(f"profile.json not written: {str(exc).splitlines()[0]}")
        timings["profile"] = report.timings["profile"] = round(time.perf_counter() - clock, 3)
        if pipeline_result is not None:  # accuracy against compressed size, per stage
            atomic_write_bytes(stage / "pipeline.png", pipeline_result.plot_png())
        if o.export is not None:
            report.export = _export(stage, target_spec, report)
        if o.aot:
            report.aot = _aot(stage, target_spec, o.aot, tflite_bytes, report, say)
        atomic_write_json(stage / "report.json", report.to_dict())
    return report


def _write_profile(stage: Path, calib, evaluation_set, seed: int) -> dict:
    """OUT/profile.json: per-input quantiles, histograms and saturation in the integer domain,
    the top-1 confidence on the evaluation data, and the drift thresholds
    (`tflc.runtime.profile`), measured on the staged model.tflite; its bytes are not touched."""
    from tflc.fileio import atomic_write_json, sha256_file
    from tflc.runtime.profile import build_profile
    from tflc.tf_env import quiet_native_output

    sources = {"source": calib.source, "sha256": calib.sha256}
    evaluation = evaluation_set.x if evaluation_set is not None else None
    with quiet_native_output():  # LiteRT announces its XNNPACK delegate on stderr
        profile = build_profile(stage / "model.tflite", calib.x, evaluation, seed=seed,
                                sources=sources)
    atomic_write_json(stage / "profile.json", profile)
    return {"file": "profile.json", "sha256": sha256_file(stage / "profile.json"),
            "window": profile["drift"]["window"], "thresholds": profile["drift"]["thresholds"],
            "confidence_source": (profile["confidence"] or {}).get("source")}


def _export(stage: Path, target_spec, report: CompileReport) -> dict:
    """The C package in OUT/c; over the target's budget is a gate not met, like the accuracy one."""
    from tflc.export import export_c
    from tflc.fileio import atomic_write_json

    exported = export_c(stage / "model.tflite", stage / "c", target=target_spec)
    # the package is written in the staging folder and published with the rest: its reports
    # name where the files will be, not the staging folder that is gone by then
    final = Path(report.output_dir)
    exported = replace(exported, model=str(final / "model.tflite"), output_dir=str(final / "c"))
    atomic_write_json(stage / "c" / "export_report.json", exported.to_dict())
    failure = exported.gate_failure()
    if failure is not None:
        report.gate = _fail(report.gate, "export", failure.message)
    return exported.to_dict()


def _aot(stage: Path, target_spec, socs, tflite_bytes: bytes, report: CompileReport, say) -> list:
    """OUT/model_<SOC>.tflite for each SoC, compiled by the target's vendor compiler beside the
    portable model.tflite; a SoC the compiler stops on is a gate not met (its reason recorded)."""
    from tflc.aot import compile_for
    from tflc.fileio import atomic_write_bytes, sha256_bytes

    entries = []
    for soc in socs:
        say(f"compiling ahead of time for {soc} ({target_spec.runtime.aot['compiler']})")
        result = compile_for(target_spec.runtime.aot["compiler"], tflite_bytes, soc)
        entry = {"file": None, "sha256": None, **result.summary()}
        if soc != target_spec.runtime.aot["soc"]:
            report.warnings.append(f"--aot {soc}: {target_spec.name}'s verdicts are for "
                                   f"{target_spec.runtime.aot['soc']}; report.json's aot says what "
                                   f"the compiler put on {soc}'s NPU")
        if result.ok:
            entry["file"] = f"model_{soc}.tflite"
            entry["sha256"] = sha256_bytes(result.data)
            atomic_write_bytes(stage / entry["file"], result.data)
        else:
            report.gate = _fail(report.gate, "aot", f"{soc}: {result.error}")
        entries.append(entry)
    return entries


def _lower(loaded, options: CompileOptions, say):
    """The model in a form the converter lowers to integer ops (`tflc.convert.lowering`)."""
    from tflc.convert.lowering import lower

    lowered, report = lower(loaded, options.activations, options.seed)
    if report is not None:
        say(f"lowering {len(report.layers)} recurrent layer(s): {report.route}")
    return lowered, report


def _layer_report(float_bytes: bytes, tflite_bytes: bytes, view, calibration, o: CompileOptions,
                  target_spec, evaluation: dict | None) -> dict:
    """Per-layer SQNR on the calibration set, the worst layers and advice (16x8 where it runs).

    A diagnosis, not a gate: a model LiteRT cannot run with all tensors kept gets the reason
    instead of the table, and the compile goes on.
    """
    from tflc.convert.layer_report import advise, measure_layers
    from tflc.errors import TflcError

    try:
        report = measure_layers(float_bytes, tflite_bytes, calibration)
    except (RuntimeError, ValueError, TflcError) as exc:
        return {"error": str(exc).splitlines()[0][:300]}
    drop = (evaluation or {}).get("accuracy_drop")
    return advise(report, view, o.activations, target_spec, drop, o.max_accuracy_drop,
                  tried_ptq=o.ptq is not None or o.bias_correction).to_dict()


def _fail(gate: dict | None, key: str, reason: str) -> dict:
    return {**(gate or {}), "passed": False, key: reason}


def _load_target(options: CompileOptions):
    """The target descriptor, and whether the export asked for can be made for it: both known
    before any conversion, so an impossible pair costs nothing and writes nothing."""
    if options.target is None:
        return None
    from tflc.check import load_target

    spec = load_target(options.target)
    if options.export is not None and options.export not in spec.runtime.exports:
        can = ", ".join(spec.runtime.exports) or "none"
        raise BadInput(f"--export {options.export} --target {options.target}: {spec.name} runs "
                       f"{spec.runtime.name}, which takes no {options.export} package (exports: "
                       f"{can}); choose a TFLite Micro target such as cortex-m4, or drop --export")
    if options.aot:
        if not spec.runtime.aot:
            raise BadInput(f"--aot --target {options.target}: {spec.name} names no ahead-of-time "
                           "compiler (runtime.aot in its descriptor); use a target such as "
                           "qualcomm-htp, or drop --aot")
        from tflc.aot import toolchain_for

        toolchain_for(spec.runtime.aot["compiler"])  # not installed: one line, before converting
    return spec


def _needs_static_batch(target_spec) -> bool:
    """Whether the target's runtime takes only static shapes: a descriptor fact, not a name.

    TFLite Micro, the Edge TPU compiler and Vela refuse the SHAPE/STRIDED_SLICE/PACK chains a
    free batch leaves in the graph (squeeze-and-excite reshapes, attention heads).
    """
    return bool(target_spec is not None and getattr(target_spec.runtime, "static_batch", False))


def _resolve_pipeline(options: CompileOptions):
    if not options.wants_pipeline:
        return None
    from tflc.optimize.pipeline import resolve_config

    return resolve_config(options.pipeline, **options.stage_flags,
                          max_accuracy_drop=options.max_accuracy_drop, seed=options.seed)


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
        f"size        float {format_bytes(sizes['float_tflite_bytes'], unit='KiB')} -> {report.options['activations']} "
        f"{format_bytes(sizes['int8_tflite_bytes'], unit='KiB')} ({sizes['ratio']:.2f}x smaller)",
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
    if report.ptq and report.ptq["candidates"]:
        from tflc.convert.ptq import format_table

        lines.append(f"ptq         chosen {report.ptq['chosen']} (on the evaluation data; * marks it)")
        lines.extend("            " + line for line in format_table(report.ptq).splitlines())
    elif report.ptq:
        lines.append(f"ptq         {report.ptq['chosen']}")
    if report.mixed:
        m = report.mixed
        layers = ", ".join(m["int16_layers"][:3]) + (" ..." if len(m["int16_layers"]) > 3 else "")
        lines.append(f"mixed       {len(m['int16_ops'])} op(s) in 16x8 ({m['int16_share']:.0%} of the "
                     f"compute, budget {m['budget']:.0%}): output SQNR {m['int8_sqnr_db']:.2f} dB "
                     f"all-int8 -> {m['sqnr_db']:.2f} dB" + (f"; {layers}" if layers else ""))
    if report.weights:
        w = report.weights
        lines.append(f"weights     cross-layer equalized {len(w['equalized'])} layer pairs; adaround "
                     f"rounded {len(w['adaround'])} layers ("
                     f"{sum(r['flipped'] for r in w['adaround'].values())} weights off nearest)")
    if report.layers and report.layers.get("worst"):
        lines.append(f"layers      lowest SQNR vs float ({report.layers['samples']} calibration samples): "
                     + "; ".join(report.layers["worst"]))
    for advice in (report.layers or {}).get("advice", []):
        lines.append(f"advice      {advice}")
    if report.stages:  # the compression pipeline's stage table
        from tflc.optimize.stage_report import stage_table

        lines.append("stages      (accuracy of each stage's model; sizes of it converted to int8)")
        lines.extend("            " + line for line in stage_table(report.stages).splitlines())
    if report.check:
        s = report.check["summary"]
        lines.append(f"target      {report.check['target']}: {s['ops_on_target']} of {s['ops_total']} ops on target, "
                     f"{s['segments']} segment(s)")
    if report.export:
        lines.append(f"export      {report.export.get('output_dir', '')}")
    for entry in report.aot or ():
        if entry["compiled"]:
            lines.append(f"aot         {entry['soc']}: {entry['ops_on_npu']} of {entry['ops_total']} ops "
                         f"on the NPU in {entry['partitions']} dispatch op(s) -> {entry['file']}")
        else:
            lines.append(f"aot         {entry['soc']}: not compiled: {entry['error']}")
    if report.gate:
        state = "passed" if report.passed else "FAILED"
        reasons = "; ".join(str(v) for k, v in report.gate.items()
                            if k in ("reason", "strict", "export", "aot") and v)
        lines.append(f"gate        {state}{': ' + reasons if reasons else ''}")
    for warning in report.warnings:
        lines.append(f"warning     {warning}")
    if report.artifact_id:
        lines.append(f"artifact    {report.artifact_id}")
    lines.append(f"wrote       {report.tflite_path} and {Path(report.output_dir) / 'report.json'}")
    return "\n".join(lines)




def _num(value) -> str:
    if isinstance(value, list):
        return f"per-channel[{len(value)}]"
    return "-" if value is None else f"{value:.6g}"
