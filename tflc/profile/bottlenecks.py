"""Bottlenecks: the ops that cost the most time and memory, and what to change.

Why the arena peak gets its own line: on a microcontroller the tensor arena, not the weights,
usually decides whether a model fits, and the peak is set by the few activations alive at one
op (in a CNN, the first blocks at full resolution). Naming that op, its live tensors and the
rewrite that shrinks them is the advice a user can act on.
"""

from __future__ import annotations

TOP = 3
CONV_LIKE = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D"}


def _top(rows, key, count=TOP):
    chosen = [r for r in rows if key(r)]
    return sorted(chosen, key=key, reverse=True)[:count]


def bottlenecks(result, view) -> dict:
    """Top ops by time and memory, the op at the arena peak with its live tensors, advice."""
    rows = result.ops
    total = sum(r.latency_ms for r in rows if r.latency_ms) or 0.0
    by_time = [{"index": r.index, "op": r.op, "latency_ms": r.latency_ms,
                "share": round(r.latency_ms / total, 4) if total else None}
               for r in _top(rows, lambda r: r.latency_ms or 0)]
    by_memory = [{"index": r.index, "op": r.op, "arena_live_bytes": r.arena_live_bytes}
                 for r in _top(rows, lambda r: r.arena_live_bytes or 0)]
    found = {"by_time": by_time, "by_memory": by_memory, "peak": None, "advice": []}
    timeline = result.details.timeline
    if timeline:
        peak = max(timeline, key=lambda p: p["used_bytes"])
        found["peak"] = {"index": peak["index"], "op": peak["op"],
                         "used_bytes": peak["used_bytes"],
                         "tensors": sorted(peak["tensors"], key=lambda t: -t[1])}
        found["advice"].extend(_memory_advice(peak, view, len(timeline)))
    if by_time and by_time[0]["share"] and by_time[0]["share"] > 0.3:
        first = by_time[0]
        found["advice"].append(
            f"op #{first['index']} {first['op']} takes {first['share']:.0%} of the time: fewer "
            "filters there, or a depthwise-separable block instead of a full convolution")
    return found


def _memory_advice(peak: dict, view, count: int) -> list[str]:
    sg = view.main
    op = sg.operators[peak["index"]]
    advice = []
    outputs = [sg.tensors[t] for t in op.outputs if t >= 0]
    shape = outputs[0].shape if outputs else ()
    early = peak["index"] < max(1, count // 3)
    if op.op in CONV_LIKE and len(shape) == 4:
        advice.append(
            f"the arena peak is at op #{op.index} {op.op} (output {list(shape)}): narrow that "
            f"layer (fewer than {shape[3]} channels shrinks this activation proportionally)"
            + ("; it is in the first blocks, so lowering the input resolution (halving H and W "
               "quarters these activations) helps most" if early else ""))
    else:
        advice.append(f"the arena peak is at op #{op.index} {op.op}: the tensors live there "
                      "set the arena; shrink the largest of them")
    return advice
