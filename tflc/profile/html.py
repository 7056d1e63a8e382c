"""A self-contained HTML report: per-op time chart, memory timeline with its peak, the table.

Why inline SVG and no script: the file is opened from a disk, a CI artifact or an e-mail, often
offline; with no network asset and no JavaScript it renders the same everywhere, and a headless
browser test can check that the charts are drawn.
"""

from __future__ import annotations

from html import escape

from tflc.profile.report import to_text

BAR = "#3b6fb6"
PEAK = "#d62728"
MEMORY = "#6a9f58"
WIDTH, HEIGHT = 900, 220


def _bars(values: list[float], color: str, marked: int | None = None,
          line_at: float | None = None) -> str:
    """One bar per op, scaled to the largest; the `marked` bar in the peak colour; a dashed
    line at `line_at` (the planned arena)."""
    top = max(max(values, default=0), line_at or 0) or 1.0
    step = WIDTH / max(len(values), 1)
    parts = []
    for i, value in enumerate(values):
        height = max(2.0, (HEIGHT - 20) * value / top) if value else 0
        fill = PEAK if i == marked else color
        parts.append(f'<rect x="{i * step + 1:.1f}" y="{HEIGHT - height:.1f}" '
                     f'width="{max(step - 2, 1):.1f}" height="{height:.1f}" fill="{fill}">'
                     f"<title>#{i}: {value:g}</title></rect>")
    if line_at:
        y = HEIGHT - (HEIGHT - 20) * line_at / top
        parts.append(f'<line x1="0" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}" stroke="{PEAK}" '
                     'stroke-width="3" stroke-dasharray="8 4"/>')
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#f7f7f7"/>' + "".join(parts)
            + "</svg>")


def _table(result) -> str:
    cols = ["index", "subgraph", "op", "placement", "macs", "param_bytes", "input_bytes",
            "output_bytes", "arena_live_bytes", "latency_ms", "cycles", "energy_uj"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(getattr(op, c)))}</td>" for c in cols)
                   + "</tr>" for op in result.ops)
    return f'<table id="ops"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def section(result) -> str:
    """One model's charts and table."""
    times = [op.latency_ms or 0.0 for op in result.ops if op.subgraph == 0]
    used = [p["used_bytes"] for p in result.details.timeline]
    peak = max(range(len(used)), key=used.__getitem__) if used else None
    return (f"<section><h2>{escape(result.model)} on {escape(result.target)}</h2>"
            f"<p>latency from {escape(result.device)}; whole model "
            f"{escape(str(result.total.latency_ms))} ms, sum of ops "
            f"{escape(str(result.total.sum_op_latency_ms))} ms; peak arena "
            f"{escape(str(result.total.peak_arena_bytes))} B</p>"
            f'<h3>Time per op [ms]</h3><div id="time-chart">{_bars(times, BAR)}</div>'
            f'<h3>Arena in use per op [B] (peak in red, dashed: the planned arena)</h3>'
            f'<div id="memory-chart">{_bars(used, MEMORY, peak, result.total.peak_arena_bytes)}'
            "</div>"
            f"<h3>Per op</h3>{_table(result)}"
            f"<h3>Summary</h3><pre>{escape(to_text(result))}</pre></section>")


def to_html(results: list) -> str:
    """The whole report for one or several profiles, as one HTML document."""
    style = ("body{font-family:sans-serif;margin:16px}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "pre{font-size:11px;background:#f4f4f4;padding:8px;overflow:auto}")
    body = "".join(section(r) for r in results)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>tflc profile</title>'
            f"<style>{style}</style></head><body><h1>tflc profile</h1>{body}</body></html>\n")
