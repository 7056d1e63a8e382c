"""`tflc check` reads a model by the rules of the runtime that will run it.

TFLite Micro's own person_detect example carries a quantized dimension on 1-D biases that
LiteRT refuses and TFLite Micro ignores: a microcontroller target checks it (with a note), a
LiteRT target refuses the file in one line.
"""

from pathlib import Path

import pytest
from click.testing import CliRunner

from tflc.check import check_model
from tflc.cli import main
from tflc.errors import BadInput

PERSON = Path(__file__).resolve().parents[1] / "data" / "tflm_examples" / "person_detect.tflite"


def test_an_mcu_target_checks_what_tflite_micro_runs_and_says_litert_would_not():
    result = check_model(PERSON, "cortex-m4")
    assert result.fully_on_target and result.runs
    assert any("LiteRT would refuse" in n and "quantized dimension 3" in n for n in result.notes)
    assert result.to_dict()["notes"] == result.notes
    assert "note: LiteRT would refuse" in result.to_text()


def test_a_litert_target_refuses_the_same_file_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(BadInput, match="quantized dimension 3, outside its 1 dimensions"):
        check_model(PERSON, "cpu")
    monkeypatch.setenv("TFLC_REGISTRY", str(tmp_path / "registry"))
    run = CliRunner().invoke(main, ["check", str(PERSON), "--target", "cpu"])
    assert run.exit_code == 2, run.output
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and "quantized dimension 3" in lines[0], run.output


def test_a_clean_model_has_no_note():
    result = check_model(PERSON.with_name("hello_world_int8.tflite"), "cortex-m4")
    assert result.notes == []
