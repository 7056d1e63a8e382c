"""The pipeline as a whole: budgets and rollback, failing fast, seeds, the compile command with
its flags and config, Keras 3 input, and an interrupt that leaves earlier results intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tests.optimize.conftest import run
from tflc.cli import main
from tflc.errors import BadInput, GateFailed

HARSH = {"prune": {"sparsity": 0.95, "schedule": "constant", "layers": ["*"], "epochs": 1}}


def test_a_stage_over_budget_is_rolled_back_and_the_next_starts_from_its_input(
        digits_loaded, digits_dir):
    result = run(digits_loaded, digits_dir,
                 [HARSH, {"prune": {"sparsity": 0.3, "epochs": 1}}], max_accuracy_drop=2.0)
    float_stage, harsh, gentle = result.stages
    assert harsh.status == "rolled back" and gentle.status == "accepted"
    lost = float_stage.accuracy - harsh.accuracy
    assert lost > 2.0
    assert harsh.reason.startswith(f"stage 1 (prune 95%) lost {lost:.2f} points against the "
                                   f"float model ({float_stage.accuracy:.2f}% -> ")
    assert "over the overall budget of 2 points" in harsh.reason
    assert any("rolled back, the next stage starts from its input" in w for w in result.warnings)
    # stage 2 started from the float model: 30% of conv2/fc1, not 95% of everything
    assert 0.2 < gentle.sparsity < 0.35
    assert result.final_index == 2


def test_on_exceed_fail_stops_with_which_stage_and_how_much(digits_loaded, digits_dir):
    with pytest.raises(GateFailed) as info:
        run(digits_loaded, digits_dir, [HARSH, "qat"], max_accuracy_drop=1.0, on_exceed="fail")
    message = str(info.value)
    assert "stage 1 (prune 95%) lost" in message and "budget of 1 points" in message
    assert info.value.exit_code == 3


def test_a_looser_stage_bound_cannot_break_the_overall_budget(digits_loaded, digits_dir):
    stage = {"prune": {**HARSH["prune"], "max_accuracy_drop": 100}}
    result = run(digits_loaded, digits_dir, [stage], max_accuracy_drop=1.0)
    assert result.stages[1].status == "accepted"  # within its own bound
    assert result.final_index == 0  # but the pipeline's result falls back to the float model
    assert "over the overall budget of 1" in result.warnings[-1]
    assert result.loaded.model is not None and result.loaded.format == "tf_keras"


def test_same_seed_same_result(digits_loaded, digits_dir):
    stages = [{"prune": {"sparsity": 0.5, "epochs": 1}}]
    first, second = (run(digits_loaded, digits_dir, stages) for _ in range(2))
    assert first.stages[1].accuracy == second.stages[1].accuracy
    for a, b in zip(first.loaded.model.get_weights(), second.loaded.model.get_weights(),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_pipeline_needs_train_and_eval_data(digits_loaded, digits_dir):
    from tflc.optimize.pipeline import resolve_config, run_pipeline

    config = resolve_config(qat=True)
    with pytest.raises(BadInput, match="needs labelled --eval-data"):
        run_pipeline(digits_loaded, config, digits_dir / "train.npz", None)
    with pytest.raises(BadInput, match="needs --train-data"):
        run_pipeline(digits_loaded, config, None, digits_dir / "eval.npz")


def compile_args(digits_dir, out, *more):
    return ["compile", str(digits_dir / "model.keras"), "-o", str(out),
            "--calibration-data", str(digits_dir / "calib.npz"),
            "--eval-data", str(digits_dir / "eval.npz"), *map(str, more)]


def test_compile_with_flags_runs_the_pipeline_end_to_end(digits_dir, tmp_path):
    from tflc.tflite.reader import read_model

    out = tmp_path / "out"
    result = CliRunner().invoke(main, compile_args(
        digits_dir, out, "--train-data", digits_dir / "train.npz", "--prune", "0.6", "--qat",
        "--epochs", "2"))
    assert result.exit_code == 0, result.output
    assert "stages" in result.output and "prune 60%" in result.output
    report = json.loads((out / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["float", "prune", "qat"]
    assert report["stages"][2]["details"]["scheme"] == "pqat"
    config = report["config"]  # the flags as CompileOptions fields, no envelope around them
    assert (config["pipeline"], config["prune"], config["qat"], config["epochs"]) == (None, 0.6, True, 2)
    assert [s["train"]["epochs"] for s in report["pipeline"]["stages"]] == [2, 2]
    assert (out / "pipeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the delivered model: int8 I/O, and the pruned layers' zeros are in it
    view = read_model(out / "model.tflite")
    assert [t.dtype for t in view.input_tensors()] == ["int8"]
    assert [t.dtype for t in view.output_tensors()] == ["int8"]
    weights = {t.name: view.tensor_data(t) for t in view.main.tensors
               if t.is_constant and t.dtype == "int8" and len(t.shape) == 2}
    fc1 = next(w for name, w in weights.items() if "fc1" in name)
    assert (fc1 == 0).mean() >= 0.59
    assert report["verifier"]["fully_integer"] is True


def test_compile_with_a_bad_config_is_one_line_and_exit_2(digits_dir, tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("stages:\n  - prune: {sparsity: 0.5, shedule: constant}\n")
    result = CliRunner().invoke(main, compile_args(
        digits_dir, tmp_path / "out", "--config", config, "--train-data",
        digits_dir / "train.npz"))
    assert result.exit_code == 2
    assert f"{config}: stages[0].prune.shedule: unknown field (did you mean 'schedule'?)" \
        in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "model.tflite").exists()


def test_compile_training_data_that_does_not_fit(digits_dir, tmp_path):
    bad = tmp_path / "train.npz"
    np.savez(bad, x=np.zeros((20, 64), np.float32), y=np.zeros(20))
    result = CliRunner().invoke(main, compile_args(
        digits_dir, tmp_path / "out", "--train-data", bad, "--prune", "0.5"))
    assert result.exit_code == 2
    assert f"{bad}: input 'image' expects samples of shape (8, 8, 1)" in result.output
    assert "got an array of shape (20, 64)" in result.output
    assert "Traceback" not in result.output


INTERRUPTING = '''
import os, signal
import numpy as np
import tensorflow as tf

PASSES = [0]

def dataset():
    data = np.load(os.environ["TFLC_TEST_TRAIN"])
    x, y = data["x"], data["y"]

    def generate():
        PASSES[0] += 1  # passes 1 and 2 check labels and count steps; 3 is the first epoch
        for i in range(len(x)):
            if PASSES[0] == 3 and i == 100:
                open(os.environ["TFLC_TEST_MARK"], "w").write("interrupted while training")
                os.kill(os.getpid(), signal.SIGINT)
            yield x[i], y[i]

    return tf.data.Dataset.from_generator(generate, output_signature=(
        tf.TensorSpec((8, 8, 1), tf.float32), tf.TensorSpec((), tf.int64)))
'''


def test_interrupt_during_training_leaves_earlier_results_intact(digits_dir, tmp_path):
    out = tmp_path / "out"
    first = CliRunner().invoke(main, compile_args(digits_dir, out))
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    module = tmp_path / "interrupting.py"
    module.write_text(INTERRUPTING)
    mark = tmp_path / "mark"
    env = {**os.environ, "TFLC_TEST_TRAIN": str(digits_dir / "train.npz"),
           "TFLC_TEST_MARK": str(mark)}
    proc = subprocess.run(
        [sys.executable, "-m", "tflc", *compile_args(digits_dir, out, "--train-data",
                                                     f"{module}:dataset", "--prune", "0.5")],
        env=env, capture_output=True, text=True, timeout=300)
    assert mark.read_text() == "interrupted while training"
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr
    assert "interrupted; nothing was written, earlier results are intact" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no partial artifacts


def test_keras3_model_is_rebuilt_for_the_pipeline(digits_dir, tmp_path):
    from tflc.examples.digits import train
    from tflc.load.models import load_model
    from tflc.tf_env import import_keras3

    keras3 = import_keras3()
    path = tmp_path / "model3.keras"
    train(keras3, np.load(digits_dir / "train.npz")["x"], np.load(digits_dir / "train.npz")["y"],
          epochs=3).save(path)
    loaded = load_model(path)
    assert loaded.format == "keras3"
    result = run(loaded, digits_dir, [{"prune": {"sparsity": 0.5, "epochs": 1}}])
    assert result.rebuild["max_abs_difference"] < 1e-5
    assert result.loaded.format == "tf_keras"
    assert result.stages[1].status == "accepted" and result.stages[1].sparsity > 0.4
