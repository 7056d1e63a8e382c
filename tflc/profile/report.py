"""Plain-text tables of a profile, and of several profiles side by side."""

from __future__ import annotations

from tflc.units import format_bytes


def _num(value, spec: str = ".4g") -> str:
    """Integers (MACs, bytes) in full with thousands separators, other numbers to 4 digits."""
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else format(value, spec)


def _bytes(value) -> str:
    return "-" if value is None else format_bytes(value)


def to_text(result) -> str:
    """The per-op table, the totals, the method and its error, bottlenecks and notes."""
    total_ms = result.total.sum_op_latency_ms or 0.0
    lines = [f"model {result.model}  target {result.target}  latency from {result.device}", "",
             f"{'#':>4}  {'op':<22} {'placement':<9} {'MACs':>10} {'params':>10} {'in':>10} "
             f"{'out':>10} {'arena live':>10} {'ms':>9} {'share':>6} {'cycles':>9} {'uJ':>8}"]
    for r in result.ops:
        share = f"{r.latency_ms / total_ms:.1%}" if r.latency_ms is not None and total_ms else "-"
        sub = f"{r.subgraph}:" if r.subgraph else ""
        lines.append(
            f"{sub + str(r.index):>4}  {r.op:<22} {r.placement:<9} {r.macs:>10,} "
            f"{_bytes(r.param_bytes):>10} {_bytes(r.input_bytes):>10} {_bytes(r.output_bytes):>10} "
            f"{_bytes(r.arena_live_bytes):>10} {_num(r.latency_ms):>9} {share:>6} "
            f"{_num(r.cycles, ',') if r.cycles is not None else '-':>9} {_num(r.energy_uj):>8}")
    t, d = result.total, result.details
    lines += ["", f"MACs {t.macs:,}   peak arena {_bytes(t.peak_arena_bytes)}"
              + (f" (limited by {d.arena_limited_by})" if d.arena_limited_by else "")]
    error = result.method_error
    lines.append(f"latency: whole model {_num(t.latency_ms)} ms, sum of ops "
                 f"{_num(t.sum_op_latency_ms)} ms"
                 + (f" (method error {error:+.1%})" if error is not None and d.invoke_overhead_ms
                    is not None else ""))
    if t.energy_mj_per_inference is not None:
        line = f"energy {t.energy_mj_per_inference:.4g} mJ per inference (estimate)"
        if d.average_power_w is not None:
            line += f"; average power {d.average_power_w * 1e3:.4g} mW ({d.duty})"
        if t.battery_life_h is not None:
            line += f"; battery life {t.battery_life_h:,.1f} h"
        lines.append(line)
    lines.append(f"method: {d.method}")
    lines += _bottleneck_lines(d.bottlenecks)
    lines += [f"note: {n}" for n in d.notes]
    return "\n".join(lines)


def _bottleneck_lines(found: dict) -> list[str]:
    if not found:
        return []
    lines = ["", "Bottlenecks:"]
    if found.get("by_time"):
        lines.append("  time:   " + ", ".join(
            f"#{b['index']} {b['op']} {_num(b['latency_ms'])} ms"
            + (f" ({b['share']:.0%})" if b.get("share") else "") for b in found["by_time"]))
    if found.get("by_memory"):
        lines.append("  memory: " + ", ".join(
            f"#{b['index']} {b['op']} {_bytes(b['arena_live_bytes'])} live"
            for b in found["by_memory"]))
    peak = found.get("peak")
    if peak:
        tensors = ", ".join(f"{_short(name)} {_bytes(size)}" for name, size in peak["tensors"][:4])
        lines.append(f"  arena peak {_bytes(peak['used_bytes'])} at #{peak['index']} "
                     f"{peak['op']}; live: {tensors}")
    lines += [f"  - {text}" for text in found.get("advice") or []]
    return lines


def compare_text(results: list) -> str:
    """Several profiles side by side per op index: latency and arena, ratios to the first."""
    width = max(len(results[0].ops), *(len(r.ops) for r in results))
    head = f"{'#':>4}  " + "  ".join(f"{'op':<18} {'ms':>9} {'arena':>9}" for _ in results)
    lines = ["  vs  ".join(r.model for r in results), head]
    for i in range(width):
        cells = []
        for r in results:
            op = r.ops[i] if i < len(r.ops) else None
            cells.append(f"{op.op:<18} {_num(op.latency_ms):>9} {_bytes(op.arena_live_bytes):>9}"
                         if op else f"{'':<18} {'':>9} {'':>9}")
        lines.append(f"{i:>4}  " + "  ".join(cells))
    base = results[0].total
    for label, key in (("latency [ms]", "latency_ms"), ("sum of ops [ms]", "sum_op_latency_ms"),
                       ("MACs", "macs"), ("peak arena [B]", "peak_arena_bytes"),
                       ("energy [mJ]", "energy_mj_per_inference")):
        values = [getattr(r.total, key) for r in results]
        first = getattr(base, key)
        cells = [_num(v) + (f" ({v / first:.2f}x)" if j and v is not None and first else "")
                 for j, v in enumerate(values)]
        lines.append(f"{label:<16} " + "   ".join(cells))
    return "\n".join(lines)


def _short(name: str, width: int = 48) -> str:
    """Converter tensor names join every fused op's name with ';': keep the first part."""
    first = name.split(";")[0]
    return first if len(first) <= width else first[: width - 3] + "..."
