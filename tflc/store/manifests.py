"""What each kind of result records: turning a report into files and a manifest.

The stages (compile, check, bench, export) hand over their report; this module knows which of
its fields are inputs (hashed here), configuration, target, seed, stage history and metrics, so
each stage needs only one line to be recorded (`report.artifact_id = record_compile(report)`).

Manifest sections (all kinds):
    inputs    {role: {path, sha256, config_key}}: model, calibration_data, train_data, ...
    config    the full resolved configuration, enough to run the same command again
    cwd       the working folder, against which relative paths in `config` are read
    target    {name, sha256 (of the resolved descriptor), file_sha256, path} or null
    seed      the random seed, or null
    stages    the optimization stage history (compile), or null
    metrics   every number the report holds (accuracy, sizes, latency, memory, ...)
    result    what the run produced beyond its files (e.g. the .tflite sha256)
"""

from __future__ import annotations

import os
from pathlib import Path

from tflc.errors import TflcError
from tflc.fileio import sha256_bytes, sha256_file
from tflc.store.artifacts import canonical_json
from tflc.store.diff import flatten

# compile's options naming a file or folder whose bytes matter; each is recorded under its name
COMPILE_INPUT_KEYS = ("model", "calibration_data", "train_data", "eval_data")


def describe_path(path, config_key: str | None = None, sha256: str | None = None) -> dict | None:
    """{path (absolute), sha256} of an input file or folder; sha256 None when it is gone.

    `sha256`: the hash the producing command already computed, so big inputs are read once.
    """
    if path is None:
        return None
    absolute = Path(os.fspath(path)).expanduser().absolute()
    if sha256 is None and absolute.exists():
        sha256 = sha256_file(absolute)
    entry = {"path": str(absolute), "sha256": sha256}
    if config_key:
        entry["config_key"] = config_key
    return entry


def describe_target(target) -> dict | None:
    """The target's name and the hash of its resolved descriptor (`extends` chain included), so a
    changed parent descriptor shows up too; `file_sha256` is the descriptor file's own bytes."""
    if target is None:
        return None
    from tflc.check import load_target

    spec = load_target(target)
    resolved = {k: v for k, v in spec.to_dict().items() if k != "path"}
    entry = {"name": spec.name, "sha256": sha256_bytes(canonical_json(resolved)), "path": spec.path}
    if spec.path and Path(spec.path).is_file():
        entry["file_sha256"] = sha256_file(spec.path)
    return entry


def numeric_leaves(obj) -> dict:
    """Every number (and boolean) below `obj`, keyed by its dotted path: a report's metrics."""
    return {
        key: value
        for key, value in flatten(obj, whole_lists=False).items()
        if isinstance(value, (bool, int, float))
    }


# ------------------------------------------------------------------------------------ compile


def compile_manifest(report) -> dict:
    """The manifest of a `tflc.compile` result (a CompileReport)."""
    config = dict(report.config)
    known = {"model": report.model.get("sha256"), "calibration_data": report.calibration.get("sha256")}
    inputs = {key: describe_path(config.get(key), key, known.get(key)) for key in COMPILE_INPUT_KEYS}
    inputs["model"]["format"] = report.model.get("format")
    if config.get("pipeline"):
        inputs["pipeline_config"] = describe_path(config["pipeline"], "pipeline")
    metrics = numeric_leaves(
        {
            "sizes": report.sizes,
            "evaluation": report.evaluation,
            "gate": report.gate,
            "check": (report.check or {}).get("summary"),
            "verifier": _verifier_numbers(report.verifier),
            "export": report.export,
        }
    )
    metrics["passed"] = report.passed
    return {
        "model_name": Path(config["model"]).stem,
        "inputs": {k: v for k, v in inputs.items() if v is not None},
        "config": config,
        "cwd": os.getcwd(),
        "target": describe_target(config.get("target")),
        "seed": config.get("seed"),
        "stages": report.stages,
        "metrics": metrics,
        "timings": report.timings,
        "result": {
            "tflite_sha256": report.tflite_sha256,
            "verifier": report.verifier.get("verdict"),
            "warnings": report.warnings,
        },
    }


def _verifier_numbers(verifier: dict | None) -> dict:
    verifier = verifier or {}
    return {k: v for k, v in verifier.items() if isinstance(v, (bool, int, float))}


def record_compile(report, registry=None) -> str | None:
    """Record a compile: model.tflite, report.json and the exported C package when there is one."""
    from tflc.store.recording import not_recorded, record

    out = Path(report.output_dir)
    files: dict[str, object] = {
        "model.tflite": out / "model.tflite",
        "report.json": report.to_dict(),
    }
    if report.profile and (out / "profile.json").is_file():  # the guard's calibration profile
        files["profile.json"] = out / "profile.json"
    if report.export and (out / "c").is_dir():
        files["c"] = out / "c"
    for entry in getattr(report, "aot", None) or ():  # ahead-of-time compiled models, per SoC
        if entry.get("file") and (out / entry["file"]).is_file():
            files[entry["file"]] = out / entry["file"]
    try:
        manifest = compile_manifest(report)
    except (TflcError, OSError) as exc:  # e.g. an input deleted mid-run: keep the result anyway
        return not_recorded("compile", exc)
    return record("compile", files, manifest, registry)


# ------------------------------------------------------------------- results about a .tflite


def model_input(model, registry=None) -> tuple[dict | None, str | None]:
    """The input entry of a .tflite a command ran on, linked to the compile that produced it
    (`artifact`) when the registry has one with the same bytes; and a short model name."""
    if model is None or isinstance(model, (bytes, bytearray)):
        return None, None
    from tflc.store.registry import Registry

    entry = describe_path(model, "model")
    name = Path(entry["path"]).stem
    if entry["sha256"]:
        reg = Registry(registry)
        folder = Path(entry["path"]).resolve().parent
        try:
            if (
                folder.parent == reg.files.artifacts.resolve()
            ):  # resolved from NAME@current or an id
                source = reg.get(folder.name)
            else:
                source = reg.source_of(entry["sha256"])
        except TflcError:
            source = None  # a damaged registry is reported when recording, not here
        if source is not None:
            entry["artifact"] = source.id
            name = source.model_name or name
    return entry, name


def record_check(result, model, target, config: dict | None = None, registry=None) -> str | None:
    """Record a `tflc check`: the model checked, the verdicts (check.json) and their numbers."""
    from tflc.store.recording import not_recorded, record

    try:
        data = result.to_dict()
        model_entry, name = model_input(model, registry)
        summary = {k: v for k, v in data.get("summary", {}).items() if k != "operators"}
        manifest = {
            "model_name": name,
            "inputs": {"model": model_entry} if model_entry else {},
            "config": {
                "model": str(model),
                "target": str(getattr(target, "name", target)),
                **(config or {}),
            },
            "cwd": os.getcwd(),
            "target": describe_target(target),
            "seed": None,
            "stages": None,
            "metrics": numeric_leaves(summary),
            "result": {"passed": result.passed((config or {}).get("min_coverage"))},
        }
    except (TflcError, OSError) as exc:
        return not_recorded("check", exc)
    files: dict[str, object] = {"check.json": data}
    if model_entry:
        files["model.tflite"] = model_entry["path"]
    return record("check", files, manifest, registry)


def _target_entry(target) -> dict | None:
    """describe_target, or just the name when the descriptor cannot be read back any more."""
    if target is None:
        return None
    try:
        return describe_target(target)
    except TflcError:
        return {"name": str(getattr(target, "name", target)), "sha256": None}


def record_bench(result, registry=None) -> str | None:
    """Record a `tflc bench` (a BenchResult): the models timed, bench.json and every figure."""
    from tflc.store.recording import not_recorded, record

    try:
        data = result.to_dict()
        files: dict[str, object] = {"bench.json": data}
        inputs: dict[str, dict] = {}
        model_name = None
        for index, summary in enumerate(result.models):
            entry, name = model_input(summary.model, registry)
            if entry is None:
                continue
            role = "model" if index == 0 else f"model_{index}"
            inputs[role] = entry
            files[f"{role}.tflite"] = entry["path"]
            model_name = model_name or name
        settings = dict(result.settings)
        for role in ("inputs", "eval_data"):
            if settings.get(role):
                inputs[role] = describe_path(settings[role], role)
        summaries = [s.to_dict() for s in result.models]
        metrics = numeric_leaves(summaries[0] if len(summaries) == 1 else {"models": summaries})
        manifest = {
            "model_name": model_name,
            "inputs": inputs,
            "config": {
                "models": [s.model for s in result.models],
                "device": result.device,
                "target": result.target,
                **settings,
            },
            "cwd": os.getcwd(),
            "target": _target_entry(result.target),
            "seed": settings.get("seed"),
            "stages": None,
            "metrics": metrics,
            "result": {
                "device": result.device,
                "device_facts": result.device_facts,
                "runtime": result.runtime,
                "warnings": result.warnings,
            },
        }
    except (TflcError, OSError) as exc:
        return not_recorded("bench", exc)
    return record("bench", files, manifest, registry)


def record_export(report, config: dict | None = None, registry=None) -> str | None:
    """Record a `tflc export` (an ExportReport): the model, the generated sources and figures."""
    from tflc.store.recording import not_recorded, record

    try:
        data = report.to_dict()
        model_entry, name = model_input(report.model, registry)
        out = Path(report.output_dir)
        files: dict[str, object] = {"export_report.json": data}
        files.update({f"package/{relative}": out / relative for relative in report.files})
        if model_entry:
            files["model.tflite"] = model_entry["path"]
        manifest = {
            "model_name": name,
            "inputs": {"model": model_entry} if model_entry else {},
            "config": {
                "model": report.model,
                "out_dir": report.output_dir,
                "target": report.target,
                "name": report.name,
                "layout": report.layout,
                **(config or {}),
            },
            "cwd": os.getcwd(),
            "target": _target_entry(report.target),
            "seed": (config or {}).get("seed"),
            "stages": None,
            "metrics": numeric_leaves(
                {
                    k: data.get(k)
                    for k in ("model_bytes", "arena", "budget", "verification", "within_budget")
                }
            ),
            "result": {"files": report.files, "notes": report.notes},
        }
    except (TflcError, OSError) as exc:
        return not_recorded("export", exc)
    return record("export", files, manifest, registry)


def record_profile(result, model, settings: dict | None = None, registry=None) -> str | None:
    """Record a `tflc profile`: the model profiled, its per-op profile (profile.json) and the
    whole-model figures as metrics (latency, arena, energy), so `tflc runs diff` compares two."""
    from tflc.store.recording import not_recorded, record

    try:
        data = result.to_dict()
        model_entry, name = model_input(model, registry)
        manifest = {
            "model_name": name,
            "inputs": {"model": model_entry} if model_entry else {},
            "config": {"model": str(model), "target": result.target, "device": result.device,
                       **{k: v for k, v in (settings or {}).items() if _plain(v)}},
            "cwd": os.getcwd(),
            "target": describe_target(result.target),
            "seed": None,
            "stages": None,
            "metrics": numeric_leaves(data.get("total", {})),
        }
    except (TflcError, OSError) as exc:
        return not_recorded("profile", exc)
    files: dict[str, object] = {"profile.json": data}
    if model_entry:
        files["model.tflite"] = model_entry["path"]
    return record("profile", files, manifest, registry)


def record_deploy(ref: str, device: str, result: str, *, name: str | None = None,
                  artifact: str | None = None, done=None, reason: str | None = None,
                  settings: dict | None = None, registry=None) -> str | None:
    """Record a `tflc deploy`: the release (its name and artifact id), the device and the result
    ("deployed", "refused": the device could not load it and keeps its release, "failed"), with
    the device's answer (deploy.json), so the registry holds where each release went and how
    (`Registry.list(kind="deploy")`; `tflc runs list` shows them among the other runs)."""
    from tflc.store.recording import not_recorded, record

    try:
        data = {"ref": ref, "name": name, "artifact": artifact, "device": device,
                "result": result, "reason": reason, **(done.to_dict() if done else {})}
        manifest = {
            "model_name": name,
            "inputs": {},
            "config": {"release": ref, "artifact": artifact, "device": device, "result": result,
                       **{k: v for k, v in (settings or {}).items() if _plain(v)}},
            "cwd": os.getcwd(),
            "target": None,
            "seed": None,
            "stages": None,
            "metrics": {"bytes": done.bytes} if done else {},
        }
    except (TflcError, OSError) as exc:
        return not_recorded("deploy", exc)
    return record("deploy", {"deploy.json": data}, manifest, registry)


def _plain(value) -> bool:
    """A setting that belongs in a manifest: JSON scalars and lists of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))

