"""Telemetry: one JSON object a line, appended to a file that rotates at a size.

`guard.jsonl` grows to `max_bytes`, then becomes `guard.jsonl.1` (`.1` becomes `.2`, ... up to
`backups`) and a new file starts; so a device never fills its disk with telemetry. A line is
written whole and flushed at once; a reader skips a torn last line (power cut mid-write).
"""

from __future__ import annotations

import json
import os
import time


class Telemetry:
    def __init__(self, path, max_bytes: int = 1 << 20, backups: int = 3):
        self.path = os.fspath(path)
        self.max_bytes = int(max_bytes)
        self.backups = int(backups)
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")
        self._size = self._handle.tell()

    def write(self, record: dict) -> None:
        line = json.dumps({"time": round(time.time(), 3), **record}, separators=(",", ":"),
                          allow_nan=False, default=_plain) + "\n"
        data = line.encode("utf-8")
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._handle.write(line)
        self._handle.flush()
        self._size += len(data)

    def _rotate(self) -> None:
        self._handle.close()
        for k in range(self.backups, 0, -1):
            older = f"{self.path}.{k - 1}" if k > 1 else self.path
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{k}")
        if self.backups == 0:
            os.unlink(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")
        self._size = 0

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)


def read_records(paths) -> list:
    """Records of telemetry files, oldest file first; lines that do not parse are skipped."""
    records = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    return records
