"""The prune stage: TF-MOT schedules, layer selection, 2:4 structure, and zeros that survive into
the int8 flatbuffer (read back from the .tflite, not assumed from the Keras model)."""

from __future__ import annotations

import pytest

from tests.optimize.conftest import layer_stats, run
from tflc.errors import BadInput
from tflc.optimize.config import parse_config
from tflc.optimize.prune import prune


def prune_config(**fields):
    return parse_config({"stages": [{"prune": fields}]}).stages[0]


def test_sparsity_survives_into_the_int8_flatbuffer(pruned_pqat):
    float_stage, pruned = pruned_pqat.stages[:2]
    assert pruned.status == "accepted" and pruned.details["schedule"]["kind"] == "polynomial"
    stats = layer_stats(pruned)
    # The default selection spares the first and the last layer (where pruning costs most).
    assert set(pruned.details["layers"]) == {"conv2", "fc1"}
    for name in ("conv2", "fc1"):
        assert stats[name]["zero_fraction"] >= 0.79, stats[name]
    for name in ("conv1", "probs"):
        assert stats[name]["zero_fraction"] < 0.1, stats[name]
    assert pruned.sparsity > 0.7 and float_stage.sparsity < 0.05
    # Zeros are still stored: the .tflite barely shrinks, its gzip does (TF-MOT's measure).
    assert pruned.tflite_bytes > 0.9 * float_stage.tflite_bytes
    assert pruned.gzip_bytes < 0.55 * float_stage.gzip_bytes
    assert pruned.accuracy > float_stage.accuracy - 5


def test_structured_2_of_4(digits_loaded, digits_dir):
    result = run(digits_loaded, digits_dir, [{"prune": {"structure": "2:4", "epochs": 1}}])
    stage = result.stages[1]
    assert stage.label == "prune 2:4" and stage.details["schedule"]["kind"] == "m_by_n"
    stats = layer_stats(stage)
    for name in ("conv2", "fc1"):  # every 4 consecutive input-channel weights hold <= 2 non-zeros
        assert stats[name]["structure_ok"] is True
        assert abs(stats[name]["zero_fraction"] - 0.5) < 0.01
    assert stats["probs"]["structure_ok"] is None  # spared, so not checked
    assert stage.gzip_bytes < result.stages[0].gzip_bytes


def test_constant_schedule_on_named_layers(digits_loaded, digits_train, digits_task):
    config = prune_config(sparsity=0.6, schedule="constant", layers=["fc*"], epochs=1)
    model, info = prune(digits_loaded.model, config, digits_train, digits_task, seed=0)
    assert info.layers == {"fc1": 0.6}
    assert abs(info.measured["fc1"] - 0.6) < 0.01
    assert info.schedule["kind"] == "constant"
    # the input model is untouched (the pipeline rolls back to it)
    assert (digits_loaded.model.get_layer("fc1").get_weights()[0] == 0).mean() < 0.01
    assert (model.get_layer("conv2").get_weights()[0] == 0).mean() < 0.01


@pytest.mark.parametrize("layers, expected", [
    (["dense*"], "prune.layers: no layer matches 'dense*'; layers this stage can act on: "
                 "conv1, conv2, fc1, probs"),
    (["pool"], "prune.layers: layer 'pool' (MaxPooling2D) has no weights this stage can act on"),
    ({"types": ["LSTM"]}, "prune.layers.types: the model has no LSTM layer"),
    ({"exclude": ["*"]}, "prune.layers: the selection leaves no layer"),
])
def test_layer_selection_mistakes(digits_loaded, digits_train, digits_task, layers, expected):
    with pytest.raises(BadInput) as info:
        prune(digits_loaded.model, prune_config(layers=layers), digits_train, digits_task, seed=0)
    assert str(info.value).startswith(expected)


def test_begin_step_after_training_ends(digits_loaded, digits_train, digits_task):
    with pytest.raises(BadInput, match="begin_step: 5000 is past the end of fine-tuning"):
        prune(digits_loaded.model, prune_config(begin_step=5000, epochs=1), digits_train,
              digits_task, seed=0)
