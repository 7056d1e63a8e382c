"""The file side of the store: content-addressed blobs and one folder per artifact.

Layout below the registry root (default ./.tflc):

    objects/ab/ab12...ef        every file ever recorded, named by its sha256, written once
                                (each manifest too, so a lost one can be brought back)
    artifacts/<id>/manifest.json the manifest; the artifact id is the start of its sha256
    artifacts/<id>/<name>       each recorded file under its own name (its own copy of its blob)

Blobs keep one pristine copy of every file; the per-artifact folder gives every file a usable
name (`model.tflite`, not a hash), which is what `NAME@current` resolves to. An artifact's file is
never a hard link to its blob: a hard link shares the bytes, so one in-place edit would damage
every artifact holding the same file (a release among them) and the blob `runs repair` restores
from. Where the file system can clone (a reflink: btrfs, XFS) the copy costs no space until
one side is written; elsewhere it is a plain copy. An artifact folder appears complete or not at all: it is
assembled under a temporary name and renamed into place. Nothing here touches the database;
`registry.py` indexes what this module wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from tflc.errors import BadInput
from tflc.fileio import _json_default, atomic_write_bytes, sha256_bytes, sha256_file

OBJECTS = "objects"
ARTIFACTS = "artifacts"
MANIFEST = "manifest.json"
ID_LENGTH = 12  # hex digits of the manifest's sha256; 48 bits, git-style short ids
_ID_PATTERN = re.compile(f"[0-9a-f]{{{ID_LENGTH}}}")


def canonical_json(obj) -> bytes:
    """The one serialisation of a manifest, so that its hash (the artifact id) is stable."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def normalize_files(files: Mapping[str, object]) -> dict[str, bytes]:
    """Turn the caller's `{name: path | bytes | dict | list}` into `{name: bytes}`.

    A folder contributes every file below it as `name/relative/path`; a dict or list is stored
    as JSON (reports are passed as their `to_dict()`).
    """
    out: dict[str, bytes] = {}
    for name, value in files.items():
        _check_name(name)
        if isinstance(value, (bytes, bytearray, memoryview)):
            out[name] = bytes(value)
        elif isinstance(value, (dict, list)):
            out[name] = canonical_json(value)
        elif isinstance(value, (str, os.PathLike)):
            path = Path(value)
            if path.is_dir():
                for file in sorted(p for p in path.rglob("*") if p.is_file()):
                    out[f"{name}/{file.relative_to(path).as_posix()}"] = _read(file, name)
            elif path.is_file():
                out[name] = _read(path, name)
            else:
                raise BadInput(f"{path}: file to record as '{name}' does not exist")
        elif hasattr(value, "to_dict"):
            out[name] = canonical_json(value.to_dict())
        else:
            raise TypeError(
                f"cannot record {name!r}: {type(value).__name__} is not a path, bytes or dict"
            )
    return out


def _read(path: Path, name: str) -> bytes:
    """A file's bytes; a failure names the file (a failed read may carry no file name)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the file to record as '{name}' ({exc.strerror or exc})"
        ) from None


def _check_name(name: str) -> None:
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or name == MANIFEST or "\\" in name:
        raise ValueError(
            f"artifact file name {name!r} must be a relative path other than {MANIFEST}"
        )


def _status(path: Path, sha256: str) -> str:
    """A damaged registry is reported, never crashed on: a file that exists but cannot be read
    (permissions, an I/O error) is 'unreadable'."""
    if not path.is_file():
        return "missing"
    try:
        return "ok" if sha256_file(path) == sha256 else "modified"
    except OSError:
        return "unreadable"


# Linux's FICLONE ioctl: make `dest` share `src`'s extents copy-on-write (a reflink).
_FICLONE = 0x40049409


def clone_or_copy(blob: Path, target: Path, data: bytes) -> None:
    """Write `target` with the blob's bytes as an independent file, atomically: a reflink where
    the file system has them, else a plain copy of `data` (the blob's bytes)."""
    if not _try_clone(blob, target):
        atomic_write_bytes(target, data)


def _try_clone(blob: Path, target: Path) -> bool:
    """Clone `blob` to a temporary file renamed onto `target`; False where cloning is not
    available (another OS, ext4, a blob on another file system), leaving nothing behind."""
    try:
        import fcntl
    except ImportError:  # Windows
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with open(blob, "rb") as source:
            fcntl.ioctl(fd, _FICLONE, source.fileno())
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        return True
    except OSError:
        return False
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


class ArtifactFiles:
    """Reads and writes blobs and artifact folders below one registry root."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.objects = self.root / OBJECTS
        self.artifacts = self.root / ARTIFACTS

    # -- writing -------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256

    def put_blob(self, data: bytes) -> str:
        """Store `data` under its hash (once); returns the hash."""
        sha = sha256_bytes(data)
        path = self.blob_path(sha)
        if path.is_file() and sha256_file(path) == sha:
            # Already there: refresh its time so a concurrent `runs gc` (which spares young
            # files) cannot remove it before this record reaches the database.
            os.utime(path)
            return sha
        # New, or damaged by hand: (re)write it. Read-only: it is the copy `runs repair`
        # restores artifact files from.
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        os.chmod(path, 0o444)
        return sha

    def write_artifact(self, artifact_id: str, files: Mapping[str, bytes], manifest: bytes) -> Path:
        """Assemble artifacts/<id>/ under a temporary name, then rename it into place."""
        final = self.artifacts / artifact_id
        if (final / MANIFEST).is_file():
            return final  # the same manifest bytes were recorded before: same content
        self.artifacts.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{artifact_id}.", suffix=".tmp", dir=self.artifacts)
        )
        try:
            for name, data in files.items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                clone_or_copy(self.blob_path(sha256_bytes(data)), target, data)
            atomic_write_bytes(staging / MANIFEST, manifest)
            os.chmod(staging, 0o755)
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / MANIFEST).is_file():
                    raise
                shutil.rmtree(staging, ignore_errors=True)  # a twin writer won the race
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    # -- reading -------------------------------------------------------------------------------

    def file_path(self, artifact_id: str, name: str) -> Path:
        return self.artifacts / artifact_id / name

    def manifest_path(self, artifact_id: str) -> Path:
        return self.artifacts / artifact_id / MANIFEST

    def file_status(self, artifact_id: str, name: str, sha256: str) -> str:
        """'ok', 'missing', 'modified' or 'unreadable': whether a recorded file is still what
        was recorded."""
        return _status(self.file_path(artifact_id, name), sha256)

    def restore_file(self, artifact_id: str, name: str, sha256: str) -> bool:
        """Put a missing or modified artifact file back from its blob, when the blob is intact."""
        blob = self.blob_path(sha256)
        if self.blob_status(sha256) != "ok":
            return False
        target = self.file_path(artifact_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A new file renamed over the old name: a hard link left by an older tflc is broken too.
        clone_or_copy(blob, target, blob.read_bytes())
        return True

    def blob_status(self, sha256: str) -> str:
        """The same for the stored copy of a file."""
        return _status(self.blob_path(sha256), sha256)

    def stored_manifest(self, artifact_id: str) -> bytes | None:
        """The manifest's own stored copy (a blob whose hash starts with the id), if intact:
        what brings back an artifact whose manifest and database row are both lost."""
        if not _ID_PATTERN.fullmatch(artifact_id):
            return None
        folder = self.objects / artifact_id[:2]
        for blob in sorted(folder.glob(f"{artifact_id}*")) if folder.is_dir() else []:
            data = blob.read_bytes()
            if sha256_bytes(data) == blob.name:
                return data
        return None

    def manifests_on_disk(self) -> list[tuple[str, Path]]:
        """(id, manifest path) of every complete artifact folder; temporary ones are skipped."""
        if not self.artifacts.is_dir():
            return []
        found = []
        for folder in sorted(self.artifacts.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            found.append((folder.name, folder / MANIFEST))
        return found

    # -- garbage -------------------------------------------------------------------------------

    def unreferenced(self, blobs: set[str], ids: set[str], min_age_s: float):
        """Blobs not in `blobs` and artifact folders not in `ids` (staging folders included),
        untouched for at least `min_age_s` seconds."""
        now = time.time()

        def old(path: Path) -> bool:
            try:
                return now - path.stat().st_mtime >= min_age_s
            except OSError:
                return False

        stale_blobs = (
            [p for p in self.objects.glob("*/*") if p.is_file() and p.name not in blobs and old(p)]
            if self.objects.is_dir()
            else []
        )
        stale_folders = (
            [p for p in self.artifacts.iterdir() if p.is_dir() and p.name not in ids and old(p)]
            if self.artifacts.is_dir()
            else []
        )
        return stale_blobs, stale_folders
