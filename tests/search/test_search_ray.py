"""`tflc search --ray ADDRESS` against a real local Ray cluster that the test starts (a head and a
second worker node on 127.0.0.1, one CPU each) and stops, whatever happens."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

RAY = Path(sys.executable).parent / "ray"
pytestmark = pytest.mark.skipif(not RAY.exists(), reason="ray is not installed: pip install "
                                "'tflc[search]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_under(marker: str) -> list[int]:
    """Our cluster's processes: those whose command line names its temporary folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return [pid for pid in found if pid != os.getpid()]


@pytest.fixture
def ray_cluster():
    temp = tempfile.mkdtemp(prefix="tflc-ray-", dir="/tmp")  # short: Ray's sockets live there
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                        "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={temp}",
                        "--disable-usage-stats"], check=True, env=env, timeout=300,
                       capture_output=True)
        subprocess.run([RAY, "start", f"--address={address}", "--node-ip-address=127.0.0.1",
                        "--num-cpus=1", "--disable-usage-stats"], check=True, env=env,
                       timeout=300, capture_output=True)
        yield address
    finally:
        # stop only this cluster's processes (another Ray on the machine is not ours)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _processes_under(temp):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 15
            while _processes_under(temp) and time.monotonic() < deadline:
                time.sleep(0.3)
        leftover = _processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not leftover, f"Ray processes left running: {leftover}"


def test_search_runs_trials_as_ray_tasks_on_a_local_cluster(digits_dir, tmp_path, ray_cluster):
    env = {**os.environ, "TFLC_REGISTRY": str(tmp_path / "registry"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tflc", "search", str(digits_dir / "model.keras"), "-t",
         "cortex-m4", "--train-data", str(digits_dir / "train.npz"), "--eval-data",
         str(digits_dir / "eval.npz"), "--trials", "2", "--ray", ray_cluster, "--epochs", "1",
         "--no-compression", "--precision", "int8", "-o", str(out), "--format", "json"],
        capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["executor"].startswith(f"Ray cluster {ray_cluster} (2 CPUs on 2 node(s))")
    assert [t["status"] for t in data["trials"]] == ["complete", "complete"]
    workers = {json.loads((out / "trials" / f"{t['number']:04d}" / "trial.json").read_text())
               ["worker"] for t in data["trials"]}
    assert all(w.split(":")[1] != str(os.getpid()) for w in workers)  # ran in Ray's workers
    assert data["pareto"] and Path(data["pareto"][0]["model"]).is_file()
