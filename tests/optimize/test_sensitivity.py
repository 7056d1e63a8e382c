"""`tflc sensitivity` and `sparsity: auto`: per-layer drops, the table and plot, and the choice."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tests.optimize.conftest import layer_stats, run
from tflc.cli import main
from tflc.optimize.sensitivity import (
    LayerSensitivity,
    SensitivityResult,
    analyze,
    choose_sparsities,
)


def test_per_layer_drops_rank_the_classifier_as_most_sensitive(digits_loaded, digits_eval,
                                                               digits_task):
    x, y = digits_eval
    result = analyze(digits_loaded.model, [x], y, digits_task, sparsities=(0.5, 0.9))
    by_name = {layer.layer: layer for layer in result.layers}
    assert list(by_name) == ["conv1", "conv2", "fc1", "probs"]
    assert by_name["fc1"].weights == 512 * 32
    # the 10x32 classifier loses far more than the 16k-weight hidden layer at 90%
    assert by_name["probs"].prune_drop[0.9] > by_name["fc1"].prune_drop[0.9] + 10
    assert by_name["probs"].prune_drop[0.9] > by_name["probs"].prune_drop[0.5]
    for layer in result.layers:  # one int8 layer: small drop, high but finite SQNR
        assert abs(layer.quantize_drop) < 2 and 20 < layer.quantize_sqnr_db < 100
    assert result.float_accuracy > 90
    # the caller's model is untouched
    assert abs(analyze(digits_loaded.model, [x], y, digits_task, (0.5,), quantize=False)
               .float_accuracy - result.float_accuracy) < 1e-9
    assert result.plot_png()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "prune 90%" in result.table().splitlines()[1]


def test_sensitivity_command_writes_table_json_and_png(digits_dir, tmp_path):
    out = tmp_path / "sens"
    result = CliRunner().invoke(main, ["sensitivity", str(digits_dir / "model.keras"),
                                       "--eval-data", str(digits_dir / "eval.npz"),
                                       "--sparsities", "0.5,0.8", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "probs" in result.output and "prune 80%" in result.output
    saved = json.loads((out / "sensitivity.json").read_text())
    assert saved["sparsities"] == [0.5, 0.8] and len(saved["layers"]) == 4
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(main, ["sensitivity", str(digits_dir / "model.keras"),
                                    "--eval-data", str(digits_dir / "eval.npz"),
                                    "--sparsities", "0.5,2", "-o", str(tmp_path / "never")])
    assert bad.exit_code == 2 and "--sparsities: expected values between 0 and 1" in bad.output
    assert not (tmp_path / "never").exists()


def synthetic(drops: dict[str, tuple[int, list[float]]]) -> SensitivityResult:
    levels = [0.5, 0.9]
    return SensitivityResult(float_accuracy=90.0, samples=100, sparsities=levels, layers=[
        LayerSensitivity(name, "Dense", weights, dict(zip(levels, d, strict=True)), None)
        for name, (weights, d) in drops.items()])


def test_choose_sparsities_prunes_the_cheap_layers_first():
    result = synthetic({"big": (1000, [0.0, 0.5]), "small": (100, [3.0, 20.0]),
                        "touchy": (1000, [4.0, 30.0])})
    chosen, reached = choose_sparsities(result, ["big", "small", "touchy"], 0.4, max_drop=5.0)
    assert chosen["big"] == 0.9 and chosen["touchy"] == 0.0
    assert reached >= 0.4
    # a step whose drop alone breaks the budget is never taken, even if the target is missed
    chosen, reached = choose_sparsities(result, ["small", "touchy"], 0.8, max_drop=3.5)
    assert chosen == {"small": 0.5, "touchy": 0.0} and reached < 0.8


def test_prune_auto_in_the_pipeline(digits_loaded, digits_dir):
    result = run(digits_loaded, digits_dir,
                 [{"prune": {"sparsity": "auto", "target_sparsity": 0.6, "epochs": 1}}])
    stage = result.stages[1]
    assert stage.label == "prune auto 60%"
    planned = stage.details["layers"]
    assert set(planned) <= {"conv2", "fc1"}  # the default selection spares conv1 and probs
    assert stage.details["auto"]["planned_sparsity"] >= 0.6
    stats = layer_stats(stage)
    for name, sparsity in planned.items():
        assert abs(stats[name]["zero_fraction"] - sparsity) < 0.02
