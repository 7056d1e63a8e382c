"""Clustering (and cluster-preserving QAT) and knowledge distillation."""

from __future__ import annotations

import pytest

from tests.optimize.conftest import layer_stats, run
from tflc.errors import BadInput
from tflc.optimize.config import parse_config
from tflc.optimize.distill import distill


def test_prune_cluster_qat_keeps_zeros_and_clusters_in_int8(digits_loaded, digits_dir):
    result = run(digits_loaded, digits_dir, [
        {"prune": {"sparsity": 0.5, "epochs": 1}},
        {"cluster": {"clusters": 8, "epochs": 1}},
        {"qat": {"epochs": 1}},
    ])
    float_stage, pruned, clustered, qat = result.stages
    assert clustered.details["preserve_sparsity"] is True  # cluster after prune keeps zeros
    assert clustered.details["distinct_values_keras"] == {"conv2": 8, "fc1": 8}
    assert qat.details["scheme"] == "pcqat"
    for stage in (clustered, qat):
        stats = layer_stats(stage)
        for name in ("conv2", "fc1"):
            # per output channel, the int8 kernel holds at most 8 values (one of them 0)
            assert stats[name]["max_distinct_per_channel"] <= 8, (stage.label, stats[name])
            # TF-MOT 0.8 shares one CQAT quantizer per layer type and a spared (unpruned)
            # layer switches sparsity preservation off for all; qat.py gives each its own.
            assert stats[name]["zero_fraction"] >= 0.49, (stage.label, stats[name])
        assert stats["conv1"]["max_distinct_per_channel"] == 9  # spared: 3x3x1 all different
    assert clustered.gzip_bytes < pruned.gzip_bytes < float_stage.gzip_bytes
    assert all(s.status == "accepted" for s in result.stages[1:])


@pytest.fixture(scope="module")
def half_width_student(tmp_path_factory):
    from tflc.examples.digits import build_cnn
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(1)
    path = tmp_path_factory.mktemp("student") / "student.keras"
    build_cnn(keras, width=8).save(path)
    return path


def test_distill_into_a_half_width_student(digits_loaded, digits_dir, half_width_student):
    result = run(digits_loaded, digits_dir,
                 [{"distill": {"student": str(half_width_student), "epochs": 4,
                               "temperature": 3, "alpha": 0.6}}])
    stage = result.stages[1]
    details = stage.details
    assert details["student_params"] < 0.5 * details["teacher_params"]
    assert details["teacher"] == "the input float model" and details["temperature"] == 3
    assert stage.accuracy > 75  # an untrained student starts at chance (10%)
    assert stage.tflite_bytes < 0.7 * result.stages[0].tflite_bytes
    assert result.loaded.model.count_params() == details["student_params"]


def test_student_must_predict_the_teachers_classes(digits_loaded, digits_train):
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(inputs))
    student = keras.Model(inputs, outputs)
    config = parse_config({"stages": [{"distill": {"epochs": 1}}]}).stages[0]
    with pytest.raises(BadInput, match="has 5 outputs but the teacher has 10"):
        distill(digits_loaded.model, student, config, digits_train, 0, student_name="s.keras")
