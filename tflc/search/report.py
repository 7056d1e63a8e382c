"""The search's outputs for people: the Pareto table, `pareto.png`, and a self-contained
`report.html` (inline SVG scatter of every trial, the front in red, the seed as a star; a table
of every trial's settings and results; no script, no network asset)."""

from __future__ import annotations

import json
from html import escape

FRONT = "#d62728"
OTHER = "#8a8a8a"
SEED = "#1f77b4"
W, H, PAD = 760, 380, 56


def _lat(row) -> float | None:
    return row.get("latency_ms") if row.get("latency_ms") is not None else None


def table(result) -> str:
    """The Pareto front as text, with each point's ratios to the seed."""
    seed = result.seed or {}
    lines = [f"{'trial':>5}  {'int8 acc':>8}  {'vs seed':>7}  {'MACs':>10}  {'xseed':>5}  "
             f"{'arena':>9}  {'flash':>9}  {'latency':>10}  params"]
    for row in result.pareto:
        drop = (row["accuracy"] - seed["accuracy"]) if seed.get("accuracy") is not None else None
        ratio = (row["macs"] / seed["macs"]) if seed.get("macs") else None
        mark = " *" if result.recommended and result.recommended["number"] == row["number"] else ""
        lines.append(
            f"{row['number']:>5}  {row['accuracy']:>7.2f}%  "
            f"{'' if drop is None else f'{drop:+.2f}':>7}  {row['macs']:>10,}  "
            f"{'' if ratio is None else f'{ratio:.2f}':>5}  {row['arena_bytes']:>8,}B  "
            f"{row['flash_bytes']:>8,}B  {_ms(row.get('latency_ms')):>10}  "
            f"{_params(row['params'])}{mark}")
    if seed:
        lines.append(f"{'seed':>5}  {_pct(seed.get('accuracy')):>8}  {'':>7}  "
                     f"{seed.get('macs') or 0:>10,}  {'1.00':>5}  {seed.get('arena_bytes') or 0:>8,}B  "
                     f"{seed.get('flash_bytes') or 0:>8,}B  {_ms(seed.get('latency_ms')):>10}")
    return "\n".join(lines)


def _params(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.4g} ms"


def _points(result):
    done = [t for t in result.trials if t["status"] == "complete" and t.get("accuracy") is not None]
    front = {t["number"] for t in result.pareto}
    return done, front


def to_png(result) -> bytes | None:
    """Accuracy against latency (MACs where no latency), every complete trial; None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io

    done, front = _points(result)
    key = "latency_ms" if all(_lat(t) is not None for t in done) and done else "macs"
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    others = [t for t in done if t["number"] not in front]
    ax.scatter([t[key] for t in others], [t["accuracy"] for t in others], c=OTHER,
               label="trial", s=28)
    fr = sorted((t for t in done if t["number"] in front), key=lambda t: t[key])
    ax.plot([t[key] for t in fr], [t["accuracy"] for t in fr], "-o", c=FRONT,
            label="Pareto front", ms=6)
    for t in done:
        ax.annotate(str(t["number"]), (t[key], t["accuracy"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    seed = result.seed or {}
    if seed.get("accuracy") is not None and seed.get(key) is not None:
        ax.scatter([seed[key]], [seed["accuracy"]], marker="*", s=160, c=SEED, label="seed")
    ax.set_xlabel("latency [ms] (" + str(seed.get("latency_source", "estimate")) + ")"
                  if key == "latency_ms" else "MACs")
    ax.set_ylabel("int8 accuracy [%]")
    ax.set_title("tflc search: accuracy against latency (arena in the table)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _svg(result) -> str:
    done, front = _points(result)
    seed = result.seed or {}
    key = "latency_ms" if done and all(_lat(t) is not None for t in done) else "macs"
    xs = [t[key] for t in done] + ([seed[key]] if seed.get(key) is not None else [])
    ys = [t["accuracy"] for t in done] + ([seed["accuracy"]] if seed.get("accuracy") is not None
                                          else [])
    if not xs:
        return '<p id="no-points">no complete trial yet</p>'
    x0, x1 = 0.0, max(xs) * 1.08 or 1.0
    y0, y1 = min(ys) - 1.0, max(ys) + 1.0

    def px(x):
        return PAD + (W - 2 * PAD) * (x - x0) / (x1 - x0)

    def py(y):
        return H - PAD - (H - 2 * PAD) * (y - y0) / ((y1 - y0) or 1.0)

    parts = [f'<rect width="{W}" height="{H}" fill="#fafafa"/>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>',
             f'<text x="{W / 2}" y="{H - 14}" text-anchor="middle" font-size="13">'
             f'{"latency [ms]" if key == "latency_ms" else "MACs"}</text>',
             f'<text x="16" y="{H / 2}" font-size="13" transform="rotate(-90 16 {H / 2})" '
             'text-anchor="middle">int8 accuracy [%]</text>']
    for frac in (0.0, 0.5, 1.0):
        xv, yv = x0 + frac * (x1 - x0), y0 + frac * (y1 - y0)
        parts.append(f'<text x="{px(xv):.1f}" y="{H - PAD + 16}" font-size="11" '
                     f'text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{PAD - 6}" y="{py(yv) + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{yv:.1f}</text>')
    fr = sorted((t for t in done if t["number"] in front), key=lambda t: t[key])
    if len(fr) > 1:
        path = " ".join(f"{px(t[key]):.1f},{py(t['accuracy']):.1f}" for t in fr)
        parts.append(f'<polyline class="front" points="{path}" fill="none" stroke="{FRONT}" '
                     'stroke-width="2"/>')
    for t in done:
        colour = FRONT if t["number"] in front else OTHER
        parts.append(f'<circle class="trial" cx="{px(t[key]):.1f}" cy="{py(t["accuracy"]):.1f}" '
                     f'r="6" fill="{colour}"><title>trial {t["number"]}: {t["accuracy"]:.2f}%, '
                     f'{t[key]:.4g}</title></circle>')
    if seed.get(key) is not None and seed.get("accuracy") is not None:
        parts.append(f'<text class="seed" x="{px(seed[key]):.1f}" y="{py(seed["accuracy"]) + 6:.1f}" '
                     f'font-size="22" fill="{SEED}" text-anchor="middle">&#9733;<title>seed</title>'
                     "</text>")
    return (f'<svg id="front-chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


def to_html(result, png: bytes | None = None) -> str:
    cols = ["number", "status", "accuracy", "macs", "arena_bytes", "flash_bytes", "latency_ms",
            "params", "error"]
    front = {t["number"] for t in result.pareto}
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = []
    for t in result.trials:
        cells = []
        for c in cols:
            value = t.get(c)
            text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else (
                "" if value is None else str(value))
            cells.append(f"<td>{escape(text)}</td>")
        cls = ' class="pareto"' if t["number"] in front else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    rec = result.recommended
    rec_html = ("<p>no complete trial: nothing to recommend</p>" if rec is None else
                f"<p id=\"recommended\">recommended: trial {rec['number']} "
                f"({escape(_pct(rec['accuracy']))}, {rec['macs']:,} MACs, arena "
                f"{rec['arena_bytes']:,} B, {escape(_ms(rec.get('latency_ms')))}): "
                f"{escape(_params(rec['params']))}</p>")
    style = ("body{font-family:sans-serif;margin:16px}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "tr.pareto td{background:#fde8e8}pre{font-size:11px;background:#f4f4f4;padding:8px}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>tflc search</title>'
            f"<style>{style}</style></head><body><h1>tflc search</h1>"
            f"<p>study {escape(str(result.study.get('name')))} on "
            f"{escape(result.executor)}; space: {escape('; '.join(result.space))}</p>"
            f"{rec_html}<h2>Pareto front</h2>{_svg(result)}"
            f"<pre>{escape(table(result))}</pre>"
            f'<h2>Every trial</h2><table id="trials"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></body></html>\n")
