"""Writing files so that nothing is ever half-written, and hashing them.

Every file tflc produces goes through `atomic_write_*`: the bytes go to a temporary file in the
destination folder, are flushed to disk, and only then renamed over the destination. An
interrupted run therefore leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from tflc.errors import BadInput

_CHUNK = 1 << 20


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt: remove the temporary file, keep any earlier `path`.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    """numpy scalars and arrays, Paths and sets appear in reports; make them JSON."""
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hash a file, or every file below a folder in a stable order (SavedModels are folders)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


YAML_MAX_DEPTH = 50  # descriptors and pipeline configs nest a handful of levels


def read_yaml(path: str | os.PathLike, what: str):
    """Parse a YAML file; any problem becomes one `BadInput` naming the file (and line).

    Only plain data is built (`safe_load`: tags such as `!!python/object` are refused), and a
    document nested deeper than `YAML_MAX_DEPTH` is refused here, so that neither the parser nor
    the code reading the result runs out of stack on it.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise BadInput(_too_deep(path, what)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BadInput(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a text file; expected a {what} in YAML") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if _depth(data) > YAML_MAX_DEPTH:
        raise BadInput(_too_deep(path, what))
    return data


def _too_deep(path: Path, what: str) -> str:
    return (f"{path}: nested more than {YAML_MAX_DEPTH} levels deep; a {what} nests a few levels "
            "at most (check the brackets and indentation)")


def _depth(data) -> int:
    """How deeply lists and mappings nest in `data`, without recursion.

    Aliases can make one list appear many times (or inside itself), so each container is
    measured once and a container met again on its own path counts as too deep.
    """
    heights: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(data, False)]
    while stack:
        node, done = stack.pop()
        if not isinstance(node, (list, dict)):
            continue
        key = id(node)
        children = [c for c in (node.values() if isinstance(node, dict) else node)
                    if isinstance(c, (list, dict))]
        if done:
            on_path.discard(key)
            heights[key] = 1 + max((heights[id(c)] for c in children), default=0)
            continue
        if key in heights:
            continue
        if key in on_path:
            return YAML_MAX_DEPTH + 1  # a container inside itself: infinitely deep
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in heights)
    return heights.get(id(data), 0)


def ensure_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `path` if needed and prove a file can be written there, before any slow work."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tflc-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BadInput(f"{path}: the {what} cannot be written ({reason}); choose another with -o") from None
    return path


STAGING_PREFIX = ".tflc-staging-"


@contextlib.contextmanager
def staged_outputs(out_dir: str | os.PathLike, what: str = "output folder"):
    """Yield a staging folder for all of a run's outputs; publish them into `out_dir` together.

    The staging folder lives inside `out_dir` (same filesystem, so publishing is renames only).
    Only when the block succeeds is each staged file moved over its namesake, folders swapped
    whole, and `report.json` last, so a reader never sees a new model beside an old report. A
    failure or Ctrl-C inside the block removes the staging folder and leaves `out_dir` as it was.
    """
    out = ensure_writable_dir(out_dir, what)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        yield stage
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish(stage: Path, out: Path) -> None:
    entries = sorted(stage.iterdir(), key=lambda p: (p.name == "report.json", p.name))
    for entry in entries:
        destination = out / entry.name
        if entry.is_dir():
            if destination.exists():
                old = stage / f".old-{entry.name}"
                os.replace(destination, old)  # removed with the staging folder
            os.replace(entry, destination)
        else:
            os.replace(entry, destination)

