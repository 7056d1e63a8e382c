"""The pipeline YAML and the compile flags: what is accepted, and one clear line for each mistake."""

from __future__ import annotations

import pytest

from tflc.errors import BadInput
from tflc.optimize.config import PruneConfig, config_from_flags, load_config, parse_config
from tflc.optimize.pipeline import resolve_config


def write(tmp_path, text: str):
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_full_config_is_parsed_with_defaults(tmp_path):
    (tmp_path / "student.keras").write_bytes(b"x")
    config = load_config(write(tmp_path, """
seed: 3
budget: {max_accuracy_drop: 1.5, on_exceed: fail}
stages:
  - distill: {student: student.keras, temperature: 2}
  - prune:
      sparsity: 0.8
      schedule: constant
      layers: {types: [Dense], exclude: [probs]}
      max_accuracy_drop: 3
  - cluster: {clusters: 8, init: linear}
  - qat
"""))
    assert [s.kind for s in config.stages] == ["distill", "prune", "cluster", "qat"]
    assert config.seed == 3 and config.budget.max_accuracy_drop == 1.5
    assert config.budget.on_exceed == "fail"
    distill, prune, cluster, qat = config.stages
    assert distill.student == str(tmp_path / "student.keras")  # relative to the YAML file
    assert distill.temperature == 2 and distill.alpha == 0.7
    assert isinstance(prune, PruneConfig) and prune.schedule == "constant"
    assert prune.layers.types == ["Dense"] and prune.layers.exclude == ["probs"]
    assert prune.max_accuracy_drop == 3 and prune.train.epochs == 4
    assert cluster.clusters == 8 and cluster.init == "linear"
    assert qat.train.learning_rate == 1e-4 and not qat.skip_unsupported
    assert config.to_dict()["stages"][1]["sparsity"] == 0.8


@pytest.mark.parametrize("text, expected", [
    ("stages: [{quantise: {}}]",
     "pipeline.yaml: stages[0]: unknown stage 'quantise'; allowed: prune, qat, cluster, distill"),
    ("stages: [{prun: {}}]", "unknown stage 'prun' (did you mean 'prune'?)"),
    ("stages: [{prune: {sparsty: 0.5}}]",
     "pipeline.yaml: stages[0].prune.sparsty: unknown field (did you mean 'sparsity'?)"),
    ("stages: [{prune: {sparsity: 1.5}}]",
     "stages[0].prune.sparsity: expected a number in (0, 1), got 1.5"),
    ("stages: [{prune: {schedule: linear}}]",
     "stages[0].prune.schedule: got 'linear'; allowed values: polynomial, constant"),
    ("stages: [{prune: {structure: '4:2'}}]", "stages[0].prune.structure: expected 0 < N < M"),
    ("stages: [{prune: {structure: '2:4', sparsity: 0.5}}]", "remove `sparsity`"),
    ("stages: [{prune: {target_sparsity: 0.5}}]", "only used with `sparsity: auto`"),
    ("stages: [{cluster: {clusters: 1}}]", "stages[0].cluster.clusters: expected a whole number"),
    ("stages: [{cluster: {init: kmeans}}]", "(did you mean 'kmeans++'?)"),
    ("stages: [{qat: {epochs: two}}]", "stages[0].qat.epochs: expected a whole number, got 'two'"),
    ("stages: [qat, prune]", "stages[1].prune: 'prune' after 'qat' is not supported"),
    ("stages: []", "stages: expected a non-empty list of stages"),
    ("stage: [qat]", "pipeline.yaml: stage: unknown field (did you mean 'stages'?)"),
    ("budget: {max_drop: 1}\nstages: [qat]", "budget.max_drop: unknown field"),
    ("stages: [{distill: {student: missing.keras}}]", "missing.keras: no such file"),
    ("stages: [qat\n", "pipeline.yaml: not valid YAML at line"),
])
def test_config_mistakes_name_file_field_and_allowed_values(tmp_path, text, expected):
    with pytest.raises(BadInput) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(BadInput, match="no such pipeline config file"):
        load_config(tmp_path / "nope.yaml")


def test_flags_make_stages_in_canonical_order():
    config = config_from_flags(qat=True, cluster=16, prune=0.5, distill="self", epochs=2)
    assert [s.kind for s in config.stages] == ["distill", "prune", "cluster", "qat"]
    assert all(s.train.epochs == 2 for s in config.stages)
    assert config.stages[0].student is None
    assert config_from_flags() is None


def test_resolve_config_takes_what_the_compile_command_passes(tmp_path):
    path = write(tmp_path, "stages: [qat]")
    assert [s.kind for s in resolve_config(str(path)).stages] == ["qat"]
    assert [s.kind for s in resolve_config(prune="auto").stages] == ["prune"]
    assert resolve_config(prune="auto").stages[0].auto
    structured = resolve_config(prune_structure="2:4", qat=True)
    assert structured.stages[0].structure == (2, 4) and structured.stages[0].sparsity is None
    assert resolve_config() is None
    with pytest.raises(BadInput, match="either in the config file or as flags"):
        resolve_config(str(path), qat=True)


def test_epochs_flag_overrides_every_stage_of_a_config_file(tmp_path):
    path = write(tmp_path, "stages: [{prune: {sparsity: 0.5, epochs: 6}}, qat]")
    assert [s.train.epochs for s in resolve_config(str(path)).stages] == [6, 2]
    config = resolve_config(str(path), epochs=1)
    assert [s.train.epochs for s in config.stages] == [1, 1]
    loaded = load_config(path)
    resolve_config(loaded, epochs=3)
    assert loaded.stages[0].train.epochs == 6  # the caller's object is left as it was


def test_epochs_flag_without_a_stage_is_refused(tmp_path):
    from tests.store.helpers import cli

    result = cli("compile", "missing.keras", "-o", tmp_path / "out", "--calibration", "random",
                 "--epochs", "2", ok=False)  # found before the model is looked for
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "tflc: error: --epochs: sets the fine-tuning of pipeline stages; add a stage (--prune, --qat, "
        "--cluster, --distill) or --config")


@pytest.mark.parametrize("flags, expected", [
    ({"prune": 1.2}, "--prune: expected a number in (0, 1), got 1.2"),
    ({"prune": "most"}, "--prune most: expected a sparsity between 0 and 1, or auto"),
    ({"cluster": 1}, "--cluster: expected a whole number between 2 and 256, got 1"),
    ({"prune_structure": "2-4"}, "--prune-structure: expected 'N:M'"),
])
def test_flag_mistakes_name_the_flag(flags, expected):
    with pytest.raises(BadInput) as info:
        resolve_config(**flags)
    assert str(info.value).startswith(expected)


def test_parse_config_rejects_non_mapping():
    with pytest.raises(BadInput, match="expected a mapping with `stages:`"):
        parse_config(["qat"], source="x.yaml")
