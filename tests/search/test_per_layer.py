"""A candidate's sparsity per layer reaches its compiled .tflite: each weight tensor, read with
tflc's own flatbuffer reader, holds the zero fraction its layer was given (tiny model, real
training and pruning)."""

from __future__ import annotations

import json

import numpy as np


def _tiny(tmp_path):
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((16,)),
        keras.layers.Dense(48, activation="relu", name="wide"),
        keras.layers.Dense(24, activation="relu", name="middle"),
        keras.layers.Dense(4, name="logits"),
    ])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype(np.float32)
    y = (x[:, :4].argmax(axis=1)).astype(np.int64)
    return model, {"x_train": x, "y_train": y, "x_eval": x[:64], "y_eval": y[:64],
                   "x_calib": x[:32]}


def test_per_layer_sparsities_reach_the_tflite(tmp_path):
    from tflc.search import space as sp
    from tflc.search.trial import TrialTask, run_trial
    from tflc.tflite.reader import read_model

    model, data = _tiny(tmp_path)
    config = json.loads(json.dumps(model.get_config()))
    assert sp.prunable_layers(config) == ["wide", "middle", "logits"]
    params = {"sparsity_wide": 0.75, "sparsity_middle": 0.5, "sparsity_logits": 0.0,
              "clusters": 0, "qat": False, "precision": "int8"}
    progress = tmp_path / "progress.json"
    task = TrialTask(0, params, config, "tf_keras", data, "cortex-m4", {}, epochs=2,
                     fine_tune_epochs=3, progress_path=str(progress))
    outcome = run_trial(task)
    assert outcome.status == "complete", outcome.error
    assert json.loads(progress.read_text())["phase"] == "checking"
    view = read_model(outcome.tflite)
    zeros = {}
    for op in view.operators:
        if op.op == "FULLY_CONNECTED":
            weights = view.main.tensors[op.inputs[1]]
            zeros[weights.shape[0]] = float(np.mean(view.tensor_data(weights) == 0))
    # output units identify the layer: wide 48, middle 24, logits 4
    assert abs(zeros[48] - 0.75) < 0.03 and abs(zeros[24] - 0.5) < 0.03, zeros
    assert zeros[4] < 0.2, zeros  # left dense
    stages = outcome.report["pipeline"]["stages"]
    assert stages[0]["sparsities"] == {"wide": 0.75, "middle": 0.5}


def test_suggest_compression_asks_one_sparsity_per_layer():
    import optuna

    from tflc.search import space as sp

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    params = sp.suggest_compression(trial, ("int8",), ["c1", "c2", "fc"])
    assert set(sp.layer_sparsities(params)) == {"c1", "c2", "fc"}
    assert all(v in sp.SPARSITIES for v in sp.layer_sparsities(params).values())
    assert "sparsity" not in params and params["precision"] == "int8"


def test_a_mixed_precision_candidate_is_compiled_mixed(tmp_path):
    from tflc.search.trial import TrialTask, run_trial
    from tflc.tflite.reader import read_model

    model, data = _tiny(tmp_path)
    config = json.loads(json.dumps(model.get_config()))
    params = {"clusters": 0, "qat": False, "precision": "mixed"}
    outcome = run_trial(TrialTask(0, params, config, "tf_keras", data, "cortex-m4", {}, epochs=2))
    assert outcome.status == "complete", outcome.error
    report = outcome.report
    assert report["config"]["activations"] == "mixed"
    assert report["mixed"]["promotions"], report["mixed"]  # every unit was measured
    share = report["mixed"]["int16_share"]
    assert 0.0 <= share <= report["mixed"]["budget"]
    wide = [op for op in read_model(outcome.tflite).operators
            if op.op == "FULLY_CONNECTED" and
            read_model(outcome.tflite).main.tensors[op.outputs[0]].dtype == "int16"]
    assert bool(wide) == (share > 0)  # what the report says is what the flatbuffer holds


def test_search_refuses_mixed_on_a_target_without_it(tmp_path):
    from click.testing import CliRunner

    from tflc.cli import main

    for name in ("seed.keras", "t.npz", "e.npz"):  # never read: the target is refused first
        (tmp_path / name).write_bytes(b"")
    result = CliRunner().invoke(main, ["search", str(tmp_path / "seed.keras"), "--target", "edgetpu",
                                       "--train-data", str(tmp_path / "t.npz"),
                                       "--eval-data", str(tmp_path / "e.npz"),
                                       "--precision", "mixed", "-o", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert "mixed_precision" in result.output and "Traceback" not in result.output


def test_the_default_space_tries_mixed_only_where_the_descriptor_allows_it():
    from tflc.check import load_target
    from tflc.search.core import default_precisions

    assert default_precisions(load_target("cortex-m4")) == ("int8", "int16", "mixed")
    assert default_precisions(load_target("ethos-u55-128"))[-1] == "mixed"
    assert "mixed" not in default_precisions(load_target("edgetpu"))
    assert "mixed" not in default_precisions(load_target("raspberry-pi-4"))
