"""`tflc export` on the command line: the report, and one clear line with the right exit code
for each kind of bad input."""

from __future__ import annotations

import json

from tests.export.conftest import TEST_TARGETS, mlperf, tflc, with_op_code


def _one_line_error(done, *words):
    err = done.stderr.strip()
    assert err.startswith("tflc: error:"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_export_prints_the_report_and_writes_the_package(tmp_path):
    done = tflc("export", str(mlperf("ic")), "--package", "c", "-o", str(tmp_path / "ic"),
                "--target", "cortex-m4", "--name", "ic", "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["target"] == "cortex-m4" and report["within_budget"] and report["passed"]
    assert report["arena"]["measured_bytes"] == report["arena"]["estimated_bytes"]
    assert report["verification"]["array_identical"]
    assert report["verification"]["outputs_identical"]
    assert (tmp_path / "ic" / "ic_op_resolver.h").exists()


def test_a_file_that_is_not_tflite_exits_2(tmp_path):
    bogus = tmp_path / "model.tflite"
    bogus.write_text("definitely not a flatbuffer")
    done = tflc("export", str(bogus), "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    _one_line_error(done, str(bogus), "not a TFLite flatbuffer")
    assert not (tmp_path / "out").exists()


def test_an_op_tflite_micro_lacks_exits_2(tmp_path):
    model = with_op_code(mlperf("ad"), "LOCAL_RESPONSE_NORMALIZATION", tmp_path / "lrn.tflite")
    done = tflc("export", str(model), "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    _one_line_error(done, "TFLite Micro has no kernel for LOCAL_RESPONSE_NORMALIZATION")


def test_a_float_model_for_an_int8_only_target_exits_2(float_model, tmp_path):
    done = tflc("export", str(float_model), "-o", str(tmp_path / "out"),
                "--target", str(TEST_TARGETS / "int8-only-mcu.yaml"))
    assert done.returncode == 2
    _one_line_error(done, "cannot run on int8-only-mcu", "float32", "tflc compile")


def test_a_model_over_budget_exits_3_with_advice(tmp_path):
    out = tmp_path / "vww"
    done = tflc("export", str(mlperf("vww")), "-o", str(out), "--name", "vww",
                "--target", str(TEST_TARGETS / "tiny-mcu.yaml"), "--no-verify")
    assert done.returncode == 3
    _one_line_error(done, "does not fit tiny-mcu", "RAM needs", "try:", "smaller input")
    assert (out / "vww_model_data.cc").exists()  # the package is written all the same
    assert "ram         " in done.stdout and "OVER" in done.stdout  # and the report printed


def test_over_budget_with_format_json_prints_the_verdict_and_exits_3(tmp_path):
    done = tflc("export", str(mlperf("vww")), "-o", str(tmp_path / "vww"), "--name", "vww",
                "--target", str(TEST_TARGETS / "tiny-mcu.yaml"), "--no-verify", "--format", "json")
    assert done.returncode == 3
    report = json.loads(done.stdout)
    assert report["passed"] is False and report["budget"]["within_budget"] is False
    _one_line_error(done, "does not fit tiny-mcu")


def test_format_table_is_the_default_and_json_the_alternative(tmp_path):
    table = tflc("export", str(mlperf("ad")), "-o", str(tmp_path / "a"), "--no-verify", "--no-measure")
    assert table.returncode == 0 and table.stdout.startswith("exported ")
    done = tflc("export", str(mlperf("ad")), "-o", str(tmp_path / "b"), "--format", "c")
    assert done.returncode == 2  # --format is the printout now; the package is --package
    _one_line_error(done, "'c'")


def test_a_name_that_is_not_a_c_identifier_exits_2(tmp_path):
    done = tflc("export", str(mlperf("ad")), "-o", str(tmp_path / "out"), "--name", "my-model")
    assert done.returncode == 2
    _one_line_error(done, "--name 'my-model'", "C identifier")
