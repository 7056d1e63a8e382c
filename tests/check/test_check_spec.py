"""Target descriptors: every shipped one loads and validates; mistakes are named precisely."""

from __future__ import annotations

import inspect
import json
import string

import pytest
import yaml

from tflc.check import DeviceFacts, MemoryBudget, TargetSpec, list_targets, load_target
from tflc.check.constraints import REGISTRY
from tflc.check.spec import TARGETS_DIR
from tflc.errors import BadInput

REQUIRED = {"cpu", "edgetpu", "hexagon", "gpu", "cortex-m4", "cortex-m7", "cortex-m55",
            "ethos-u55-128", "raspberry-pi-4", "raspberry-pi-5"}


def test_all_required_targets_ship_and_validate():
    specs = {t.name: t for t in list_targets()}
    assert REQUIRED <= set(specs)
    for spec in specs.values():
        assert isinstance(spec, TargetSpec) and spec.ops, spec.name
        assert isinstance(spec.memory, MemoryBudget) and isinstance(spec.device, DeviceFacts)
        assert spec.runtime.name and spec.runtime.version
        assert spec.provenance and all(p.source for p in spec.provenance)


def test_mcu_and_pi_targets_carry_board_memory_and_device_facts():
    for name in ("cortex-m4", "cortex-m7", "cortex-m55", "ethos-u55-128"):
        spec = load_target(name)
        assert spec.device.board and spec.device.clock_mhz and spec.device.cores == 1
        assert spec.memory.ram_bytes and spec.memory.flash_bytes, name
    m4, m7 = load_target("cortex-m4"), load_target("cortex-m7")
    assert m4.memory.ram_bytes == 640 * 1024 and m4.memory.flash_bytes == 2 * 1024 * 1024
    assert m7.memory.ram_bytes == 320 * 1024 and "STM32F746" in m7.device.board
    for name, clock in (("raspberry-pi-4", 1500), ("raspberry-pi-5", 2400)):
        spec = load_target(name)
        assert spec.device.cores == 4 and spec.device.clock_mhz == clock
        assert spec.device.active_power_w > 1
        assert any("active_power_w" in (p.covers or "") for p in spec.provenance)


def test_extends_inherits_and_overrides():
    m7, m4, pi = load_target("cortex-m7"), load_target("cortex-m4"), load_target("raspberry-pi-5")
    assert m7.extends == ("cortex-m4",) and m7.ops == m4.ops and m7.device != m4.device
    assert pi.extends == ("cpu",) and pi.ops == load_target("cpu").ops


def test_user_descriptor_by_path_extends_a_shipped_one(tmp_path):
    path = tmp_path / "my-board.yaml"
    path.write_text(
        "extends: cortex-m4\ntitle: my board\nmemory: {ram_bytes: 64 KiB}\n"
        "ops: {SOFTMAX: null}\nprovenance: [{source: my datasheet}]\n"
    )
    spec = load_target(str(path))
    assert spec.name == "my-board" and spec.memory.ram_bytes == 65536
    assert spec.memory.flash_bytes == 2 * 1024 * 1024  # inherited
    assert "SOFTMAX" not in spec.ops and "CONV_2D" in spec.ops


def _write(tmp_path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


BASE = "kind: mcu\ntitle: t\nruntime: {name: r, version: '1'}\nprovenance: [{source: s}]\n"


@pytest.mark.parametrize("extra, expected", [
    ("memroy: {ram_bytes: 1}\n", ["bad.yaml", "memroy", "did you mean 'memory'", "allowed:"]),
    ("memory: {ram_byte: 1}\n", ["bad.yaml", "memory.ram_byte", "ram_bytes"]),
    ("memory: {ram_bytes: lots}\n", ["memory.ram_bytes", "256 KiB"]),
    ("device: {cores: two}\n", ["device.cores", "integer"]),
    ("partitioning: {mode: sometimes}\n", ["partitioning.mode", "delegate, dataflow_cut, whole_model"]),
    ("ops: {CONV2D: {}}\n", ["ops.CONV2D", "did you mean 'CONV_2D'"]),
    ("ops: {CONV_2D: {versoins: [1, 2]}}\n", ["ops.CONV_2D.versoins", "versions"]),
    ("ops: {CONV_2D: {versions: [3, 1]}}\n", ["ops.CONV_2D.versions", "[min, max]"]),
    ("ops: {CONV_2D: {constraints: [stride_rnage]}}\n", ["stride_rnage", "did you mean 'stride_range'"]),
    ("ops: {CONV_2D: {constraints: [{stride_range: {maximum: 2}}]}}\n",
     ["stride_range", "unknown parameter 'maximum'", "allowed: min, max"]),
    ("ops: {CONV_2D: {constraints: [max_rank]}}\n", ["max_rank", "parameter 'max'"]),
    ("dtypes: {activations: [int7]}\n", ["dtypes.activations", "int7", "allowed:"]),
    ("extends: no-such-target\n", ["unknown target 'no-such-target'"]),
])
def test_descriptor_mistakes_name_file_field_and_allowed_values(tmp_path, extra, expected):
    with pytest.raises(BadInput) as err:
        load_target(_write(tmp_path, BASE + extra))
    message = str(err.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, (part, message)


def test_missing_required_fields_and_bad_yaml(tmp_path):
    with pytest.raises(BadInput, match="field 'kind' is required"):
        load_target(_write(tmp_path, "title: t\n"))
    with pytest.raises(BadInput, match="not valid YAML"):
        load_target(_write(tmp_path, "kind: [mcu\n"))
    with pytest.raises(BadInput, match="provenance"):
        load_target(_write(tmp_path, "kind: mcu\ntitle: t\nruntime: {name: r, version: '1'}\n"))


def test_extends_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b\n" + BASE)
    (tmp_path / "b.yaml").write_text("extends: a\n" + BASE)
    with pytest.raises(BadInput, match="cycle"):
        load_target(str(tmp_path / "a.yaml"))


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(BadInput, match="known: .*cortex-m4"):
        load_target("cortex-m99")


def test_constraint_docstrings_are_complete_sentences_with_known_placeholders():
    for name, c in REGISTRY.items():
        assert c.message and (c.message[0].isupper() or c.message[0].isdigit()) and c.message.endswith((".", ")")), name
        fields = {f for _, f, _, _ in string.Formatter().parse(c.message) if f}
        params = set(c.params)
        source = inspect.getsource(c.check)
        for f in fields - params:
            assert f'"{f}"' in source, f"{name}: placeholder {{{f}}} is never filled"


def test_shipped_descriptors_are_plain_yaml_mappings():
    for path in TARGETS_DIR.glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_extends_appends_the_childs_provenance_to_the_parents():
    """Children list only their own sources; inherited ones come first, unless all overridden."""
    m4, m7, m55 = load_target("cortex-m4"), load_target("cortex-m7"), load_target("cortex-m55")
    board_m4 = next(p for p in m4.provenance if "STM32L4R5" in p.source)
    for child in (m7, m55):
        sources = [p.source for p in child.provenance]
        assert len(sources) == len(set(sources)), child.name
        assert sources[:2] == [p.source for p in m4.provenance[:2]]  # op facts, parent's first
        assert board_m4 not in child.provenance  # covers device and memory, which the child overrides
    estimates = next(p for p in m4.provenance if "estimates" in p.source)
    assert estimates in m7.provenance  # memory.runtime_overhead_bytes is still cortex-m4's figure
    pi = load_target("raspberry-pi-4")
    assert [p.source for p in pi.provenance][:2] == [p.source for p in load_target("cpu").provenance]


def test_shipped_children_do_not_copy_their_parents_provenance():
    for path in TARGETS_DIR.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        if "extends" not in raw:
            continue
        parent = yaml.safe_load((TARGETS_DIR / f"{raw['extends']}.yaml").read_text())
        copied = {p["source"] for p in raw.get("provenance", [])} & {
            p["source"] for p in parent["provenance"]}
        assert not copied, (path.name, copied)


def test_lists_other_than_provenance_are_replaced(tmp_path):
    path = tmp_path / "child.yaml"
    path.write_text("extends: cortex-m4\nnotes: [mine]\nconstraints: []\n"
                    "provenance: [{source: mine}]\n")
    spec = load_target(str(path))
    assert spec.notes == ("mine",) and spec.constraints == ()
    assert spec.provenance[-1].source == "mine" and len(spec.provenance) > 1


def test_targets_constraints_lists_the_vocabulary_with_parameters_and_sentences():
    from click.testing import CliRunner

    from tflc.cli import main

    shown = CliRunner().invoke(main, ["targets", "constraints", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    entries = {e["name"]: e for e in json.loads(shown.output)}
    assert set(entries) == set(REGISTRY)
    stride = entries["stride_range"]
    assert stride["message"] == REGISTRY["stride_range"].message
    assert stride["params"] == [
        {"name": "min", "type": "int", "required": False, "default": 1},
        {"name": "max", "type": "int | None", "required": False, "default": None}]
    assert entries["max_rank"]["params"] == [{"name": "max", "type": "int", "required": True}]
    assert entries["constant_weights"]["params"] == []
    text = CliRunner().invoke(main, ["targets", "constraints"])
    assert text.exit_code == 0
    assert "stride_range(min: int = 1, max: int | None = null)" in text.output
    for c in REGISTRY.values():
        assert c.message in text.output, c.name


def test_every_constraint_annotation_is_one_descriptors_are_checked_against():
    """A parameter type the loader cannot check would let any value through to the check."""
    from tflc.check.constraints import constraint

    with pytest.raises(TypeError, match="annotation"):
        @constraint
        def takes_a_mapping(ctx, table: dict):
            """Never registered."""
    assert "takes_a_mapping" not in REGISTRY


def test_every_constraint_in_the_library_is_named_by_a_shipped_descriptor():
    """A constraint no descriptor names decides nothing: it is dead code or a missing fact."""
    named = set()
    for spec in list_targets():
        for ref in (*spec.constraints, *(c for rule in spec.ops.values() for c in rule.constraints)):
            named.add(ref.name)
    assert set(REGISTRY) - named == set()
