"""The store: every compile, check, bench and export result kept as a versioned artifact.

An artifact is a set of content-addressed files (`artifacts.py`) plus a `manifest.json` that says
exactly what produced them: the hashes of every input, the full resolved configuration, the
target descriptor's hash, the seed, the software versions (`versions.py`), the platform, the
stage history and every metric. A SQLite registry (`registry.py`) indexes artifacts, tags and
releases, so `tflc runs ...`, `tflc promote`, `tflc rollback` and `NAME@current` (`refs.py`)
work on it, and `tflc rebuild` (`rebuild.py`) reruns a recorded compile.

Two entry points for the rest of tflc:

    files = {"model.tflite": path, "report.json": report.to_dict()}
    artifact_id = record("compile", files, manifest)
    path = resolve_model_ref("kws@current")   # plain paths pass through untouched

Nothing here imports TensorFlow.
"""

from __future__ import annotations

from tflc.store.manifests import record_bench, record_check, record_compile, record_export
from tflc.store.recording import (
    KINDS,
    MANIFEST_SCHEMA,
    not_recorded,
    record,
    recording_disabled,
)
from tflc.store.refs import resolve_model_ref
from tflc.store.registry import Registry, registry_root

__all__ = [
    "not_recorded",
    "record",
    "record_bench",
    "record_check",
    "record_compile",
    "record_export",
    "resolve_model_ref",
    "recording_disabled",
    "Registry",
    "registry_root",
    "KINDS",
    "MANIFEST_SCHEMA",
]
