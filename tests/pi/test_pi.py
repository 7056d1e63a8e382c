"""The real Raspberry Pi path of `tflc bench`, against the emulated Pi (emulated_pi.py): aarch64
CPython 3.11 under qemu-user, reached through a real sshd, with tflite-runtime 2.14 on Debian's
numpy 1.24 and with ai-edge-litert, each installed from real aarch64 wheels.

Absolute times from emulation are never claims: these tests check what the device says, what
it computes and what the host makes of it, not how fast it is.
"""

from __future__ import annotations

import os
import re

import pytest

from tflc.bench import DeviceError, bench
from tflc.bench.summary import render_table

from .conftest import QUICK


def _cpuinfo_model(root) -> str | None:
    """The CPU name /proc/cpuinfo gives inside the userland (its /proc is the kernel's)."""
    text = (root / "proc" / "cpuinfo").read_text()
    for key in ("model name", "Processor", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return None


def test_tflite_runtime_214_on_numpy_124(tiny_models, emulated_pi):
    result = bench(tiny_models["int8"], emulated_pi.url("pi"), ssh_config=emulated_pi.config,
                   python=emulated_pi.pythons["tflite_runtime"], eval_data=tiny_models["eval"],
                   **QUICK)
    record = result.records[0]
    assert record.runtime == {"name": "tflite_runtime", "version": "2.14.0"}
    assert record.device_facts["numpy"].startswith("1.24.")
    assert record.device_facts["arch"] == "aarch64"
    assert record.device_facts["python"].startswith("3.11.")
    assert record.latency_ms.count == QUICK["runs"]
    # Output fidelity on the device against LiteRT on this x86-64 host, sample by sample.
    fidelity = record.fidelity
    assert fidelity["samples"] == 48 and fidelity["host_runtime"]["name"] == "ai_edge_litert"
    assert fidelity["agreement"] == 1.0
    assert fidelity["top1_accuracy"] == fidelity["host_top1_accuracy"]
    assert fidelity["max_abs_output_diff"] <= 1  # int8 outputs: at most one quantization step


def test_ai_edge_litert_on_the_pi(tiny_models, emulated_pi):
    result = bench([tiny_models["float"], tiny_models["int8"]], emulated_pi.url("pi"),
                   ssh_config=emulated_pi.config, python=emulated_pi.pythons["litert"],
                   eval_data=tiny_models["eval"], **QUICK)
    assert {r.runtime["name"] for r in result.records} == {"ai_edge_litert"}
    assert result.runtime["version"] == "2.3.0"
    assert result.device_facts["arch"] == "aarch64"
    assert result.device_facts["python_executable"] == emulated_pi.pythons["litert"]
    float_model, int8_model = result.models
    assert float_model.fidelity["agreement"] == 1.0
    assert float_model.fidelity["max_abs_output_diff"] < 1e-5  # float: rounding differences only
    assert int8_model.fidelity["agreement"] == 1.0


def test_the_same_inputs_give_the_same_outputs_on_the_pi_and_here(tiny_models, emulated_pi):
    """Random inputs are derived from the seed alone: the Pi's first-batch output checksum is
    this machine's, for both Pi runtimes."""
    here = bench(tiny_models["int8"], "local", **dict(QUICK, timeout_s=120))
    for python in ("tflite_runtime", "litert"):
        there = bench(tiny_models["int8"], emulated_pi.url("pi"), ssh_config=emulated_pi.config,
                      python=emulated_pi.pythons[python], **QUICK)
        assert there.records[0].output_sha256 == here.records[0].output_sha256, python


def test_device_facts_of_the_pi(tiny_models, emulated_pi):
    result = bench(tiny_models["int8"], emulated_pi.url("pi"), ssh_config=emulated_pi.config,
                   python=emulated_pi.pythons["tflite_runtime"], **QUICK)
    facts = result.device_facts
    assert facts["os"] == "Linux" and facts["os_release"].startswith("Debian GNU/Linux 12")
    assert facts["cores"] == len(os.sched_getaffinity(0))  # qemu-user shows the host's CPUs
    assert facts["memory_total_bytes"] > 0
    # No device tree under emulation: the board is absent, not an empty string; the CPU name is
    # whatever /proc/cpuinfo says there.
    assert facts["board"] is None
    assert facts["cpu_model"] == _cpuinfo_model(emulated_pi.root)
    # No thermal zone and no vcgencmd: readings absent (None), never a zero.
    for when in ("before", "after"):
        snapshot = result.records[0].conditions[when]
        assert snapshot["temperature_c"] is None and snapshot["throttled"] is None
        assert snapshot["load_average"] is not None


def test_results_are_marked_emulated(tiny_models, emulated_pi):
    result = bench(tiny_models["int8"], emulated_pi.url("pi"), ssh_config=emulated_pi.config,
                   python=emulated_pi.pythons["tflite_runtime"], **QUICK)
    emulation = result.device_facts["emulation"]
    assert emulation["emulated"] is True
    # The kernel underneath is this machine's: qemu-user cannot disguise its arch file.
    assert f"/proc/sys/kernel/arch is {os.uname().machine}, uname -m aarch64" in emulation["signs"]
    assert any(sign.startswith("the parent process runs under") and "qemu" in sign
               for sign in emulation["signs"]), emulation["signs"]
    assert any(w.startswith("emulated: aarch64 runs under an emulator") for w in result.warnings)
    assert "warning: emulated:" in render_table(result)
    # The same runner natively on this machine finds no sign at all.
    native = bench(tiny_models["int8"], "local", **dict(QUICK, timeout_s=120))
    assert native.device_facts["emulation"] == {"emulated": False, "signs": []}
    assert not any(w.startswith("emulated") for w in native.warnings)


@pytest.mark.parametrize(("python", "kind"), [("system", "no_runtime"), ("bare", "no_numpy")])
def test_missing_numpy_or_runtime_gives_the_aarch64_pip_command(tiny_models, emulated_pi,
                                                                 python, kind):
    path = emulated_pi.pythons[python]
    with pytest.raises(DeviceError) as missing:
        bench(tiny_models["int8"], emulated_pi.url("pi"), ssh_config=emulated_pi.config,
              python=path, **QUICK)
    assert missing.value.kind == kind
    assert f"{path} -m pip install ai-edge-litert" in missing.value.message
    if kind == "no_runtime":
        assert missing.value.facts["arch"] == "aarch64"
        assert "Python 3.11" in missing.value.message and "aarch64" in missing.value.message
