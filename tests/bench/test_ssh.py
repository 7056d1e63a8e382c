"""`tflc bench` over SSH against a real OpenSSH server on 127.0.0.1 (see conftest.py): the happy
path, connection reuse, clean-up, and each failure a user meets in the field."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tflc.bench import DeviceError, TransportError, bench
from tflc.bench.transports import SshTransport, Upload, parse_device, run_on_device

from .conftest import descendants, free_port, keygen

QUICK = {"runs": 5, "warmup": 1, "progress": False}


def runner_processes(server) -> list[int]:
    """Processes under this sshd running the runner or its workers (not copying it)."""
    found = []
    for pid in descendants(server.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"request.json" in argv or b"--worker" in argv:
            found.append(pid)
    return found


def processes_using(folder: Path) -> str:
    """`pgrep -f` of the folder the runner's temporary files are in: the runner, its worker and
    the shell that started them, wherever they were reparented."""
    return subprocess.run(["pgrep", "-a", "-f", str(folder)], capture_output=True,
                          text=True).stdout


def wait_until(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_two_models_over_one_ssh_connection(tiny_models, sshd, remote_tmp):
    config = sshd.client_config()
    logins = sshd.accepted_logins()
    result = bench([tiny_models["float"], tiny_models["int8"]], "tflc-test-device",
                   ssh_config=config, python=sys.executable, remote_tmp=str(remote_tmp),
                   repeat=2, **QUICK)
    # One master connection carried the folder, four copies, the run and the clean-up.
    assert sshd.accepted_logins() - logins == 1
    assert result.device == "ssh://tflc-test-device"
    assert [(r.model_name, r.trial) for r in result.records] == [
        ("float.tflite", 0), ("int8.tflite", 0), ("float.tflite", 1), ("int8.tflite", 1)]
    assert all(r.latency_ms.count == 5 and r.runtime["name"] == "ai_edge_litert"
               for r in result.records)
    assert result.models[1].ratios["p50"] == pytest.approx(
        result.models[1].latency_ms.p50 / result.models[0].latency_ms.p50)
    assert list(remote_tmp.iterdir()) == []  # the private folder is gone
    # The URL form reaches the same server.
    again = bench(tiny_models["int8"], sshd.url, ssh_config=config, python=sys.executable,
                  remote_tmp=str(remote_tmp), **QUICK)
    assert again.device == sshd.url
    assert again.records[0].output_sha256 == result.records[1].output_sha256


def test_tflite_runtime_on_the_device(tiny_models, sshd, remote_tmp, tflite_runtime_python):
    result = bench(tiny_models["int8"], sshd.url, ssh_config=sshd.client_config(),
                   python=str(tflite_runtime_python), remote_tmp=str(remote_tmp),
                   eval_data=tiny_models["eval"], **QUICK)
    record = result.records[0]
    assert record.runtime == {"name": "tflite_runtime", "version": "2.14.0"}
    assert record.device_facts["numpy"].startswith("1.")
    # The deployed model behaves like the compiled one: the same answers as LiteRT here.
    assert record.fidelity["agreement"] == 1.0
    assert record.fidelity["host_runtime"]["name"] == "ai_edge_litert"
    assert record.fidelity["top1_accuracy"] == record.fidelity["host_top1_accuracy"]


def test_unknown_host_key_is_refused_with_the_command_to_trust_it(tiny_models, sshd, remote_tmp):
    config = sshd.client_config("untrusted", known_hosts="")
    with pytest.raises(DeviceError) as refused:
        bench(tiny_models["int8"], sshd.url, ssh_config=config, python=sys.executable, **QUICK)
    assert refused.value.kind == "unknown_host_key"
    assert not isinstance(refused.value, TransportError)  # never retried, never accepted
    command = re.search(r"trust it with: (ssh-keyscan [^(]*?)\s+\(", refused.value.message)
    assert command and f"-p {sshd.port} 127.0.0.1" in command.group(1)
    # Doing what the message says makes the next run work.
    subprocess.run(command.group(1), shell=True, check=True, capture_output=True)
    result = bench(tiny_models["int8"], sshd.url, ssh_config=config, python=sys.executable,
                   remote_tmp=str(remote_tmp), **QUICK)
    assert result.records[0].latency_ms.count == 5


def test_changed_host_key_is_refused(tiny_models, sshd, tmp_path):
    impostor = keygen(tmp_path / "impostor").with_suffix(".pub").read_text().split()
    config = sshd.client_config(
        "changed", known_hosts=f"[127.0.0.1]:{sshd.port} {impostor[0]} {impostor[1]}\n")
    with pytest.raises(DeviceError) as refused:
        bench(tiny_models["int8"], sshd.url, ssh_config=config, python=sys.executable, **QUICK)
    assert refused.value.kind == "host_key_changed"
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in refused.value.message


def test_wrong_key_is_refused_once(tiny_models, sshd, tmp_path):
    config = sshd.client_config("wrong-key", key=keygen(tmp_path / "stranger"))
    connections = sshd.log.read_text().count("Connection from")
    with pytest.raises(DeviceError) as refused:
        bench(tiny_models["int8"], sshd.url, ssh_config=config, python=sys.executable, **QUICK)
    assert refused.value.kind == "auth"
    assert "Permission denied" in refused.value.message and "ssh-copy-id" in refused.value.message
    assert sshd.log.read_text().count("Connection from") - connections == 1  # not retried


def test_unreachable_host_is_retried_then_reported(tiny_models, sshd):
    url = f"ssh://{sshd.user}@127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(TransportError) as failed:
        bench(tiny_models["int8"], url, ssh_config=sshd.client_config(), python=sys.executable,
              retries=1, **QUICK)
    assert failed.value.kind == "unreachable"
    assert "Connection refused" in failed.value.message
    assert "after 2 attempts" in failed.value.message


def test_server_stopped_mid_run(tiny_models, own_sshd):
    config = own_sshd.client_config()

    def stop_when_running():
        if wait_until(lambda: runner_processes(own_sshd)):
            time.sleep(0.3)
            own_sshd.stop()

    stopper = threading.Thread(target=stop_when_running, daemon=True)
    stopper.start()
    with pytest.raises(TransportError) as failed:
        bench(tiny_models["int8"], own_sshd.url, ssh_config=config, python=sys.executable,
              runs=1, min_duration_s=60, max_runs=10**7, retries=1, progress=False,
              timeout_s=120)
    stopper.join(timeout=5)
    message = failed.value.message
    assert "lost" in message and "after 2 attempts" in message, message
    assert "Connection refused" in message  # the retry found the server gone


def test_missing_python_numpy_or_runtime(tiny_models, sshd, bare_python, numpy_only_python):
    config = sshd.client_config()
    with pytest.raises(DeviceError) as missing:
        bench(tiny_models["int8"], sshd.url, ssh_config=config, python="/no/such/python3", **QUICK)
    assert missing.value.kind == "no_python" and "/no/such/python3" in missing.value.message
    assert "--python" in missing.value.message
    with pytest.raises(DeviceError) as no_numpy:
        bench(tiny_models["int8"], sshd.url, ssh_config=config, python=str(bare_python), **QUICK)
    assert no_numpy.value.kind == "no_numpy"
    assert f"{bare_python} -m pip install ai-edge-litert" in no_numpy.value.message
    with pytest.raises(DeviceError) as no_runtime:
        bench(tiny_models["int8"], sshd.url, ssh_config=config, python=str(numpy_only_python),
              **QUICK)
    assert no_runtime.value.kind == "no_runtime"
    assert f"{numpy_only_python} -m pip install ai-edge-litert" in no_runtime.value.message
    assert no_runtime.value.facts["arch"] == os.uname().machine


def test_timeout_stops_the_runner_and_cleans_up(tiny_models, sshd, remote_tmp):
    with pytest.raises(DeviceError) as slow:
        bench(tiny_models["int8"], sshd.url, ssh_config=sshd.client_config(),
              python=sys.executable, remote_tmp=str(remote_tmp), runs=1, min_duration_s=60,
              max_runs=10**7, timeout_s=4, progress=False)
    assert slow.value.kind == "timeout" and "--timeout" in slow.value.message
    assert wait_until(lambda: not runner_processes(sshd), 10)
    assert wait_until(lambda: not processes_using(remote_tmp), 10), processes_using(remote_tmp)
    assert list(remote_tmp.iterdir()) == []


def test_runner_killed_is_reported(tiny_models, sshd, remote_tmp):
    """SIGKILL, as the out-of-memory killer sends it, to the runner on the device."""
    transport = SshTransport(parse_device(sshd.url), sys.executable,
                             ssh_config=sshd.client_config(), remote_tmp=str(remote_tmp))
    request = {"protocol": 1, "models": [{"id": "m0", "path": "m0.tflite"}], "runs": 1,
               "min_duration_s": 60, "max_runs": 10**8, "warmup": 0}

    runner_pid = []

    def on_event(event):
        if event["event"] == "start":
            runner_pid.append(event["pid"])
        elif event["event"] == "worker" and runner_pid:
            time.sleep(0.5)
            os.kill(runner_pid[0], signal.SIGKILL)

    with pytest.raises(DeviceError) as killed:
        run_on_device(transport, [Upload(tiny_models["int8"], "m0.tflite")], request,
                      timeout_s=60, on_event=on_event)
    assert killed.value.kind == "killed", killed.value.message
    assert "out-of-memory" in killed.value.message and "dmesg" in killed.value.message
    assert list(remote_tmp.iterdir()) == []  # the clean-up stopped what was left and removed it


def test_not_enough_disk_space(tiny_models, sshd, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        with pytest.raises(DeviceError) as full:
            bench(tiny_models["int8"], sshd.url, ssh_config=sshd.client_config(),
                  python=sys.executable, remote_tmp=str(small), **QUICK)
        assert full.value.kind == "disk_full"
        assert "KiB free" in full.value.message and "--remote-tmp" in full.value.message
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_names_and_paths_cannot_inject_commands(tiny_models, sshd, tmp_path):
    evil = "x; touch PWNED1 $(touch PWNED2) `touch PWNED3` '\"; touch PWNED4"
    model = tmp_path / f"{evil}.tflite"
    model.write_bytes(tiny_models["int8"].read_bytes())
    device_tmp = tmp_path / f"tmp {evil}"
    device_tmp.mkdir()
    result = bench(model, sshd.url, ssh_config=sshd.client_config(), python=sys.executable,
                   remote_tmp=str(device_tmp), **QUICK)
    assert result.records[0].model_name == model.name
    assert list(device_tmp.iterdir()) == []
    for folder in (tmp_path, device_tmp, Path.home(), Path.cwd(), Path("/tmp")):
        assert not list(folder.glob("PWNED*")), folder


def test_hosts_that_look_like_options_are_rejected():
    from tflc.errors import BadInput

    for text in ("-oProxyCommand=touch PWNED", "ssh://-oProxyCommand=x", "user@-evil",
                 "ssh://us;er@host", "ftp://host", "ssh://host/path", "host name"):
        with pytest.raises(BadInput):
            parse_device(text)
    assert parse_device("pi@raspberrypi").label == "ssh://pi@raspberrypi"
    assert parse_device("ssh://pi@10.0.0.7:2222").port == 2222
    assert parse_device("ssh://[fe80::1]:22").label == "ssh://[fe80::1]:22"
    assert parse_device("local").kind == "local"


def test_python_under_the_device_users_home(sshd):
    transport = SshTransport(parse_device(sshd.url), "~/venvs/my env/bin/python")
    assert transport._python_word() == "\"$HOME\"/'venvs/my env/bin/python'"


def test_a_backslash_in_the_remote_folder_survives_the_device_shell(tiny_models, sshd, tmp_path):
    """dash's `echo` turns `\\t` and `\\n` into a tab and a newline: the path must come back."""
    device_tmp = tmp_path / "dev\\tmp\\new"
    device_tmp.mkdir()
    result = bench(tiny_models["int8"], sshd.url, ssh_config=sshd.client_config(),
                   python=sys.executable, remote_tmp=str(device_tmp), **QUICK)
    assert result.records[0].latency_ms.count == 5
    assert list(device_tmp.iterdir()) == []


def test_a_newline_in_the_remote_folder_is_refused(tiny_models, sshd, tmp_path):
    from tflc.errors import BadInput

    with pytest.raises(BadInput, match="--remote-tmp"):
        bench(tiny_models["int8"], sshd.url, ssh_config=sshd.client_config(),
              python=sys.executable, remote_tmp=str(tmp_path / "a\nb"), **QUICK)


def test_a_host_that_never_answers_is_given_up_within_the_timeout(tiny_models, sshd):
    """TCP is accepted (the kernel's backlog) but no SSH banner ever comes: the time-out covers
    connecting and every retry, not only the run."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        url = f"ssh://{sshd.user}@127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(TransportError) as silent:
            bench(tiny_models["int8"], url, ssh_config=sshd.client_config(),
                  python=sys.executable, timeout_s=3, retries=2, **QUICK)
        took = time.monotonic() - start
    assert took < 3 + 2.5, took
    assert silent.value.kind == "unreachable" and "--timeout" in silent.value.message


@pytest.mark.parametrize("whom", ["tflc", "terminal"])
def test_ctrl_c_stops_the_runner_on_the_device(tiny_models, sshd, remote_tmp, whom):
    """SIGINT to tflc alone, or to its whole process group as a terminal's Ctrl-C sends it
    (then the ssh clients hear it too): no runner, no worker stays on the device."""
    tflc = Path(sys.executable).with_name("tflc")
    process = subprocess.Popen(
        [str(tflc), "bench", str(tiny_models["int8"]), "--device", sshd.url, "--ssh-config",
         str(sshd.client_config()), "--python", sys.executable, "--runs", "1",
         "--min-duration", "60", "--max-runs", str(10**7), "--remote-tmp", str(remote_tmp)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_until(lambda: len(runner_processes(sshd)) >= 2, 60), "no runner and worker"
        time.sleep(0.5)
        if whom == "tflc":
            process.send_signal(signal.SIGINT)
        else:
            os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130 and "interrupted" in err, err
    # Orphaned, a runner would no longer be below sshd: look for it by its folder too.
    assert wait_until(lambda: not runner_processes(sshd), 5), runner_processes(sshd)
    assert wait_until(lambda: not processes_using(remote_tmp), 5), processes_using(remote_tmp)
    assert list(remote_tmp.iterdir()) == []


def test_tflc_killed_outright_still_stops_the_runner(tiny_models, sshd, remote_tmp):
    """SIGKILL leaves tflc no chance to clean up: the runner sees its connection close (the
    end of its stdin) and stops itself, its worker and its folder with it."""
    tflc = Path(sys.executable).with_name("tflc")
    process = subprocess.Popen(
        [str(tflc), "bench", str(tiny_models["int8"]), "--device", sshd.url, "--ssh-config",
         str(sshd.client_config()), "--python", sys.executable, "--runs", "1",
         "--min-duration", "60", "--max-runs", str(10**7), "--remote-tmp", str(remote_tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_until(lambda: len(runner_processes(sshd)) >= 2, 60), "no runner and worker"
        time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # tflc and its ssh client for the run
        process.wait()

    assert wait_until(lambda: not processes_using(remote_tmp), 5), processes_using(remote_tmp)
    assert wait_until(lambda: list(remote_tmp.iterdir()) == [], 5)


def test_a_relative_remote_folder_is_the_device_users_home(tiny_models, sshd, remote_tmp):
    """`--remote-tmp` without a leading slash is relative to the device user's home, as ssh
    has it; the folder made there is found, used and removed like any other."""
    relative = os.path.relpath(remote_tmp, Path.home())
    result = bench(tiny_models["int8"], sshd.url, ssh_config=sshd.client_config(),
                   python=sys.executable, remote_tmp=relative, **QUICK)
    assert result.records[0].latency_ms.count == 5
    assert list(remote_tmp.iterdir()) == []
