"""The commands as Python functions: each runs its stage and records the result.

One rule for recording, the same for all four commands and for the CLI and Python alike: the
stage functions (`tflc.compiler.compile_model`, `tflc.check.check_model`,
`tflc.export.export_c`, `tflc.bench.bench`, `tflc.profile.profile_models`) compute and return plain results and never touch the
run registry; the functions here call them and then keep the result as an artifact in the
registry (`./.tflc`, `$TFLC_REGISTRY` or `tflc --registry`; `TFLC_NO_RECORD=1` turns it off),
writing the artifact id into the result and into its report file. `tflc compile ...` is
`tflc.compile(...)`, `tflc check ...` is `tflc.check(...)`, and so on.

A registry that cannot be written never costs the result: one warning line, and the id is None.
"""

from __future__ import annotations

import os
from pathlib import Path

from tflc.options import CompileOptions


def compile(model, out_dir, options: CompileOptions | None = None, *, log=None, **settings):  # noqa: A001
    """`tflc compile`: see `tflc.compiler.compile_model`; returns the CompileReport."""
    from tflc.compiler import compile_model
    from tflc.fileio import atomic_write_json
    from tflc.store import record_compile

    report = compile_model(model, out_dir, options, log=log, **settings)
    report.artifact_id = record_compile(report)
    if report.artifact_id:
        atomic_write_json(Path(out_dir) / "report.json", report.to_dict())
    return report


def check(model, target, *, min_coverage: float | None = None):
    """`tflc check`: `model` a .tflite path or registry reference (NAME@current, an id);
    returns the CheckResult."""
    from tflc.check import check_model
    from tflc.store import record_check, resolve_model_ref

    model = resolve_model_ref(model)
    result = check_model(model, target)
    if isinstance(model, (str, os.PathLike)):
        result.artifact_id = record_check(result, model, target, {"min_coverage": min_coverage})
    return result


def export(model, out_dir, *, target=None, name: str = "model", layout: str = "plain",
           measure: bool = True, verify: bool = True, samples: int = 4, seed: int = 0,
           input_guard: bool = False, profile=None):
    """`tflc export`: `model` a .tflite path or registry reference; see `tflc.export.export_c`.
    Returns the ExportReport; over the target's budget, `report.passed` is False."""
    from tflc.export import export_c
    from tflc.export.staging import REPORT_FILE
    from tflc.fileio import atomic_write_json
    from tflc.store import record_export, resolve_model_ref

    report = export_c(resolve_model_ref(model), out_dir, target=target, name=name, layout=layout,
                      measure=measure, verify=verify, samples=samples, seed=seed,
                      input_guard=input_guard, profile=profile)
    report.artifact_id = record_export(report, {"measure": measure, "verify": verify,
                                                "samples": samples, "seed": seed})
    if report.artifact_id:
        atomic_write_json(Path(out_dir) / REPORT_FILE, report.to_dict())
    return report


def bench(models, device="local", *, output=None, **settings):
    """`tflc bench`: `models` are .tflite paths or registry references; see `tflc.bench.bench`
    for the settings. `output`: a JSON file for the result (with its artifact id), checked for
    writability before anything is measured. Returns the BenchResult.

    `device` may also be a list: one device behaves as above; several are a fleet
    (`tflc.bench.fleet`), measured in parallel, returned as a FleetResult whose every device
    that ran is recorded on its own (its BenchResult carries the artifact id)."""
    from tflc.bench import bench as run_bench
    from tflc.bench.session import check_output_path
    from tflc.store import record_bench, resolve_model_ref

    if output is not None:
        check_output_path(output)
    names = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    devices = [device] if isinstance(device, (str, os.PathLike)) else list(device)
    if len(devices) > 1:
        return _bench_fleet([resolve_model_ref(m) for m in names], devices, output, settings)
    result = run_bench([resolve_model_ref(m) for m in names], devices[0], **settings)
    result.artifact_id = record_bench(result)
    if output is not None:
        result.write(output)
    return result


def profile(models, target, *, output=None, **settings):
    """`tflc profile`: `models` are .tflite paths or registry references (NAME@current, an id);
    see `tflc.profile.profile_models` for the settings. Each model's profile is recorded.
    Returns the list of ProfileResults."""
    from tflc.profile import profile_models
    from tflc.store import resolve_model_ref
    from tflc.store.manifests import record_profile

    names = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    resolved = [resolve_model_ref(m) for m in names]
    results = profile_models(resolved, target, output=output, **settings)
    for model, result in zip(resolved, results):
        result.artifact_id = record_profile(result, model, settings)
    return results


def _bench_fleet(models, devices, output, settings):
    """Several devices at once: each device's result is recorded as its own bench."""
    from tflc.bench.fleet import bench_fleet
    from tflc.store import record_bench

    fleet = bench_fleet(models, devices, **settings)
    for outcome in fleet.devices:
        if outcome.ok:
            outcome.result.artifact_id = record_bench(outcome.result)
    if output is not None:
        fleet.write(output)
    return fleet


def search(options, *, log=None):
    """`tflc search`: see `tflc.search.search` (a `tflc.search.SearchOptions`). Each finished
    trial is recorded as a `search` artifact as it ends; the recommended model is exported as C
    (recorded as an export) when the target's runtime takes a C package. Returns the
    SearchResult."""
    from tflc.check import load_target
    from tflc.search.core import search as run_search
    from tflc.search.core import write_outputs

    result = run_search(options, log=log, on_trial=_record_search_trial)
    spec = load_target(options.target)
    if result.recommended is not None and "c" in tuple(spec.runtime.exports or ()):
        folder = Path(result.recommended["model"]).parent
        try:
            report = export(folder / "model.tflite", folder / "c", target=options.target,
                            name="model", verify=False)
            result.recommended["export"] = {"dir": str(folder / "c"), "passed": report.passed,
                                            "artifact_id": report.artifact_id,
                                            "arena_bytes": (report.to_dict().get("arena") or {})
                                            .get("recommended_bytes")}
        except Exception as exc:  # noqa: BLE001 - the front stands without the C package
            result.recommended["export"] = {"passed": False,
                                            "error": " ".join(str(exc).split())[:300]}
        write_outputs(result, Path(options.out_dir))
    return result


def _record_search_trial(outcome, metrics, model_path, options):
    from tflc.search.core import options_dict
    from tflc.store import record
    from tflc.store.manifests import describe_path, describe_target

    inputs = {"model": describe_path(options.model, "model"),
              "train_data": describe_path(options.train_data, "train_data"),
              "eval_data": describe_path(options.eval_data, "eval_data")}
    manifest = {
        "inputs": {k: v for k, v in inputs.items() if v},
        "model_name": Path(options.model).stem,
        "config": {"search": options_dict(options), "params": outcome.params},
        "target": describe_target(options.target),
        "seed": options.seed,
        "metrics": {k: metrics[k] for k in ("accuracy", "float_accuracy", "macs", "arena_bytes",
                                            "flash_bytes", "latency_ms")
                    if metrics.get(k) is not None},
        "search": {"trial": outcome.number, "status": outcome.status, "error": outcome.error},
    }
    files = {"model.tflite": model_path, "trial.json": metrics}
    if outcome.report is not None:
        files["report.json"] = outcome.report
    return record("search", files, manifest)
