"""report.html: one self-contained file whose front chart a real headless browser draws."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tflc.search import pareto_front
from tflc.search.core import SearchResult
from tflc.search.report import FRONT, OTHER, to_html, to_png

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _result() -> SearchResult:
    rows = []
    for n, (acc, lat, arena, status) in enumerate([(97.0, 0.4, 4000, "complete"),
                                                   (98.5, 0.9, 5000, "complete"),
                                                   (96.0, 0.8, 6000, "complete"),
                                                   (None, None, None, "infeasible"),
                                                   (99.0, 1.6, 9000, "complete")]):
        rows.append({"number": n, "params": {"width_0": 0.5, "qat": n % 2 == 0}, "status": status,
                     "accuracy": acc, "macs": None if acc is None else int(lat * 1e5),
                     "arena_bytes": arena, "flash_bytes": None if acc is None else 9000,
                     "latency_ms": lat, "model": f"t/{n}.tflite",
                     "error": "ram 900,000 B over cortex-m4's 655,360 B" if acc is None else None})
    front = pareto_front(rows)
    return SearchResult({"name": "s"}, {"accuracy": 98.9, "macs": 160000, "latency_ms": 1.56,
                                        "arena_bytes": 9472, "flash_bytes": 15000},
                        ["stage 8x8: 2 scalable"], rows, front, front[0], "2 local workers")


def test_html_is_self_contained_and_lists_every_trial():
    result = _result()
    assert [t["number"] for t in result.pareto] == [0, 1, 4]
    text = to_html(result)
    assert not re.search(r"\b(src|href)\s*=|url\(|@import|<script|<link", text)
    assert text.count('<tr class="pareto">') == 3 and text.count("<tr") == 6  # head + 5 trials
    assert "over cortex-m4" in text  # the infeasible trial's reason
    assert to_png(result)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(Debian: apt-get install -y chromium; .ci/run installs it)")
def test_html_front_chart_renders(tmp_path):
    from PIL import Image

    def shot(html: str, name: str) -> list:
        page = tmp_path / f"{name}.html"
        page.write_text(html)
        out = tmp_path / f"{name}.png"
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--screenshot={out}", "--window-size=1000,900",
                        Path(page).as_uri()], capture_output=True, timeout=120, check=True)
        return list(Image.open(out).convert("RGB").getdata())

    def count(pixels, colour: str) -> int:
        want = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        return sum(1 for p in pixels if all(abs(a - b) <= 10 for a, b in zip(p, want)))

    pixels = shot(to_html(_result()), "report")
    assert count(pixels, FRONT) > 300   # the front's points and line (a white page has none)
    assert count(pixels, OTHER) > 50    # the dominated trial
