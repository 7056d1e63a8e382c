"""The Qualcomm HTP target held to Qualcomm's real compiler (LiteRT's plugin over QAIRT's host
libraries, from the onnxruntime-qnn wheel: tflc.aot.qualcomm), and `tflc compile --aot`.

- The descriptors qualcomm-htp (SM8650) and qualcomm-htp-sm7325 agree with the plugin's own
  placement, op instance by op instance, on one-op probes (tests/aot/probe_models.py: a CI
  subset here, every probe under `-m heavy`) and on the MLPerf Tiny files.
- The compiler writes a model for each SoC named: parsed back, its DISPATCH_OP ops hold exactly
  the ops the plugin placed on the NPU, and `tflc check` reads the compiled file.
- `tflc compile --target qualcomm-htp --aot SOC` writes OUT/model_SOC.tflite beside the portable
  model and records both; without QAIRT's libraries it stops in one line (exit 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MLPERF_INT8, need_mlperf
from tests.realworld.qnn_oracle import SOCS, available
from tflc.aot import precompiled, qualcomm
from tflc.check import check_model
from tflc.tflite.reader import read_model

REPO = Path(__file__).resolve().parents[2]
WHY_NOT = available()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=f"Qualcomm compiler unavailable: {WHY_NOT}")

# (soc, target): the two SoCs the descriptors were written for in the default run, the other
# SoCs' descriptors (children of qualcomm-htp) under -m heavy
DEFAULT_SOCS = ("SM8650", "SM7325")
SOC_TARGETS = [pytest.param(soc, target, marks=() if soc in DEFAULT_SOCS else pytest.mark.heavy)
               for soc, target in sorted(SOCS.values())]
# Probes whose verdict turns on a rule of the descriptors (dtype, constraint, missing op).
CI_PROBES = (("exp", "int8"), ("exp", "float32"), ("log_softmax", "int8"), ("argmax64", "int8"),
             ("argmax32", "int8"), ("relu6", "16x8"), ("conv_relu6", "16x8"), ("dwconv", "16x8"),
             ("stack", "16x8"), ("rprod", "int8"), ("one_hot", "int8"), ("transpose", "float32"),
             ("conv", "float32"), ("batch_matmul", "16x8"), ("strided", "int8"), ("floor_mod", "float32"))


def _disagreements(data: bytes, soc: str, target: str) -> list:
    truth = qualcomm.partition_soc(data, soc)
    assert truth.ok, truth.error
    view = read_model(data)
    wrong = []
    for verdict in check_model(view, target).ops:
        told = truth.placement.get(verdict.index) if verdict.subgraph == 0 else None
        if told is not None and told != (verdict.placement == "target"):
            wrong.append((verdict.index, verdict.op, f"plugin={told}",
                          [r.text for r in verdict.reasons]))
    return wrong


def _probes(pairs, soc, target):
    from tests.aot.probe_models import probe

    wrong, compared = {}, 0
    for name, mode in pairs:
        data = probe(name, mode)
        if data is None:  # the converter refuses this op in this mode
            continue
        compared += 1
        found = _disagreements(data, soc, target)
        if found:
            wrong[f"{name}.{mode}"] = found
    return wrong, compared


@pytest.mark.slow
@pytest.mark.parametrize("soc,target", SOC_TARGETS)
def test_descriptor_agrees_with_the_plugin_on_probes(soc, target):
    wrong, compared = _probes(CI_PROBES, soc, target)
    assert compared >= len(CI_PROBES) - 2
    assert not wrong, f"{target} disagrees with the plugin for {soc}: {wrong}"


@pytest.mark.heavy
@pytest.mark.parametrize("soc,target", SOC_TARGETS)
def test_descriptor_agrees_with_the_plugin_on_every_probe(soc, target):
    from tests.aot.probe_models import MODES, NAMES

    wrong, compared = _probes([(n, m) for n in NAMES for m in MODES], soc, target)
    assert compared > 250
    assert not wrong, f"{target} disagrees with the plugin for {soc}: {wrong}"


@pytest.mark.parametrize("soc,target", SOC_TARGETS)
@pytest.mark.parametrize("model", sorted(MLPERF_INT8))
def test_descriptor_agrees_on_mlperf(model, soc, target):
    data = need_mlperf(MLPERF_INT8[model]).read_bytes()
    assert not _disagreements(data, soc, target)


def test_the_plugin_does_refuse_ops_so_agreement_can_fail():
    """The probes are not all mapped: int8 EXP and int64 ARG_MAX stay on the CPU for SM8650
    while the float EXP maps (a descriptor saying 'everything maps' would fail above)."""
    from tests.aot.probe_models import probe

    placements = {}
    for name, mode in (("exp", "int8"), ("exp", "float32"), ("argmax64", "int8")):
        data = probe(name, mode)
        view = read_model(data)
        truth = qualcomm.partition_soc(data, "SM8650").placement
        placements[(name, mode)] = {view.main.operators[i].op: v for i, v in truth.items()}
    assert placements[("exp", "int8")]["EXP"] is False
    assert placements[("exp", "float32")]["EXP"] is True
    assert placements[("argmax64", "int8")]["ARG_MAX"] is False


@pytest.mark.parametrize("soc,target", SOC_TARGETS)
def test_aot_compiles_kws_whole_for_each_soc(soc, target, tmp_path):
    data = need_mlperf(MLPERF_INT8["kws"]).read_bytes()
    result = qualcomm.compile_soc(data, soc)
    assert result.ok, result.error
    compiled = read_model(result.data)
    ops = [op.op for op in compiled.main.operators]
    assert ops == ["DISPATCH_OP"], ops
    assert result.placement == {i: True for i in range(13)}
    (dispatch,) = result.dispatch
    assert dispatch.op_count == 13 and dispatch.bytecode_bytes > 50_000
    assert "Conv2d" in {k for node in dispatch.nodes for k in node}
    info = precompiled(compiled)
    assert (info["manufacturer"], info["soc"]) == ("Qualcomm", soc)
    check = check_model(compiled, target)
    assert check.fully_on_target and check.compiled["dispatch"][0]["op_count"] == 13


def test_aot_keeps_cpu_ops_and_tflc_check_predicts_them(tmp_path):
    """A float model on SM7325 (HTP v68, no float): the compiled file keeps the float ops as
    they were; the ops inside its dispatch ops are exactly those the descriptor maps."""
    data = need_mlperf(MLPERF_INT8["ic"].with_name("resnet8_float.tflite")).read_bytes()
    result = qualcomm.compile_soc(data, "SM7325")
    assert result.ok, result.error
    on_npu = {i for i, v in result.placement.items() if v}
    assert 0 < len(on_npu) < len(result.placement)
    assert sum(d.op_count for d in result.dispatch) == len(on_npu)
    predicted = {v.index for v in check_model(data, "qualcomm-htp-sm7325").ops
                 if v.placement == "target"}
    assert predicted == on_npu
    compiled = read_model(result.data)
    left = [op.op for op in compiled.main.operators if op.op != "DISPATCH_OP"]
    assert len(left) == len(result.placement) - len(on_npu) and "CONV_2D" in left


def test_an_unknown_soc_is_one_line_from_the_compiler():
    data = need_mlperf(MLPERF_INT8["ad"]).read_bytes()
    result = qualcomm.compile_soc(data, "SM0000")
    assert not result.ok and result.data is None
    assert result.error.startswith("the Qualcomm compiler stopped") and "\n" not in result.error


def _tflc(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "tflc", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def test_check_says_what_a_compiled_model_runs_on_the_npu(tmp_path):
    data = need_mlperf(MLPERF_INT8["kws"]).read_bytes()
    compiled = tmp_path / "kws_SM8650.tflite"
    compiled.write_bytes(qualcomm.compile_soc(data, "SM8650").data)
    done = _tflc("check", str(compiled), "--target", "qualcomm-htp", env={"TFLC_NO_RECORD": "1"})
    assert done.returncode == 0, done.stderr
    assert "Compiled ahead of time for Qualcomm SM8650: 1 DISPATCH_OP(s) run 13 op(s)" in done.stdout
    done = _tflc("check", str(compiled), "--target", "qualcomm-htp", "--format", "json",
                 env={"TFLC_NO_RECORD": "1"})
    report = json.loads(done.stdout)
    assert report["compiled"]["dispatch"][0]["op_count"] == 13


def test_aot_without_qairt_libraries_is_one_line_exit_2(tmp_path):
    """An onnxruntime_qnn without QAIRT's libraries (a shadow package first on the path): the
    flag fails before any model is loaded, naming what to install."""
    shadow = tmp_path / "shadow" / "onnxruntime_qnn"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    done = _tflc("compile", str(tmp_path / "absent.keras"), "-o", str(tmp_path / "out"),
                 "--calibration", "random", "--target", "qualcomm-htp", "--aot", "SM8650",
                 env={"PYTHONPATH": f"{shadow.parent}{os.pathsep}{REPO}"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'tflc[qualcomm]'" in lines[0], lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,words", [
    (("--aot", "SM8650"), "--aot needs --target"),
    (("--target", "cpu", "--aot", "SM8650"), "names no ahead-of-time compiler"),
    (("--target", "qualcomm-htp", "--aot", "--o=/etc"), "expected a SoC model name"),
])
def test_aot_flag_misuse_is_refused_in_one_line(tmp_path, args, words):
    done = _tflc("compile", str(tmp_path / "absent.keras"), "-o", str(tmp_path / "out"),
                 "--calibration", "random", *args)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_compile_aot_writes_and_records_a_model_per_soc(digits_dir, tmp_path):
    import tflc
    from tflc.store import Registry

    out = tmp_path / "out"
    report = tflc.compile(digits_dir / "model.keras", out,
                          calibration_data=digits_dir / "calib.npz", target="qualcomm-htp",
                          aot=["SM8650", "SM7325"])
    assert report.passed
    portable = read_model(out / "model.tflite")
    assert "DISPATCH_OP" not in portable.op_set()
    for entry in report.aot:
        compiled = read_model(out / entry["file"])
        assert entry["compiled"] and entry["file"] == f"model_{entry['soc']}.tflite"
        assert {op.op for op in compiled.main.operators} == {"DISPATCH_OP"}
        assert entry["ops_on_npu"] == entry["ops_total"] == len(portable.main.operators)
        assert precompiled(compiled)["soc"] == entry["soc"]
    saved = json.loads((out / "report.json").read_text())
    assert [e["soc"] for e in saved["aot"]] == ["SM8650", "SM7325"]
    assert saved["config"]["aot"] == ["SM8650", "SM7325"]
    stored = Registry().get(report.artifact_id)
    folder = Path(Registry().files.artifacts) / stored.id
    assert (folder / "model_SM8650.tflite").read_bytes() == (out / "model_SM8650.tflite").read_bytes()
    assert "aot         SM8650: " in report.summary()
    # the check verdict is qualcomm-htp's (SM8650): the other SoC's compile is flagged as such
    assert [w.split(":")[0] for w in report.warnings if w.startswith("--aot")] == ["--aot SM7325"]
