"""The package folder is written as one unit: into a temporary sibling, then renamed into place.

An export that fails or is interrupted therefore leaves the earlier package as it was, and a
finished one holds exactly the files of this export (none left over from an earlier one with
another --name or layout). Because the folder is replaced as a whole, a folder holding files
tflc did not write (the user's own sources, the model itself) is refused, not wiped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from tflc.errors import BadInput
from tflc.fileio import atomic_write_text

REPORT_FILE = "export_report.json"


def check_replaceable(out: Path) -> None:
    """Raise BadInput unless `out` can become the package; creates nothing.

    Run before any slow work, so a bad -o is found in a second, not after the measurement.
    """
    out = real_folder(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out}: is a file, not a folder; choose another output folder with -o")
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise BadInput(f"{out}: the package replaces this whole folder, which holds the current "
                       "folder; choose a new folder with -o")
    if out.is_dir():
        foreign = _files_not_from_tflc(out)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise BadInput(f"{out / foreign[0]}{more}: tflc did not write this, and the package "
                           "replaces the whole folder; choose a new or empty folder with -o, or "
                           "move the file out")
    _check_creatable(out)


def real_folder(out: Path) -> Path:
    """Where a symlinked output folder points: the package replaces that folder, not the link."""
    return out.resolve() if out.is_symlink() else out


def _files_not_from_tflc(out: Path) -> list[str]:
    """Files under `out` that its export_report.json does not list (all of them without one)."""
    present = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if not p.is_dir())
    try:
        listed = set(json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        listed = set()
    listed.add(REPORT_FILE)
    return [p for p in present if p not in listed]


def _check_creatable(out: Path) -> None:
    """The nearest existing ancestor of `out` accepts a new folder (tried, then removed)."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.tflc-probe-", dir=parent))
    except OSError as exc:
        raise BadInput(f"{out}: the output folder cannot be written in {parent} "
                       f"({exc.strerror or exc}); choose another with -o") from None


def write_package(out: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative path -> text) as the folder `out`, replacing any earlier one."""
    out = real_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tflc-new-", dir=out.parent))
    try:
        os.chmod(staging, 0o755)
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _swap_in(staging: Path, out: Path) -> None:
    """Rename `staging` to `out`; an earlier `out` is moved aside first and put back on failure."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.tflc-old-", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
