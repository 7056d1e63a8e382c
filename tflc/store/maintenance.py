"""Keeping a registry healthy: verify, repair and garbage-collect.

Files in `.tflc/` can be deleted or edited by hand. `verify` names every file that no longer
matches its recorded hash; `repair` restores what can be restored (artifact files from their
content-addressed blobs, manifests from the database, the database from the manifests and the
event log); `gc` removes what nothing refers to. Each leaves every other artifact usable.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from tflc.errors import BadInput
from tflc.fileio import atomic_write_bytes, sha256_bytes, sha256_file
from tflc.store.artifacts import MANIFEST
from tflc.store.registry import Registry

# Unreferenced files younger than this may belong to a record another process is still writing.
RECORD_WINDOW_S = 600.0


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[dict] = field(default_factory=list)  # {artifact, file, path, status}

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"checked": self.checked, "ok": self.ok, "problems": self.problems}


def verify(registry: Registry, ids: list[str] | None = None) -> VerifyReport:
    """Check every file (or those of `ids`) against the hash recorded for it."""
    records = [registry.get(i) for i in ids] if ids else registry.list()
    report = VerifyReport()
    for record in records:
        report.checked += 1
        for name, meta in record.files.items():
            status = registry.files.file_status(record.id, name, meta["sha256"])
            if status != "ok":
                report.problems.append(
                    {
                        "artifact": record.id,
                        "file": name,
                        "status": status,
                        "path": str(registry.files.file_path(record.id, name)),
                    }
                )
        manifest = registry.files.manifest_path(record.id)
        status = (
            "missing"
            if not manifest.is_file()
            else "ok"
            if sha256_file(manifest).startswith(record.id)
            else "modified"
        )
        if status != "ok":  # the id is the start of the manifest's own hash
            report.problems.append(
                {"artifact": record.id, "file": MANIFEST, "status": status, "path": str(manifest)}
            )
    return report


@dataclass
class RepairReport:
    database_moved_to: str | None = None
    reindexed: list[str] = field(default_factory=list)
    events_replayed: int = 0
    restored: list[dict] = field(default_factory=list)
    unrecoverable: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def repair(registry: Registry) -> RepairReport:
    """Rebuild what was lost: a damaged database is moved aside and rebuilt, then every
    artifact file that is missing or modified is restored from its blob where the blob is intact.
    """
    report = RepairReport()
    rebuilt = False
    if registry.db_path.exists() and not _database_healthy(registry):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = registry.db_path.with_name(f"{registry.db_path.name}.damaged-{stamp}")
        os.replace(registry.db_path, aside)
        for suffix in ("-wal", "-shm"):
            side = registry.db_path.with_name(registry.db_path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        report.database_moved_to = str(aside)
    if not registry.db_path.exists():
        rebuilt = True
        registry.root.mkdir(parents=True, exist_ok=True)
        with registry.transaction(write=True):  # creates the empty schema
            pass
    _reindex(registry, report)
    if rebuilt:
        report.events_replayed = _replay_events(registry)
    _restore_files(registry, report)
    return report


def _database_healthy(registry: Registry) -> bool:
    try:
        with registry.transaction() as conn:
            return conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except BadInput:
        return False


def _reindex(registry: Registry, report: RepairReport) -> None:
    """Add every artifact folder whose manifest is intact but which the database lacks."""
    _, known = registry.referenced()
    for artifact_id, manifest_path in registry.files.manifests_on_disk():
        if artifact_id in known:
            continue
        try:
            text = manifest_path.read_bytes()
            manifest = json.loads(text)
        except (OSError, ValueError) as exc:
            report.unrecoverable.append(
                {
                    "artifact": artifact_id,
                    "file": MANIFEST,
                    "path": str(manifest_path),
                    "reason": f"unreadable ({exc})",
                }
            )
            continue
        sha = sha256_bytes(text)
        if not sha.startswith(artifact_id):
            report.unrecoverable.append(
                {
                    "artifact": artifact_id,
                    "file": MANIFEST,
                    "path": str(manifest_path),
                    "reason": "modified (its hash no longer matches the id)",
                }
            )
            continue
        registry.add(artifact_id, sha, text.decode(), manifest)
        report.reindexed.append(artifact_id)


def _replay_events(registry: Registry) -> int:
    """Re-apply tags, promotions and rollbacks from events.jsonl to a rebuilt database."""
    if not registry.events_path.is_file():
        return 0
    replayed = 0
    with registry.transaction(write=True) as conn:
        known = {r[0] for r in conn.execute("SELECT id FROM artifacts")}
        for line in registry.events_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn last line from a crash: skip it
            kind, artifact = event.get("event"), event.get("artifact")
            if artifact not in known:
                continue
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
            else:
                continue
            replayed += 1
    return replayed


def _restore_files(registry: Registry, report: RepairReport) -> None:
    for record in registry.list():
        manifest_path = registry.files.manifest_path(record.id)
        if not manifest_path.is_file() or not sha256_file(manifest_path).startswith(record.id):
            manifest_path.parent.mkdir(parents=True, exist_ok=True)
            with registry.transaction() as conn:
                text = conn.execute(
                    "SELECT manifest FROM artifacts WHERE id=?", (record.id,)
                ).fetchone()[0]
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


def _size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
