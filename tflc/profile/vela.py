"""Ethos-U per-layer estimates from Arm's vela compiler, joined to tflc's op indices.

Why vela: it is the compiler that produces the NPU command stream, and its performance
estimator (`--verbose-performance`, the per-layer CSV) is the figure Arm's own tooling quotes:
cycles, MACs and SRAM/DRAM/flash access cycles per NPU operation. vela splits one TFLite op
into several NPU operations (a CONV_2D and its fused RELU, a SOFTMAX into twenty elementwise
steps) and names each by the tensor it writes, so the join walks the CSV in order and gives
every row to the next op whose output tensor carries the row's name.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tflc.tflite.reader import ModelView

FIELDS = {"Op Cycles": "cycles", "NPU": "npu_cycles", "SRAM AC": "sram_access_cycles",
          "DRAM AC": "dram_access_cycles", "OnFlash AC": "on_flash_access_cycles",
          "OffFlash AC": "off_flash_access_cycles", "MAC Count": "macs"}


def vela_executable() -> str | None:
    beside = Path(sys.executable).with_name("vela")
    return str(beside) if beside.exists() else shutil.which("vela")


def accelerator_of(runtime_version: str, fallback: str) -> str:
    """The accelerator config the descriptor's runtime names ('... accelerator config X')."""
    match = re.search(r"accelerator config ([\w-]+)", runtime_version or "")
    return match.group(1) if match else fallback


def run_vela(model: Path, accelerator: str, timeout_s: float = 600.0) -> tuple[list[dict], str]:
    """vela's per-layer rows (dicts of the CSV) and its system configuration name."""
    vela = vela_executable()
    if vela is None:
        raise FileNotFoundError("vela is not installed (pip install ethos-u-vela==5.2.0)")
    with tempfile.TemporaryDirectory(prefix="tflc-vela-") as scratch:
        argv = [vela, str(model), "--accelerator-config", accelerator, "--output-dir", scratch,
                "--verbose-performance"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        found = sorted(Path(scratch).glob("*_per-layer.csv"))
        if done.returncode != 0 or not found:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"vela failed (exit {done.returncode}): {tail[0]}")
        with open(found[0], newline="") as handle:
            rows = list(csv.DictReader(handle))
    match = re.search(r"System configuration\s+(\S+)", done.stdout)
    return rows, match.group(1) if match else "vela default"


def join(view: ModelView, rows: list[dict]) -> dict[int, dict]:
    """Main-graph op index -> summed vela figures of the rows that belong to it."""
    sg = view.main
    by_name: dict[str, int] = {}
    for op in sg.operators:
        for t in op.outputs:
            if t >= 0:
                by_name.setdefault(sg.tensors[t].name, op.index)
    joined: dict[int, dict] = {}
    pending: list[dict] = []
    for row in rows:
        pending.append(row)
        index = by_name.get(row.get("Name", ""))
        if index is None:
            continue
        figures = joined.setdefault(index, {value: 0 for value in FIELDS.values()})
        for item in pending:
            for column, key in FIELDS.items():
                figures[key] += int(float(item.get(column) or 0))
        pending = []
    return joined
