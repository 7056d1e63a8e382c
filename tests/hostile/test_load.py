"""Hostile inputs to `tflc compile` and `tflc sensitivity`: model files that carry code, broken
model and data files, and option values that no run can use. Every case is generated here.

A Lambda layer's code is made to leave a marker file when it runs, so each refusal test also
proves the code did not run (not only that a message was printed).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tflc.cli import main


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert "internal error" not in result.output, result.output
    return result


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("tflc: error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def tf_keras():
    from tflc.tf_env import import_tf_keras

    return import_tf_keras()


def marker_lambda(keras, marker: Path, name: str = "doubler"):
    """A Lambda layer whose code touches `marker` whenever it runs (also when a model is built)."""
    source = f"lambda t: (__import__('pathlib').Path({str(marker)!r}).touch(), t * 2.0)[1]"
    return keras.layers.Lambda(eval(source), name=name)  # noqa: S307 - the test's own code


def compile_args(path, out):
    return ["compile", path, "-o", out, "--calibration", "random", "--calibration-samples", 4]


@pytest.fixture(scope="module")
def lambda_h5(tmp_path_factory):
    """A tf_keras .h5 whose Lambda layer leaves a marker when it runs; (path, marker)."""
    folder = tmp_path_factory.mktemp("lambda_h5")
    marker = folder / "code-ran"
    keras = tf_keras()
    inputs = keras.Input((4,), name="x")
    outputs = marker_lambda(keras, marker)(keras.layers.Dense(3)(inputs))
    keras.Model(inputs, outputs).save(folder / "lambda.h5")
    marker.unlink(missing_ok=True)  # building the model ran it once, here
    return folder / "lambda.h5", marker


def rewrite_h5_config(source: Path, target: Path, dump) -> Path:
    """Copy an .h5 with its architecture JSON re-serialised by `dump(config) -> str`."""
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        handle.attrs["model_config"] = dump(config)
    return target


@pytest.mark.parametrize("spelling", ["space_before_colon", "unicode_escape"])
def test_a_lambda_hidden_by_json_spelling_is_found(lambda_h5, tmp_path, spelling):
    source, marker = lambda_h5
    if spelling == "space_before_colon":
        def dump(config):
            return json.dumps(config, separators=(", ", " : "))
    else:
        def dump(config):
            return json.dumps(config).replace('"Lambda"', '"\\u004cambda"')
    path = rewrite_h5_config(source, tmp_path / "hidden.h5", dump)
    with h5py.File(path, "r") as handle:
        stored = handle.attrs["model_config"]
    assert '"class_name": "Lambda"' not in (stored.decode() if isinstance(stored, bytes) else stored)
    result = run_cli(*compile_args(path, tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert "Lambda layer ('doubler')" in one_error_line(result)
    assert not marker.exists(), "the Lambda's code ran"


def test_a_lambda_nested_in_models_and_wrappers_is_found(tmp_path):
    keras = tf_keras()
    marker = tmp_path / "code-ran"
    inner = keras.Sequential([keras.layers.Dense(4),
                              keras.layers.TimeDistributed(marker_lambda(keras, marker, "deep"))],
                             name="inner")
    inputs = keras.Input((3, 4), name="x")
    path = tmp_path / "nested.h5"
    keras.Model(inputs, inner(inputs)).save(path)
    marker.unlink(missing_ok=True)
    result = run_cli(*compile_args(path, tmp_path / "out"))
    assert result.exit_code == 2 and "Lambda layer ('deep')" in one_error_line(result)
    assert not marker.exists()


def test_a_tf_keras_savedmodel_with_a_lambda_is_refused_before_loading(tmp_path):
    keras = tf_keras()
    marker = tmp_path / "code-ran"
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, marker_lambda(keras, marker)(keras.layers.Dense(3)(inputs)))
    folder = tmp_path / "saved"
    model.save(folder, save_format="tf")
    marker.unlink(missing_ok=True)
    for command in (compile_args(folder, tmp_path / "out"),
                    ["sensitivity", folder, "--eval-data", tmp_path / "none.npz", "-o", tmp_path / "s"]):
        result = run_cli(*command)
        assert result.exit_code == 2, result.output
        assert "Lambda layer ('doubler')" in one_error_line(result)
        assert not marker.exists(), f"the Lambda's code ran during {command[0]}"


def test_a_model_whose_configuration_cannot_be_read_is_refused(lambda_h5, tmp_path):
    source, marker = lambda_h5
    path = tmp_path / "garbled.h5"
    path.write_bytes(source.read_bytes())
    with h5py.File(path, "r+") as handle:
        handle.attrs["model_config"] = '{"class_name": "Functional", "config": {'  # cut short
    result = run_cli(*compile_args(path, tmp_path / "out"))
    assert result.exit_code == 2 and "not readable JSON" in one_error_line(result)
    assert not marker.exists()


def test_a_keras_zip_with_binary_junk_as_config_is_one_line(tmp_path):
    path = tmp_path / "junk.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.10.0"}))
        archive.writestr("config.json", bytes(range(128, 256)) * 4)
    result = run_cli(*compile_args(path, tmp_path / "out"))
    assert result.exit_code == 2 and str(path) in one_error_line(result)


# ------------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory) -> Path:
    """A tiny tf_keras classifier: 4 features in, 3 classes out (softmax)."""
    keras = tf_keras()
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(8)(inputs))
    path = tmp_path_factory.mktemp("dense") / "dense.h5"
    keras.Model(inputs, outputs).save(path)
    return path


def npy_claiming(path: Path, samples: int) -> Path:
    """A .npy whose header claims `samples` rows of 4 float32 but holds only a few bytes."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (samples, 4)}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 64)
    return path


def test_an_npy_header_claiming_1e11_samples_is_refused_at_once(dense_model, tmp_path):
    path = npy_claiming(tmp_path / "huge.npy", 10**11)
    result = run_cli("compile", dense_model, "-o", tmp_path / "out", "--calibration-data", path)
    assert result.exit_code == 2
    assert str(path) in one_error_line(result) and "truncated" in one_error_line(result)


@pytest.mark.parametrize("labels, expected", [
    (np.array(["cat", "dog", "cat", "dog"]), "expected class indices"),
    (np.array([0, 1, 5, 2]), "labels 0..5 but the model's output has 3 classes"),
    (np.array([0.5, 1, 2, 0]), "non-integer"),
])
def test_eval_labels_that_cannot_be_right_are_refused_before_converting(dense_model, tmp_path,
                                                                           labels, expected):
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.zeros((4, 4), np.float32), y=labels)
    out = tmp_path / "out"
    result = run_cli(*compile_args(dense_model, out), "--eval-data", data)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert str(data) in line and expected in line, line
    assert not (out / "model.tflite").exists()


# ---------------------------------------------------------------------------------- options


@pytest.mark.parametrize("flags, named", [
    (["--max-accuracy-drop", "nan", "--eval-data", "e.npz"], "--max-accuracy-drop"),
    (["--prune", "nan"], "--prune"),
    (["--seed", str(10**23)], "--seed"),
    (["--calibration-samples", "0"], "--calibration-samples"),
    (["--random-range", "0,inf"], "--random-range"),
])
def test_absurd_option_values_are_refused_naming_the_flag(dense_model, tmp_path, flags, named):
    result = run_cli(*compile_args(dense_model, tmp_path / "out"), *flags)
    assert result.exit_code == 2, result.output
    assert named in one_error_line(result)


@pytest.mark.parametrize("field, value", [
    ("stages[0].prune.sparsity", ".nan"), ("budget.max_accuracy_drop", ".nan"),
    ("stages[0].prune.learning_rate", ".nan"), ("seed", "1e23"),
])
def test_nan_and_absurd_numbers_in_a_pipeline_config_are_refused(dense_model, tmp_path, field, value):
    configs = {
        "stages[0].prune.sparsity": f"stages: [{{prune: {{sparsity: {value}}}}}]",
        "budget.max_accuracy_drop": f"budget: {{max_accuracy_drop: {value}}}\nstages: [qat]",
        "stages[0].prune.learning_rate": f"stages: [{{prune: {{learning_rate: {value}}}}}]",
        "seed": f"seed: {value}\nstages: [qat]",
    }
    config = tmp_path / "pipeline.yaml"
    config.write_text(configs[field])
    result = run_cli(*compile_args(dense_model, tmp_path / "out"), "--config", config,
                     "--train-data", tmp_path / "t.npz")
    assert result.exit_code == 2, result.output
    assert field in one_error_line(result)


def test_export_for_a_target_without_c_packages_is_refused_before_converting(dense_model, tmp_path):
    out = tmp_path / "good"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"earlier model")
    (out / "report.json").write_text("{}")
    result = run_cli(*compile_args(dense_model, out), "--target", "cpu", "--export", "c")
    assert result.exit_code == 2 and "--export c" in one_error_line(result)
    assert (out / "model.tflite").read_bytes() == b"earlier model"
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite", "report.json"]
