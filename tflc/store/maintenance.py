"""Keeping a registry healthy: verify, repair and garbage-collect.

Files in `.tflc/` can be deleted or edited by hand. `verify` names every file, and every stored
copy of one, that no longer matches its recorded hash; `repair` restores what can be restored
(artifact files from their content-addressed blobs and blobs from intact artifact files,
manifests from the database or their stored copies, the database from the manifests and the
event log); `gc` removes what nothing refers to. Each leaves every other artifact usable.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from tflc.errors import BadInput
from tflc.fileio import atomic_write_bytes, sha256_bytes, sha256_file
from tflc.store.artifacts import MANIFEST
from tflc.store.events import EventLog, read_events
from tflc.store.recording import KINDS
from tflc.store.registry import DatabaseDamaged, Registry

# Unreferenced files younger than this may belong to a record another process is still writing.
RECORD_WINDOW_S = 600.0


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[dict] = field(default_factory=list)  # {artifact, file, path, status}
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "checked": self.checked,
            "ok": self.ok,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def verify(registry: Registry, ids: list[str] | None = None) -> VerifyReport:
    """Check every file (or those of `ids`) and its stored copy against the recorded hash.

    Both sides matter: an intact artifact file with a lost stored copy can no longer be repaired,
    and repair puts the stored copy back from it while it still can.
    """
    records = [registry.get(i) for i in ids] if ids else registry.list()
    report = VerifyReport()
    blob_status: dict[str, str] = {}  # many artifacts share one stored copy: hash it once
    for record in records:
        report.checked += 1
        manifest_sha, _ = registry.stored_manifest_text(record.id)
        checks = [(name, meta["sha256"]) for name, meta in record.files.items()]
        for name, sha in [*checks, (MANIFEST, manifest_sha)]:
            status = _artifact_side_status(registry, record.id, name, sha)
            if status != "ok":
                path = registry.files.file_path(record.id, name)
                report.problems.append(_problem(record.id, name, status, path))
            if sha not in blob_status:
                blob_status[sha] = registry.files.blob_status(sha)
            if blob_status[sha] != "ok":
                path = registry.files.blob_path(sha)
                report.problems.append(
                    _problem(record.id, name, f"stored copy {blob_status[sha]}", path)
                )
    warning = read_events(registry.events_path).warning()
    if warning:
        report.warnings.append(warning)
    return report


def _artifact_side_status(registry: Registry, artifact_id: str, name: str, sha: str) -> str:
    """A file's status in the artifact folder; a manifest is intact when its hash is `sha`."""
    if name != MANIFEST:
        return registry.files.file_status(artifact_id, name, sha)
    path = registry.files.manifest_path(artifact_id)
    if not path.is_file():
        return "missing"
    return "ok" if sha256_file(path) == sha else "modified"


def _problem(artifact_id: str, name: str, status: str, path) -> dict:
    return {"artifact": artifact_id, "file": name, "status": status, "path": str(path)}


@dataclass
class RepairReport:
    database_moved_to: str | None = None
    reindexed: list[str] = field(default_factory=list)
    events_replayed: int = 0
    events_skipped: int = 0  # lines of events.jsonl that are not events (named in `warnings`)
    restored: list[dict] = field(default_factory=list)
    unrecoverable: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def repair(registry: Registry) -> RepairReport:
    """Rebuild what was lost: a damaged database is moved aside and rebuilt (from the manifests,
    or their stored copies, and the event log), then every stored copy and artifact file that is
    missing or modified is restored from the other side where that is intact.
    """
    registry.refuse_read_only()  # before anything is moved: an unwritable database is not damaged
    report = RepairReport()
    rebuilt = False
    if registry.db_path.exists() and not _database_healthy(registry):
        report.database_moved_to = str(_move_database_aside(registry))
    if not registry.db_path.exists():
        rebuilt = True
        registry.root.mkdir(parents=True, exist_ok=True)
        with registry.transaction(write=True):  # creates the empty schema
            pass
    log = read_events(registry.events_path) if rebuilt else None
    _reindex(registry, report, log)
    if log is not None:
        report.events_replayed = _replay_events(registry, log)
        report.events_skipped = len(log.junk)
        if log.warning():
            report.warnings.append(log.warning())
    _restore_objects(registry, report)
    _restore_files(registry, report)
    return report


def _move_database_aside(registry: Registry):
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    aside = registry.db_path.with_name(f"{registry.db_path.name}.damaged-{stamp}")
    os.replace(registry.db_path, aside)
    for suffix in ("-wal", "-shm"):
        side = registry.db_path.with_name(registry.db_path.name + suffix)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + suffix))
    return aside


def _database_healthy(registry: Registry) -> bool:
    try:
        with registry.transaction() as conn:
            return conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except DatabaseDamaged:
        return False


def _reindex(registry: Registry, report: RepairReport, log: EventLog | None) -> None:
    """Add every artifact the database lacks: those with a folder, and (after a rebuild) those
    the event log names. The manifest comes from the folder, else from its stored copy."""
    _, known = registry.referenced()
    on_disk = dict(registry.files.manifests_on_disk())
    released = {e["artifact"] for e in (log.events if log else []) if e["event"] == "promote"}
    for artifact_id in sorted({*on_disk, *released} - known):
        path = on_disk.get(artifact_id) or registry.files.manifest_path(artifact_id)
        folder_text, why = _manifest_from(_read_or_none(path), artifact_id)
        text = folder_text or _manifest_from(registry.files.stored_manifest(artifact_id),
                                             artifact_id)[0]
        if text is None:
            reason = (
                why
                if artifact_id in on_disk
                else "released, but its folder and the stored copy of its manifest are gone"
            )
            report.unrecoverable.append(
                {"artifact": artifact_id, "file": MANIFEST, "path": str(path), "reason": reason}
            )
            continue
        registry.add(artifact_id, sha256_bytes(text), text.decode(), json.loads(text))
        report.reindexed.append(artifact_id)


def _manifest_from(text: bytes | None, artifact_id: str) -> tuple[bytes | None, str]:
    """(text, "") when `text` is the manifest of `artifact_id`, else (None, why not): its hash
    must start with the id and it must hold what the index is built from."""
    if text is None:
        return None, "missing, and its stored copy is gone"
    if not sha256_bytes(text).startswith(artifact_id):
        return None, "modified (its hash no longer matches the id), and its stored copy is gone"
    try:
        manifest = json.loads(text)
    except ValueError:
        manifest = None
    if not _is_manifest(manifest):
        return None, "not a tflc manifest (JSON with kind, created and files is expected)"
    return text, ""


def _is_manifest(manifest) -> bool:
    if not isinstance(manifest, dict) or manifest.get("kind") not in KINDS:
        return False
    files = manifest.get("files")
    return (
        isinstance(manifest.get("created"), str)
        and isinstance(files, dict)
        and all(
            isinstance(meta, dict)
            and isinstance(meta.get("sha256"), str)
            and isinstance(meta.get("size"), int)
            for meta in files.values()
        )
    )


def _replay_events(registry: Registry, log: EventLog) -> int:
    """Re-apply tags, promotions and rollbacks from events.jsonl to a rebuilt database."""
    replayed = 0
    with registry.transaction(write=True) as conn:
        known = {r[0] for r in conn.execute("SELECT id FROM artifacts")}
        for event in log.events:
            kind, artifact = event["event"], event["artifact"]
            if artifact not in known:
                continue  # an artifact collected since, or one reported unrecoverable
            if kind == "tag":
                conn.execute(
                    "INSERT OR IGNORE INTO tags VALUES (?,?,?)",
                    (artifact, event["tag"], event["time"]),
                )
            elif kind == "untag":
                conn.execute(
                    "DELETE FROM tags WHERE artifact_id=? AND tag=?", (artifact, event["tag"])
                )
            elif kind == "promote":
                conn.execute(
                    "INSERT INTO releases (name, artifact_id, promoted) VALUES (?,?,?)",
                    (event["name"], artifact, event["time"]),
                )
            elif kind == "rollback":
                conn.execute(
                    "UPDATE releases SET rolled_back=? WHERE seq=(SELECT MAX(seq) FROM releases "
                    "WHERE name=? AND rolled_back IS NULL) AND artifact_id=?",
                    (event["time"], event["name"], artifact),
                )
            replayed += 1
    return replayed


def _restore_objects(registry: Registry, report: RepairReport) -> None:
    """Put back each lost or edited stored copy from an intact artifact file (or, for a
    manifest, the database's text), so that files damaged later can still be restored."""
    done: set[str] = set()
    for record in registry.list():
        manifest_sha, manifest_text = registry.stored_manifest_text(record.id)
        sources = {MANIFEST: (manifest_sha, None)}
        sources.update({n: (m["sha256"], registry.files.file_path(record.id, n))
                        for n, m in record.files.items()})
        for name, (sha, path) in sources.items():
            if sha in done:
                continue
            status = registry.files.blob_status(sha)
            if status == "ok":
                done.add(sha)
                continue
            data = manifest_text.encode() if path is None else _read_if_intact(path, sha)
            if data is None or sha256_bytes(data) != sha:
                continue  # perhaps another artifact holds an intact copy; else reported below
            registry.files.put_blob(data)
            done.add(sha)
            report.restored.append(
                {"artifact": record.id, "file": name, "was": f"stored copy {status}"}
            )


def _read_or_none(path) -> bytes | None:
    """A file's bytes, or None where it is gone or cannot be read (damage repair works around)."""
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


def _read_if_intact(path, sha: str) -> bytes | None:
    data = _read_or_none(path)
    return data if data is not None and sha256_bytes(data) == sha else None


def _restore_files(registry: Registry, report: RepairReport) -> None:
    for record in registry.list():
        manifest_path = registry.files.manifest_path(record.id)
        manifest_sha, text = registry.stored_manifest_text(record.id)
        if not manifest_path.is_file() or sha256_file(manifest_path) != manifest_sha:
            manifest_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(manifest_path, text.encode())
            report.restored.append({"artifact": record.id, "file": MANIFEST})
        for name, meta in record.files.items():
            status = registry.files.file_status(record.id, name, meta["sha256"])
            if status == "ok":
                continue
            if registry.files.restore_file(record.id, name, meta["sha256"]):
                report.restored.append({"artifact": record.id, "file": name, "was": status})
            else:
                report.unrecoverable.append(
                    {
                        "artifact": record.id,
                        "file": name,
                        "path": str(registry.files.file_path(record.id, name)),
                        "reason": f"{status}, and its stored copy is gone or damaged too",
                    }
                )


@dataclass
class GcReport:
    dry_run: bool
    keep_days: float
    artifacts: list[str] = field(default_factory=list)
    orphan_blobs: int = 0
    orphan_folders: int = 0
    bytes_freed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def gc(registry: Registry, keep_days: float = 14.0, dry_run: bool = False) -> GcReport:
    """Remove artifacts no tag or release refers to and older than `keep_days`, then every
    blob and folder that no remaining artifact refers to.

    Files younger than `RECORD_WINDOW_S` are spared: a record in progress in another process
    has written its blob and folder but not yet committed its row.
    """
    _check_keep_days(keep_days)
    report = GcReport(dry_run=dry_run, keep_days=keep_days)
    doomed = {r.id for r in registry.collectable(keep_days)}
    report.artifacts = sorted(doomed)
    blobs, known = registry.referenced(excluding=doomed)
    old_blobs, old_folders = registry.files.unreferenced(blobs, known, RECORD_WINDOW_S)
    doomed_folders = [registry.files.artifacts / i for i in report.artifacts]
    report.orphan_blobs = len(old_blobs)
    report.orphan_folders = len([f for f in old_folders if f.name not in doomed])
    report.bytes_freed = sum(_size(p) for p in old_blobs)
    if dry_run:
        return report
    registry.delete(report.artifacts)
    for folder in {*doomed_folders, *old_folders}:
        shutil.rmtree(folder, ignore_errors=True)
    for blob in old_blobs:
        blob.unlink(missing_ok=True)
    return report


def _check_keep_days(keep_days: float) -> None:
    """An age is a finite number of days, zero or more: -1 or nan would silently collect
    everything unreferenced (or nothing), which is never what was meant."""
    if not isinstance(keep_days, (int, float)) or not math.isfinite(keep_days) or keep_days < 0:
        raise BadInput(f"--keep-days {keep_days}: expected a number of days, 0 or more")


def _size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
