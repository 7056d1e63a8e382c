"""Model references: `NAME@current`, `NAME@previous` or an artifact id wherever a path is taken.

`tflc bench kws@current`, `tflc export kws@previous` and `tflc check 3fa9b2c41d07` read the
model file of a released or recorded artifact, verified against its recorded sha256 first, so a
file damaged in the registry is reported instead of benchmarked. A path that exists always wins,
and anything that is not a reference passes through untouched for the caller to open.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tflc.errors import BadInput
from tflc.fileio import sha256_file

_RELEASE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)@(?P<which>[A-Za-z]+)$")
_ARTIFACT = re.compile(r"^(?P<id>[0-9a-f]{6,64})(?::(?P<file>.+))?$")


def resolve_model_ref(text: str | os.PathLike, registry=None) -> Path:
    """Turn a model argument into a file path.

    `NAME@current` / `NAME@previous`: the model of that release; `ID` (6+ hex digits of an
    artifact id) or `ID:FILE`: that artifact's model, or the named file of it. Anything else is
    returned as a Path unchanged.
    """
    from tflc.store.registry import Registry

    if not isinstance(text, str):
        return Path(text)
    path = Path(text)
    if path.exists():
        return path
    release = _RELEASE.match(text)
    if release:
        registry_ = Registry(registry)
        artifact_id = registry_.release(release["name"], release["which"])
        return artifact_file(registry_, artifact_id, None, text)
    artifact = _ARTIFACT.match(text)
    if artifact:
        registry_ = Registry(registry)
        if not registry_.db_path.exists():
            return path  # no registry here: it is just a file name that does not exist
        return artifact_file(
            registry_, registry_.resolve_id(artifact["id"]), artifact["file"], text
        )
    return path


def artifact_file(registry, artifact_id: str, name: str | None, ref: str) -> Path:
    """The path of one file of an artifact (its .tflite model by default), verified intact."""
    record = registry.get(artifact_id)
    if name is None:
        models = [n for n in record.files if n.endswith(".tflite")]
        if not models:
            raise BadInput(
                f"{ref}: artifact {artifact_id} ({record.kind}) holds no .tflite model "
                f"(its files: {', '.join(record.files) or 'none'})"
            )
        name = "model.tflite" if "model.tflite" in models else models[0]
    if name not in record.files:
        raise BadInput(
            f"{ref}: artifact {artifact_id} has no file '{name}' "
            f"(its files: {', '.join(record.files)})"
        )
    path = registry.files.file_path(artifact_id, name).resolve()
    expected = record.files[name]["sha256"]
    if not path.is_file():
        raise BadInput(
            f"{path}: this file of artifact {artifact_id} ({ref}) was deleted; run "
            f"`tflc runs repair` to restore it from the registry's stored copy"
        )
    try:
        found = sha256_file(path)
    except OSError as exc:
        raise BadInput(
            f"{path}: this file of artifact {artifact_id} ({ref}) cannot be read "
            f"({exc.strerror or exc}); run `tflc runs repair` to restore it from the registry's "
            f"stored copy"
        ) from None
    if found != expected:
        raise BadInput(
            f"{path}: this file of artifact {artifact_id} ({ref}) was modified after it "
            f"was recorded (sha256 {found[:12]}, recorded {expected[:12]}); run "
            f"`tflc runs repair` to restore it from the registry's stored copy"
        )
    return path
