"""Hostile inputs to `tflc check` and `tflc targets`: descriptors and YAML built to crash the
loader or to slip a wrong value past it. Every file is generated here.

Each bad input must give exit code 2 and exactly one line on stderr naming the file (and the
field), never a traceback or "internal error", and it must do so when the descriptor is loaded,
before any model is looked at.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tflc.check import load_target
from tflc.cli import main
from tflc.errors import BadInput
from tflc.fileio import read_yaml

BASE = "kind: mcu\ntitle: t\nruntime: {name: r, version: '1'}\nprovenance: [{source: s}]\n"


def one_line_exit_2(*args) -> str:
    """Run the CLI; assert exit 2 and a single stderr line; return that line."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tflc: error: "), result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.output
    return lines[0]


def descriptor(tmp_path, text: str, name: str = "bad.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("constraint, field, expected", [
    ("{stride_range: {max: two}}", "stride_range.max", "must be an integer or null, got 'two'"),
    ("{stride_range: {min: true}}", "stride_range.min", "must be an integer, got True"),
    ("{softmax_beta: {value: .nan}}", "softmax_beta.value", "must be a number, got nan"),
    ("{fused_activation_in: {allowed: RELU}}", "fused_activation_in.allowed",
     "must be a list of text, got 'RELU'"),
    ("{fused_activation_in: {allowed: [1, 2]}}", "fused_activation_in.allowed",
     "must be a list of text"),
    ("{constant_input: {index: 1.5}}", "constant_input.index", "must be an integer"),
    ("{static_shapes: {allow_dynamic_batch: 'yes'}}", "static_shapes.allow_dynamic_batch",
     "must be true or false"),
])
def test_constraint_parameter_of_the_wrong_type_is_refused_at_load(tmp_path, constraint, field,
                                                                   expected):
    path = descriptor(tmp_path, BASE + f"ops: {{CONV_2D: {{constraints: [{constraint}]}}}}\n")
    with pytest.raises(BadInput) as err:
        load_target(path)
    message = str(err.value)
    assert message.startswith(f"{path}: field 'ops.CONV_2D.constraints[0].{field}'"), message
    assert expected in message, message
    assert expected in one_line_exit_2("targets", "show", path)


def test_wrong_parameter_type_in_an_inherited_descriptor_names_the_field(tmp_path):
    descriptor(tmp_path, BASE + "constraints: [{max_rank: {max: [4]}}]\n", "parent.yaml")
    child = descriptor(tmp_path, "extends: parent.yaml\ntitle: child\n", "child.yaml")
    line = one_line_exit_2("check", child, "--target", child)
    assert "field 'constraints[0].max_rank.max' must be an integer" in line, line


def test_a_folder_given_as_target_says_it_is_a_folder(tmp_path):
    folder = tmp_path / "boards"
    folder.mkdir()
    with pytest.raises(BadInput) as err:
        load_target(str(folder))
    message = str(err.value)
    assert str(folder) in message and "is a folder" in message, message
    assert "no such" not in message and ".yaml" in message
    line = one_line_exit_2("targets", "show", str(folder))
    assert "is a folder" in line
    named = tmp_path / "board.yaml"
    named.mkdir()  # a folder with a descriptor's name
    assert "is a folder" in one_line_exit_2("targets", "show", str(named))


def test_a_bare_folder_name_as_target_says_it_is_a_folder(tmp_path, monkeypatch):
    (tmp_path / "boards").mkdir()
    monkeypatch.chdir(tmp_path)
    line = one_line_exit_2("check", "model.tflite", "--target", "boards")
    assert "boards: is a folder" in line and "unknown target" not in line, line


def test_compile_refuses_a_wrong_parameter_type_before_loading_the_model(tmp_path):
    """The descriptor is read first: a wrong value costs no loading and no conversion."""
    path = descriptor(tmp_path, "extends: cortex-m4\nconstraints: [{stride_range: {max: two}}]\n"
                                "provenance: [{source: s}]\n")
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("not a model")
    line = one_line_exit_2("compile", not_a_model, "-o", tmp_path / "out", "--target", path,
                           "--calibration", "random")
    assert f"{path}: field 'constraints[0].stride_range.max' must be an integer" in line, line
    assert not (tmp_path / "out" / "model.tflite").exists()


def _nested(depth: int) -> str:
    return "notes: " + "[" * depth + "]" * depth + "\n"


@pytest.mark.parametrize("depth", [3000, 400])
def test_deeply_nested_yaml_is_one_line_naming_the_file(tmp_path, depth):
    path = descriptor(tmp_path, BASE + _nested(depth))
    with pytest.raises(BadInput) as err:
        read_yaml(path, "target descriptor")
    assert str(path) in str(err.value) and "nested" in str(err.value)
    line = one_line_exit_2("targets", "show", path)
    assert str(path) in line and "nested" in line


def test_block_style_nesting_is_refused_too(tmp_path):
    text = "".join("  " * i + f"k{i}:\n" for i in range(2000)) + "  " * 2000 + "leaf: 1\n"
    path = descriptor(tmp_path, text)
    assert "nested" in one_line_exit_2("targets", "show", path)


def test_ordinary_nesting_still_loads(tmp_path):
    path = descriptor(tmp_path, BASE + _nested(20))
    assert read_yaml(path, "target descriptor")["notes"]


def test_yaml_tags_stay_refused(tmp_path):
    marker = tmp_path / "ran"
    path = descriptor(tmp_path, BASE + f"title: !!python/object/apply:os.system ['touch {marker}']\n")
    line = one_line_exit_2("targets", "show", path)
    assert str(path) in line and not marker.exists()


def _mean_with_one_input() -> bytes:
    """The MLPerf Tiny anomaly-detection model with its last op turned into a MEAN that lacks
    its axes input: the reader takes it, TFLite Micro's MEAN kernel would read input 1."""
    from tests.conftest import MLPERF_INT8, need_mlperf

    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(need_mlperf(MLPERF_INT8["ad"]).read_bytes(), 0)
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.MEAN
    code.version = 1
    model.operatorCodes.append(code)
    op = model.subgraphs[0].operators[-1]
    op.opcodeIndex, op.builtinOptionsType, op.builtinOptions = len(model.operatorCodes) - 1, 0, None
    op.inputs = [int(op.inputs[0])]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_a_model_the_arena_planner_cannot_follow_gets_a_note_saying_why(tmp_path):
    from tflc.check import check_model
    from tflc.tflite.planner import plan_or_note
    from tflc.tflite.reader import read_model

    data = _mean_with_one_input()
    view = read_model(data)
    index = len(view.main.operators) - 1
    plan, note = plan_or_note(view)
    assert plan is None
    assert f"op #{index} (MEAN)" in note and "input 1" in note, note
    result = check_model(data, "cortex-m4")
    assert result.memory.arena_bytes is None and result.memory.notes == [note]
    assert not [b for b in result.memory.budgets if b.name == "ram"]


@pytest.mark.parametrize("extra, expected", [
    ("ops: {CONV_2D: {constraints: [{5: {}}]}}", "field 'ops.CONV_2D.constraints[0]' must be a constraint name"),
    ("ops: {CONV_2D: {constraints: [{null: {}}]}}", "field 'ops.CONV_2D.constraints[0]' must be a constraint name"),
    ("ops: {CONV_2D: {dtypes: {activations: [[int8]]}}}", "field 'ops.CONV_2D.dtypes.activations'"),
    ("ops: {CONV_2D: null}", "field 'ops.CONV_2D' must be a mapping (or {}), got null"),
    ("device: {clock_mhz: .nan}", "field 'device.clock_mhz' must be a number above 0"),
    ("device: {clock_mhz: -1}", "field 'device.clock_mhz' must be a number above 0"),
    ("device: {active_power_w: .inf}", "field 'device.active_power_w' must be a number"),
    ("device: {cores: 0}", "field 'device.cores' must be an integer of at least 1"),
    ("partitioning: {min_segment_ops: -3}", "field 'partitioning.min_segment_ops' must be an integer of at least 1"),
    ("partitioning: {max_segments: 0}", "field 'partitioning.max_segments' must be an integer of at least 1"),
])
def test_descriptor_values_no_runtime_could_have_are_refused(tmp_path, extra, expected):
    path = descriptor(tmp_path, BASE + extra + "\n")
    line = one_line_exit_2("targets", "show", path)
    assert f"{path}: {expected}" in line, line
