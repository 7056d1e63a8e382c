"""Does the exported package fit the target's RAM and flash, and what to try when it does not?

The lines come from `tflc.check.budget.budget_lines`, the formula `tflc check` uses too, given
the recommended arena (margin included) instead of the static estimate; this module adds the
advice for a package over budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tflc.check.budget import BudgetLine, budget_lines
from tflc.tflite.planner import MemoryPlan
from tflc.tflite.reader import ModelView
from tflc.units import format_bytes


@dataclass
class BudgetReport:
    target: str
    lines: list[BudgetLine] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def within_budget(self) -> bool:
        return all(line.ok for line in self.lines)

    def to_dict(self) -> dict:
        return {"target": self.target, "within_budget": self.within_budget,
                "lines": [line.to_dict() for line in self.lines], "advice": self.advice}

    def summary(self) -> str:
        """One line per budget missed: 'RAM needs 700 KiB of 640 KiB (over by 60 KiB)'."""
        parts = [f"{line.name.upper()} needs {kib(line.needed_bytes)} of {kib(line.budget_bytes)} "
                 f"(over by {kib(line.needed_bytes - line.budget_bytes)})"
                 for line in self.lines if not line.ok]
        return "; ".join(parts)


def kib(n: int) -> str:
    return format_bytes(n, unit="KiB")


def check_budget(view: ModelView, arena_bytes: int, plan: MemoryPlan, target) -> BudgetReport:
    """RAM and flash needs of the package against `target` (a TargetSpec), with advice if over."""
    report = BudgetReport(target.name, budget_lines(
        target.memory, arena_bytes=arena_bytes, model_bytes=view.size_bytes,
        arena_note=" (margin included)", model_what="model array"))
    for line in report.lines:
        if not line.ok:
            report.advice += ram_advice(view, plan) if line.name == "ram" else flash_advice(view)
    return report


def ram_advice(view: ModelView, plan: MemoryPlan) -> list[str]:
    """What shrinks the arena: the activations alive at the peak dominate it."""
    advice = []
    peak = _peak_tensors(plan)
    if peak:
        names = ", ".join(f"{name} ({size} B)" for name, size in peak[:3])
        advice.append(f"the arena peaks where these activations are alive together: {names}; "
                      "fewer channels or an earlier downsampling (stride / pooling) there shrinks it")
    advice.append("a smaller input (lower resolution or a shorter window) shrinks every activation")
    if any(t.dtype == "int16" for t in view.main.tensors if not t.is_constant):
        advice.append("int16 activations (16x8) take twice the RAM of int8: compile with "
                      "--activations int8")
    if any(t.is_float for t in view.main.tensors if not t.is_constant):
        advice.append("float32 activations take four times the RAM of int8: compile to full "
                      "integer int8 (tflc compile)")
    advice.append("or choose a target with more RAM (`tflc targets`)")
    return advice


def flash_advice(view: ModelView) -> list[str]:
    advice = []
    if any(t.is_float for sg in view.subgraphs for t in sg.tensors if t.is_constant):
        advice.append("float32 weights take four times the flash of int8: compile to int8 "
                      "(tflc compile)")
    advice.append("fewer parameters: prune and retrain, then shrink the layers that pruning "
                  "emptied (tflc compile --prune 0.5), or a narrower model")
    advice.append("or choose a target with more flash (`tflc targets`)")
    return advice


def _peak_tensors(plan: MemoryPlan) -> list[tuple[str, int]]:
    """Planned buffers alive at the moment the most bytes are alive, largest first."""
    buffers = [b for b in plan.buffers if b.first_used >= 0]
    if not buffers:
        return []
    times = sorted({b.first_used for b in buffers})
    best = max(times, key=lambda t: sum(b.size for b in buffers if b.first_used <= t <= b.last_used))
    alive = [b for b in buffers if b.first_used <= best <= b.last_used]
    # Converted tensors are often named after every layer fused into them: keep the first.
    return [(b.name.split(";")[0], b.size) for b in sorted(alive, key=lambda b: -b.size)]
