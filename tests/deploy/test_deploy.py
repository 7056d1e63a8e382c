"""`tflc deploy`, `tflc telemetry` and `tflc rollback --device` against a real OpenSSH server on
127.0.0.1 (tests/bench/conftest.py): the device is this machine reached over SSH, its Python a
virtual environment standing in for the device's (tflite-runtime 2.14 with numpy<2, as on many
Pis, or this one's ai-edge-litert), the guard run there by a separate process."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tflc.cli import main
from tflc.deploy import deploy, fetch_telemetry, rollback_device
from tflc.deploy.device import Shell, build_payload, deploy_script
from tflc.errors import BadInput, PipelineError

DEVICE = "tflc-test-device"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def guard_on_device(python, release_dir: Path, samples: np.ndarray, tmp_path: Path) -> dict:
    """What the device application does: import tflc_runtime from the release, guard a stream."""
    np.save(tmp_path / "stream.npy", samples)
    script = (
        "import json, sys, numpy as np\n"
        f"sys.path.insert(0, {str(release_dir)!r})\n"
        "sys.modules['tflc'] = None\n"
        "from tflc_runtime import Guard\n"
        f"with Guard({str(release_dir)!r}) as g:\n"
        "    tops = [int(g.predict(x).argmax()) for x in np.load('stream.npy')]\n"
        "print(json.dumps({'state': g.state, 'events': [e['event'] for e in g.events],\n"
        "                  'runtime': g.primary.runtime, 'tops': tops}))\n")
    done = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={k: v for k, v in os.environ.items()
                                                       if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_deploy_guard_telemetry_rollback_over_ssh(releases, sshd, tflite_runtime_python,
                                                   digits_dir, tmp_path):
    config = sshd.client_config()
    root = tmp_path / "device-root"
    ssh = {"ssh_config": config, "python": str(tflite_runtime_python), "root": str(root),
           "registry": releases["registry"]}
    done = deploy("guarded-digits@current", DEVICE, **ssh)
    assert done.artifact == releases["current"] and done.fallback == "guarded-digits@previous"
    assert done.device_check["runtime"] == "tflite_runtime"
    assert done.device_check["numpy"].startswith("1.") and done.device_check["outputs_finite"]
    base = root / "guarded-digits"
    current = base / "current"
    assert os.readlink(current) == f"releases/{done.release}"
    assert sorted(p.name for p in current.iterdir()) == [
        ".complete", "fallback", "model.tflite", "profile.json", "release.json", "tflc_runtime"]
    assert not list((base / "releases").glob(".incoming-*"))
    # the deploy is in the run registry: the release, its artifact, the device and the result
    from tflc.store import Registry

    record = Registry(releases["registry"]).list(kind="deploy")[0]
    assert record.model_name == "guarded-digits"
    assert {k: record.manifest["config"][k] for k in ("release", "artifact", "device", "result")} \
        == {"release": "guarded-digits@current", "artifact": releases["current"],
            "device": done.device, "result": "deployed"}
    stored = json.loads(Registry(releases["registry"]).files.file_path(
        record.id, "deploy.json").read_text())
    assert stored["ref"] == "guarded-digits@current" and stored["release"] == done.release
    assert stored["bytes"] == done.bytes and stored["device_check"] == done.device_check

    # the application on the device: in-distribution, then inverted digits
    x = np.load(digits_dir / "eval.npz")["x"]
    answer = guard_on_device(tflite_runtime_python, current,
                             np.concatenate([x[:96], 1.0 - x[96:256]]), tmp_path)
    assert answer["runtime"] == "tflite_runtime" and answer["events"] == ["fallback"]
    assert answer["state"] == "fallback"

    out = tmp_path / "telemetry"
    summary = fetch_telemetry(DEVICE, name="guarded-digits", output_dir=out,
                              **{k: v for k, v in ssh.items() if k != "registry"})
    data = summary.releases["guarded-digits"]
    assert data["sessions"] == 1 and data["samples"] == 256 and data["state"] == "fallback"
    assert [e["event"] for e in data["events"]] == ["fallback"]
    assert data["events"][0]["sample"] > 96 and data["drift_max"] >= 1.0
    assert (out / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "telemetry.jsonl").read_text().splitlines()
    assert all(json.loads(line)["release"] == "guarded-digits" for line in lines)

    cli = run("telemetry", DEVICE, "--ssh-config", config, "--root", root, "--python",
              tflite_runtime_python)
    assert cli.exit_code == 0, cli.output
    assert "fallback (" in cli.output and "256 samples" in cli.output

    # a second release (the 16x8 one, without fallback), then back on the device
    second = deploy("guarded-digits@previous", DEVICE, fallback=False, **ssh)
    assert os.readlink(current) == f"releases/{second.release}"
    assert os.readlink(base / "previous") == f"releases/{done.release}"
    back = run("rollback", "guarded-digits", "--device", DEVICE, "--ssh-config", config,
               "--root", root, "--python", tflite_runtime_python, "--format", "json")
    assert back.exit_code == 0, back.output
    assert json.loads(back.output)["current"] == done.release
    assert os.readlink(current) == f"releases/{done.release}"
    again = run("rollback", "guarded-digits", "--device", DEVICE, "--ssh-config", config,
                "--root", root, "--python", tflite_runtime_python)
    assert again.exit_code == 2 and "nothing to roll back to" in again.output
    assert (base / "releases" / second.release).is_dir()  # rolled back, still kept


def test_an_interrupted_deploy_leaves_the_previous_release_runnable(releases, sshd, digits_dir,
                                                                    tmp_path):
    config = sshd.client_config()
    root = tmp_path / "device-root"
    first = deploy("guarded-digits@current", DEVICE, ssh_config=config, python=sys.executable,
                   root=str(root), registry=releases["registry"])
    base = root / "guarded-digits"
    from tflc.deploy.device import _resolve

    name, artifact, model, profile = _resolve("guarded-digits@previous", releases["registry"])
    payload, folder, _ = build_payload(name, artifact, model, profile, None)
    stale = base / "releases" / ".incoming-killed"  # a deploy whose shell was killed outright
    stale.mkdir()
    with Shell(DEVICE, sys.executable, ssh_config=config) as shell:
        script = deploy_script(shlex.quote(str(base)), shell.python_word, folder, 3)
        with tarfile.open(fileobj=io.BytesIO(payload)) as tar:  # where the marker starts:
            marker = tar.getmember(".complete").offset  # cut there, tar itself finds no fault
        for cut in (len(payload) // 3, marker):  # the connection drops mid-upload
            code, _, err = shell.run(script, "deploying", stdin=payload[:cut])
            assert code == 91 and "cut short" in err
            assert os.readlink(base / "current") == f"releases/{first.release}"
            assert not (base / "releases" / folder).exists()
    assert not stale.exists()
    assert [p.name for p in (base / "releases").iterdir()] == [first.release]
    answer = guard_on_device(sys.executable, base / "current",
                             np.load(digits_dir / "eval.npz")["x"][:40], tmp_path)
    assert answer["state"] == "primary" and len(answer["tops"]) == 40


def test_a_release_the_device_cannot_run_is_refused(releases, sshd, numpy_only_python, tmp_path):
    config = sshd.client_config()
    root = tmp_path / "device-root"
    first = deploy("guarded-digits@current", DEVICE, ssh_config=config, python=sys.executable,
                   root=str(root), registry=releases["registry"])
    with pytest.raises(PipelineError, match="does not load on the device.*no TFLite interpreter"):
        deploy("guarded-digits@previous", DEVICE, ssh_config=config, root=str(root),
               python=str(numpy_only_python), registry=releases["registry"], fallback=False)
    base = root / "guarded-digits"
    assert os.readlink(base / "current") == f"releases/{first.release}"
    assert [p.name for p in (base / "releases").iterdir()] == [first.release]
    from tflc.store import Registry  # both deploys are recorded, the refusal with its reason

    refused, deployed = Registry(releases["registry"]).list(kind="deploy")[:2]
    assert deployed.manifest["config"]["result"] == "deployed"
    assert refused.manifest["config"]["result"] == "refused"
    assert refused.manifest["config"]["artifact"] == releases["previous"]
    reason = json.loads(Registry(releases["registry"]).files.file_path(
        refused.id, "deploy.json").read_text())["reason"]
    assert "no TFLite interpreter" in reason


def test_bad_input_is_one_line(releases, sshd, tmp_path):
    config = sshd.client_config()
    with pytest.raises(BadInput, match="NAME@current"):
        deploy("model.tflite", DEVICE, ssh_config=config, registry=releases["registry"])
    with pytest.raises(BadInput, match="control characters"):
        deploy("guarded-digits@current", DEVICE, root="a\nb", registry=releases["registry"])
    with pytest.raises(BadInput, match="release name"):
        rollback_device("../etc", DEVICE, ssh_config=config)
    result = run("deploy", "guarded-digits@current", "--device", DEVICE, "--ssh-config", config,
                 "--root", tmp_path, "--fallback", "x", "--no-fallback")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    with pytest.raises(BadInput, match="no telemetry"):
        fetch_telemetry(DEVICE, name="guarded-digits", root=str(tmp_path / "nothing"),
                        ssh_config=config)
    policy = tmp_path / "policy.json"
    policy.write_text('{"windw": 3}')
    result = run("--registry", releases["registry"], "deploy", "guarded-digits@current",
                 "--device", DEVICE, "--ssh-config", config, "--root", tmp_path,
                 "--policy", policy)
    assert result.exit_code == 2 and "unknown policy field" in result.output
