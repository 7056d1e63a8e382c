"""The static arena estimate (tflc.tflite.planner) against TFLite Micro's own figures."""

from __future__ import annotations

import pytest

from tests.export.conftest import README_ARENA, mlperf
from tflc.tflite.planner import PlannedBuffer, greedy_plan, plan_memory, tensor_lifetimes
from tflc.tflite.reader import read_model


def _buffer(i, size, first, last):
    return PlannedBuffer(0, i, f"t{i}", size, first, last)


def test_greedy_plan_reuses_memory_of_dead_tensors():
    # a (0-1) and c (2-3) never live together: c reuses a's offset; b overlaps both.
    a, b, c = _buffer(0, 64, 0, 1), _buffer(1, 32, 1, 2), _buffer(2, 48, 2, 3)
    peak = greedy_plan([a, b, c])
    assert (a.offset, b.offset, c.offset) == (0, 64, 0)
    assert peak == 96


def test_greedy_plan_breaks_size_ties_like_tflite_micro():
    # Equal sizes: TFLite Micro places the buffer added last first (offset 0).
    first, second = _buffer(0, 16, 0, 1), _buffer(1, 16, 0, 1)
    greedy_plan([first, second])
    assert (second.offset, first.offset) == (0, 16)


def test_lifetimes_count_allocation_scopes_and_skip_weights():
    view = read_model(mlperf("ad"))
    buffers = tensor_lifetimes(view)
    by_tensor = {b.tensor: b for b in buffers}
    sg = view.main
    assert not any(sg.tensors[b.tensor].is_constant for b in buffers)
    first_op = sg.operators[0]
    assert by_tensor[sg.inputs[0]].first_used == 0          # inputs exist before op 0
    assert by_tensor[first_op.outputs[0]].first_used == 1   # op i is scope i + 1
    assert by_tensor[sg.outputs[0]].last_used == len(sg.operators)
    assert all(b.size % 16 == 0 for b in buffers)


@pytest.mark.parametrize("name", sorted(README_ARENA))
def test_static_estimate_is_within_one_percent_of_the_readme(name):
    plan = plan_memory(read_model(mlperf(name)))
    assert plan.arena_bytes == pytest.approx(README_ARENA[name], rel=0.01)
    assert plan.approximate_ops == []
    assert plan.head_bytes < plan.arena_bytes
    assert plan.peak_activation_bytes == plan.head_bytes


def test_plan_names_the_phase_that_needs_the_most_memory():
    # The anomaly-detection model's activations are tiny: TFLite Micro's planning scratch
    # (per-tensor records) needs more than the final layout does.
    assert plan_memory(read_model(mlperf("ad"))).limited_by == "memory planning"
    assert plan_memory(read_model(mlperf("vww"))).limited_by == "final layout"


def test_the_cortex_m_arena_is_the_host_arena_less_its_wider_bookkeeping(digits_tflite):
    """A 32-bit MCU's arena: the same tensors (head) with smaller per-tensor and per-op structs."""
    from tflc.tflite.planner import CORTEX_M_32, HOST_64
    from tflc.tflite.reader import read_model

    view = read_model(digits_tflite)
    host, mcu = plan_memory(view, abi=HOST_64), plan_memory(view, abi=CORTEX_M_32)
    sg = view.subgraphs[0]
    struct_savings = ((HOST_64.eval_tensor - CORTEX_M_32.eval_tensor) * len(sg.tensors)
                      + (HOST_64.node_and_registration - CORTEX_M_32.node_and_registration)
                      * len(sg.operators))
    assert mcu.head_bytes == host.head_bytes  # activations do not depend on pointer width
    assert host.persistent_bytes - mcu.persistent_bytes >= struct_savings
    assert 0 < host.arena_bytes - mcu.arena_bytes <= host.persistent_bytes
    assert plan_memory(view).arena_bytes == host.arena_bytes  # the default stays the host's
