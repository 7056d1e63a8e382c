"""The run registry: one SQLite database indexing every artifact, its tags and its releases.

Why SQLite: it ships with Python, and its transactions make "two commands record at once" a
non-event. The database runs in WAL mode (readers never block the writer) with a generous busy
timeout, and every change happens inside one `BEGIN IMMEDIATE` transaction, so concurrent writers
queue up instead of overwriting each other.

The database is an index, not the only copy: every artifact's manifest also sits in its folder,
and tags and releases are appended to `events.jsonl`, so `tflc runs repair` can rebuild a
database that was deleted or damaged by hand (see `rebuild_index`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tflc.errors import BadInput, PipelineError
from tflc.store.artifacts import ArtifactFiles

DB_NAME = "registry.sqlite"
EVENTS_NAME = "events.jsonl"
SETUP_LOCK_NAME = "registry.lock"
SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 60.0
ENV_VAR = "TFLC_REGISTRY"
DEFAULT_DIR = ".tflc"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    id              TEXT PRIMARY KEY,      -- first 12 hex digits of the manifest's sha256
    manifest_sha256 TEXT NOT NULL,
    kind            TEXT NOT NULL,         -- compile | check | bench | export
    created         TEXT NOT NULL,         -- ISO 8601, UTC
    model           TEXT,                  -- the input model's path, as recorded
    model_name      TEXT,                  -- a short name: the model file's stem, or its source's
    model_sha256    TEXT,
    target          TEXT,
    manifest        TEXT NOT NULL          -- the manifest.json text
);
CREATE INDEX IF NOT EXISTS artifacts_created ON artifacts(created);
CREATE TABLE IF NOT EXISTS files (
    artifact_id TEXT NOT NULL REFERENCES artifacts(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    PRIMARY KEY (artifact_id, name)
);
CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256);
CREATE TABLE IF NOT EXISTS tags (
    artifact_id TEXT NOT NULL REFERENCES artifacts(id) ON DELETE CASCADE,
    tag         TEXT NOT NULL,
    created     TEXT NOT NULL,
    PRIMARY KEY (artifact_id, tag)
);
CREATE TABLE IF NOT EXISTS releases (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    artifact_id TEXT NOT NULL REFERENCES artifacts(id),
    promoted    TEXT NOT NULL,
    rolled_back TEXT                       -- set by `tflc rollback`, NULL while in the history
);
CREATE INDEX IF NOT EXISTS releases_name ON releases(name, seq);
"""

# _MIGRATIONS[n - 1] brings a schema-n database to n + 1 (_SCHEMA above is always the newest).
_MIGRATIONS = [
    "ALTER TABLE artifacts ADD COLUMN model_name TEXT",
]


class DatabaseDamaged(BadInput):
    """The database file exists but SQLite cannot read it: what `runs repair` rebuilds (a
    registry that is only unwritable, or from a newer tflc, is not damaged)."""


def registry_root(registry: str | os.PathLike | None = None) -> Path:
    """Where the registry lives: the argument, else $TFLC_REGISTRY, else ./.tflc."""
    if registry:
        return Path(registry)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.cwd() / DEFAULT_DIR


@contextlib.contextmanager
def _setup_lock(root: Path):
    """Serialise creating or migrating the database across processes.

    SQLite's busy timeout does not cover switching a new database to WAL: a process that reads
    while another makes the switch gets "database is locked" at once instead of waiting. An OS
    file lock around the one-time setup makes the racing first writers take turns. Where no lock
    can be taken (Windows, a read-only folder) the setup runs unguarded, as before.
    """
    if sys.platform == "win32":
        yield
        return
    import fcntl

    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / SETUP_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ArtifactRecord:
    """One registry row with its files, tags and the release names it was promoted as."""

    id: str
    kind: str
    created: str
    model: str | None
    model_name: str | None
    target: str | None
    manifest: dict
    files: dict[str, dict] = field(default_factory=dict)  # name -> {sha256, size}
    tags: list[str] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)  # "NAME@current", "NAME@previous", "NAME"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReleaseChange:
    """What `promote` or `rollback` did to a release name."""

    name: str
    current: str | None
    previous: str | None
    replaced: str | None  # the artifact that was current before the change
    changed: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class Registry:
    """The registry at one root folder: database, artifact files and event log together."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = registry_root(root)
        self.db_path = self.root / DB_NAME
        self.events_path = self.root / EVENTS_NAME
        self.files = ArtifactFiles(self.root)

    # -- connection ----------------------------------------------------------------------------

    def _check_folder(self) -> None:
        """The registry is a folder; a file in its place (a mistyped --registry) is named rather
        than read as an empty registry or crashed on."""
        if self.root.exists() and not self.root.is_dir():
            raise BadInput(
                f"{self.root}: the run registry path is not a folder; point --registry or "
                f"TFLC_REGISTRY at a folder (it is created when missing)"
            )

    def _check_present(self) -> bool:
        """False for a registry never written; an error for one whose database went missing."""
        self._check_folder()
        if self.db_path.exists():
            return True
        stored = self.files.manifests_on_disk()
        if stored:
            raise BadInput(
                f"{self.db_path}: the run registry database is missing but {len(stored)} "
                f"artifact(s) remain in {self.files.artifacts}; run `tflc runs repair` to "
                f"rebuild it"
            )
        return False

    def not_writable(self) -> Path | None:
        """The first part of the registry this process may not write (a read-only mount, a
        folder of another user, an immutable file), or None."""
        for path in (self.root, self.db_path, self.files.objects, self.files.artifacts):
            if path.exists() and not os.access(path, os.W_OK):
                return path
        return None

    def refuse_read_only(self) -> None:
        """Fail before writing anything, naming the part that cannot be written."""
        self._check_folder()
        path = self.not_writable()
        if path is not None:
            raise BadInput(
                f"{path}: the run registry is not writable; make it writable "
                f"(chmod -R u+w {self.root}) or use another one (--registry PATH or "
                f"TFLC_REGISTRY=PATH; TFLC_NO_RECORD=1 records nothing)"
            )

    def ensure_database(self) -> None:
        """Create the database of a new registry, before any artifact file is written (so a
        concurrent first writer never sees artifacts without a database)."""
        self.refuse_read_only()
        if not self._check_present():
            with self.transaction(write=True):
                pass
        else:
            with self.transaction():  # an unreadable database fails here, before files are written
                pass

    def _damaged(self, exc: Exception) -> Exception:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return PipelineError(
                f"{self.db_path}: the run registry stayed locked by another process for "
                f"{BUSY_TIMEOUT_S:.0f}s ({text}); retry when it finishes"
            )
        if self.not_writable() is not None:
            return BadInput(
                f"{self.not_writable()}: the run registry is not writable, and SQLite cannot "
                f"read its database without writing beside it ({text}); make it writable "
                f"(chmod -R u+w {self.root}) or copy it elsewhere and use --registry COPY"
            )
        return DatabaseDamaged(
            f"{self.db_path}: the run registry database is unreadable ({text}); run "
            f"`tflc runs repair` to rebuild it from the manifests in {self.files.artifacts}"
        )

    @contextlib.contextmanager
    def transaction(self, write: bool = False):
        """A connection inside one transaction: IMMEDIATE for writers, so they queue safely."""
        if write:
            self.refuse_read_only()
            self.root.mkdir(parents=True, exist_ok=True)
        conn = None
        try:
            conn = self._connect(read_only=not write and self.not_writable() is not None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._ensure_schema(conn)
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise  # a mistake in tflc's own SQL, not a damaged file: keep the traceback
        except sqlite3.Error as exc:
            raise self._damaged(exc) from None
        finally:
            if conn is not None:
                conn.close()

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        """A connection; for a registry this process cannot write, a read-only one.

        SQLite opens a WAL database by creating its `-shm` file beside it, which an unwritable
        folder refuses. Without a `-wal` file the database file holds every commit, so it can
        be read as immutable; with one, SQLite reads it read-only where the `-shm` exists.
        """
        if not read_only:
            return sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        wal = self.db_path.with_name(self.db_path.name + "-wal")
        mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
        uri = f"{self.db_path.absolute().as_uri()}?{mode}"
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise BadInput(
                f"{self.db_path}: the run registry was written by a newer tflc (schema "
                f"{version}, this one reads {SCHEMA_VERSION}); upgrade tflc"
            )
        with _setup_lock(self.root):
            self._create_or_migrate(conn)

    def _create_or_migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
        if version == SCHEMA_VERSION:
            return
        # WAL: readers never block the writer and a crash mid-write cannot tear the database.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            for statement in _MIGRATIONS[version - 1 :] if version else ():
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _append_event(self, event: dict, time: str) -> None:
        """Tags and releases also go to an append-only log, so `runs repair` can replay them.

        Called inside the database transaction: one short `write` with O_APPEND, which local file
        systems apply whole even when several processes append at once.
        """
        line = (json.dumps({"time": time, **event}, sort_keys=True) + "\n").encode()
        try:
            fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # the transaction rolls back: database and log still agree
            raise BadInput(
                f"{self.events_path}: cannot append to the tag/release log "
                f"({exc.strerror or exc}); nothing was changed"
            ) from None

    # -- artifacts -----------------------------------------------------------------------------

    def add(
        self, artifact_id: str, manifest_sha256: str, manifest_text: str, manifest: dict
    ) -> str:
        """Index an artifact whose folder is already complete."""
        inputs = manifest.get("inputs") or {}
        model = inputs.get("model") if isinstance(inputs.get("model"), dict) else {}
        target = manifest.get("target")
        target_name = target.get("name") if isinstance(target, dict) else target
        with self.transaction(write=True) as conn:
            row = conn.execute(
                "SELECT manifest_sha256 FROM artifacts WHERE id=?", (artifact_id,)
            ).fetchone()
            if row is not None:
                if row[0] != manifest_sha256:  # 48-bit prefix collision: never seen, never silent
                    raise PipelineError(f"artifact id {artifact_id} collides with another manifest")
                return artifact_id
            conn.execute(
                "INSERT INTO artifacts (id, manifest_sha256, kind, created, model, model_name, "
                "model_sha256, target, manifest) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    artifact_id,
                    manifest_sha256,
                    manifest["kind"],
                    manifest["created"],
                    model.get("path"),
                    manifest.get("model_name"),
                    model.get("sha256"),
                    target_name,
                    manifest_text,
                ),
            )
            conn.executemany(
                "INSERT INTO files (artifact_id, name, sha256, size) VALUES (?,?,?,?)",
                [
                    (artifact_id, name, meta["sha256"], meta["size"])
                    for name, meta in manifest.get("files", {}).items()
                ],
            )
        return artifact_id

    def resolve_id(self, text: str, conn: sqlite3.Connection | None = None) -> str:
        """A full id or a unique prefix of one (at least 4 hex digits) -> the full id."""
        text = text.strip().lower()
        if conn is None:
            if not self._check_present():
                raise BadInput(f"no artifact '{text}': nothing is recorded in {self.root} yet")
            with self.transaction() as conn:
                return self.resolve_id(text, conn)
        if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
            raise BadInput(
                f"'{text}' is not an artifact id: give one, or a prefix of one, of at least 4 hex "
                f"digits (0-9, a-f), as `tflc runs list` shows"
            )
        rows = conn.execute(
            "SELECT id FROM artifacts WHERE id LIKE ? ORDER BY id LIMIT 6", (text + "%",)
        ).fetchall()
        if not rows:
            raise BadInput(
                f"no artifact '{text}' in the run registry {self.root}; see `tflc runs list`"
            )
        if len(rows) > 1:
            ids = ", ".join(r[0] for r in rows[:5])
            raise BadInput(f"artifact id '{text}' is ambiguous ({ids}, ...); give more digits")
        return rows[0][0]

    def stored_manifest_text(self, artifact_id: str) -> tuple[str, str]:
        """(sha256, text) of an artifact's manifest as the database holds it."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT manifest_sha256, manifest FROM artifacts WHERE id=?", (artifact_id,)
            ).fetchone()
        if row is None:
            raise BadInput(f"no artifact '{artifact_id}' in the run registry {self.root}")
        return row[0], row[1]

    def get(self, text: str) -> ArtifactRecord:
        if not self._check_present():
            raise BadInput(f"no artifact '{text}': nothing is recorded in {self.root} yet")
        with self.transaction() as conn:
            artifact_id = self.resolve_id(text, conn)
            row = conn.execute("SELECT * FROM artifacts WHERE id=?", (artifact_id,)).fetchone()
            return self._record(conn, row)

    def _record(self, conn: sqlite3.Connection, row: sqlite3.Row) -> ArtifactRecord:
        artifact_id = row["id"]
        files = {
            r["name"]: {"sha256": r["sha256"], "size": r["size"]}
            for r in conn.execute(
                "SELECT name, sha256, size FROM files WHERE artifact_id=? ORDER BY name",
                (artifact_id,),
            )
        }
        tags = [
            r[0]
            for r in conn.execute(
                "SELECT tag FROM tags WHERE artifact_id=? ORDER BY tag", (artifact_id,)
            )
        ]
        releases = []
        for (name,) in conn.execute(
            "SELECT DISTINCT name FROM releases WHERE artifact_id=? ORDER BY name", (artifact_id,)
        ):
            active = self._active(conn, name)
            releases.append(
                f"{name}@current"
                if _at(active, 0) == artifact_id
                else f"{name}@previous"
                if _at(active, 1) == artifact_id
                else name
            )
        try:
            manifest = json.loads(row["manifest"])
        except ValueError:
            manifest = {"error": f"manifest text of {artifact_id} in {self.db_path} is not JSON"}
        return ArtifactRecord(
            id=artifact_id,
            kind=row["kind"],
            created=row["created"],
            model=row["model"],
            model_name=row["model_name"],
            target=row["target"],
            manifest=manifest,
            files=files,
            tags=tags,
            releases=releases,
        )

    def list(
        self,
        *,
        kind: str | None = None,
        model: str | None = None,
        target: str | None = None,
        tag: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
    ) -> list[ArtifactRecord]:
        """Newest first. `model` matches part of the model path or a release name; dates are
        ISO prefixes (`2024-05`, `2024-05-31`, `2024-05-31T12:00`)."""
        if not self._check_present():
            return []
        where, args = [], []
        if kind:
            where.append("a.kind = ?")
            args.append(kind)
        if model:
            where.append(
                "(a.model LIKE ? OR a.model_name = ? OR "
                "a.id IN (SELECT artifact_id FROM releases WHERE name = ?))"
            )
            args += [f"%{model}%", model, model]
        if target:
            where.append("a.target = ?")
            args.append(target)
        if tag:
            where.append("a.id IN (SELECT artifact_id FROM tags WHERE tag = ?)")
            args.append(tag)
        if since:
            where.append("a.created >= ?")
            args.append(_date_bound(since, "since"))
        if until:
            where.append("a.created < ?")
            args.append(_date_bound(until, "until", end=True))
        sql = "SELECT a.* FROM artifacts a"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY a.created DESC, a.rowid DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self.transaction() as conn:
            return [self._record(conn, row) for row in conn.execute(sql, args).fetchall()]

    def source_of(self, sha256: str) -> ArtifactRecord | None:
        """The newest compile artifact whose model.tflite has this hash: where a model came from."""
        if not self._check_present():
            return None
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT a.* FROM artifacts a JOIN files f ON f.artifact_id = a.id WHERE a.kind = "
                "'compile' AND f.name = 'model.tflite' AND f.sha256 = ? ORDER BY a.created DESC "
                "LIMIT 1",
                (sha256,),
            ).fetchone()
            return self._record(conn, row) if row else None

    # -- tags ----------------------------------------------------------------------------------

    def tag(self, text: str, tag: str, remove: bool = False) -> str:
        _check_label(tag, "tag")
        self.ensure_database()
        with self.transaction(write=True) as conn:
            artifact_id = self.resolve_id(text, conn)
            now = now_iso()  # the same time in the database and the log, so a replay matches
            if remove:
                conn.execute("DELETE FROM tags WHERE artifact_id=? AND tag=?", (artifact_id, tag))
            else:
                conn.execute(
                    "INSERT OR IGNORE INTO tags (artifact_id, tag, created) VALUES (?,?,?)",
                    (artifact_id, tag, now),
                )
            self._append_event(
                {"event": "untag" if remove else "tag", "artifact": artifact_id, "tag": tag},
                now,
            )
        return artifact_id

    # -- releases ------------------------------------------------------------------------------

    @staticmethod
    def _active_rows(conn: sqlite3.Connection, name: str) -> list[tuple[int, str]]:
        """(seq, artifact id) of NAME's releases that were not rolled back, newest first."""
        return [
            (r[0], r[1])
            for r in conn.execute(
                "SELECT seq, artifact_id FROM releases WHERE name=? AND rolled_back IS NULL "
                "ORDER BY seq DESC",
                (name,),
            )
        ]

    @classmethod
    def _active(cls, conn: sqlite3.Connection, name: str) -> list[str]:
        return [artifact_id for _, artifact_id in cls._active_rows(conn, name)]

    def promote(self, text: str, name: str) -> ReleaseChange:
        _check_label(name, "release name")
        self.ensure_database()
        with self.transaction(write=True) as conn:
            artifact_id = self.resolve_id(text, conn)
            active = self._active(conn, name)
            if active and active[0] == artifact_id:
                return ReleaseChange(name, artifact_id, _at(active, 1), artifact_id, changed=False)
            now = now_iso()
            conn.execute(
                "INSERT INTO releases (name, artifact_id, promoted) VALUES (?,?,?)",
                (name, artifact_id, now),
            )
            self._append_event({"event": "promote", "name": name, "artifact": artifact_id}, now)
            return ReleaseChange(name, artifact_id, _at(active, 0), _at(active, 0))

    def rollback(self, name: str) -> ReleaseChange:
        _check_label(name, "release name")
        if not self._check_present():
            raise BadInput(f"no release named '{name}' in {self.root}; promote one first")
        with self.transaction(write=True) as conn:
            active = self._active(conn, name)
            if not active:
                raise BadInput(
                    f"no release named '{name}' in {self.root}; see `tflc runs releases`"
                )
            if len(active) < 2:
                raise BadInput(
                    f"'{name}' has a single release ({active[0]}); there is nothing to roll back to"
                )
            now = now_iso()
            conn.execute(
                "UPDATE releases SET rolled_back=? WHERE seq=(SELECT MAX(seq) FROM releases "
                "WHERE name=? AND rolled_back IS NULL)",
                (now, name),
            )
            self._append_event({"event": "rollback", "name": name, "artifact": active[0]}, now)
            return ReleaseChange(name, active[1], _at(active, 2), active[0])

    def release(self, name: str, which: str = "current") -> str:
        """The artifact id of NAME@current or NAME@previous."""
        index = {"current": 0, "previous": 1}.get(which)
        if index is None:
            raise BadInput(f"'{name}@{which}': expected {name}@current or {name}@previous")
        if not self._check_present():
            raise BadInput(f"no release named '{name}': nothing is recorded in {self.root} yet")
        with self.transaction() as conn:
            active = self._active(conn, name)
        if not active:
            raise BadInput(
                f"no release named '{name}' in {self.root}; promote one with "
                f"`tflc promote ID --as {name}`"
            )
        if index >= len(active):
            raise BadInput(f"'{name}' has no previous release (only {active[0]} was promoted)")
        return active[index]

    def release_history(self, name: str | None = None) -> list[dict]:
        if not self._check_present():
            return []
        sql = (
            "SELECT * FROM releases"
            + (" WHERE name=?" if name else "")
            + " ORDER BY name, seq DESC"
        )
        with self.transaction() as conn:
            rows = conn.execute(sql, (name,) if name else ()).fetchall()
            active_seqs = {
                n: [seq for seq, _ in self._active_rows(conn, n)] for n in {r["name"] for r in rows}
            }
        out = []
        for r in rows:
            seqs = active_seqs[r["name"]]
            status = (
                "rolled back"
                if r["rolled_back"]
                else "current"
                if r["seq"] == _at(seqs, 0)
                else "previous"
                if r["seq"] == _at(seqs, 1)
                else "earlier"
            )
            out.append(
                {
                    "name": r["name"],
                    "artifact_id": r["artifact_id"],
                    "promoted": r["promoted"],
                    "rolled_back": r["rolled_back"],
                    "status": status,
                }
            )
        return out

    # -- garbage collection --------------------------------------------------------------------

    def collectable(self, keep_days: float) -> list[ArtifactRecord]:
        """Artifacts nothing refers to: no tag, never released, older than `keep_days`."""
        if not self._check_present():
            return []
        try:
            cutoff = (datetime.now(timezone.utc) - timedelta(days=keep_days)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
        except OverflowError:  # an age before the calendar begins: nothing is that old
            return []
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM artifacts WHERE created < ? "
                "AND id NOT IN (SELECT artifact_id FROM tags) "
                "AND id NOT IN (SELECT artifact_id FROM releases) ORDER BY created",
                (cutoff,),
            ).fetchall()
            return [self._record(conn, row) for row in rows]

    def delete(self, ids: list[str]) -> None:
        with self.transaction(write=True) as conn:
            conn.executemany(
                "DELETE FROM artifacts WHERE id=? AND id NOT IN "
                "(SELECT artifact_id FROM tags UNION SELECT artifact_id FROM releases)",
                [(i,) for i in ids],
            )

    def referenced(self, excluding: set[str] = frozenset()) -> tuple[set[str], set[str]]:
        """(blob hashes, artifact ids) of the artifacts in the database, minus `excluding`;
        the blobs include each manifest's stored copy."""
        if not self._check_present():
            return set(), set()
        with self.transaction() as conn:
            blobs = {
                sha
                for artifact_id, sha in conn.execute(
                    "SELECT artifact_id, sha256 FROM files "
                    "UNION ALL SELECT id, manifest_sha256 FROM artifacts"
                )
                if artifact_id not in excluding
            }
            ids = {r[0] for r in conn.execute("SELECT id FROM artifacts")} - set(excluding)
        return blobs, ids


def _at(items: list, index: int):
    return items[index] if index < len(items) else None


def _check_label(text: str, what: str) -> None:
    ok = text and text[0].isalnum() and all(c.isalnum() or c in "._-" for c in text)
    if not ok:
        raise BadInput(
            f"{what} '{text}': use letters, digits, '.', '_' or '-' (starting with a "
            f"letter or digit)"
        )


def _date_bound(text: str, flag: str, end: bool = False) -> str:
    """An ISO date or date-time prefix -> a comparable timestamp string (exclusive end)."""
    formats = [
        ("%Y-%m-%dT%H:%M:%S", timedelta(seconds=1)),
        ("%Y-%m-%dT%H:%M", timedelta(minutes=1)),
        ("%Y-%m-%d", timedelta(days=1)),
    ]
    for fmt, step in formats:
        try:
            moment = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if end:
            moment += step
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raise BadInput(f"--{flag} '{text}': expected a date like 2024-05-31 or 2024-05-31T12:00 (UTC)")
