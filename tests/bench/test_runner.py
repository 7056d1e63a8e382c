"""The device runner on its own: run as a separate process with each interpreter that installs
here (ai-edge-litert in .venv, tflite-runtime 2.14 with numpy<2, TensorFlow's tf.lite), fed a
request file, answering one JSON line, exactly as on a device."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tflc.bench import runner

RUNNER = Path(runner.__file__)
STDLIB = set(sys.stdlib_module_names)
ALLOWED_THIRD_PARTY = {"numpy", "ai_edge_litert", "tflite_runtime", "tensorflow"}


def run_runner(python, folder: Path, request: dict, models: dict, timeout=120):
    """Lay out a device folder (runner, models, data, request), run it, return (code, response,
    events)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(RUNNER, folder / "runner.py")
    for name, source in models.items():
        shutil.copy(source, folder / name)
    (folder / "request.json").write_text(json.dumps(dict({"protocol": 1}, **request)))
    done = subprocess.run([str(python), str(folder / "runner.py"), str(folder / "request.json")],
                          capture_output=True, text=True, timeout=timeout, cwd=folder)
    events = [json.loads(line[len(runner.EVENT_PREFIX):]) for line in done.stderr.splitlines()
              if line.startswith(runner.EVENT_PREFIX)]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got {done.stdout!r} / {done.stderr[-500:]}"
    return done.returncode, json.loads(lines[0]), events


def basic_request(**changes) -> dict:
    request = {"models": [{"id": "m0", "path": "m0.tflite"}], "threads": 1, "warmup": 2,
               "runs": 12, "inputs": {"kind": "random", "seed": 3}}
    request.update(changes)
    return request


def test_runner_imports_only_the_standard_library_numpy_and_an_interpreter():
    tree = ast.parse(RUNNER.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert "tflc" not in imported
    assert imported - STDLIB - {"__future__"} <= ALLOWED_THIRD_PARTY


@pytest.mark.parametrize("version", ["3.8", "3.9"])
def test_runner_compiles_on_the_oldest_supported_pythons(version, tmp_path):
    """Raspberry Pi OS Bullseye ships Python 3.9; the runner promises 3.8."""
    candidates = [*map(str, Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}")),
                  shutil.which(f"python{version}")]
    python = next((c for c in candidates if c and subprocess.run(
        [c, "-c", "pass"], capture_output=True).returncode == 0), None)
    if python is None:
        pytest.skip(f"no working python{version} on this machine")
    done = subprocess.run([python, "-c", "import sys, ast; compile(open(sys.argv[1]).read(), "
                           "sys.argv[1], 'exec')", str(RUNNER)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ai_edge_litert_run_reports_every_figure(tiny_models, tmp_path):
    code, response, events = run_runner(sys.executable, tmp_path / "dev",
                                        basic_request(return_outputs=True),
                                        {"m0.tflite": tiny_models["int8"]})
    assert code == 0 and response["ok"], response
    assert response["protocol"] == 1
    assert response["runtime"]["name"] == "ai_edge_litert"
    device = response["device"]
    assert device["arch"] and device["cores"] >= 1 and device["numpy"] == np.__version__
    assert device["python_executable"]
    model = response["trials"][0]["models"][0]
    assert len(model["latencies_ms"]) == 12 and all(v > 0 for v in model["latencies_ms"])
    assert len(model["warmup_ms"]) == 2 and model["first_inference_ms"] > 0
    assert model["load_ms"] > 0 and model["allocate_ms"] > 0
    assert model["peak_rss_bytes"] >= model["baseline_rss_bytes"] > 10 * 2**20
    assert model["tensors"]["inputs"][0]["dtype"] == "int8"
    # The checksum and outputs describe the first input batch: recompute them here.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tiny_models["int8"]), num_threads=1)
    interpreter.allocate_tensors()
    info = model["tensors"]["inputs"]
    interpreter.set_tensor(info[0]["index"], runner.random_inputs(info, 3)[0])
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert model["outputs"][0]["values"] == out.tolist()
    assert model["output_sha256"] == runner.output_digest([out])
    conditions = response["trials"][0]["conditions_before"]
    assert conditions["load_average"] is not None and "temperature_c" in conditions
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and "worker" in kinds and kinds[-1] == "progress"


def test_tflite_runtime_with_old_numpy_gives_the_same_int8_outputs(tiny_models, tmp_path,
                                                                    tflite_runtime_python):
    """The seeded inputs do not depend on numpy's generators: same bytes on numpy 1 and 2."""
    models = {"m0.tflite": tiny_models["int8"]}
    _, litert, _ = run_runner(sys.executable, tmp_path / "a", basic_request(), models)
    code, old, _ = run_runner(tflite_runtime_python, tmp_path / "b", basic_request(), models)
    assert code == 0 and old["ok"], old
    assert old["runtime"] == {"name": "tflite_runtime", "version": "2.14.0"}
    assert old["device"]["numpy"].startswith("1.")
    assert old["trials"][0]["models"][0]["output_sha256"] == \
        litert["trials"][0]["models"][0]["output_sha256"]


def test_tensorflow_lite_runtime_on_request(tiny_models, tmp_path):
    code, response, _ = run_runner(sys.executable, tmp_path / "dev",
                                   basic_request(runtime="tensorflow", runs=3),
                                   {"m0.tflite": tiny_models["int8"]}, timeout=300)
    assert code == 0 and response["ok"], response
    import tensorflow as tf

    assert response["runtime"] == {"name": "tensorflow", "version": tf.__version__}


def test_two_models_interleave_in_separate_processes(tiny_models, tmp_path):
    request = basic_request(models=[{"id": "m0", "path": "m0.tflite"},
                                    {"id": "m1", "path": "m1.tflite"}], runs=8, rounds=4,
                            repeat=2)
    code, response, events = run_runner(sys.executable, tmp_path / "dev", request,
                                        {"m0.tflite": tiny_models["float"],
                                         "m1.tflite": tiny_models["int8"]})
    assert code == 0, response
    order = [e["model"] for e in events if e["event"] == "progress"]
    assert order == ["m0", "m1"] * 8  # 4 slices x 2 trials, A B A B ...
    workers = [e["pid"] for e in events if e["event"] == "worker"]
    assert len(set(workers)) == 4  # a fresh process per model and trial
    assert [t["trial"] for t in response["trials"]] == [0, 1]
    for trial in response["trials"]:
        assert [len(m["latencies_ms"]) for m in trial["models"]] == [8, 8]


def test_min_duration_keeps_timing(tiny_models, tmp_path):
    code, response, _ = run_runner(sys.executable, tmp_path / "dev",
                                   basic_request(runs=1, min_duration_s=0.3),
                                   {"m0.tflite": tiny_models["int8"]})
    assert code == 0
    latencies = response["trials"][0]["models"][0]["latencies_ms"]
    assert len(latencies) > 10  # a tiny model runs thousands of times in 0.3 s
    code, response, _ = run_runner(sys.executable, tmp_path / "capped",
                                   basic_request(runs=1, min_duration_s=30, max_runs=40),
                                   {"m0.tflite": tiny_models["int8"]})
    assert len(response["trials"][0]["models"][0]["latencies_ms"]) == 40  # the cap wins


def test_delegates(tiny_models, tmp_path):
    models = {"m0.tflite": tiny_models["int8"]}
    code, none, _ = run_runner(sys.executable, tmp_path / "a",
                               basic_request(delegate={"kind": "none"}), models)
    assert code == 0 and none["ok"]
    code, bad, _ = run_runner(sys.executable, tmp_path / "b", basic_request(
        delegate={"kind": "external", "library": "libedgetpu-missing.so.1",
                  "options": {"device": "usb"}}), models)
    assert code == runner.EXIT_FAILED and bad["error"]["kind"] == "delegate"
    assert "libedgetpu-missing.so.1" in bad["error"]["message"]


def test_field_inputs_report_saturation(tiny_models, tmp_path):
    code, response, _ = run_runner(sys.executable, tmp_path / "dev", basic_request(
        inputs={"kind": "npz", "path": "field.npz"}), {"m0.tflite": tiny_models["int8"],
                                                       "field.npz": tiny_models["field"]})
    assert code == 0, response
    share = response["trials"][0]["models"][0]["saturation"][0]
    info = response["trials"][0]["models"][0]["tensors"]["inputs"][0]
    q = np.round(tiny_models["field_x"].astype(np.float64) / info["scale"]) + info["zero_point"]
    assert share["below"] == int((q < -128).sum()) and share["above"] == int((q > 127).sum())
    assert share["saturated_fraction"] == pytest.approx((share["below"] + share["above"]) / q.size)
    assert 0.3 < share["saturated_fraction"] < 0.95


def test_protocol_mismatch_and_missing_model_are_errors(tiny_models, tmp_path):
    code, response, _ = run_runner(sys.executable, tmp_path / "a", basic_request(protocol=99),
                                   {"m0.tflite": tiny_models["int8"]})
    assert code == runner.EXIT_FAILED and response["error"]["kind"] == "protocol"
    assert "protocol 1" in response["error"]["message"]
    code, response, _ = run_runner(sys.executable, tmp_path / "b", basic_request(), {})
    assert response["error"]["kind"] == "protocol" and "m0.tflite" in response["error"]["message"]


def test_a_corrupt_model_is_a_model_load_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0\0\0\0TFL3" + b"\xff" * 64)
    code, response, _ = run_runner(sys.executable, tmp_path / "dev", basic_request(),
                                   {"m0.tflite": bad})
    assert code == runner.EXIT_FAILED and response["error"]["kind"] == "model_load"


def test_deadline_stops_the_runner_and_removes_its_folder(tiny_models, tmp_path):
    folder = tmp_path / f"{runner.TEMP_DIR_PREFIX}x"
    code, response, _ = run_runner(sys.executable, folder, basic_request(
        runs=1, min_duration_s=60, max_runs=10**8, deadline_s=2, remove_dir_on_exit=True),
        {"m0.tflite": tiny_models["int8"]}, timeout=30)
    assert code == runner.EXIT_FAILED and response["error"]["kind"] == "timeout"
    assert not folder.exists()


def test_python_without_numpy_gets_the_pip_command(tiny_models, tmp_path, bare_python):
    code, response, _ = run_runner(bare_python, tmp_path / "dev", basic_request(),
                                   {"m0.tflite": tiny_models["int8"]})
    error = response["error"]
    assert code == runner.EXIT_FAILED and error["kind"] == "no_numpy"
    assert error["pip_command"] == f"{bare_python} -m pip install ai-edge-litert"


def test_python_without_tflite_gets_the_pip_command(tiny_models, tmp_path, numpy_only_python):
    code, response, _ = run_runner(numpy_only_python, tmp_path / "dev", basic_request(),
                                   {"m0.tflite": tiny_models["int8"]})
    error = response["error"]
    assert error["kind"] == "no_runtime"
    assert f"{numpy_only_python} -m pip install ai-edge-litert" in error["message"]
    for name in runner.RUNTIMES:  # says what it tried
        assert name in error["message"]


def test_probe_and_version_need_only_the_standard_library(bare_python):
    done = subprocess.run([str(bare_python), str(RUNNER), "--probe"], capture_output=True,
                          text=True, check=True)
    facts = json.loads(done.stdout)
    assert facts["runtime"] is None and "pip install" in facts["problem"]
    assert facts["cores"] == os.cpu_count()
    done = subprocess.run([str(bare_python), str(RUNNER), "--version"], capture_output=True,
                          text=True, check=True)
    assert "protocol 1" in done.stdout


def test_pip_command_fits_python_and_architecture(monkeypatch):
    monkeypatch.setattr(runner.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(runner.sys, "version_info", (3, 11, 2))
    assert runner.pip_command("/home/pi/env/bin/python") == \
        "/home/pi/env/bin/python -m pip install ai-edge-litert"
    monkeypatch.setattr(runner.sys, "version_info", (3, 8, 10))
    assert runner.pip_command("python3") == \
        "python3 -m pip install tflite-runtime==2.14.0 'numpy<2'"
    monkeypatch.setattr(runner.platform, "machine", lambda: "armv7l")
    assert "no wheel for armv7l" in runner.pip_command("/opt/my py/python")
    assert runner.pip_command("/opt/my py/python").startswith("'/opt/my py/python' -m pip")


def test_throttling_and_busy_warnings():
    before = {"load_average": [3.5, 2.0, 1.0], "governor": "ondemand", "temperature_c": 81.0,
              "throttled": {"raw": "0x50005", "flags": ["under-voltage now", "throttled now"]}}
    after = {"load_average": [3.5, 2.0, 1.0], "throttled": None, "temperature_c": 70.0}
    text = " | ".join(runner.condition_warnings(before, after, cores=4, busy_per_core=0.5))
    assert "device busy: load average 3.50 on 4 cores" in text
    assert "throttling before the run: under-voltage now, throttled now" in text
    assert "governor is 'ondemand'" in text and "81.0 C" in text
    assert runner.condition_warnings({"load_average": [0.1, 0, 0], "governor": "performance"},
                                     {}, cores=4, busy_per_core=0.5) == []


def test_probe_finds_no_emulation_natively():
    """The emulation signs (checked under qemu in tests/pi) stay silent on real hardware: here,
    where binfmt_misc may well hold qemu handlers for other architectures."""
    done = subprocess.run([sys.executable, str(RUNNER), "--probe"], capture_output=True,
                          text=True, timeout=60, check=True)
    facts = json.loads(done.stdout)
    assert facts["emulation"] == {"emulated": False, "signs": []}
    assert facts["arch"] == os.uname().machine
