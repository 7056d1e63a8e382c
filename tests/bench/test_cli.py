"""`tflc bench` from the command line: JSON and table output, the results file, exit codes and
one-line errors."""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner

from tflc.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_json_output_and_results_file(tiny_models, tmp_path):
    out = tmp_path / "results" / "bench.json"
    out.parent.mkdir()
    result = run("bench", tiny_models["float"], tiny_models["int8"], "--device", "local",
                 "--runs", 5, "--warmup", 1, "--format", "json", "-o", out)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["records"] == json.loads(out.read_text())["records"]
    assert [m["model_name"] for m in printed["models"]] == ["float.tflite", "int8.tflite"]
    assert printed["settings"]["runs"] == 5


def test_table_shows_ratios_to_the_first_model(tiny_models):
    result = run("bench", tiny_models["float"], tiny_models["int8"], "--runs", 5, "--warmup", 1,
                 "--eval-data", tiny_models["eval"], "--target", "raspberry-pi-4")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("device local:")
    p50 = next(line for line in lines if line.startswith("p50 [ms]"))
    assert p50.rstrip().endswith("x)") and p50.count("x)") == 1  # the first model is the base
    assert any(line.startswith("agreement with host") for line in lines)
    assert any(line.startswith("energy (estimate) [mJ]") for line in lines)
    assert "energy is an estimate" in result.output


def test_bad_input_is_one_line_and_exit_2(tiny_models, tmp_path):
    for args in (["bench", tmp_path / "none.tflite"],
                 ["bench", tiny_models["int8"], "--device", "ssh://-oProxyCommand=x"],
                 ["bench", tiny_models["int8"], "--inputs", tmp_path / "none.npz"]):
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("tflc: error: ") and result.output.count("\n") == 1


def test_device_failure_is_one_line_and_exit_1(tiny_models, sshd):
    config = sshd.client_config("cli-untrusted", known_hosts="")
    result = run("bench", tiny_models["int8"], "--device", sshd.url, "--ssh-config", config,
                 "--python", sys.executable, "--runs", 3)
    assert result.exit_code == 1
    assert result.output.startswith("tflc: error: the SSH host key of 127.0.0.1")
    assert "Traceback" not in result.output and result.output.count("\n") == 1
