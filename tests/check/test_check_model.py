"""`check_model` and `tflc check`: placements, partitioning, fallbacks, budgets, advice, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import MLPERF_INT8, need_mlperf
from tflc.check import check_model, load_target
from tflc.cli import main
from tflc.errors import BadInput
from tflc.tflite.reader import read_model

REPO = Path(__file__).resolve().parents[2]


def _descendants(view, start: int) -> set[int]:
    consumers = view.main.consumers()
    seen, stack = set(), [start]
    while stack:
        for t in view.main.operators[stack.pop()].outputs:
            for j in consumers.get(t, ()):
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
    return seen


def test_edgetpu_fallback_follows_data_dependencies(corpus):
    view = read_model(corpus["branches"])
    result = check_model(corpus["branches"], "edgetpu")
    leaky = next(op.index for op in view.main.operators if op.op == "LEAKY_RELU")
    downstream = _descendants(view, leaky)
    assert downstream, "the corpus model must have ops after LEAKY_RELU"
    for v in result.ops:
        if v.index == leaky:
            assert v.placement == "cpu" and "not supported by edgetpu" in v.reasons[0].text
        elif v.index in downstream:
            assert v.placement == "cpu" and v.cut_by == leaky
            assert f"op #{leaky} (LEAKY_RELU)" in v.reasons[-1].text
        else:  # the parallel branch does not depend on LEAKY_RELU: it stays
            assert v.placement == "target", v
    assert result.segments == 1 and 0 < result.ops_on_target < result.ops_total
    assert result.exit_code() == 3
    assert any("LeakyReLU" in a.text and a.ops == [leaky] for a in result.advice)


def test_edgetpu_float_input_quantize_stays_on_cpu_without_cutting(corpus):
    result = check_model(corpus["cnn_float_io"], "edgetpu")
    by_op = {v.index: v for v in result.ops}
    assert by_op[0].op == "QUANTIZE" and by_op[0].placement == "cpu"
    assert by_op[0].reasons[0].code == "dtype"
    middle = [v for v in result.ops if v.op not in ("QUANTIZE", "DEQUANTIZE")]
    assert middle and all(v.placement == "target" for v in middle)
    assert result.segments == 1


def test_edgetpu_maps_small_resizes_of_every_version(corpus):
    # edgetpu_compiler 16 maps RESIZE_BILINEAR version 3 (half_pixel_centers) when it is small
    # (the movenet pair of ../shared/fixtures/edgetpu_pairs); a 2x resize of 4x4 is.
    result = check_model(corpus["resize"], "edgetpu")
    bilinear = [v for v in result.ops if v.op == "RESIZE_BILINEAR"]
    assert bilinear and any(v.version == 3 for v in bilinear)
    assert all(v.placement == "target" and not v.reasons for v in bilinear)


def test_gpu_delegates_only_the_largest_partition(corpus, tmp_path):
    # A GPU without MAX_POOL_2D splits the cnn model into [conv, dwconv] and [conv ... softmax].
    custom = tmp_path / "gpu-no-pool.yaml"
    custom.write_text("extends: gpu\nops: {MAX_POOL_2D: null}\nprovenance: [{source: test}]\n")
    result = check_model(corpus["cnn"], str(custom))
    placement = {v.index: v for v in result.ops}
    assert placement[2].op == "MAX_POOL_2D" and placement[2].placement == "cpu"
    assert [placement[i].placement for i in (0, 1)] == ["cpu", "cpu"]
    assert all(r.code == "partition" for i in (0, 1) for r in placement[i].reasons)
    assert all(placement[i].placement == "target" for i in range(3, 7))
    assert result.segments == 1
    # Without the limit both partitions are delegated.
    unlimited = tmp_path / "gpu-many.yaml"
    unlimited.write_text("extends: gpu-no-pool.yaml\npartitioning: {max_segments: null}\n"
                         "provenance: [{source: test}]\n")
    assert check_model(corpus["cnn"], str(unlimited)).segments == 2


def test_hexagon_small_partitions_stay_on_cpu(corpus):
    result = check_model(corpus["cnn"], "hexagon")
    softmax = next(v for v in result.ops if v.op == "SOFTMAX")
    assert softmax.placement == "cpu"
    assert "at least 2" in softmax.reasons[-1].text


def test_ethos_cpu_ops_run_on_the_cortex_m55_fallback(corpus):
    result = check_model(corpus["float_islands"], "ethos-u55-128")
    elu = next(v for v in result.ops if v.op == "ELU")
    assert elu.placement == "cpu" and result.runs
    conv3d = check_model(corpus["conv3d"], "ethos-u55-128")
    op = next(v for v in conv3d.ops if v.op == "CONV_3D")
    assert op.placement == "none" and not conv3d.runs
    assert "fallback cortex-m55 cannot run it either" in op.reasons[-1].text


def test_tflite_micro_is_all_or_nothing(corpus):
    result = check_model(corpus["tile"], "cortex-m7")
    tile = next(v for v in result.ops if v.op == "TILE")
    assert tile.placement == "none" and not result.runs and result.exit_code() == 3
    assert check_model(corpus["cnn"], "cortex-m7").exit_code() == 0


def test_memory_against_mcu_budgets_uses_the_arena_plan():
    path = need_mlperf(MLPERF_INT8["vww"])
    from tflc.tflite.planner import plan_memory

    result = check_model(path, "cortex-m4")
    plan = plan_memory(read_model(path))
    ram = next(b for b in result.memory.budgets if b.name == "ram")
    assert ram.needed_bytes == plan.arena_bytes + load_target("cortex-m4").memory.runtime_overhead_bytes
    assert ram.ok and result.memory.peak_activation_bytes == plan.peak_activation_bytes
    flash = next(b for b in result.memory.budgets if b.name == "flash")
    assert flash.needed_bytes == path.stat().st_size + 100 * 1024
    assert result.exit_code() == 0


def test_over_budget_is_exit_3_and_reported(corpus, tmp_path):
    small = tmp_path / "tiny-mcu.yaml"
    small.write_text("extends: cortex-m4\nmemory: {ram_bytes: 8 KiB, flash_bytes: 64 KiB}\n"
                     "provenance: [{source: test}]\n")
    result = check_model(corpus["cnn"], str(small))
    assert result.fully_on_target and not result.memory.within_budget
    assert result.exit_code() == 3 and result.exit_code(min_coverage=0.5) == 3
    assert "OVER BUDGET" in result.to_text()
    cache = tmp_path / "small-cache.yaml"
    cache.write_text("extends: edgetpu\nmemory: {parameter_cache_bytes: 100}\nprovenance: [{source: t}]\n")
    tpu = check_model(corpus["cnn"], str(cache))
    line = next(b for b in tpu.memory.budgets if b.name == "parameter_cache")
    assert not line.ok and line.needed_bytes == tpu.memory.parameter_bytes_on_target > 100


def test_json_is_the_documented_shape(corpus):
    data = check_model(corpus["branches"], "edgetpu").to_dict()
    assert set(data) >= {"model", "target", "ops", "summary", "advice"}
    for i, op in enumerate(data["ops"]):
        assert op["index"] == i and op["subgraph"] == 0
        assert op["placement"] in ("target", "cpu", "none")
        assert isinstance(op["reasons"], list) and all(isinstance(r, str) for r in op["reasons"])
    summary = data["summary"]
    assert summary["ops_total"] == len(data["ops"])
    assert summary["ops_on_target"] == sum(op["placement"] == "target" for op in data["ops"])
    assert summary["segments"] == 1 and "memory" in summary
    assert sum(row["count"] for row in summary["operators"]) == summary["ops_total"]
    json.dumps(data)


def _cli(*args):
    return CliRunner().invoke(main, list(args))


def test_cli_exit_codes_and_formats(corpus, tmp_path):
    ok = _cli("check", str(corpus["cnn"]), "--target", "cortex-m4")
    assert ok.exit_code == 0, ok.output
    assert "7 of 7 ops on cortex-m4" in ok.output
    partial = _cli("check", str(corpus["branches"]), "-t", "edgetpu", "--format", "json")
    assert partial.exit_code == 3
    assert json.loads(partial.output[: partial.output.rindex("}") + 1])["target"] == "edgetpu"
    assert _cli("check", str(corpus["branches"]), "-t", "edgetpu", "--min-coverage", "0.4").exit_code == 0
    assert _cli("check", str(corpus["branches"]), "-t", "edgetpu", "--min-coverage", "50%").exit_code == 3
    bad = _cli("check", str(corpus["cnn"]), "-t", "edgetpu", "--min-coverage", "lots")
    assert bad.exit_code == 2


def test_cli_targets_list_and_show():
    listing = _cli("targets")
    assert listing.exit_code == 0
    assert {line.split()[0] for line in listing.output.splitlines()} >= {"cpu", "edgetpu", "cortex-m4"}
    shown = _cli("targets", "show", "raspberry-pi-4", "--format", "json")
    assert json.loads(shown.output)["device"]["cores"] == 4
    text = _cli("targets", "show", "ethos-u55-128")
    assert "provenance:" in text.output and "vela" in text.output
    assert _cli("targets", "show", "nope").exit_code == 2


@pytest.mark.parametrize("make", [
    lambda data: data[: len(data) // 2],
    lambda data: data[:40],
    lambda data: b"",
    lambda data: bytes(range(256)) * 8,
    lambda data: data[:8] + bytes(len(data) - 8),
])
def test_corrupt_or_truncated_models_are_bad_input(corpus, tmp_path, make):
    path = tmp_path / "broken.tflite"
    path.write_bytes(make(corpus["cnn"].read_bytes()))
    with pytest.raises(BadInput):
        check_model(path, "cpu")
    result = _cli("check", str(path), "-t", "cpu")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_missing_model_and_bad_descriptor_are_exit_2(corpus, tmp_path):
    assert _cli("check", str(tmp_path / "nope.tflite"), "-t", "cpu").exit_code == 2
    bad = tmp_path / "typo.yaml"
    bad.write_text("extends: cpu\nkidn: cpu\nprovenance: [{source: t}]\n")
    result = _cli("check", str(corpus["cnn"]), "-t", str(bad))
    assert result.exit_code == 2 and "kidn" in result.output and "did you mean 'kind'" in result.output


def test_check_works_without_tensorflow(corpus, tmp_path):
    """`tflc check` must not import TensorFlow: run it where importing TensorFlow fails."""
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'tf_keras', 'keras', 'ai_edge_litert', 'tflite_micro'):\n"
        "    sys.modules[name] = None  # any import of these now raises ImportError\n"
        "from tflc.cli import main\n"
        f"sys.argv = ['tflc', 'check', {str(corpus['branches'])!r}, '-t', 'edgetpu', '--format', 'json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    sys.exit(exc.code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "TFLC_REGISTRY": str(tmp_path / "reg")},
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    data = json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])
    assert data["summary"]["ops_total"] == 7


def test_model_io_dtype_policy(corpus, tmp_path):
    strict = tmp_path / "int8-io.yaml"
    strict.write_text("extends: cortex-m4\ndtypes: {io: [int8]}\nprovenance: [{source: test}]\n")
    assert check_model(corpus["cnn"], str(strict)).exit_code() == 0
    result = check_model(corpus["cnn_float_io"], str(strict))
    assert result.fully_on_target and len(result.io_issues) == 2 and result.exit_code() == 3
    assert "--io-type int8" in result.io_issues[0]


def test_whole_model_sends_every_op_to_the_fallback_when_one_cannot_run(corpus, tmp_path):
    """A backend that takes the model whole or not at all: one op it lacks moves all of them."""
    whole = tmp_path / "whole-cpu.yaml"
    whole.write_text("extends: cortex-m4\npartitioning: {mode: whole_model, fallback: cpu}\n"
                     "ops: {TILE: null}\nprovenance: [{source: test}]\n")
    result = check_model(corpus["tile"], str(whole))
    tile = next(v for v in result.ops if v.op == "TILE")
    assert result.ops_on_target == 0 and result.segments == 0 and result.runs
    assert all(v.placement == "cpu" for v in result.ops)
    others = [v for v in result.ops if v is not tile]
    assert others and all(v.cut_by == tile.index for v in others)
    assert all(f"op #{tile.index} (TILE)" in v.reasons[-1].text for v in others)
    # Without the missing op the backend takes the whole model as one segment.
    whole_cnn = check_model(corpus["cnn"], str(whole))
    assert whole_cnn.fully_on_target and whole_cnn.segments == 1


def test_tflite_micro_takes_the_model_whole_or_runs_nothing(corpus):
    result = check_model(corpus["tile"], "cortex-m4")
    tile = next(v for v in result.ops if v.op == "TILE")
    assert result.ops_on_target == 0 and all(v.placement == "none" for v in result.ops)
    assert tile.reasons[0].code == "unsupported_op"
    others = [v for v in result.ops if v is not tile]
    assert all({r.code for r in v.reasons} == {"partition", "fallback"} for v in others)
    statuses = {row["op"]: row["status"] for row in result.operator_table()}
    assert statuses["TILE"] == "Cannot run: no fallback supports it"
    assert all(s.startswith("Supported, but") for op, s in statuses.items() if op != "TILE")


def test_export_refusal_names_only_the_op_that_keeps_the_model_off(corpus, tmp_path):
    from tflc.export import export_c

    with pytest.raises(BadInput) as err:
        export_c(corpus["tile"], tmp_path / "out", target="cortex-m4", measure=False, verify=False)
    message = str(err.value)
    assert "TILE" in message and "more ops like it" not in message, message


def test_check_and_export_add_up_budgets_with_one_formula(corpus):
    from tflc.export.budget import check_budget
    from tflc.tflite.planner import plan_memory

    spec, view = load_target("cortex-m4"), read_model(corpus["cnn"])
    plan = plan_memory(view)
    checked = check_model(view, spec).memory.budgets
    exported = check_budget(view, plan.arena_bytes, plan, spec).lines
    assert [(b.name, b.needed_bytes, b.budget_bytes, b.ok) for b in checked] == [
        (b.name, b.needed_bytes, b.budget_bytes, b.ok) for b in exported]
    overhead = spec.memory.runtime_overhead_bytes
    assert checked[0].what == f"tensor arena {plan.arena_bytes} B + runtime overhead {overhead} B"
    assert exported[0].what == (f"tensor arena {plan.arena_bytes} B (margin included) + runtime "
                                f"overhead {overhead} B")


def test_export_eligibility_is_the_descriptors_runtime_exports(corpus, tmp_path):
    from tflc.export import export_c

    renamed = tmp_path / "vendor-port.yaml"  # a TFLite Micro port under its vendor's name
    renamed.write_text("extends: cortex-m4\nruntime: {name: vendor-nn-runtime}\n"
                       "provenance: [{source: test}]\n")
    assert load_target(str(renamed)).runtime.exports == ("c",)
    report = export_c(corpus["cnn"], tmp_path / "out", target=str(renamed), measure=False,
                      verify=False)
    assert report.target == "vendor-port"
    closed = tmp_path / "no-c.yaml"
    closed.write_text("extends: cortex-m4\nruntime: {exports: []}\nprovenance: [{source: test}]\n")
    with pytest.raises(BadInput, match="not TFLite Micro"):
        export_c(corpus["cnn"], tmp_path / "out2", target=str(closed), measure=False, verify=False)
