"""`tflc export --input-guard`: the MCU input guard's C compiles with gcc -Wall -Wextra -Werror,
and its counters and alarm, run by a small C driver on real digits samples, equal what the
calibration profile's numbers say they must be (computed here with numpy)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from tflc.cli import main
from tflc.errors import BadInput
from tflc.export import export_c

WARNINGS = ["-Wall", "-Wextra", "-Werror", "-pedantic"]

DRIVER = r"""
#include <stdio.h>
#include "digits_input_guard.h"

int main(void) {
  int8_t sample[DIGITS_INPUT0_VALUES];
  digits_InputGuard guard;
  digits_InputGuard_Reset(&guard);
  while (fread(sample, 1, sizeof(sample), stdin) == sizeof(sample)) {
    int alarm = digits_InputGuard_Check0(&guard, sample);
    printf("%u %u %u %u %d %u\n", (unsigned)guard.samples[0], (unsigned)guard.saturated_low[0],
           (unsigned)guard.saturated_high[0], (unsigned)guard.out_of_range[0], alarm,
           (unsigned)guard.alarms[0]);
  }
  return 0;
}
"""


def expected(profile: dict, q: np.ndarray) -> list:
    """The counters after each sample, from the profile's numbers."""
    entry = profile["inputs"][0]
    low = np.array(entry["features"]["low"])
    high = np.array(entry["features"]["high"])
    window = profile["drift"]["window"]
    limit = entry["at_limits_rate"] + profile["drift"]["thresholds"]["at_limits_increase"]
    rows, totals, alarm, alarms, in_window = [], np.zeros(3, dtype=int), 0, 0, []
    for i, x in enumerate(q.reshape(len(q), -1), 1):
        totals += [(x <= -128).sum(), (x >= 127).sum(), ((x < low) | (x > high)).sum()]
        in_window.append(int((x <= -128).sum() + (x >= 127).sum()))
        if len(in_window) == window:
            alarm = int(sum(in_window) * 1_000_000 > round(limit * 1_000_000) * window * x.size)
            alarms += alarm
            in_window = []
        rows.append([i, *totals.tolist(), alarm, alarms])
    return rows


def test_the_input_guard_compiles_and_counts(digits_compiled, digits_dir, tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (apt-get install gcc; .ci/run does this)")
    report, out = digits_compiled
    pkg = tmp_path / "pkg"
    exported = export_c(out / "model.tflite", pkg, name="digits", measure=False, verify=False,
                        input_guard=True)
    assert {"digits_input_guard.h", "digits_input_guard.c"} <= set(exported.files)
    assert exported.input_guard["window"] == json.loads((out / "profile.json").read_text())[
        "drift"]["window"]
    (tmp_path / "driver.c").write_text(DRIVER)
    build = subprocess.run([gcc, *WARNINGS, "-std=c99", f"-I{pkg}", str(pkg / "digits_input_guard.c"),
                            str(tmp_path / "driver.c"), "-o", str(tmp_path / "driver")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    profile = json.loads((out / "profile.json").read_text())
    scale, zero = report.inputs[0]["scale"], report.inputs[0]["zero_point"]
    x = np.load(digits_dir / "eval.npz")["x"][:128]
    stream = np.concatenate([x[:64], 1.6 * x[64:]])  # a gain error: values clip at the top
    q = np.clip(np.round(stream / scale) + zero, -128, 127).astype(np.int8)
    run = subprocess.run([str(tmp_path / "driver")], input=q.tobytes(), capture_output=True)
    assert run.returncode == 0
    got = [[int(v) for v in line.split()] for line in run.stdout.decode().splitlines()]
    want = expected(profile, q)
    assert got == want
    assert got[63][5] == 0 and got[-1][5] >= 1  # no alarm in distribution, then one
    assert got[-1][2] > got[63][2] and got[-1][3] > got[63][3]  # saturated high, out of range


def test_the_input_guard_needs_a_profile_of_this_model(digits_compiled, digits_16x8, tmp_path):
    _, out = digits_compiled
    with pytest.raises(BadInput, match="belongs to another model"):
        export_c(out / "model.tflite", tmp_path / "a", name="digits", measure=False,
                 verify=False, input_guard=True, profile=digits_16x8 / "profile.json")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(out / "model.tflite", lone / "model.tflite")
    result = CliRunner().invoke(main, ["export", str(lone / "model.tflite"), "-o",
                                       str(tmp_path / "b"), "--input-guard", "--no-measure",
                                       "--no-verify"])
    assert result.exit_code == 2 and "no calibration profile" in result.output
    assert not (tmp_path / "b").exists()
