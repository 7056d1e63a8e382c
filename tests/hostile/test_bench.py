"""`tflc bench` against hostile and careless input: an output path that cannot be written, labels
that do not fit the model, absurd numbers, a model only the device refuses. Every input is
generated here; each bad input is one line on stderr and exit 2, before any measuring.

Where a mistake could only be noticed late, the tests aim the run at a closed port
(`unreachable()`): refused up front, the error is exit 2 about the input; noticed after the
work had started, it would be exit 1 about the connection."""

from __future__ import annotations

import json

import flatbuffers
import numpy as np
import pytest
from click.testing import CliRunner

from tests.bench.conftest import free_port
from tests.bench.conftest import tiny_models as tiny_models  # a fixture: the bench room's models
from tflc.cli import main

CLASSES = 10  # the tiny CNN: 8x8x1 in, 10 classes out


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def unreachable() -> list:
    """Device flags for a host that refuses connections, tried once."""
    return ["--device", f"ssh://127.0.0.1:{free_port()}", "--retries", 0]


def assert_one_line_exit_2(result, *expected: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("tflc: error: ") and result.output.count("\n") == 1, \
        result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, result.output
    return result.output


@pytest.fixture
def model(tiny_models):
    return tiny_models["int8"]


def eval_file(tmp_path, y, samples: int = 6, name: str = "eval.npz"):
    x = np.random.default_rng(0).random((samples, 8, 8, 1), dtype=np.float32)
    path = tmp_path / name
    np.savez(path, x=x, y=y)
    return path


# ----------------------------------------------------------------------------- output path
def test_an_output_folder_that_cannot_hold_the_result_is_refused_first(model, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the folder should be\n")
    out = blocker / "out.json"
    result = run("bench", model, "-o", out, *unreachable())
    assert_one_line_exit_2(result, str(out))
    assert blocker.read_text().startswith("a regular file")


def test_the_output_path_is_checked_by_the_library_too(model, tmp_path):
    from tflc.bench import bench
    from tflc.errors import BadInput

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BadInput, match="out.json"):
        bench(model, f"ssh://127.0.0.1:{free_port()}", retries=0, output=blocker / "out.json",
              progress=False)


def test_the_output_file_is_written_whole(model, tmp_path):
    out = tmp_path / "new" / "bench.json"
    result = run("bench", model, "--runs", 2, "--warmup", 0, "-o", out, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["records"][0]["model"] == str(model)
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # no temporary left


# ------------------------------------------------------------------------------ eval labels
@pytest.mark.parametrize("labels, words", [
    (np.zeros(5, np.int64), ["5 labels", "6 samples"]),  # one short
    (np.array([0, 1, 2, 3, 4, CLASSES]), ["holds 10,", "out of range"]),  # the class after the last
    (np.array([0, 1, -1, 2, 3, 4]), ["-1", "out of range"]),
    (np.array(["yes", "no", "up", "down", "left", "right"]), ["text"]),
    (np.array([0.5, 1, 2, 3, 4, 5]), ["whole numbers"]),
    (np.eye(CLASSES + 1)[:6], ["11 columns", "10 classes"]),  # one-hot, one class too many
])
def test_labels_that_do_not_fit_are_refused(model, tmp_path, labels, words):
    path = eval_file(tmp_path, labels)
    result = run("bench", model, "--eval-data", path, *unreachable())
    message = assert_one_line_exit_2(result, str(path), "`y`", *words)
    assert "int8.tflite" in message


def test_labels_that_fit_are_accepted(model, tmp_path):
    from tflc.bench.session import _tensor_infos, check_eval_labels

    infos = {model: _tensor_infos(model)}
    for labels in (np.arange(6), np.arange(6).reshape(6, 1), np.arange(6.0),
                   np.eye(CLASSES)[:6], np.arange(6, dtype=np.uint8)):
        check_eval_labels(eval_file(tmp_path, labels), infos, "--eval-data")


# --------------------------------------------------------------------------- absurd numbers
@pytest.mark.parametrize("flag, value, words", [
    ("--min-duration", "1e308", "at most 86400"), ("--min-duration", "inf", "finite"),
    ("--min-duration", "nan", "finite"), ("--timeout", "1e308", "at most 604800"),
    ("--timeout", "inf", "finite"), ("--timeout", "nan", "finite"),
    ("--runs", str(10**12), "at most 10000000"), ("--max-runs", str(10**12), "at most"),
    ("--warmup", str(10**12), "at most"), ("--repeat", str(10**9), "at most"),
    ("--threads", str(10**6), "at most"),
])
def test_absurd_numbers_are_refused_with_their_bound(model, flag, value, words):
    result = run("bench", model, flag, value, *unreachable())
    assert_one_line_exit_2(result, flag, words)


def test_the_limits_are_not_too_tight(model):
    """A day of timing per model, a week of time-out, ten million runs: still accepted."""
    from tflc.bench.session import check_settings

    check_settings(runs=10**7, warmup=10**5, min_duration_s=86400.0, max_runs=10**7,
                   repeat=100, threads=256, timeout_s=7 * 86400.0, retries=20)


# ------------------------------------------------------------------------------ messages
def test_the_device_refusing_a_model_names_the_users_file(model, tmp_path):
    """A custom op this runtime does not have: only the interpreter on the device sees it."""
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model.read_bytes(), 0))
    code = tree.operatorCodes[-1]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = b"TFLC_NO_SUCH_OP"
    builder = flatbuffers.Builder(0)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    custom = tmp_path / "my custom model.tflite"
    custom.write_bytes(bytes(builder.Output()))
    result = run("bench", custom, "--runs", 2, "--warmup", 0)
    assert result.exit_code == 1, result.output
    assert str(custom) in result.output and "TFLC_NO_SUCH_OP" in result.output
    assert "m0.tflite" not in result.output and "m0" not in result.output.split()
    assert result.output.count("\n") == 1, result.output


def test_one_attempt_is_counted_as_one(model):
    result = run("bench", model, *unreachable())
    assert result.exit_code == 1, result.output
    assert result.output.rstrip().endswith("(after 1 attempt)"), result.output
