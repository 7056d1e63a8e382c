"""tflc profile: counts, timing fidelity, vela join, arena timeline, energy, CLI, scale."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tflc.profile import ProfileOptions, cyclemodel, profile
from tflc.profile.measure import time_models
from tflc.tflite.planner import plan_memory
from tflc.tflite.reader import read_model

REPO = Path(__file__).resolve().parents[2]
TFLC = [sys.executable, "-m", "tflc"]


def independent_macs(path: Path) -> list[int]:
    """MACs per op from LiteRT's own op and tensor tables (not tflc's reader)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    shapes = {d["index"]: [max(int(v), 1) for v in d["shape"]]
              for d in interpreter.get_tensor_details()}

    def product(values):
        total = 1
        for v in values:
            total *= v
        return total

    counted = []
    for op in interpreter._get_ops_details():
        out = product(shapes[op["outputs"][0]])
        name = op["op_name"]
        if name == "CONV_2D":
            counted.append(out * product(shapes[op["inputs"][1]][1:]))
        elif name == "DEPTHWISE_CONV_2D":
            counted.append(out * product(shapes[op["inputs"][1]][1:3]))
        elif name == "FULLY_CONNECTED":
            counted.append(out * shapes[op["inputs"][1]][-1])
        else:
            counted.append(0)
    return counted


def test_macs_match_an_independent_count(mlperf_model):
    _, path = mlperf_model
    result = profile(ProfileOptions(str(path), "cortex-m4"))
    assert [op.macs for op in result.ops] == independent_macs(path)
    assert result.total.macs == sum(independent_macs(path))


def test_calibration_points_use_the_counted_macs(mlperf_model):
    """The cycle model's embedded MACs are what tflc counts on the same reference models."""
    name, path = mlperf_model
    point = next(p for p in cyclemodel.POINTS if p.model.startswith(name))
    result = profile(ProfileOptions(str(path), "cortex-m4"))
    by_class = tuple(sum(o.macs for o in result.ops if o.op == c) for c in cyclemodel.CLASSES)
    assert by_class == point.macs
    errors = {row["model"]: row["error"] for row in cyclemodel.calibration_errors()}
    # the estimate for the whole model is the sum of its ops, labelled, with its error stated
    assert result.total.latency_ms == pytest.approx(result.total.sum_op_latency_ms)
    assert "estimate" in result.device and "X-CUBE-AI" in result.details.method
    assert abs(errors[point.model]) < 0.35


def test_sum_of_ops_within_15_percent_of_the_whole_model(mlperf_model):
    _, path = mlperf_model
    result = profile(ProfileOptions(str(path), "cpu"))
    if abs(result.method_error) >= 0.15:  # a shared 2-core machine: measure once more
        result = profile(ProfileOptions(str(path), "cpu"))
    assert all(op.latency_ms is not None for op in result.ops)
    assert abs(result.method_error) < 0.15, (result.total.latency_ms,
                                             result.total.sum_op_latency_ms)


@pytest.mark.parametrize("name", ["kws", "vww"])  # kws: a SOFTMAX vela splits in 27 steps
def test_every_npu_op_carries_vela_cycles(name):
    from tests.conftest import MLPERF_INT8, need_mlperf
    from tflc.profile import vela

    path = need_mlperf(MLPERF_INT8[name])
    result = profile(ProfileOptions(str(path), "ethos-u55-128"))
    on_npu = [op for op in result.ops if op.placement == "target"]
    assert on_npu and all(op.cycles is not None for op in on_npu)
    rows, _ = vela.run_vela(path, "ethos-u55-128")
    assert sum(op.cycles for op in on_npu) == sum(int(r["Op Cycles"]) for r in rows)
    convs = [op for op in on_npu if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert all(op.cycles > 0 for op in convs)
    # vela's own MAC count per conv equals tflc's count
    assert [result.details.vela[op.index]["macs"] for op in convs] == [op.macs for op in convs]


def test_memory_timeline_peak_is_the_planner_arena(mlperf_model):
    _, path = mlperf_model
    plan = plan_memory(read_model(path))
    result = profile(ProfileOptions(str(path), "cortex-m4"))
    assert result.total.peak_arena_bytes == plan.arena_bytes
    used = max(p["used_bytes"] for p in result.details.timeline)
    if plan.limited_by == "final layout":
        assert used == plan.arena_bytes
    else:  # a setup moment (memory planning, a Prepare) needs more than any op's layout
        assert used < plan.arena_bytes and result.details.arena_limited_by == plan.limited_by
    peak = result.details.bottlenecks["peak"]
    assert peak["used_bytes"] == used and peak["tensors"]


def test_json_is_exactly_the_documented_schema(tmp_path):
    from tests.conftest import MLPERF_INT8, need_mlperf

    path = need_mlperf(MLPERF_INT8["ad"])
    out = tmp_path / "p.json"
    done = subprocess.run([*TFLC, "profile", str(path), "-t", "cortex-m4", "--format", "json",
                           "-o", str(out), "--rate", "10", "--battery", "1000@3.7"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert list(data) == ["model", "target", "device", "ops", "total"]
    assert list(data["ops"][0]) == ["index", "subgraph", "op", "placement", "macs", "param_bytes",
                                    "input_bytes", "output_bytes", "arena_live_bytes",
                                    "latency_ms", "cycles", "energy_uj"]
    assert list(data["total"]) == ["macs", "latency_ms", "sum_op_latency_ms", "peak_arena_bytes",
                                   "energy_mj_per_inference", "battery_life_h"]
    # energy and battery by hand from the descriptor's power figures
    from tflc.check import load_target
    from tflc.profile import energy

    power = energy.power_of(load_target("cortex-m4"))
    rest = power.sleep_w if power.sleep_w is not None else (power.idle_w or 0.0)
    latency_s = data["total"]["latency_ms"] / 1000
    assert data["total"]["energy_mj_per_inference"] == pytest.approx(
        latency_s * power.active_w * 1000, rel=1e-4)
    duty = 10 * latency_s
    watts = duty * power.active_w + (1 - duty) * rest
    assert data["total"]["battery_life_h"] == pytest.approx(1.0 * 3.7 / watts, rel=1e-4)


def test_two_models_side_by_side():
    from tests.conftest import MLPERF_INT8, need_mlperf

    a, b = need_mlperf(MLPERF_INT8["ad"]), need_mlperf(MLPERF_INT8["kws"])
    done = subprocess.run([*TFLC, "profile", str(a), str(b), "-t", "cortex-m4"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert f"{a}  vs  {b}" in done.stdout
    kws = profile(ProfileOptions(str(b), "cortex-m4")).total.macs
    ad = profile(ProfileOptions(str(a), "cortex-m4")).total.macs
    assert f"({kws / ad:.2f}x)" in done.stdout


@pytest.mark.parametrize("args, code, words", [
    (["/no/such.tflite", "-t", "cpu"], 2, "no such file"),
    (["{ad}", "-t", "no-such-target"], 2, "unknown target"),
    (["{bad}", "-t", "cpu"], 2, "TFL3"),
    (["{ad}", "-t", "cpu", "--device", "ssh://nobody@127.0.0.1:1"], 1, "unreachable"),
    (["{ad}", "-t", "cpu", "--battery", "lots"], 2, "--battery"),
    (["{ad}", "-t", "cpu", "--python", "/nonexistent/python"], 1, "no Python"),
    (["{ad}", "-t", "cpu", "--rate", "0"], 2, "--rate"),
])
def test_bad_input_is_one_line(tmp_path, args, code, words):
    from tests.conftest import MLPERF_INT8, need_mlperf

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    ad = need_mlperf(MLPERF_INT8["ad"])
    argv = [a.format(ad=ad, bad=bad) for a in args]
    done = subprocess.run([*TFLC, "profile", *argv], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr


def test_profile_and_bench_share_the_runner(tmp_path):
    """profile's timings come from tflc/bench/runner.py (the file bench copies), and a model
    that cannot load in one_process mode is answered as an error while the others are timed."""
    from tests.conftest import MLPERF_INT8, need_mlperf
    from tflc.bench import runner as runner_module

    data = need_mlperf(MLPERF_INT8["ad"]).read_bytes()
    broken = data[:8] + b"\x00" * 32
    medians, response, notes = time_models({"good": data, "broken": broken}, runs=5,
                                           min_duration_s=0.0)
    assert response["runner"]["version"] == runner_module.RUNNER_VERSION
    assert medians["good"] > 0 and medians["broken"] is None
    assert any(n.startswith("broken:") for n in notes)


def test_a_300_op_model_profiles_in_under_a_minute(chain_300):
    started = time.monotonic()
    result = profile(ProfileOptions(str(chain_300), "cpu"))
    seconds = time.monotonic() - started
    assert len(result.ops) == 300 and all(op.latency_ms is not None for op in result.ops)
    assert result.total.latency_ms > 0
    assert seconds < 60, f"{seconds:.1f} s"


def test_profile_imports_no_tensorflow():
    """tflc profile works in the TensorFlow-free core install: nothing it runs imports it."""
    from tests.conftest import MLPERF_INT8, need_mlperf

    path = need_mlperf(MLPERF_INT8["ad"])
    code = ("import sys\nfrom tflc.profile import ProfileOptions, profile, render\n"
            f"for target in ('cpu', 'cortex-m4', 'ethos-u55-128'):\n"
            f"    render([profile(ProfileOptions({str(path)!r}, target, runs=5, "
            "min_duration_s=0.0))], 'html')\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tf_keras', 'keras'))\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]


def test_bottlenecks_name_the_peak_op_and_what_to_change():
    """kws: the first depthwise block holds the arena peak; advice names it and the input."""
    from tests.conftest import MLPERF_INT8, need_mlperf

    result = profile(ProfileOptions(str(need_mlperf(MLPERF_INT8["kws"])), "cortex-m4"))
    found = result.details.bottlenecks
    timeline = result.details.timeline
    peak = max(timeline, key=lambda p: p["used_bytes"])
    assert found["peak"]["index"] == peak["index"] == 1
    assert sum(size for _, size in found["peak"]["tensors"]) == peak["live_bytes"]
    assert any("op #1 DEPTHWISE_CONV_2D" in a and "input resolution" in a
               for a in found["advice"])
    times = [b["latency_ms"] for b in found["by_time"]]
    assert times == sorted((o.latency_ms for o in result.ops), reverse=True)[:3]


def test_every_subgraph_is_profiled(tmp_path):
    """A second subgraph (ad's graph copied, never called): its ops get counts and a time per
    call, and the sum of ops, compared with the whole model, covers the main graph only."""
    import copy

    import flatbuffers

    from tests.conftest import MLPERF_INT8, need_mlperf
    from tflc.profile import cut

    model = cut.unpack(need_mlperf(MLPERF_INT8["ad"]).read_bytes())
    model.subgraphs.append(copy.deepcopy(model.subgraphs[0]))
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "two.tflite"
    path.write_bytes(bytes(builder.Output()))
    result = profile(ProfileOptions(str(path), "cpu", runs=20, min_duration_s=0.0))
    second = [op for op in result.ops if op.subgraph == 1]
    assert len(second) == 10 and all(op.latency_ms is not None and op.macs for op in second
                                     if op.op == "FULLY_CONNECTED")
    main = sum(op.latency_ms for op in result.ops if op.subgraph == 0)
    assert result.total.sum_op_latency_ms == pytest.approx(main, rel=1e-6)


def test_a_profile_is_recorded_and_a_registry_reference_profiles_its_model(tmp_path):
    """`tflc profile` keeps its result in the run registry like check and bench; an artifact id
    names a model as well as a path does."""
    from tests.conftest import MLPERF_INT8, need_mlperf
    from tflc.store.registry import Registry

    path = need_mlperf(MLPERF_INT8["ad"])
    env = dict(os.environ, TFLC_REGISTRY=str(tmp_path / "reg"))
    first = subprocess.run([*TFLC, "profile", str(path), "-t", "cortex-m4", "--format", "json"],
                           capture_output=True, text=True, cwd=REPO, env=env)
    assert first.returncode == 0, first.stderr
    artifact = re.search(r"artifact\s+([0-9a-f]{6,})", first.stderr).group(1)
    rows = Registry(tmp_path / "reg").list(kind="profile")
    assert [r.id for r in rows] == [artifact] and "model.tflite" in rows[0].files
    latency = json.loads(first.stdout)["total"]["latency_ms"]
    assert rows[0].manifest["metrics"]["latency_ms"] == pytest.approx(latency)
    again = subprocess.run([*TFLC, "profile", artifact, "-t", "cortex-m4", "--format", "json"],
                           capture_output=True, text=True, cwd=REPO, env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["total"]["macs"] == json.loads(first.stdout)["total"]["macs"]
