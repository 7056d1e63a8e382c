"""Fleets: `tflc bench MODEL --device A --device B` against the real sshd of conftest.py (two
logins to it are two devices; the emulated-Pi fleet is in tests/pi/test_fleet.py): devices run
in parallel, one table and one JSON record set per device, a device failing costs only its own
column, per-device Python with `?python=`, Ctrl-C stops every runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tflc.api import bench
from tflc.bench.fleet import bench_fleet
from tflc.bench.transports import parse_device
from tflc.errors import BadInput

from .test_ssh import processes_using, runner_processes, wait_until

QUICK = {"runs": 3, "warmup": 1}
TFLC = Path(sys.executable).with_name("tflc")


def tflc(*args, timeout=300):
    return subprocess.run([str(TFLC), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_python_per_device_in_the_device_url():
    spec = parse_device("ssh://pi@127.0.0.1:2222?python=/home/pi/my%20venv/bin/python")
    assert (spec.user, spec.port, spec.python) == ("pi", 2222, "/home/pi/my venv/bin/python")
    assert spec.label == "ssh://pi@127.0.0.1:2222"  # the device, not how it is run
    assert parse_device("pi5?python=~/venv/bin/python").python == "~/venv/bin/python"
    assert parse_device("local?python=/usr/bin/python3").python == "/usr/bin/python3"
    for bad in ("ssh://pi@host?pyhton=/x", "ssh://pi@host?python=", "host?python=/a&python=/b",
                "host?python=/a%0Ab"):
        with pytest.raises(BadInput, match="--device"):
            parse_device(bad)


def test_two_devices_in_parallel_one_table_one_record_set_each(
        tiny_models, sshd, remote_tmp, tflite_runtime_python, tmp_path):
    """Each device with its own Python; both run at the same time (their timed windows
    overlap); the JSON holds each device's records; each is recorded in the registry."""
    out = tmp_path / "fleet.json"
    first = f"{sshd.url}?python={tflite_runtime_python}"
    second = f"tflc-test-device?python={sys.executable}"
    done = tflc("bench", tiny_models["int8"], "--device", first, "--device", second,
                "--ssh-config", sshd.client_config(), "--remote-tmp", remote_tmp,
                "--runs", 1, "--warmup", 0, "--min-duration", 2, "-o", out)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"D1 {sshd.url}: ") and "tflite_runtime 2.14.0" in lines[0]
    assert lines[1].startswith("D2 ssh://tflc-test-device: ") and "ai_edge_litert" in lines[1]
    header = lines[2].split()
    assert header == ["D1", "D2"]
    assert any(line.split()[:3] == ["status", "ok", "ok"] for line in lines)
    assert sum(line.startswith("artifact ") for line in lines) == 2
    data = json.loads(out.read_text())
    assert data["kind"] == "bench_fleet" and [d["ok"] for d in data["devices"]] == [True, True]
    runtimes = [d["records"][0]["runtime"]["name"] for d in data["devices"]]
    assert runtimes == ["tflite_runtime", "ai_edge_litert"]
    assert [d["settings"]["python"] for d in data["devices"]] == [
        str(tflite_runtime_python), sys.executable]
    windows = [(d["records"][0]["conditions"]["before"]["time"],
                d["records"][0]["conditions"]["after"]["time"]) for d in data["devices"]]
    assert windows[0][0] < windows[1][1] and windows[1][0] < windows[0][1], windows
    assert list(remote_tmp.iterdir()) == []


def test_a_failing_device_costs_only_its_column(tiny_models, sshd, remote_tmp, tmp_path):
    out = tmp_path / "fleet.json"
    broken = "tflc-test-device?python=/no/such/python3"
    done = tflc("bench", tiny_models["int8"], tiny_models["float"], "--device", sshd.url,
                "--device", broken, "--python", sys.executable, "--ssh-config",
                sshd.client_config(), "--remote-tmp", remote_tmp, "--runs", 3, "--warmup", 1,
                "-o", out)
    assert done.returncode == 1, done.stderr
    # The figures of the device that ran are printed; the failed one keeps a column.
    lines = done.stdout.splitlines()
    assert lines[1] == "D2 ssh://tflc-test-device: failed"
    assert lines[2].split() == ["D1", "int8.tflite", "D1", "float.tflite", "D2"]
    status = next(line for line in lines if line.startswith("status"))
    assert status.split() == ["status", "ok", "ok", "failed", "(no_python)"]
    p50 = next(line for line in lines if line.startswith("p50 [ms]"))
    assert p50.split()[-1] == "-" and p50.count("x)") == 1
    assert any(line.startswith("error: D2 ssh://tflc-test-device: no Python at "
                               "'/no/such/python3'") for line in lines)
    # One line on stderr, exit 1; the results file still holds D1's records.
    assert done.stderr.startswith("tflc: error: 1 of 2 devices failed")
    assert done.stderr.count("\n") == 1
    data = json.loads(out.read_text())
    assert [d["ok"] for d in data["devices"]] == [True, False]
    assert len(data["devices"][0]["records"]) == 2
    assert data["devices"][1]["error"]["kind"] == "no_python"
    assert list(remote_tmp.iterdir()) == []


def test_from_python_a_list_of_devices_is_a_fleet(tiny_models, sshd):
    fleet = bench(tiny_models["int8"], [sshd.url, "tflc-test-device"], python=sys.executable,
                  ssh_config=sshd.client_config(), **QUICK)
    assert [o.device for o in fleet.devices] == [sshd.url, "ssh://tflc-test-device"]
    assert all(o.ok and o.result.artifact_id for o in fleet.devices)
    assert fleet.devices[0].result.records[0].output_sha256 == \
        fleet.devices[1].result.records[0].output_sha256
    single = bench(tiny_models["int8"], [sshd.url], python=sys.executable,
                   ssh_config=sshd.client_config(), **QUICK)
    assert single.device == sshd.url  # one device in a list: the usual BenchResult


def test_bad_input_fails_the_whole_fleet_before_any_connection(tiny_models, sshd, tmp_path):
    logins = sshd.accepted_logins()
    with pytest.raises(BadInput, match="given twice"):
        bench_fleet(tiny_models["int8"], [sshd.url, f"{sshd.url}?python=/x"],
                    ssh_config=sshd.client_config())
    with pytest.raises(BadInput, match="model file not found"):
        bench_fleet(tmp_path / "none.tflite", [sshd.url, "tflc-test-device"],
                    ssh_config=sshd.client_config())
    done = tflc("bench", tiny_models["int8"], "--device", sshd.url, "--device", "ftp://x")
    assert done.returncode == 2 and done.stderr.startswith("tflc: error: --device ftp://x")
    assert sshd.accepted_logins() == logins


@pytest.mark.parametrize("whom", ["tflc", "terminal"])
def test_ctrl_c_stops_every_device(tiny_models, sshd, remote_tmp, whom):
    """SIGINT to tflc alone (the main thread hears it and stops both devices' runs), or to its
    whole process group as a terminal's Ctrl-C sends it (the ssh clients hear it too)."""
    process = subprocess.Popen(
        [str(TFLC), "bench", str(tiny_models["int8"]), "--device", sshd.url, "--device",
         "tflc-test-device", "--ssh-config", str(sshd.client_config()), "--python",
         sys.executable, "--runs", "1", "--min-duration", "60", "--max-runs", str(10**7),
         "--remote-tmp", str(remote_tmp)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_until(lambda: len(runner_processes(sshd)) >= 4, 90), "no runners"
        time.sleep(0.5)
        started = time.monotonic()
        if whom == "tflc":
            process.send_signal(signal.SIGINT)
        else:
            os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=40)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130 and "interrupted" in err, err
    assert time.monotonic() - started < 30
    assert wait_until(lambda: not runner_processes(sshd), 10), runner_processes(sshd)
    assert wait_until(lambda: not processes_using(remote_tmp), 10), processes_using(remote_tmp)
    assert wait_until(lambda: list(remote_tmp.iterdir()) == [], 10)
