"""`tflc rebuild ID`: rerun a recorded compile and prove the same bytes come out.

The manifest holds the compile's full configuration, the hash of every input and the versions
of the converter stack. A rebuild first compares what is on disk and installed now with what was
recorded, then calls `tflc.compile` with the recorded configuration into a fresh folder and
compares the .tflite's sha256. When the bytes differ, the report names the inputs, target
descriptor, versions and configuration keys that changed, which is where the difference came
from; when nothing changed and the bytes still differ, it says the conversion itself is not
deterministic on this machine.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tflc.errors import BadInput
from tflc.fileio import sha256_file
from tflc.store.manifests import describe_path, describe_target
from tflc.store.registry import Registry
from tflc.store.versions import collect_platform, collect_versions


@dataclass
class RebuildReport:
    artifact_id: str
    recorded_sha256: str
    rebuilt_sha256: str | None = None
    identical: bool | None = None  # None: not rebuilt (an input is missing or changed)
    output_dir: str | None = None
    inputs: list[dict] = field(default_factory=list)  # {role, path, status, recorded, found}
    target: dict | None = None  # {name, status, recorded, found}
    versions: list[dict] = field(default_factory=list)  # changed only: {name, recorded, now}
    platform: list[dict] = field(default_factory=list)
    config: list[dict] = field(default_factory=list)  # {key, problem}
    verdict: str = ""

    @property
    def differences(self) -> list[str]:
        """One phrase per thing that differs from the recording."""
        out = [
            f"input {i['role']} {i['path']} is {i['status']}"
            + (
                f" (sha256 {i['found'][:12]}, recorded {i['recorded'][:12]})"
                if i["status"] == "changed"
                else ""
            )
            for i in self.inputs
            if i["status"] != "same"
        ]
        if self.target and self.target["status"] != "same":
            out.append(f"target descriptor {self.target['name']} {self.target['status']}")
        out += [f"{v['name']} {v['recorded']} -> {v['now']}" for v in self.versions]
        out += [f"config '{c['key']}' {c['problem']}" for c in self.config]
        return out

    def to_dict(self) -> dict:
        return {
            "artifact_id": self.artifact_id,
            "identical": self.identical,
            "recorded_sha256": self.recorded_sha256,
            "rebuilt_sha256": self.rebuilt_sha256,
            "output_dir": self.output_dir,
            "inputs": self.inputs,
            "target": self.target,
            "versions": self.versions,
            "platform": self.platform,
            "config": self.config,
            "differences": self.differences,
            "verdict": self.verdict,
        }


def rebuild(
    artifact: str,
    registry=None,
    *,
    out_dir=None,
    inputs: dict[str, str] | None = None,
    anyway: bool = False,
) -> RebuildReport:
    """Rerun the compile recorded as `artifact`; `inputs` maps roles (model, calibration_data,
    ...) to files that replace moved ones; `anyway` rebuilds even when an input changed."""
    reg = Registry(registry)
    record = reg.get(artifact)
    if record.kind != "compile":
        raise BadInput(
            f"artifact {record.id} is a {record.kind} result; `tflc rebuild` reruns "
            f"compiles (rebuild the compile artifact its model came from)"
        )
    manifest = record.manifest
    recorded_sha = (manifest.get("result") or {}).get("tflite_sha256") or record.files[
        "model.tflite"
    ]["sha256"]
    report = RebuildReport(artifact_id=record.id, recorded_sha256=recorded_sha)
    overrides = dict(inputs or {})
    unknown = set(overrides) - set(manifest.get("inputs", {}))
    if unknown:
        raise BadInput(
            f"--input {sorted(unknown)[0]}=...: artifact {record.id} has no such input "
            f"(it has: {', '.join(manifest.get('inputs', {}))})"
        )

    config = dict(manifest["config"])
    for role, entry in manifest.get("inputs", {}).items():
        path = overrides.get(role, entry.get("path"))
        found = describe_path(path)
        status = (
            "missing"
            if found["sha256"] is None
            else ("same" if found["sha256"] == entry.get("sha256") else "changed")
        )
        report.inputs.append(
            {
                "role": role,
                "path": found["path"],
                "status": status,
                "recorded": entry.get("sha256"),
                "found": found["sha256"],
            }
        )
        _point_config_at(config, entry.get("config_key"), found["path"])
    report.target = _compare_target(manifest, config)
    report.versions = _changed(manifest.get("versions", {}), collect_versions())
    report.platform = _changed(manifest.get("platform", {}), collect_platform())
    report.config = _config_problems(config)

    missing = [i for i in report.inputs if i["status"] == "missing"]
    if missing:
        report.verdict = (
            f"not rebuilt: input {missing[0]['role']} {missing[0]['path']} is gone; "
            f"pass --input {missing[0]['role']}=PATH if it moved"
        )
        return report
    blocking = [d for d in report.differences if d.startswith(("input", "target", "config"))]
    if blocking and not anyway:
        report.verdict = "not rebuilt: " + "; ".join(blocking) + " (--anyway rebuilds regardless)"
        return report

    report.rebuilt_sha256, report.output_dir = _run(config, out_dir)
    report.identical = report.rebuilt_sha256 == recorded_sha
    if report.identical:
        report.verdict = (
            f"identical: the rebuilt model.tflite has the recorded sha256 {recorded_sha[:12]}"
        )
    elif report.differences:
        report.verdict = "differs: rebuilt sha256 {} vs recorded {}; what changed since: {}".format(
            report.rebuilt_sha256[:12], recorded_sha[:12], "; ".join(report.differences)
        )
    else:
        report.verdict = (
            f"differs: rebuilt sha256 {report.rebuilt_sha256[:12]} vs recorded "
            f"{recorded_sha[:12]} although inputs, target and versions match: the "
            f"conversion is not deterministic here"
        )
    return report


def _point_config_at(config: dict, key: str | None, path: str) -> None:
    """Make the config read an input from its absolute (or overriding) path."""
    if not key:
        return
    config[key] = path


def _compare_target(manifest: dict, config: dict) -> dict | None:
    recorded = manifest.get("target")
    if not recorded:
        return None
    name = config.get("target") or recorded.get("name")
    if (
        recorded.get("path")
        and not Path(str(name)).is_file()
        and str(name).endswith((".yaml", ".yml"))
    ):
        name = config["target"] = recorded["path"]  # a descriptor given by relative path
    try:
        now = describe_target(name)
    except BadInput as exc:
        return {
            "name": recorded.get("name"),
            "status": f"unreadable ({exc.message})",
            "recorded": recorded.get("sha256"),
            "found": None,
        }
    status = "same" if now["sha256"] == recorded.get("sha256") else "changed"
    return {
        "name": recorded.get("name"),
        "status": status,
        "recorded": recorded.get("sha256"),
        "found": now["sha256"],
    }


def _changed(recorded: dict, now: dict) -> list[dict]:
    return [
        {"name": key, "recorded": recorded.get(key), "now": now.get(key)}
        for key in sorted(set(recorded) | set(now))
        if recorded.get(key) != now.get(key)
    ]


def _config_problems(config: dict) -> list[dict]:
    from tflc.options import CompileOptions

    accepted = set(CompileOptions.field_names()) | {"model", "out_dir"}
    return [{"key": key, "problem": "is not accepted by this tflc's compile"}
            for key in config if key not in accepted]


def _run(config: dict, out_dir) -> tuple[str, str]:
    """Compile with the recorded configuration (the stage itself: a rebuild checks an artifact,
    it is not a new result, so nothing is recorded); (sha256, output folder)."""
    from tflc.compiler import compile_model
    from tflc.options import CompileOptions

    settings = {k: v for k, v in config.items() if k not in ("model", "out_dir")}
    known = {k: v for k, v in settings.items() if k in CompileOptions.field_names()}
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="tflc-rebuild-"))
    result = compile_model(config["model"], out, CompileOptions.from_dict(known))
    return sha256_file(result.tflite_path), os.fspath(out)
