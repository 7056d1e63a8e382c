"""Energy: the descriptor's power block, duty cycles and battery life, checked by hand."""

from __future__ import annotations

import pytest

from tests.conftest import MLPERF_INT8, need_mlperf
from tflc.check import load_target
from tflc.errors import BadInput
from tflc.profile import ProfileOptions, energy, profile

BOARD = """\
extends: cortex-m4
title: test board with a measured power budget
power: {active_w: 0.05, idle_w: 0.01, sleep_w: 0.0001}
provenance:
  - {source: "this test", version: "1", covers: "power"}
"""


def test_power_block_gives_duty_cycle_power_and_battery_life(tmp_path):
    board = tmp_path / "board.yaml"
    board.write_text(BOARD)
    spec = load_target(board)
    assert (spec.power.active_w, spec.power.idle_w, spec.power.sleep_w) == (0.05, 0.01, 0.0001)
    result = profile(ProfileOptions(str(need_mlperf(MLPERF_INT8["kws"])), str(board), rate=2.0,
                                    battery="1000@3.7"))
    latency_s = result.total.latency_ms / 1000
    assert result.total.energy_mj_per_inference == pytest.approx(latency_s * 0.05 * 1000,
                                                                 rel=1e-4)
    duty = 2.0 * latency_s
    watts = duty * 0.05 + (1 - duty) * 0.0001  # asleep between inferences
    assert result.details.average_power_w == pytest.approx(watts)
    assert result.total.battery_life_h == pytest.approx(3.7 / watts, rel=1e-4)
    assert sum(op.energy_uj for op in result.ops) == pytest.approx(
        result.total.energy_mj_per_inference * 1000, rel=1e-3)


def test_shipped_descriptors_carry_power_with_provenance():
    for name in ("cortex-m4", "raspberry-pi-4"):
        spec = load_target(name)
        assert spec.power.active_w and spec.power.idle_w
        assert any("power" in (p.covers or "") for p in spec.provenance)


def test_a_rate_the_device_cannot_meet_is_said():
    power = energy.Power(0.05, 0.01, None, "test")
    watts, why = energy.average_power_w(power, latency_ms=100.0, rate=20.0)
    assert watts == 0.05 and "cannot be met" in why


@pytest.mark.parametrize("text", ["1000", "@3.7", "-5@3.7", "1000@0", "abc@def", "1e9@3"])
def test_bad_battery_is_refused(text):
    with pytest.raises(BadInput, match="--battery"):
        energy.parse_battery(text)


def test_battery_forms():
    assert energy.parse_battery("1000@3.7") == (1000.0, 3.7)
    assert energy.parse_battery("2500mAh@3.3V") == (2500.0, 3.3)
