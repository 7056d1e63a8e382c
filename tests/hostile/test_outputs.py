"""A compile that fails after converting leaves the earlier results exactly as they were: all of a
run's outputs are staged and published together, or not at all."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tflc.cli import main


def test_a_failure_after_converting_keeps_every_earlier_output(digits_dir, digits_compiled, tmp_path):
    out = tmp_path / "good"
    out.mkdir()
    earlier = {name: (digits_compiled[1] / name).read_bytes() for name in ("model.tflite", "report.json")}
    for name, data in earlier.items():
        (out / name).write_bytes(data)
    # A microcontroller target whose firmware lacks SOFTMAX: the model converts, then the C
    # export refuses it, after model.tflite would already have been replaced in place.
    target = tmp_path / "no-softmax.yaml"
    target.write_text("extends: cortex-m4\ntitle: Cortex-M4 without softmax\nops:\n  SOFTMAX: null\n"
                      "provenance:\n  - {source: this test, covers: ops}\n")
    result = CliRunner().invoke(main, [
        "compile", str(digits_dir / "model.keras"), "-o", str(out), "--calibration-data",
        str(digits_dir / "calib.npz"), "--calibration-samples", "20", "--seed", "7",
        "--target", str(target), "--export", "c"])
    assert result.exit_code == 2, result.output
    assert "SOFTMAX" in result.output and "Traceback" not in result.output
    assert {p.name for p in out.iterdir()} == set(earlier), "staging left something behind"
    for name, data in earlier.items():
        assert (out / name).read_bytes() == data, f"{name} was replaced by a failed run"
    assert json.loads((out / "report.json").read_text())["tflite_sha256"]


def test_compile_export_over_budget_is_a_gate_in_the_report(digits_dir, tmp_path):
    target = tmp_path / "tiny.yaml"
    target.write_text("extends: cortex-m4\ntitle: Cortex-M4 with 4 KiB of RAM\n"
                      "memory: {ram_bytes: 4 KiB}\nprovenance:\n  - {source: this test, covers: memory}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "compile", str(digits_dir / "model.keras"), "-o", str(out), "--calibration-data",
        str(digits_dir / "calib.npz"), "--calibration-samples", "20",
        "--target", str(target), "--export", "c"])
    assert result.exit_code == 3, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["gate"]["passed"] is False and "does not fit" in report["gate"]["export"]
    assert report["export"]["passed"] is False
    assert (out / "model.tflite").exists() and (out / "c" / "model_model_data.cc").exists()
    assert "FAILED" in result.output
