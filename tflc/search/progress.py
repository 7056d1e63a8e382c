"""Each running trial's progress, as the driver shows it: a bar per trial on a terminal, plain
lines otherwise (a log file or a pipe gets no bar redraws).

The worker (a spawned process or a Ray task on this machine) writes its phase and epochs to
`progress.json` in the trial's folder (`trial.Progress`); the driver polls the files between
results. A Ray task on another node cannot see that folder and writes nothing: its trial shows
only the line printed when it finishes.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

FILE = "progress.json"


class TrialProgress:
    def __init__(self, out: Path, stream=None):
        self.out = out
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._running: dict[int, dict] = {}  # number -> {"path", "seen", "bar", "slot"}

    def path(self, number: int) -> Path:
        return self.out / "trials" / f"{number:04d}" / FILE

    def start(self, number: int) -> str:
        """The progress file's path for the worker (its folder made here)."""
        path = self.path(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            path.unlink()  # a resumed trial's stale note
        used = {r["slot"] for r in self._running.values()}
        slot = next(i for i in range(1, len(used) + 2) if i not in used)
        self._running[number] = {"path": path, "seen": None, "printed": 0, "bar": None,
                                 "slot": slot}
        return str(path)

    def poll(self) -> None:
        for number, state in self._running.items():
            try:
                note = json.loads(state["path"].read_text())
            except (OSError, ValueError):
                continue  # not written yet, or being replaced
            if self.tty:  # a bar shows the latest state
                key = (note.get("phase"), note.get("done"))
                if key != state["seen"]:
                    state["seen"] = key
                    self._draw(number, state, note)
                continue
            # plain lines: every step since the last poll (the note keeps the recent ones)
            for step in note.get("recent") or [note]:
                seq = step.get("seq")
                if seq is not None:
                    if seq <= state["printed"]:
                        continue
                    state["printed"] = seq
                key = (step.get("phase"), step.get("done"))
                if key != state["seen"]:
                    state["seen"] = key
                    print(f"trial {number}: {_words(step)}", file=self.stream, flush=True)

    def _draw(self, number: int, state: dict, note: dict) -> None:
        from tqdm import tqdm

        total = max(1, int(note.get("total") or 1))
        if state["bar"] is None:
            state["bar"] = tqdm(total=total, desc=f"trial {number}", unit="epoch",
                                position=state["slot"], leave=False, dynamic_ncols=True,
                                file=self.stream)
        bar = state["bar"]
        bar.n = min(total, int(note.get("done") or 0))
        bar.set_postfix_str(str(note.get("phase")), refresh=False)
        bar.refresh()

    def finish(self, number: int) -> None:
        state = self._running.pop(number, None)
        if state is None:
            return
        if state["bar"] is not None:
            state["bar"].close()
        with contextlib.suppress(OSError):
            state["path"].unlink()
            state["path"].parent.rmdir()  # only when the trial left nothing else there

    def close(self) -> None:
        for number in list(self._running):
            self.finish(number)


def _words(note: dict) -> str:
    phase = note.get("phase", "?")
    if phase == "training":
        return f"training, epoch {note.get('done', 0)}/{note.get('total', 0)}"
    return str(phase)
