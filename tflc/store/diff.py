"""Comparing and exporting records: `tflc runs diff` and `tflc runs export`.

Both work on flattened manifests: nested sections become dotted keys (`metrics.evaluation.
accuracy_drop`, `versions.tensorflow`), so a diff is a list of keys whose values differ and an
export is one spreadsheet row per artifact.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tflc.errors import BadInput
from tflc.fileio import atomic_write_text

# Manifest sections a diff compares, in the order a user reads them: what went in, how it was
# configured, what it ran with, what came out.
DIFF_SECTIONS = (
    "inputs",
    "config",
    "target",
    "seed",
    "stages",
    "versions",
    "platform",
    "metrics",
    "result",
    "files",
)


def flatten(obj, prefix: str = "", out: dict | None = None, *, whole_lists: bool = True) -> dict:
    """Nested dicts and lists -> {dotted.key: scalar}; list items are keyed by `name` if any.

    The store's one flattener: diffs, exports and `runs show` read manifests through it, and a
    manifest's metrics are its numeric leaves (`manifests.numeric_leaves`), so one number has one
    key everywhere. `whole_lists`: a list of scalars stays one JSON value (one row of a diff);
    off, each item is a key of its own (`latency_ms[0]`), as a metric needs.
    """
    out = {} if out is None else out
    if isinstance(obj, dict):
        if not obj and prefix:
            out[prefix] = "{}"
        for key, value in obj.items():
            key = f"{prefix}.{key}" if prefix else str(key)
            flatten(value, key, out, whole_lists=whole_lists)
    elif isinstance(obj, list):
        if whole_lists and all(not isinstance(v, (dict, list)) for v in obj):
            out[prefix] = json.dumps(obj)
        else:
            for index, value in enumerate(obj):
                label = value.get("name") if isinstance(value, dict) else None
                key = f"{prefix}[{label if isinstance(label, str) else index}]"
                flatten(value, key, out, whole_lists=whole_lists)
    else:
        out[prefix] = obj
    return out


@dataclass
class RecordDiff:
    a: str
    b: str
    rows: list[dict] = field(default_factory=list)  # {section, key, a, b}

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "identical": not self.rows, "differences": self.rows}


def diff_records(a, b) -> RecordDiff:
    """What differs between two artifacts' manifests (ArtifactRecords), section by section."""
    result = RecordDiff(a.id, b.id)
    if a.kind != b.kind:
        result.rows.append({"section": "kind", "key": "kind", "a": a.kind, "b": b.kind})
    for section in DIFF_SECTIONS:
        left = flatten(a.manifest.get(section), section)
        right = flatten(b.manifest.get(section), section)
        for key in sorted(set(left) | set(right)):
            if section == "config" and key == "config.out_dir":
                continue  # where the output went is not a difference in the result
            if left.get(key) != right.get(key):
                result.rows.append(
                    {"section": section, "key": key, "a": left.get(key), "b": right.get(key)}
                )
    return result


def export_row(record) -> dict:
    """One flat row per artifact: identity, input and target hashes, versions, every metric."""
    m = record.manifest
    row = {
        "id": record.id,
        "kind": record.kind,
        "created": record.created,
        "model": record.model,
        "target": record.target,
        "tags": " ".join(record.tags),
        "releases": " ".join(record.releases),
        "seed": m.get("seed"),
    }
    for role, entry in (m.get("inputs") or {}).items():
        row[f"inputs.{role}.sha256"] = (entry or {}).get("sha256")
    if isinstance(m.get("target"), dict):
        row["target.sha256"] = m["target"].get("sha256")
    row.update(flatten(m.get("versions") or {}, "versions"))
    row.update(flatten(m.get("result") or {}, "result"))
    row.update(flatten(m.get("metrics") or {}, "metrics"))
    return row


def to_csv(rows: list[dict]) -> str:
    """Rows with different keys share one header (first-seen order); missing cells stay empty."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def write_export(path: str | os.PathLike, text: str) -> Path:
    """Write an export atomically, creating missing folders; a path that cannot be a file (a
    parent is a regular file, no permission) is bad input naming it, with nothing half-written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, text)
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot write the export there ({exc.strerror or exc}); choose another -o"
        ) from None
