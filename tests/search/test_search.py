"""`tflc search` end to end: bad input in one line, a real Optuna study in the registry folder
that resumes after SIGINT without repeating a finished trial, the Pareto JSON, the trials as
`search` artifacts, and the recommended .tflite read back and run in LiteRT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TFLC = [sys.executable, "-m", "tflc"]
FAST = ["--epochs", "1", "--no-compression", "--precision", "int8"]


def _run(args, env, timeout=300):
    return subprocess.run(TFLC + args, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "TFLC_REGISTRY": str(tmp_path / "registry"), "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.mark.parametrize("extra, needle", [
    (["--workers", "2", "--ray", "127.0.0.1:1"], "--workers and --ray"),
    (["--target", "no-such-board"], "no-such-board"),
    (["--max-arena", "lots"], "--max-arena"),
    (["--builder", "nocolon"], "--builder nocolon"),
    (["--ray", "127.0.0.1:1"], "no Ray cluster answers there"),
])
def test_bad_input_is_one_line_exit_2(digits_dir, tmp_path, env, extra, needle):
    args = ["search", str(digits_dir / "model.keras"), "--target", "cortex-m4",
            "--train-data", str(digits_dir / "train.npz"), "--eval-data",
            str(digits_dir / "eval.npz"), "-o", str(tmp_path / "out"), *extra]
    result = _run(args, env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "search.json").exists()


def test_missing_train_data_names_the_flag(digits_dir, tmp_path, env):
    result = _run(["search", str(digits_dir / "model.keras"), "-t", "cortex-m4", "--train-data",
                   str(tmp_path / "nope.npz"), "--eval-data", str(digits_dir / "eval.npz")], env)
    assert result.returncode == 2 and "--train-data" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _interpreter_accuracy(model: Path, eval_npz: Path) -> float:
    from ai_edge_litert.interpreter import Interpreter

    data = np.load(eval_npz)
    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    height, width = inp["shape"][1:3]
    x = data["x"]
    if x.shape[1:3] != (height, width):  # a candidate with a lower input resolution
        from tflc.tf_env import import_tensorflow

        x = import_tensorflow().image.resize(x, (height, width), antialias=True).numpy()
    hits = 0
    for sample, label in zip(x, data["y"]):
        q = np.clip(np.round(sample / scale + zero), -128, 127).astype(inp["dtype"])
        interpreter.resize_tensor_input(inp["index"], [1, *q.shape])
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], q[None])
        interpreter.invoke()
        hits += int(np.argmax(interpreter.get_tensor(out["index"])[0]) == label)
    return 100.0 * hits / len(x)


def _finished_trials(path: Path) -> list:
    """Trials told to the study: search.json is rewritten (atomically) after each one."""
    try:
        return json.loads(path.read_text())["trials"]
    except (OSError, ValueError, KeyError):
        return []


def test_search_resumes_after_sigint_and_repeats_no_finished_trial(digits_dir, tmp_path, env):
    from tflc.tflite.reader import read_model

    out = tmp_path / "out"
    args = ["search", str(digits_dir / "model.keras"), "-t", "cortex-m4",
            "--train-data", str(digits_dir / "train.npz"), "--eval-data",
            str(digits_dir / "eval.npz"), "--trials", "2", "--workers", "1", "-o", str(out), *FAST]
    process = subprocess.Popen(TFLC + args, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not _finished_trials(out / "search.json"):
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no trial finished in 300 s"
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "resume" in stderr
    before = {p.parent.name: p.read_bytes() for p in out.glob("trials/*/trial.json")}
    finished = {json.loads(b)["number"] for b in before.values()}
    assert finished and len(finished) < 2
    journal = next((tmp_path / "registry" / "search").glob("*.journal"))
    assert journal.stat().st_size > 0  # the study lives in the registry folder

    result = _run(args + ["--format", "json"], env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming study" in result.stderr
    assert result.stdout.lstrip().startswith("{"), result.stdout[:800]
    data = json.loads(result.stdout)  # stdout is the JSON alone
    summary = json.loads((out / "search.json").read_text())
    assert summary["evaluated_this_run"] and not finished & set(summary["evaluated_this_run"])
    assert len(summary["evaluated_this_run"]) == 2 - len(finished)
    for name, text in before.items():  # finished trials untouched: never run again
        assert (out / "trials" / name / "trial.json").read_bytes() == text
    trials = data["trials"]
    assert len(trials) == 2 and all(set(t) >= {"number", "params", "status", "accuracy", "macs",
                                               "arena_bytes", "flash_bytes", "latency_ms", "model"}
                                    for t in trials)
    assert data["pareto"] and all(Path(p["model"]).suffix == ".tflite" for p in data["pareto"])

    # the recommended model: a real int8 flatbuffer whose accuracy LiteRT reproduces
    rec = summary["recommended"]
    model = Path(rec["model"])
    view = read_model(model.read_bytes())
    assert view is not None
    assert rec["flash_bytes"] == model.stat().st_size
    measured = _interpreter_accuracy(model, digits_dir / "eval.npz")
    assert abs(measured - rec["accuracy"]) < 0.5
    assert rec["export"] and (model.parent / "c").is_dir()
    html = (out / "report.html").read_text()
    assert "<svg" in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    listed = _run(["runs", "list", "--kind", "search", "--format", "json"], env)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 2
