"""`export_c` end to end: the generated sources compile (gcc/g++ -Wall -Werror) and hold the
model byte for byte, the resolver has exactly the model's ops, TFLite Micro agrees with LiteRT,
and the budgets come from the target descriptor."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from tests.export.conftest import README_ARENA, TEST_TARGETS, mlperf, need_tool, run
from tflc.check import load_target
from tflc.export import export_c
from tflc.export.c_source import parse_model_array
from tflc.export.op_resolver import RESOLVER_METHODS, SIGNAL_METHODS
from tflc.tflite.reader import read_model

WARNINGS = ["-Wall", "-Wextra", "-Werror"]

MAIN_C = """\
#include <stdint.h>
#include <stdio.h>
#include "{name}_model_data.h"
#include "{name}_arena.h"

int main(void) {{
  uint32_t crc = 0xffffffffu;
  for (unsigned int i = 0; i < {name}_model_data_len; ++i) {{
    crc ^= {name}_model_data[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }}
  printf("%u %u %u %u\\n", {name}_model_data_len, crc ^ 0xffffffffu,
         (unsigned)((uintptr_t){name}_model_data % 16u), (unsigned){upper}_TENSOR_ARENA_SIZE);
  return 0;
}}
"""

RESOLVER_CC = """\
#include <cstdio>
#include "{name}_op_resolver.h"

int main() {{
  {name}_OpResolver resolver;
  if ({name}_RegisterOps(resolver) != kTfLiteOk) return 1;
  std::printf("%u %u\\n", resolver.registered(), k{camel}OpCount);
  return 0;
}}
"""


def resolver_shim(folder: Path) -> Path:
    """A stand-in for TFLite Micro's micro_mutable_op_resolver.h with the same Add* methods
    (from the tables the generator uses, builtin and signal library) and the same capacity rule: registering more ops than
    the template argument fails. It lets the generated header be compiled without TFLite
    Micro's sources; the method names are checked against the cortex-m4 descriptor below."""
    path = folder / "tensorflow" / "lite" / "micro" / "micro_mutable_op_resolver.h"
    path.parent.mkdir(parents=True)
    names = {*RESOLVER_METHODS.values(), *SIGNAL_METHODS.values()}
    methods = "\n".join(f"  TfLiteStatus {m}() {{ return Add(); }}" for m in sorted(names))
    path.write_text(f"""#pragma once
typedef enum {{ kTfLiteOk = 0, kTfLiteError = 1 }} TfLiteStatus;
namespace tflite {{
template <unsigned int tOpCount>
class MicroMutableOpResolver {{
 public:
{methods}
  unsigned int registered() const {{ return count_; }}
 private:
  TfLiteStatus Add() {{
    if (count_ >= tOpCount) return kTfLiteError;
    ++count_;
    return kTfLiteOk;
  }}
  unsigned int count_ = 0;
}};
}}  // namespace tflite
""")
    return folder


def compile_and_run(src: Path, name: str, source_ext: str, work: Path) -> tuple[list[int], list[int]]:
    """Build the model data with g++ and a C program reading it with gcc; build the resolver."""
    gcc, gxx = need_tool("gcc"), need_tool("g++")
    work.mkdir(parents=True, exist_ok=True)
    (work / "main.c").write_text(MAIN_C.format(name=name, upper=name.upper()))
    camel = "".join(p[:1].upper() + p[1:] for p in name.split("_") if p)
    (work / "resolver.cc").write_text(RESOLVER_CC.format(name=name, camel=camel))
    shim = resolver_shim(work / "shim")
    steps = [
        [gxx, *WARNINGS, "-std=c++17", "-c", str(src / f"{name}_model_data.{source_ext}"),
         "-o", "model_data.o"],
        [gcc, *WARNINGS, "-std=c11", f"-I{src}", "-c", "main.c", "-o", "main.o"],
        [gxx, "main.o", "model_data.o", "-o", "check_model"],
        [gxx, *WARNINGS, "-std=c++17", f"-I{src}", f"-I{shim}", "resolver.cc", "-o", "check_resolver"],
    ]
    for cmd in steps:
        done = run(cmd, work)
        assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr}"
    model_out = run([str(work / "check_model")], work)
    resolver_out = run([str(work / "check_resolver")], work)
    assert model_out.returncode == 0 and resolver_out.returncode == 0, resolver_out.stdout
    return ([int(v) for v in model_out.stdout.split()], [int(v) for v in resolver_out.stdout.split()])


def test_digits_example_exports_and_compiles(digits_tflite, tmp_path):
    out = tmp_path / "digits_c"
    report = export_c(digits_tflite, out, name="digits")
    model = digits_tflite.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "digits_arena.h", "digits_model_data.cc", "digits_model_data.h",
        "digits_op_resolver.h", "export_report.json"]
    assert parse_model_array((out / "digits_model_data.cc").read_text()) == model
    assert report.verification.array_identical

    (length, crc, misalignment, arena), (registered, capacity) = compile_and_run(
        out, "digits", "cc", tmp_path / "build")
    assert length == len(model) and crc == zlib.crc32(model)
    assert misalignment == 0
    assert arena == report.arena.recommended_bytes
    n_ops = len(read_model(digits_tflite).op_set())
    assert registered == capacity == n_ops == len(report.ops)

    saved = json.loads((out / "export_report.json").read_text())
    assert saved["arena"]["recommended_bytes"] == report.arena.recommended_bytes
    assert saved["model_sha256"] == report.model_sha256


def test_tflite_micro_output_is_bit_identical_to_litert(digits_tflite, tmp_path):
    pytest.importorskip("tflite_micro")
    pytest.importorskip("ai_edge_litert")
    for model, name in ((digits_tflite, "digits"), (mlperf("kws"), "kws")):
        report = export_c(model, tmp_path / name, name=name, samples=3)
        v = report.verification
        assert v.compared and v.samples == 3
        assert v.outputs_identical and v.max_abs_difference == 0.0, v.summary()
        # TFLite Micro ran in the exported arena size, which includes the margin.
        assert str(report.arena.recommended_bytes) in v.tflm


def test_arduino_layout_is_a_library_that_compiles(tmp_path):
    out = tmp_path / "kws_lib"
    report = export_c(mlperf("kws"), out, name="kws", layout="arduino", verify=False)
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"library.properties", "README.md", "src/kws_model_data.h", "src/kws_model_data.cpp",
            "src/kws_op_resolver.h", "src/kws_arena.h",
            "examples/kws_inference/kws_inference.ino"} <= names
    props = dict(line.split("=", 1) for line in (out / "library.properties").read_text().splitlines())
    assert props["name"] == "kws" and "kws_op_resolver.h" in props["includes"]
    sketch = (out / "examples/kws_inference/kws_inference.ino").read_text()
    assert "kws_RegisterOps" in sketch and "KWS_TENSOR_ARENA_SIZE" in sketch
    (length, crc, _, arena), (registered, _) = compile_and_run(out / "src", "kws", "cpp", tmp_path / "b")
    model = mlperf("kws").read_bytes()
    assert (length, crc, arena) == (len(model), zlib.crc32(model), report.arena.recommended_bytes)
    assert registered == 6


def test_budgets_come_from_the_target_descriptor(tmp_path):
    report = export_c(mlperf("kws"), tmp_path / "kws", target="cortex-m4", name="kws", verify=False)
    spec = load_target("cortex-m4")
    lines = {line.name: line for line in report.budget.lines}
    assert lines["ram"].needed_bytes == report.arena.recommended_bytes + spec.memory.runtime_overhead_bytes
    assert lines["ram"].budget_bytes == spec.memory.ram_bytes
    assert lines["flash"].needed_bytes == report.model_bytes + spec.memory.kernel_code_bytes
    assert report.within_budget and report.target == "cortex-m4"


def test_over_budget_is_a_verdict_in_the_report_not_an_exception(tmp_path):
    report = export_c(mlperf("vww"), tmp_path / "vww", target=TEST_TARGETS / "tiny-mcu.yaml",
                      name="vww", verify=False)
    assert not report.passed and not report.within_budget
    assert [line.name for line in report.budget.lines if not line.ok] == ["ram"]
    failure = report.gate_failure()
    assert failure.exit_code == 3 and failure.report is report
    assert "RAM needs" in failure.message and "smaller input" in failure.message
    assert (tmp_path / "vww" / "vww_model_data.cc").exists()
    saved = json.loads((tmp_path / "vww" / "export_report.json").read_text())
    assert not saved["within_budget"] and not saved["passed"]


def test_a_package_within_budget_has_no_gate_failure(tmp_path):
    report = export_c(mlperf("ad"), tmp_path / "ad", target="cortex-m4", name="ad",
                      measure=False, verify=False)
    assert report.passed and report.gate_failure() is None
    assert json.loads((tmp_path / "ad" / "export_report.json").read_text())["passed"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_new_export_replaces_the_earlier_package_as_a_whole(tmp_path):
    out = tmp_path / "work" / "pkg"  # tmp_path also holds the test's private registry
    export_c(mlperf("ad"), out, name="first", measure=False, verify=False)
    export_c(mlperf("ad"), out, name="second", layout="arduino", measure=False, verify=False)
    names = set(_tree(out))
    assert "src/second_model_data.cpp" in names
    assert not any("first" in name for name in names)  # nothing merged from the earlier one
    assert sorted(p.name for p in out.parent.iterdir()) == ["pkg"]  # no staging folder left


def test_a_failed_export_leaves_the_earlier_package_intact(tmp_path):
    from tests.export.conftest import with_op_code
    from tflc.errors import BadInput

    out = tmp_path / "work" / "pkg"
    export_c(mlperf("ad"), out, name="ad", measure=False, verify=False)
    before = _tree(out)
    broken = with_op_code(mlperf("ad"), "LOCAL_RESPONSE_NORMALIZATION", out.parent / "lrn.tflite")
    with pytest.raises(BadInput):
        export_c(broken, out, name="ad", measure=False, verify=False)
    assert _tree(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["lrn.tflite", "pkg"]


def test_a_folder_holding_other_files_is_refused_not_wiped(tmp_path):
    from tflc.errors import BadInput

    out = tmp_path / "app"
    out.mkdir()
    (out / "main.cc").write_text("int main() { return 0; }\n")
    with pytest.raises(BadInput) as caught:
        export_c(mlperf("ad"), out, name="ad", measure=False, verify=False)
    assert "main.cc" in caught.value.message and "-o" in caught.value.message
    assert _tree(out) == {"main.cc": b"int main() { return 0; }\n"}


def test_the_planner_failing_is_a_note_and_the_measurement_stands(tmp_path):
    from tflc.tflite.planner import plan_or_note

    pytest.importorskip("tflite_micro")
    view = read_model(mlperf("ad"))
    view.subgraphs[0].inputs = [10**6]  # a subgraph input the planner cannot find
    plan, note = plan_or_note(view)  # the guarded entry export uses, as check does
    assert plan is None and note.startswith("no arena estimate") and "IndexError" in note

    from tflc.errors import PipelineError
    from tflc.export.arena import arena_figures, render_arena_header

    model = mlperf("ad").read_bytes()
    arena = arena_figures(model, plan, name="ad.tflite")
    assert arena.basis == "measured" and arena.estimated_bytes is None
    assert abs(arena.measured_bytes - README_ARENA["ad"]) < 16
    assert "static estimate: none" in render_arena_header(arena, "ad")
    with pytest.raises(PipelineError, match="ad.tflite: no arena size"):
        arena_figures(model, plan, measure=False, name="ad.tflite")


def test_resolver_methods_cover_exactly_the_ops_tflite_micro_registers():
    # Both lists come from TFLite Micro's micro_mutable_op_resolver.h; they must agree.
    # The signal library's custom ops are in the descriptor as custom ops, here in SIGNAL_METHODS.
    from tflc.check.constraints import BUILTIN_OPS

    ops = set(load_target("cortex-m4").ops)
    assert set(RESOLVER_METHODS) == ops & BUILTIN_OPS
    assert set(SIGNAL_METHODS) == ops - BUILTIN_OPS
    assert all(m.startswith("Add") for m in {**RESOLVER_METHODS, **SIGNAL_METHODS}.values())


def test_an_output_folder_given_as_a_symlink_stays_a_symlink(tmp_path):
    real = tmp_path / "work" / "real"
    real.parent.mkdir()
    link = tmp_path / "work" / "link"
    link.symlink_to(real, target_is_directory=True)
    for name in ("first", "second"):
        export_c(mlperf("ad"), link, name=name, measure=False, verify=False)
    assert link.is_symlink() and (real / "second_model_data.cc").exists()
    assert not (real / "first_model_data.cc").exists()
    assert sorted(p.name for p in real.parent.iterdir()) == ["link", "real"]
