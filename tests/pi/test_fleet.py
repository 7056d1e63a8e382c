"""A fleet of two emulated Pis: the logins `pi` and `pi2` into the same aarch64 userland, each
with its own Python (`?python=`): tflite-runtime 2.14 on numpy 1.24 and ai-edge-litert."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TFLC = Path(sys.executable).with_name("tflc")


def test_two_emulated_pis_in_one_table(tiny_models, emulated_pi, tmp_path):
    out = tmp_path / "fleet.json"
    first = emulated_pi.url("pi", "tflite_runtime")
    second = emulated_pi.url("pi2", "litert")
    done = subprocess.run(
        [str(TFLC), "bench", str(tiny_models["int8"]), "--device", first, "--device", second,
         "--ssh-config", str(emulated_pi.config), "--runs", "3", "--warmup", "1",
         "--eval-data", str(tiny_models["eval"]), "--timeout", "300", "-o", str(out)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for line, user, runtime in ((lines[0], "pi", "tflite_runtime 2.14.0"),
                                (lines[1], "pi2", "ai_edge_litert 2.3.0")):
        assert line.startswith(f"D{1 if user == 'pi' else 2} ssh://{user}@127.0.0.1:"), line
        assert "aarch64 (emulated)" in line and "python 3.11" in line and runtime in line
    assert lines[2].split() == ["D1", "D2"]
    agreement = next(line for line in lines if line.startswith("agreement with host"))
    assert agreement.split()[-2:] == ["1", "1"]
    assert any(line.startswith("warning: D1: emulated:") for line in lines)
    assert any(line.startswith("warning: D2: emulated:") for line in lines)
    data = json.loads(out.read_text())
    devices = data["devices"]
    assert [d["device"] for d in devices] == [first.split("?")[0], second.split("?")[0]]
    assert [d["records"][0]["device_facts"]["numpy"][:2] for d in devices] == ["1.", "2."]
    assert devices[0]["records"][0]["output_sha256"] == devices[1]["records"][0]["output_sha256"]
    windows = [(d["records"][0]["conditions"]["before"]["time"],
                d["records"][0]["conditions"]["after"]["time"]) for d in devices]
    assert windows[0][0] < windows[1][1] and windows[1][0] < windows[0][1], windows
