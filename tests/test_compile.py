"""`tflc compile`: real conversions, parsed flatbuffers, measured accuracy, clean failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tflc
from tests.conftest import MLPERF, MLPERF_INT8, MLPERF_KERAS, need_mlperf
from tflc.cli import main
from tflc.tflite.reader import read_model

TFLC = [sys.executable, "-m", "tflc"]


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def save_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def tf_keras():
    from tflc.tf_env import import_tf_keras

    return import_tf_keras()


# --------------------------------------------------------------------------- the digits example


def test_digits_model_is_fully_integer_and_within_one_point(digits_compiled):
    report, out = digits_compiled
    view = read_model(out / "model.tflite")
    assert [t.dtype for t in view.input_tensors()] == ["int8"]
    assert [t.dtype for t in view.output_tensors()] == ["int8"]
    assert not [t for sg in view.subgraphs for t in sg.tensors if t.is_float]
    assert {"CONV_2D", "FULLY_CONNECTED"} <= view.op_set()
    assert "QUANTIZE" not in view.op_set() and "DEQUANTIZE" not in view.op_set()
    assert report.verifier["fully_integer"] is True
    evaluation = report.evaluation
    assert evaluation["float_accuracy"] > 90.0
    assert abs(evaluation["accuracy_drop"]) <= 1.0
    assert evaluation["fidelity"][0]["top1_agreement"] > 95.0
    # what device code needs: the input's scale and zero point, matching the flatbuffer
    quant = view.input_tensors()[0].quantization
    assert report.inputs[0]["scale"] == pytest.approx(quant.scales[0])
    assert report.inputs[0]["zero_point"] == quant.zero_points[0]
    assert report.sizes["int8_tflite_bytes"] == (out / "model.tflite").stat().st_size
    assert report.sizes["ratio"] > 2.5
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["tflite_sha256"] == report.tflite_sha256
    assert on_disk["config"]["calibration_data"].endswith("calib.npz")


def test_cli_in_a_new_process_gives_the_byte_identical_model(digits_dir, digits_compiled, tmp_path):
    """Same model, data, options and seed -> the same bytes, across processes and API vs CLI."""
    _, first = digits_compiled
    out = tmp_path / "again"
    proc = subprocess.run(
        TFLC + ["compile", digits_dir / "model.keras", "-o", out,
                "--calibration-data", digits_dir / "calib.npz", "--eval-data", digits_dir / "eval.npz"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.tflite").read_bytes() == (first / "model.tflite").read_bytes()
    assert "fully integer" in proc.stdout and "accuracy" in proc.stdout
    # TensorFlow's C++ log noise stays hidden
    assert "oneDNN" not in proc.stderr and "XNNPACK" not in proc.stderr, proc.stderr


def test_a_different_seed_draws_different_calibration_samples(digits_dir, tmp_path):
    calib = digits_dir / "train.npz"  # more samples than drawn, so the seed matters
    one = tflc.compile(digits_dir / "model.keras", tmp_path / "a", calibration_data=calib,
                       calibration_samples=30, seed=1)
    two = tflc.compile(digits_dir / "model.keras", tmp_path / "b", calibration_data=calib,
                       calibration_samples=30, seed=2)
    assert one.tflite_sha256 != two.tflite_sha256


@pytest.mark.parametrize(
    "options, check",
    [
        ({"weights": "per-tensor"}, "per_tensor"),
        ({"activations": "int16"}, "int16"),
        ({"io_type": "uint8"}, "uint8_io"),
        ({"io_type": "float32"}, "float_io"),
        ({"static_batch": True}, "static"),
    ],
)
def test_quantization_options_reach_the_flatbuffer(digits_dir, tmp_path, options, check):
    report = tflc.compile(digits_dir / "model.keras", tmp_path, calibration_data=digits_dir / "calib.npz",
                          calibration_samples=20, **options)
    view = read_model(tmp_path / "model.tflite")
    sg = view.main
    convs = [op for op in sg.operators if op.op == "CONV_2D"]
    weights = [sg.tensors[op.inputs[1]] for op in convs]
    if check == "per_tensor":
        assert all(len(w.quantization.scales) == 1 for w in weights)
    else:
        assert all(len(w.quantization.scales) == w.shape[0] for w in weights)
    if check == "int16":
        assert {sg.tensors[op.outputs[0]].dtype for op in convs} == {"int16"}
        assert {w.dtype for w in weights} == {"int8"}
        assert view.input_tensors()[0].dtype == "int16"
    if check == "uint8_io":
        assert view.input_tensors()[0].dtype == "uint8" and view.output_tensors()[0].dtype == "uint8"
        assert report.verifier["fully_integer"]
    if check == "float_io":
        assert view.input_tensors()[0].dtype == "float32"
        assert not report.verifier["fully_integer"] and report.verifier["integer_core"]
        assert {op["op"] for op in report.verifier["float_ops"]} <= {"QUANTIZE", "DEQUANTIZE"}
    if check == "static":
        assert view.input_tensors()[0].shape_signature == (1, 8, 8, 1)
    else:
        assert view.input_tensors()[0].shape_signature[0] == -1


def test_keras3_file_compiles_and_keeps_accuracy(tmp_path):
    from tflc.examples.digits import write_example

    data = write_example(tmp_path / "k3", keras3=True, epochs=4)
    meta = json.loads(__import__("zipfile").ZipFile(data / "model.keras").read("metadata.json"))
    assert meta["keras_version"].startswith("3.")
    report = tflc.compile(data / "model.keras", tmp_path / "out", calibration_data=data / "calib.npz",
                          eval_data=data / "eval.npz")
    assert report.model["format"] == "keras3"
    assert report.verifier["fully_integer"]
    assert report.evaluation["float_accuracy"] > 80.0
    assert abs(report.evaluation["accuracy_drop"]) <= 2.0


def test_several_inputs_and_outputs_with_named_arrays_and_unlabelled_fidelity(tmp_path):
    keras = tf_keras()
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((4,), name="extra")
    x = keras.layers.Conv2D(4, 3, activation="relu")(image)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(8, activation="relu")(extra)])
    logits = keras.layers.Dense(5, activation="softmax", name="classes")(x)
    score = keras.layers.Dense(1, name="score")(x)
    keras.utils.set_random_seed(0)
    model = keras.Model([image, extra], [logits, score])
    model.save(tmp_path / "multi.keras")
    rng = np.random.default_rng(0)
    arrays = {"image": rng.random((40, 8, 8, 1), np.float32), "extra": rng.random((40, 4), np.float32)}
    save_npz(tmp_path / "calib.npz", **arrays)
    save_npz(tmp_path / "eval.npz", **arrays)
    report = tflc.compile(tmp_path / "multi.keras", tmp_path / "out", calibration_data=tmp_path / "calib.npz",
                          eval_data=None)
    view = read_model(tmp_path / "out" / "model.tflite")
    assert len(view.input_tensors()) == 2 and len(view.output_tensors()) == 2
    assert report.verifier["fully_integer"]
    # unlabelled evaluation data: fidelity per output, no accuracy
    result = run_cli("compile", tmp_path / "multi.keras", "-o", tmp_path / "out2",
                     "--calibration-data", tmp_path / "calib.npz", "--eval-data", tmp_path / "eval.npz",
                     "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    fidelity = data["evaluation"]["fidelity"]
    assert [f["name"] for f in fidelity] == ["classes", "score"]
    assert data["evaluation"]["float_accuracy"] is None
    assert all(f["sqnr_db"] > 15 for f in fidelity), fidelity


def test_image_folder_calibration(digits_dir, tmp_path):
    from PIL import Image

    with np.load(digits_dir / "calib.npz") as archive:
        images = archive["x"][:12]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray((img[..., 0] * 255).astype(np.uint8)).resize((16, 16)).save(folder / f"{i}.png")
    report = tflc.compile(digits_dir / "model.keras", tmp_path / "out", calibration_data=folder,
                          normalize="unit", eval_data=digits_dir / "eval.npz")
    assert report.calibration["samples"] == 12
    assert report.evaluation["int8_accuracy"] > 85.0


def test_accuracy_gate_exits_3_after_writing_model_and_report(digits_dir, tmp_path):
    result = run_cli("compile", digits_dir / "model.keras", "-o", tmp_path,
                     "--calibration-data", digits_dir / "calib.npz", "--calibration-samples", 20,
                     "--eval-data", digits_dir / "eval.npz", "--max-accuracy-drop", -100)
    assert result.exit_code == 3, result.output
    assert (tmp_path / "model.tflite").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["gate"]["passed"] is False and "dropped" in report["gate"]["reason"]


# ------------------------------------------------------------------------ MLPerf Tiny reference


def _min_max_bytes(path: Path) -> int:
    """Bytes the old converter spent on per-tensor min/max statistics (today's omits them)."""
    import tflite

    model = tflite.Model.GetRootAs(path.read_bytes(), 0)
    sg = model.Subgraphs(0)
    total = 0
    for i in range(sg.TensorsLength()):
        q = sg.Tensors(i).Quantization()
        if q is not None:
            total += 4 * (q.MinLength() + q.MaxLength())
    return total


@pytest.mark.parametrize("name", ["kws", "vww", "ic", "ad"])
def test_mlperf_models_match_the_reference_int8_files(name, tmp_path):
    keras_path = need_mlperf(MLPERF_KERAS[name])
    ref_path = need_mlperf(MLPERF_INT8[name])
    weights = "per-tensor" if name == "ad" else "per-channel"
    report = tflc.compile(keras_path, tmp_path, calibration="random", calibration_samples=8, weights=weights)
    ours, ref = read_model(tmp_path / "model.tflite"), read_model(ref_path)
    assert report.verifier["fully_integer"]
    assert ours.op_set() == ref.op_set()
    assert ours.op_histogram() == ref.op_histogram()
    assert [t.dtype for t in ours.input_tensors()] == ["int8"]
    assert ours.parameter_bytes() == pytest.approx(ref.parameter_bytes(), rel=0.01)
    # the reference was written by an older converter that also stored min/max statistics
    reference_size = ref.size_bytes - _min_max_bytes(ref_path)
    assert ours.size_bytes == pytest.approx(reference_size, rel=0.05), (ours.size_bytes, ref.size_bytes)


# ------------------------------------------------------------------------------------ bad input


def test_missing_model_path(tmp_path):
    result = run_cli("compile", tmp_path / "nope.keras", "-o", tmp_path / "out", "--calibration", "random")
    assert result.exit_code == 2
    assert "nope.keras: no such file" in result.output


@pytest.mark.parametrize("kind", ["text", "truncated_h5", "tflite"])
def test_files_that_are_not_keras_models(digits_dir, digits_tflite, tmp_path, kind):
    if kind == "text":
        path = tmp_path / "model.h5"
        path.write_text("this is not a model\n")
        expected = "not a valid .h5 file"
    elif kind == "truncated_h5":
        full = tmp_path / "full.h5"
        keras = tf_keras()
        keras.models.load_model(digits_dir / "model.keras").save(full)
        path = tmp_path / "truncated.h5"
        path.write_bytes(full.read_bytes()[:4000])
        expected = "truncated"
    else:
        path = digits_tflite
        expected = "tflc check"
    result = run_cli("compile", path, "-o", tmp_path / "out", "--calibration", "random")
    assert result.exit_code == 2, result.output
    assert str(path) in result.output and expected in result.output
    # one line of error, besides the "... step" progress lines
    assert [line for line in result.stderr.splitlines() if not line.startswith("... ")] == [
        result.stderr.splitlines()[-1]]


def test_calibration_data_problems_name_the_file_and_what_was_expected(digits_dir, tmp_path):
    model = digits_dir / "model.keras"
    wrong = save_npz(tmp_path / "wrong.npz", x=np.zeros((10, 8, 8), np.float32))
    nan = save_npz(tmp_path / "nan.npz", x=np.full((10, 8, 8, 1), np.nan, np.float32))
    empty = save_npz(tmp_path / "empty.npz", x=np.zeros((0, 8, 8, 1), np.float32))
    strings = save_npz(tmp_path / "strings.npz", x=np.array([["a"] * 8] * 8))
    cases = [
        (wrong, "expects samples of shape (8, 8, 1)", "got an array of shape (10, 8, 8)"),
        (nan, "NaN", "640"),
        (empty, "empty", "at least one sample"),
        (strings, "dtype", "expected numbers"),
    ]
    for path, *fragments in cases:
        result = run_cli("compile", model, "-o", tmp_path / "out", "--calibration-data", path)
        assert result.exit_code == 2, result.output
        for fragment in (path.name, *fragments):
            assert fragment in result.output, (fragment, result.output)
    result = run_cli("compile", model, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--calibration random" in result.output


def test_random_calibration_warns(digits_dir, tmp_path):
    result = run_cli("compile", digits_dir / "model.keras", "-o", tmp_path, "--calibration", "random",
                     "--calibration-samples", 10)
    assert result.exit_code == 0, result.output
    assert "synthetic random data" in result.output


def test_free_dimensions_ask_for_input_shape(tmp_path):
    keras = tf_keras()
    inputs = keras.Input((None, None, 1), name="frame")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(tmp_path / "dynamic.keras")
    result = run_cli("compile", tmp_path / "dynamic.keras", "-o", tmp_path / "out", "--calibration", "random")
    assert result.exit_code == 2
    assert "--input-shape frame=1,N,N,1" in result.output
    result = run_cli("compile", tmp_path / "dynamic.keras", "-o", tmp_path / "out", "--calibration", "random",
                     "--calibration-samples", 5, "--input-shape", "frame=1,12,12,1")
    assert result.exit_code == 0, result.output
    assert read_model(tmp_path / "out" / "model.tflite").input_tensors()[0].shape == (1, 12, 12, 1)


CUSTOM_LAYER_MODULE = '''
import tf_keras as keras
import tensorflow as tf


class LogGamma(keras.layers.Layer):
    """A layer whose op (lgamma) has no integer TFLite kernel."""

    def call(self, x):
        return tf.math.lgamma(x + 1.0)
'''


def test_custom_layers_need_custom_objects_and_unlowerable_ops_are_named(tmp_path, monkeypatch):
    (tmp_path / "my_layers.py").write_text(CUSTOM_LAYER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_layers

    keras = tf_keras()
    inputs = keras.Input((4,), name="x")
    hidden = my_layers.LogGamma(name="loggamma")(keras.layers.Dense(4)(inputs))
    keras.Model(inputs, keras.layers.Dense(2)(hidden)).save(tmp_path / "custom.keras")
    args = ["compile", tmp_path / "custom.keras", "-o", tmp_path / "out", "--calibration", "random",
            "--calibration-samples", 5]
    result = run_cli(*args)
    assert result.exit_code == 2
    assert "'LogGamma'" in result.output and "--custom-objects module:LogGamma" in result.output
    result = run_cli(*args, "--custom-objects", "my_layers:LogGamma")
    assert result.exit_code == 1, result.output
    assert "layer 'loggamma' (TensorFlow op Lgamma) cannot be lowered to builtin int8 ops" in result.output
    assert not (tmp_path / "out" / "model.tflite").exists()
    result = run_cli(*args, "--custom-objects", "my_layers:LogGamma", "--allow-float-ops")
    assert result.exit_code == 0 and "NOT fully integer" in result.output


def test_output_folder_that_cannot_be_written(digits_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_cli("compile", digits_dir / "model.keras", "-o", blocker / "out", "--calibration", "random")
    assert result.exit_code == 2
    assert "cannot be written" in result.output and "a_file" in result.output


@pytest.mark.parametrize("flavour", ["tf_keras_h5", "keras3"])
def test_models_carrying_code_are_refused_unless_allowed(tmp_path, flavour):
    if flavour == "keras3":
        from tflc.tf_env import import_keras3

        keras, path = import_keras3(), tmp_path / "lambda.keras"
    else:
        keras, path = tf_keras(), tmp_path / "lambda.h5"
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(keras.layers.Dense(3)(inputs))
    keras.Model(inputs, outputs).save(path)
    args = ["compile", path, "-o", tmp_path / "out", "--calibration", "random", "--calibration-samples", 5]
    result = run_cli(*args)
    assert result.exit_code == 2
    assert "Lambda layer ('doubler')" in result.output and "--allow-unsafe-code" in result.output
    assert run_cli(*args, "--allow-unsafe-code").exit_code == 0


def test_interrupt_during_conversion_keeps_the_earlier_model(digits_dir, digits_compiled, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(digits_compiled[1], out)
    before = (out / "model.tflite").read_bytes()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        TFLC + ["compile", digits_dir / "model.keras", "-o", out, "--calibration", "random",
                "--calibration-samples", "300000"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.time() + 120
    for line in proc.stderr:  # wait until calibration has started
        if "calibrating" in line or time.time() > deadline:
            break
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert (out / "model.tflite").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")], list(out.iterdir())


def test_help_does_not_import_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from tflc.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print(r.output)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "compile" in proc.stdout


def test_mlperf_fixture_folder_is_found():
    need_mlperf(MLPERF)
    assert MLPERF_INT8["kws"].exists()


def test_target_check_strict_gate_and_export_in_one_go(digits_dir, tmp_path):
    common = ["compile", digits_dir / "model.keras", "--calibration-data", digits_dir / "calib.npz",
              "--calibration-samples", 20]
    # the Edge TPU needs static shapes (its descriptor says so): compile pins the batch itself
    # and says so, so every op maps even without --static-batch
    result = run_cli(*common, "-o", tmp_path / "tpu", "--target", "edgetpu", "--strict")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "tpu" / "report.json").read_text())
    assert report["check"]["summary"]["ops_on_target"] == 7
    assert any("batch pinned to 1" in w for w in report["warnings"])
    assert not read_model(tmp_path / "tpu" / "model.tflite").input_tensors()[0].is_dynamic
    result = run_cli(*common, "-o", tmp_path / "tpu_static", "--target", "edgetpu", "--strict", "--static-batch")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "tpu_static" / "report.json").read_text())
    assert report["check"]["summary"]["ops_on_target"] == report["check"]["summary"]["ops_total"] == 7
    # compile, check and export for a microcontroller
    result = run_cli(*common, "-o", tmp_path / "mcu", "--target", "cortex-m4", "--export", "c")
    assert result.exit_code == 0, result.output
    c_dir = tmp_path / "mcu" / "c"
    assert (c_dir / "model_model_data.cc").exists() and (c_dir / "model_op_resolver.h").exists()
    report = json.loads((tmp_path / "mcu" / "report.json").read_text())
    assert report["export"]["arena"]["measured_bytes"] > 0
    # the reports name where the package is, not the staging folder it was written in
    package = json.loads((c_dir / "export_report.json").read_text())
    for saved in (report["export"], package):
        assert saved["output_dir"] == str(c_dir), saved["output_dir"]
        assert saved["model"] == str(tmp_path / "mcu" / "model.tflite")
    assert f"export      {c_dir}" in result.output
    assert run_cli(*common, "-o", tmp_path / "x", "--export", "c").exit_code == 2  # needs --target
