"""Recording a result: the one function every command's library entry calls (`record`), and the
switches that turn it off (`recording_disabled()`, `TFLC_NO_RECORD=1`)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
from collections.abc import Mapping

from tflc.errors import TflcError
from tflc.fileio import sha256_bytes
from tflc.store.artifacts import ID_LENGTH, canonical_json, normalize_files
from tflc.store.registry import Registry, now_iso, registry_root
from tflc.store.versions import collect_platform, collect_versions

KINDS = ("compile", "check", "bench", "export", "search", "profile", "deploy")
MANIFEST_SCHEMA = 1
# Setting TFLC_NO_RECORD=1 turns recording off (e.g. a throwaway notebook session).
NO_RECORD_ENV = "TFLC_NO_RECORD"

_disabled = contextvars.ContextVar("tflc_store_recording_disabled", default=False)


@contextlib.contextmanager
def recording_disabled():
    """Within this block `record` stores nothing and returns None (`tflc rebuild` uses it: a
    rebuild is a check of an existing artifact, not a new result)."""
    token = _disabled.set(True)
    try:
        yield
    finally:
        _disabled.reset(token)


def record(
    kind: str,
    files: Mapping[str, object],
    manifest: Mapping,
    registry=None,
    *,
    strict: bool = False,
) -> str | None:
    """Store a result as an artifact and return its id.

    `files` maps names to paths (a folder is stored whole), bytes, or dicts (stored as JSON).
    `manifest` holds what the caller knows: `inputs` ({role: {path, sha256}}), `config`,
    `target` ({name, sha256}), `seed`, `stages`, `metrics`; `versions`, `platform`, `created`
    and the files' hashes are added here.

    A registry that cannot be written must not cost the user the result they just computed: it
    prints one warning line naming the problem and returns None (`strict=True` raises instead).
    """
    if kind not in KINDS:
        raise ValueError(f"artifact kind {kind!r} is not one of {KINDS}")
    if _disabled.get() or os.environ.get(NO_RECORD_ENV, "") not in ("", "0"):
        return None
    try:
        return _record(kind, files, manifest, registry)
    except (TflcError, OSError) as exc:
        if strict:
            raise
        return not_recorded(kind, exc, registry)


def not_recorded(kind: str, exc: Exception, registry=None) -> None:
    """Say in one line why a result could not be recorded (the result itself is fine), always
    naming a path: the file the error names, else the registry's folder."""
    if isinstance(exc, TflcError):
        reason = exc.message
    else:
        where = getattr(exc, "filename", None) or registry_root(registry)
        reason = f"{where}: {getattr(exc, 'strerror', None) or exc}"
    print(
        f"tflc: warning: this {kind} result was not recorded in the run registry: {reason}",
        file=sys.stderr,
    )
    return None


def _record(kind: str, files: Mapping[str, object], manifest: Mapping, registry) -> str:
    reg = Registry(registry)
    data = normalize_files(files)
    reg.ensure_database()  # a registry whose database vanished is reported, not silently restarted
    file_meta = {
        name: {"sha256": reg.files.put_blob(blob), "size": len(blob)} for name, blob in data.items()
    }
    full = {
        **dict(manifest),
        "schema": MANIFEST_SCHEMA,
        "kind": kind,
        "created": now_iso(),
        "versions": manifest.get("versions") or collect_versions(),
        "platform": manifest.get("platform") or collect_platform(),
        "files": file_meta,
    }
    text = canonical_json(full)
    manifest_sha = sha256_bytes(text)
    artifact_id = manifest_sha[:ID_LENGTH]
    reg.files.put_blob(text)  # the stored copy `runs repair` brings a lost manifest back from
    reg.files.write_artifact(artifact_id, data, text)
    return reg.add(artifact_id, manifest_sha, text.decode(), json.loads(text))
