"""tflc.schema: the JSON Schema validator both YAML readers use, and its one-line errors."""

from __future__ import annotations

import math

import pytest

from tflc.errors import BadInput
from tflc.schema import CONFIG, DESCRIPTOR, check_schema, field_path, first_error, validate

SCHEMA = check_schema({
    "type": "object",
    "additionalProperties": False,
    "required": ["stages"],
    "properties": {
        "stages": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "properties": {"prune": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "sparsity": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                    "init": {"enum": ["kmeans++", "linear"]},
                    "epochs": {"type": "integer", "minimum": 1},
                    "layers": {"type": "array", "items": {"type": "string"},
                               "description": "a list of layer names"},
                }}}}},
        "clock_mhz": {"type": "number", "exclusiveMinimum": 0},
    },
})


def test_field_paths_read_as_the_yaml_is_written():
    assert field_path(["stages", 1, "prune", "sparsity"]) == "stages[1].prune.sparsity"
    assert field_path(["ops", "CONV_2D", "constraints", 0, "stride_range", "max"]) == (
        "ops.CONV_2D.constraints[0].stride_range.max")


def test_an_error_names_the_nested_field_what_was_given_and_what_is_allowed():
    data = {"stages": [{"prune": {}}, {"prune": {"sparsity": 1.5}}]}
    assert first_error(data, SCHEMA, CONFIG) == (
        "stages[1].prune.sparsity: expected a number in (0, 1), got 1.5")
    assert first_error(data, SCHEMA, DESCRIPTOR) == (
        "field 'stages[1].prune.sparsity' must be a number above 0 and below 1, got 1.5")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_although_they_pass_the_bounds(value):
    data = {"stages": [{"prune": {"sparsity": value}}]}
    assert first_error(data, SCHEMA, CONFIG) == (
        f"stages[0].prune.sparsity: expected a number in (0, 1), got {value!r}")
    assert "clock_mhz' must be a number above 0, got nan" in first_error(
        {"stages": [], "clock_mhz": math.nan}, SCHEMA, DESCRIPTOR)


def test_booleans_and_whole_floats_are_not_integers():
    for value in (True, 2.0):
        assert first_error({"stages": [{"prune": {"epochs": value}}]}, SCHEMA, CONFIG) == (
            f"stages[0].prune.epochs: expected a whole number, got {value!r}")
    assert first_error({"stages": [], "clock_mhz": False}, SCHEMA, DESCRIPTOR) == (
        "field 'clock_mhz' must be a number, got False")


def test_unknown_fields_suggest_a_close_spelling_and_list_the_allowed_ones():
    assert first_error({"stages": [{"prune": {"sparsty": 0.5}}]}, SCHEMA, CONFIG) == (
        "stages[0].prune.sparsty: unknown field (did you mean 'sparsity'?); "
        "allowed: sparsity, init, epochs, layers")
    assert first_error({"stage": []}, SCHEMA, DESCRIPTOR) == (
        "unknown field 'stage'; did you mean 'stages'? (allowed: stages, clock_mhz)")
    assert "did you mean" not in first_error({"stages": [], "zzz": 1}, SCHEMA, CONFIG)


def test_an_unknown_field_is_reported_before_the_missing_one_it_misspells():
    assert first_error({"stage": []}, SCHEMA, CONFIG).startswith("stage: unknown field")
    required_first = {"required": ["stages"], **SCHEMA}  # the library meets `required` first
    assert first_error({"stage": []}, required_first, CONFIG).startswith("stage: unknown field")
    assert first_error({}, SCHEMA, DESCRIPTOR) == "field 'stages' is required"


def test_the_shallowest_error_is_reported_first():
    data = {"stages": [{"prune": {"epochs": 0}}], "clock_mhz": "fast"}
    assert first_error(data, SCHEMA, CONFIG) == "clock_mhz: expected a number, got 'fast'"


def test_a_value_outside_an_enum_lists_the_allowed_ones_with_a_suggestion():
    data = {"stages": [{"prune": {"init": "kmeans"}}]}
    assert first_error(data, SCHEMA, CONFIG) == (
        "stages[0].prune.init: got 'kmeans' (did you mean 'kmeans++'?); "
        "allowed values: kmeans++, linear")


def test_a_bad_item_of_a_described_list_is_reported_as_the_list():
    data = {"stages": [{"prune": {"layers": ["dense", 3]}}]}
    assert first_error(data, SCHEMA, DESCRIPTOR) == (
        "field 'stages[0].prune.layers' must be a list of layer names, got ['dense', 3]")


def test_an_item_with_its_own_description_is_reported_as_the_item():
    schema = {"type": "array", "description": "a list of sources",
              "items": {"type": "object", "description": "a mapping with source and version"}}
    assert first_error([{}, 3], schema, DESCRIPTOR) == (
        "field '[1]' must be a mapping with source and version, got 3")


def test_validate_raises_one_line_naming_the_file_or_the_flag():
    with pytest.raises(BadInput) as err:
        validate({"stages": [{"prune": {"epochs": 0}}]}, SCHEMA, "p.yaml", CONFIG)
    assert str(err.value) == "p.yaml: stages[0].prune.epochs: expected a whole number >= 1, got 0"
    with pytest.raises(BadInput) as err:
        validate({"stages": [{"prune": {"epochs": 0}}]}, SCHEMA, None, CONFIG,
                 name=lambda parts: "--epochs")
    assert str(err.value) == "--epochs: expected a whole number >= 1, got 0"
    validate({"stages": [{"prune": {"sparsity": 0.5, "layers": ["a"]}}]}, SCHEMA, "p.yaml", CONFIG)
