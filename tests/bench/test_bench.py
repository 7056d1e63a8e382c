"""`bench()` on this machine (`--device local`): records, summaries, fidelity, saturation,
energy, and the local transport's failures."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np
import pytest

from tflc.bench import DeviceError, bench
from tflc.bench.transports import LocalTransport, Upload, run_on_device
from tflc.errors import BadInput

QUICK = {"runs": 6, "warmup": 1, "progress": False}
REQUIRED = {"model", "device", "runtime", "threads", "latency_ms", "peak_rss_bytes"}
LATENCY_KEYS = {"mean", "std", "min", "p50", "p90", "p95", "p99", "max", "count"}


def test_records_are_complete_json(tiny_models, tmp_path):
    result = bench([tiny_models["float"], tiny_models["int8"]], "local", repeat=2, **QUICK)
    data = json.loads(json.dumps(result.to_dict()))  # plain JSON all the way down
    assert data["kind"] == "bench" and data["device"] == "local"
    assert len(data["records"]) == 4 and len(data["models"]) == 2
    for record in data["records"]:
        assert REQUIRED <= set(record)
        assert LATENCY_KEYS <= set(record["latency_ms"]) and record["latency_ms"]["count"] == 6
        assert record["device_facts"]["cores"] == os.cpu_count()
        assert record["runtime"]["name"] == "ai_edge_litert"
        assert len(record["samples_ms"]) == 6 and record["model_sha256"]
        assert record["conditions"]["before"]["load_average"] is not None
        assert record["threads"] == 1 and record["outputs"] is None
    int8 = data["models"][1]
    assert int8["latency_ms"]["count"] == 12  # both trials pooled
    assert int8["p50_spread"]["trials"] == 2
    assert int8["ratios"]["p50"] == pytest.approx(
        int8["latency_ms"]["p50"] / data["models"][0]["latency_ms"]["p50"])
    written = result.write(tmp_path / "bench.json")
    assert json.loads(written.read_text())["records"][0]["model_name"] == "float.tflite"


def test_eval_data_reports_accuracy_and_agreement(tiny_models):
    result = bench(tiny_models["int8"], "local", eval_data=tiny_models["eval"], **QUICK)
    fidelity = result.records[0].fidelity
    with np.load(tiny_models["eval"]) as data:
        labels = data["y"]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tiny_models["int8"]))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    predictions = []
    with np.load(tiny_models["eval"]) as data:
        for sample in data["x"]:
            q = np.clip(np.round(sample / scale) + zero, -128, 127).astype(np.int8)
            interpreter.set_tensor(inp["index"], q[None])
            interpreter.invoke()
            predictions.append(int(interpreter.get_tensor(out["index"]).argmax()))
    assert fidelity["samples"] == len(labels)
    assert fidelity["top1_accuracy"] == pytest.approx(np.mean(np.array(predictions) == labels))
    assert fidelity["agreement"] == 1.0 and fidelity["max_abs_output_diff"] == 0.0
    assert result.models[0].fidelity == fidelity


def test_field_inputs_report_saturation_per_input(tiny_models):
    result = bench(tiny_models["int8"], "local", inputs=tiny_models["field"], **QUICK)
    share = result.records[0].input_saturation[0]
    assert share["input"] == "image" and 0.3 < share["saturated_fraction"] < 0.95
    assert result.records[0].inputs == {"kind": "npz", "path": str(tiny_models["field"])}


def test_energy_estimate_from_the_target(tiny_models):
    from tflc.check import load_target

    power = load_target("raspberry-pi-4").device.active_power_w
    assert power
    result = bench(tiny_models["int8"], "local", target="raspberry-pi-4", **QUICK)
    energy = result.records[0].energy
    assert energy["estimate"] is True and energy["active_power_w"] == power
    assert energy["mj_per_inference"] == pytest.approx(power * result.records[0].latency_ms.mean)
    assert result.models[0].energy_mj_per_inference == pytest.approx(energy["mj_per_inference"])


def test_inputs_that_do_not_fit_are_bad_input(tiny_models, tmp_path):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 5, 5, 1), np.float32))
    with pytest.raises(BadInput, match=r"wrong.npz \(--inputs\) does not fit int8.tflite"):
        bench(tiny_models["int8"], "local", inputs=wrong, **QUICK)
    with pytest.raises(BadInput, match="model file not found"):
        bench(tmp_path / "missing.tflite", "local", **QUICK)
    with pytest.raises(BadInput, match="not a TFLite flatbuffer"):
        bench(tiny_models["eval"], "local", **QUICK)
    with pytest.raises(BadInput, match="external delegate"):
        bench(tiny_models["int8"], "local", delegate_options={"device": "usb"}, **QUICK)


def test_local_python_missing(tiny_models):
    with pytest.raises(DeviceError) as missing:
        bench(tiny_models["int8"], "local", python="/no/such/python3", **QUICK)
    assert missing.value.kind == "no_python"


def test_local_timeout_kills_the_run_and_removes_the_folder(tiny_models, remote_tmp):
    with pytest.raises(DeviceError) as slow:
        bench(tiny_models["int8"], "local", runs=1, min_duration_s=60, max_runs=10**7,
              timeout_s=3, remote_tmp=str(remote_tmp), progress=False)
    assert slow.value.kind == "timeout"
    assert list(remote_tmp.iterdir()) == []


def test_a_worker_killed_is_named(tiny_models, remote_tmp):
    """The out-of-memory killer picks the biggest process: the worker holding a model."""
    request = {"protocol": 1, "models": [{"id": "m0", "path": "m0.tflite"},
                                         {"id": "m1", "path": "m1.tflite"}],
               "runs": 1, "min_duration_s": 20, "max_runs": 10**9, "warmup": 0}

    def on_event(event):
        if event["event"] == "worker" and event["model"] == "m1":
            time.sleep(0.3)
            os.kill(event["pid"], signal.SIGKILL)

    transport = LocalTransport(sys.executable, tmp_dir=str(remote_tmp))
    with pytest.raises(DeviceError) as killed:
        run_on_device(transport, [Upload(tiny_models["float"], "m0.tflite"),
                                  Upload(tiny_models["int8"], "m1.tflite")],
                      request, timeout_s=60, on_event=on_event)
    assert killed.value.kind == "killed" and "model m1" in killed.value.message
    assert list(remote_tmp.iterdir()) == []


def test_ctrl_c_stops_the_device_side_and_cleans_up(tiny_models, remote_tmp):
    import subprocess
    from pathlib import Path

    tflc = Path(sys.executable).with_name("tflc")
    process = subprocess.Popen([str(tflc), "bench", str(tiny_models["int8"]), "--runs", "1",
                                "--min-duration", "60", "--max-runs", str(10**7),
                                "--remote-tmp", str(remote_tmp)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pgid_files = []
    deadline = time.monotonic() + 30
    while not pgid_files and time.monotonic() < deadline:
        pgid_files = list(remote_tmp.glob("tflc-bench.*/pgid"))
        time.sleep(0.05)
    assert pgid_files, process.stderr.read() if process.poll() is not None else "no runner"
    time.sleep(0.3)
    group = int(pgid_files[0].read_text())
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and "interrupted" in err
    assert list(remote_tmp.iterdir()) == []
    assert live_members(group) == []  # the runner and its worker are gone


def live_members(group: int) -> list[int]:
    """Processes of a process group that are still running (zombies await their reaper)."""
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_fidelity_without_a_host_reference():
    """A model this machine cannot run (an Edge TPU custom op) still gets device accuracy."""
    from tflc.bench.summary import fidelity

    device = {"count": 3, "top1": [1, 0, 2],
              "output": {"name": "out", "dtype": "int8", "values": [[0, 5, 1], [4, 0, 0],
                                                                     [0, 1, 9]]}}
    result = fidelity(device, None, np.array([1, 1, 2]), None)
    assert result["top1_accuracy"] == pytest.approx(2 / 3)
    assert result["agreement"] is None and result["max_abs_output_diff"] is None
    host = dict(device, top1=[1, 0, 1], output=dict(device["output"], values=[[0, 5, 1],
                                                                              [4, 0, 0],
                                                                              [0, 7, 6]]))
    result = fidelity(device, host, np.eye(3)[[1, 1, 2]], {"name": "ai_edge_litert"})
    assert result["agreement"] == pytest.approx(2 / 3)
    assert result["identical_outputs"] == pytest.approx(2 / 3)
    assert result["max_abs_output_diff"] == 6.0
    assert result["host_top1_accuracy"] == pytest.approx(1 / 3)  # one-hot labels understood


def test_tflc_killed_outright_stops_the_local_runner(tiny_models, remote_tmp):
    """SIGKILL gives tflc no chance to clean up: the runner, in its own session, sees its stdin
    end and stops itself, its worker and its folder."""
    import subprocess
    from pathlib import Path

    tflc = Path(sys.executable).with_name("tflc")
    process = subprocess.Popen([str(tflc), "bench", str(tiny_models["int8"]), "--runs", "1",
                                "--min-duration", "60", "--max-runs", str(10**7),
                                "--remote-tmp", str(remote_tmp)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pgid_files = []
    deadline = time.monotonic() + 30
    while not pgid_files and time.monotonic() < deadline:
        pgid_files = list(remote_tmp.glob("tflc-bench.*/pgid"))
        time.sleep(0.05)
    assert pgid_files, "no runner"
    time.sleep(0.5)
    group = int(pgid_files[0].read_text())
    process.kill()
    process.wait()
    deadline = time.monotonic() + 5
    while live_members(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_members(group) == []
    deadline = time.monotonic() + 5
    while list(remote_tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(remote_tmp.iterdir()) == []
