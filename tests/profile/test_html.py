"""The HTML report, rendered by a real headless browser (Debian's chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MLPERF_INT8, need_mlperf
from tflc.profile import ProfileOptions, html, profile, render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def _screenshot(page: Path, out: Path) -> None:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={out}", "--window-size=1000,800", page.as_uri()],
                   capture_output=True, timeout=120, check=True)


def test_the_report_has_no_network_assets():
    result = profile(ProfileOptions(str(need_mlperf(MLPERF_INT8["ad"])), "cortex-m4"))
    text = render([result], "html")
    assert not re.search(r"\b(src|href)\s*=|url\(|@import|<script|<link", text)
    assert len(re.findall(r"<rect ", text)) > 2 * len(result.ops)  # one bar per op per chart


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(Debian: apt-get install -y chromium; .ci/run installs it)")
def test_the_report_renders_with_charts_that_are_not_blank(tmp_path):
    from PIL import Image

    result = profile(ProfileOptions(str(need_mlperf(MLPERF_INT8["kws"])), "cortex-m4"))
    page = tmp_path / "report.html"
    page.write_text(render([result], "html"))
    shot = tmp_path / "shot.png"
    _screenshot(page, shot)
    pixels = list(Image.open(shot).convert("RGB").getdata())

    def count(color: str) -> int:
        want = _rgb(color)
        return sum(1 for p in pixels if all(abs(a - b) <= 8 for a, b in zip(p, want)))

    assert count(html.BAR) > 5000      # the per-op time chart has its bars
    assert count(html.MEMORY) > 5000   # the memory timeline has its bars
    assert count(html.PEAK) > 2000     # the peak bar and the planned-arena line
    # a blank page (the same browser, no charts) has none of them
    empty = tmp_path / "empty.html"
    empty.write_text("<!DOCTYPE html><html><body><p>no charts</p></body></html>")
    _screenshot(empty, tmp_path / "empty.png")
    blank = list(Image.open(tmp_path / "empty.png").convert("RGB").getdata())
    assert not any(all(abs(a - b) <= 8 for a, b in zip(p, _rgb(html.BAR))) for p in blank)
