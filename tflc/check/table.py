"""The human-readable `tflc check` report: a summary in edgetpu_compiler's spirit, then details."""

from __future__ import annotations

from tflc.units import format_bytes


def _size(n: int | None) -> str:
    return format_bytes(n, digits=2)


def render_table(result) -> str:
    lines = [
        f"Model:   {result.model}",
        f"Target:  {result.target} - {result.target_title}",
        f"Runtime: {result.runtime}",
        "",
        f"{'Operator':<30} {'Count':<6} Status",
    ]
    for row in result.operator_table():
        lines.append(f"{row['op']:<30} {row['count']:<6} {row['status']}")
    off = [v for v in result.ops if v.placement != "target"]
    if off:
        lines += ["", f"{'#':>4}  {'op':<24} {'placement':<9} reasons"]
        for v in off:
            index = f"{v.index}" if v.subgraph == 0 else f"{v.subgraph}:{v.index}"
            reasons = [r.text for r in v.reasons] or ["-"]
            lines.append(f"{index:>4}  {v.op:<24} {v.placement:<9} {reasons[0]}")
            lines += [f"{'':>4}  {'':<24} {'':<9} {r}" for r in reasons[1:]]
    mem = result.memory
    lines += [
        "",
        f"{result.ops_on_target} of {result.ops_total} ops on {result.target} "
        f"({result.coverage:.0%}), {result.segments} segment(s)"
        + ("" if result.runs else f"; the model cannot run on {result.target} as it is"),
        f"Parameters {_size(mem.parameter_bytes)} ({_size(mem.parameter_bytes_on_target)} on the "
        f"target), peak activations {_size(mem.peak_activation_bytes)}, "
        f"arena {_size(mem.arena_bytes)}, file {_size(mem.model_bytes)}",
    ]
    for b in mem.budgets:
        verdict = "ok" if b.ok else "OVER BUDGET"
        lines.append(f"  {b.name:<16} {_size(b.needed_bytes):>12} of {_size(b.budget_bytes):>12}  "
                     f"{verdict}  ({b.what})")
    lines += [f"  note: {n}" for n in mem.notes]
    lines += [f"I/O: {issue}" for issue in result.io_issues]
    lines += [f"note: {n}" for n in result.notes]
    lines += _compiled_lines(result.compiled)
    if result.advice:
        lines += ["", "Advice:"]
        for a in result.advice:
            ops = ", ".join(f"#{i}" for i in a.ops)
            lines.append(f"  - ({ops}) {a.text}")
    return "\n".join(lines)


def _compiled_lines(compiled: dict | None) -> list[str]:
    """A model compiled ahead of time: what each dispatch op holds."""
    if not compiled:
        return []
    dispatch = compiled["dispatch"]
    held = sum(d["op_count"] for d in dispatch)
    lines = ["", f"Compiled ahead of time for {compiled['manufacturer']} {compiled['soc']}: "
             f"{len(dispatch)} DISPATCH_OP(s) run {held} op(s) of the original model on the NPU"]
    for d in dispatch:
        kinds = sorted({k for node in d["nodes"] for k in node})
        lines.append(f"  #{d['index']} {d['name']}: {d['op_count']} op(s) "
                     f"({', '.join(kinds) or 'QNN nodes not named'}), context binary "
                     f"{_size(d['bytecode_bytes'])}")
    return lines


def render_vocabulary(constraints) -> str:
    """`tflc targets constraints`: each constraint's signature, then the sentence users see."""
    lines = [
        "Constraints a descriptor can name, as `- name` or `- {name: {param: value}}`; {braces} in",
        "a sentence are filled from the parameters and from what the operator has.",
    ]
    for c in constraints:
        lines += ["", c.signature(), f"    {c.message}"]
    return "\n".join(lines)
