"""Per-trial progress from real worker processes: a 2-trial search on 2 workers, its stderr a
pipe (not a terminal), prints plain progress lines for each trial, epochs included, and leaves
no progress file behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_each_trial_reports_its_progress_from_its_worker(digits_dir, tmp_path):
    env = {**os.environ, "TFLC_REGISTRY": str(tmp_path / "registry"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tflc", "search", str(digits_dir / "model.keras"), "-t",
         "cortex-m4", "--train-data", str(digits_dir / "train.npz"), "--eval-data",
         str(digits_dir / "eval.npz"), "--trials", "2", "--workers", "2", "--epochs", "6",
         "--no-compression", "--precision", "int8", "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    for number in (0, 1):
        mine = [line for line in lines if line.startswith(f"trial {number}: ")]
        assert any(re.fullmatch(rf"trial {number}: training, epoch \d/6", line) for line in mine), \
            result.stderr[-3000:]
        assert any("complete" in line or "infeasible" in line for line in mine)
    assert "\r" not in result.stderr  # no bar redraws on a pipe
    assert not list(out.glob("trials/*/progress.json"))


def test_a_compression_stage_shows_as_its_own_phase():
    from tflc.search.trial import _stage_progress

    seen = []
    log = _stage_progress(lambda phase, done=0, total=0: seen.append((phase, done, total)))
    log("running the optimization pipeline")
    log("stage 2/3: prune 2:4")
    assert seen == [("fine-tuning prune 2:4", 2, 3)]


def test_a_trial_faster_than_the_driver_polls_still_shows_every_step(tmp_path):
    """Plain lines (a log, a pipe): each step since the last poll, not only the latest state."""
    import io

    from tflc.search.progress import TrialProgress
    from tflc.search.trial import Progress

    stream = io.StringIO()
    bars = TrialProgress(tmp_path, stream)
    note = Progress(bars.start(3))
    note("building", 0, 6)
    bars.poll()
    for epoch in range(1, 7):  # six epochs between two polls
        note("training", epoch, 6)
    note("compiling", 6, 6)
    bars.poll()
    bars.poll()  # nothing new: nothing printed twice
    assert stream.getvalue().splitlines() == [
        "trial 3: building", *(f"trial 3: training, epoch {e}/6" for e in range(1, 7)),
        "trial 3: compiling"]
    bars.finish(3)
