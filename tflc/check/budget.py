"""Memory needs against a target's budgets: the one formula `tflc check` and `tflc export` share.

RAM holds the tensor arena plus the descriptor's `runtime_overhead_bytes` (stack, interpreter
objects outside the arena); flash holds the model plus `kernel_code_bytes` (runtime, kernels,
application); the parameter cache (Edge TPU SRAM) holds the weights of the ops on the target.
The figures come from the descriptor (`memory:`); nothing here knows a particular board. Check
passes the static arena estimate, export the measured size with its margin: only the numbers
differ, never how they are added up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tflc.check.spec import MemoryBudget


@dataclass
class BudgetLine:
    """One memory figure against one budget of the target."""

    name: str  # "ram", "flash", "parameter_cache"
    needed_bytes: int
    budget_bytes: int
    ok: bool
    what: str  # how `needed_bytes` was computed

    def to_dict(self) -> dict:
        return asdict(self)


def budget_lines(memory: MemoryBudget, *, arena_bytes: int | None, model_bytes: int,
                 parameter_bytes_on_target: int | None = None, arena_note: str = "",
                 model_what: str = "model") -> list[BudgetLine]:
    """A line per budget the target states and the caller has a figure for.

    `arena_note` qualifies the arena ("(margin included)"); `model_what` names what flash holds
    ("model array" in an export). No arena figure (the planner could not estimate one): no RAM
    line, rather than a line that pretends the activations need nothing.
    """
    lines = []
    if memory.ram_bytes is not None and arena_bytes is not None:
        overhead = memory.runtime_overhead_bytes or 0
        lines.append(_line("ram", arena_bytes + overhead, memory.ram_bytes,
                           f"tensor arena {arena_bytes} B{arena_note} + runtime overhead "
                           f"{overhead} B"))
    if memory.flash_bytes is not None:
        code = memory.kernel_code_bytes or 0
        lines.append(_line("flash", model_bytes + code, memory.flash_bytes,
                           f"{model_what} {model_bytes} B + runtime and kernel code {code} B"))
    if memory.parameter_cache_bytes is not None and parameter_bytes_on_target is not None:
        lines.append(_line("parameter_cache", parameter_bytes_on_target,
                           memory.parameter_cache_bytes,
                           "parameters of the ops on the target (beyond the cache they stream "
                           "from host memory on every inference)"))
    return lines


def _line(name: str, needed: int, budget: int, what: str) -> BudgetLine:
    return BudgetLine(name, needed, budget, needed <= budget, what)
