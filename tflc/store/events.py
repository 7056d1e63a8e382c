"""Reading the tag and release log (`events.jsonl`) back, line by line, refusing what is not an
event.

The log is appended by `Registry` and replayed by `runs repair` onto a rebuilt database. A line
that is not a well-formed event (a torn last line after a crash, an edit by hand) is skipped, but
never silently: the caller gets its line number and why, to show the user.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tflc.store.artifacts import ID_LENGTH

_ARTIFACT_ID = re.compile(f"[0-9a-f]{{{ID_LENGTH}}}")
# event kind -> the text fields it must carry besides `artifact` and `time`
EVENT_FIELDS = {"tag": ("tag",), "untag": ("tag",), "promote": ("name",), "rollback": ("name",)}


@dataclass
class EventLog:
    path: Path
    events: list[dict] = field(default_factory=list)
    junk: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)

    def warning(self) -> str | None:
        """One line naming the file and the skipped lines, or None when every line was read."""
        if not self.junk:
            return None
        line, why = self.junk[0]
        if len(self.junk) == 1:
            return f"{self.path} line {line}: {why}; the line was skipped"
        lines = ", ".join(str(n) for n, _ in self.junk[:10])
        more = ", ..." if len(self.junk) > 10 else ""
        return (
            f"{self.path} lines {lines}{more}: not tag/release events (line {line}: {why}); "
            f"{len(self.junk)} lines were skipped"
        )


def read_events(path: Path) -> EventLog:
    """Every well-formed event of the log, in order, and the line numbers of the rest."""
    log = EventLog(Path(path))
    if not log.path.is_file():
        return log
    text = log.path.read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        event, why = _parse(line)
        if event is None:
            log.junk.append((number, why))
        else:
            log.events.append(event)
    return log


def _parse(line: str) -> tuple[dict | None, str]:
    try:
        event = json.loads(line)
    except ValueError:
        return None, "not JSON (a torn or edited line)"
    if not isinstance(event, dict):
        return None, "not a JSON object"
    kind = event.get("event")
    if kind not in EVENT_FIELDS:
        return None, f"unknown event {kind!r}"
    for key in ("artifact", "time", *EVENT_FIELDS[kind]):
        if not isinstance(event.get(key), str):
            return None, f"a {kind} event without a text '{key}'"
    if not _ARTIFACT_ID.fullmatch(event["artifact"]):
        return None, f"a {kind} event whose artifact {event['artifact']!r} is not an artifact id"
    return event, ""
