"""The measured arena: bisection in the real tflite-micro interpreter, margin, and failures."""

from __future__ import annotations

import pytest

from tests.export.conftest import README_ARENA, mlperf, with_op_code
from tflc.export.arena import allocates, arena_figures, measure_arena, render_arena_header
from tflc.tflite.planner import plan_memory
from tflc.tflite.reader import read_model

pytest.importorskip("tflite_micro")


@pytest.mark.parametrize("name", sorted(README_ARENA))
def test_measured_arena_matches_the_readme_and_the_static_estimate(name):
    model = mlperf(name).read_bytes()
    plan = plan_memory(read_model(model))
    measured = measure_arena(model, hint=plan.arena_bytes)
    assert measured.minimum_bytes == pytest.approx(README_ARENA[name], rel=0.01)
    # It really is the minimum: TFLite Micro allocates there and not one byte below.
    assert allocates(model, measured.minimum_bytes)[0]
    assert not allocates(model, measured.minimum_bytes - 1)[0]
    # The contract is 10%; the planner replays TFLite Micro's allocator, so it is exact for
    # these ops. A mismatch here means tflite-micro changed: recalibrate planner.KERNEL_COSTS.
    assert plan.arena_bytes == pytest.approx(measured.minimum_bytes, rel=0.10)
    assert plan.arena_bytes == measured.minimum_bytes
    assert measured.probes == 2  # the search starts at the (exact) estimate


def test_measurement_does_not_depend_on_the_hint():
    model = mlperf("kws").read_bytes()
    expected = measure_arena(model, hint=plan_memory(read_model(model)).arena_bytes).minimum_bytes
    assert measure_arena(model, hint=1000).minimum_bytes == expected
    assert measure_arena(model, hint=10 * expected).minimum_bytes == expected


def test_figures_add_a_stated_margin_and_compare_with_the_estimate():
    model = mlperf("ic").read_bytes()
    figures = arena_figures(model, plan_memory(read_model(model)))
    assert figures.basis == "measured"
    assert figures.margin_bytes >= 1024
    assert figures.recommended_bytes >= figures.measured_bytes + figures.margin_bytes
    assert figures.recommended_bytes % 16 == 0
    assert figures.estimate_error == 0.0
    header = render_arena_header(figures, "ic")
    assert f"#define IC_TENSOR_ARENA_SIZE {figures.recommended_bytes}" in header
    assert str(figures.measured_bytes) in header


def test_without_tflite_micro_the_estimate_is_used(monkeypatch):
    import tflc.export.arena as arena

    monkeypatch.setattr(arena, "tflm_runtime", lambda: None)
    model = mlperf("ad").read_bytes()
    figures = arena.arena_figures(model, plan_memory(read_model(model)))
    assert figures.basis == "estimated" and figures.measured_bytes is None
    assert figures.recommended_bytes > figures.estimated_bytes
    assert any("not installed" in note for note in figures.notes)


def test_a_model_tflite_micro_cannot_load_is_bad_input_naming_it(tmp_path):
    from tflc.errors import BadInput

    broken = with_op_code(mlperf("ad"), "LOCAL_RESPONSE_NORMALIZATION", tmp_path / "lrn.tflite")
    with pytest.raises(BadInput, match="lrn.tflite: TFLite Micro cannot set up .*LOCAL_RESPONSE"):
        measure_arena(broken.read_bytes(), hint=8192, name=str(broken))


@pytest.mark.parametrize("variant", ["int8", "float_io"])
def test_static_estimate_is_exact_beyond_mlperf(mixed_ops_models, variant):
    model = mixed_ops_models[variant].read_bytes()
    view = read_model(model)
    assert {"TRANSPOSE_CONV", "MEAN", "PAD", "CONCATENATION", "MUL", "LOGISTIC"} <= view.op_set()
    plan = plan_memory(view)
    assert plan.approximate_ops == []
    assert plan.arena_bytes == measure_arena(model, hint=plan.arena_bytes).minimum_bytes
