"""Energy per inference, average power at a duty cycle, and battery life.

Why here and not in bench: bench's estimate is power x mean latency for the whole model; a
profile spreads it over ops and adds what a battery-powered device spends between inferences
(idle or sleep), which for a sensor waking a few times a second is most of the budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tflc.errors import BadInput


@dataclass(frozen=True)
class Power:
    """Watts while inferring, idle and asleep (None where the descriptor gives none)."""

    active_w: float | None
    idle_w: float | None
    sleep_w: float | None
    source: str


def power_of(spec) -> Power:
    """The descriptor's `power:` block when it has one, else `device.active_power_w`.

    Read defensively: `power` is a newer descriptor field, a mapping or an object.
    """
    block = getattr(spec, "power", None)
    if block is not None:
        get = block.get if isinstance(block, dict) else (lambda key: getattr(block, key, None))
        if get("active_w") is not None:
            return Power(get("active_w"), get("idle_w"), get("sleep_w"),
                         f"descriptor {spec.name}: power")
    device = getattr(spec, "device", None)
    active = getattr(device, "active_power_w", None) if device is not None else None
    return Power(active, None, None, f"descriptor {spec.name}: device.active_power_w")


def parse_battery(text: str) -> tuple[float, float]:
    """'1000@3.7' or '1000mAh@3.7V' -> (mAh, volts); anything else is bad input."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(?:mah)?\s*@\s*([0-9.]+)\s*v?\s*", text or "", re.I)
    try:
        mah, volts = (float(match.group(1)), float(match.group(2))) if match else (0.0, 0.0)
    except ValueError:
        mah = volts = 0.0
    if not (mah > 0 and volts > 0) or mah > 1e7 or volts > 1000:
        raise BadInput(f"--battery {text!r}: expected MAH@V with positive numbers, e.g. 1000@3.7")
    return mah, volts


def average_power_w(power: Power, latency_ms: float, rate: float | None) -> tuple[float | None, str]:
    """Mean power at `rate` inferences per second (continuous inference without a rate)."""
    if power.active_w is None:
        return None, "no power figure in the descriptor"
    if not rate:
        return power.active_w, "continuous inference"
    duty = rate * latency_ms / 1000.0
    rest = power.sleep_w if power.sleep_w is not None else power.idle_w
    if duty >= 1.0:
        return power.active_w, f"{rate:g}/s cannot be met: one inference takes {latency_ms:.3g} ms"
    if rest is None:
        return duty * power.active_w, (f"duty cycle {duty:.2%}; no idle or sleep power known: "
                                       "the time between inferences counts as 0 W")
    kind = "sleep" if power.sleep_w is not None else "idle"
    return duty * power.active_w + (1 - duty) * rest, f"duty cycle {duty:.2%}, {kind} between"


def battery_life_h(battery: tuple[float, float] | None, watts: float | None) -> float | None:
    if battery is None or not watts:
        return None
    mah, volts = battery
    return mah / 1000.0 * volts / watts
