"""Fixtures for the bench tests: tiny models, Python environments standing in for devices, and a
real OpenSSH server on 127.0.0.1.

The SSH server is Debian's `sshd` started by pytest with its own host key, its own sshd_config,
a generated client key and a free port; it is stopped afterwards. Clients get an ssh_config
file (`ssh -F`) naming that key and a known_hosts file, so nothing in ~/.ssh is read or changed.

Device-side Python environments (tflite-runtime 2.14 with numpy<2, numpy without any TFLite
runtime, a bare venv) are built once and cached across runs under ~/.cache/tflc-test-venvs
(or $TFLC_TEST_VENVS); a test that needs one skips with pip's reason if it cannot be built.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
VENV_CACHE = Path(os.environ.get("TFLC_TEST_VENVS", Path.home() / ".cache" / "tflc-test-venvs"))
PY_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"


# ------------------------------------------------------------------------------------ models
@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """A float and a fully-int8 version of one tiny CNN (8x8x1 -> 10 classes, ~400 parameters),
    converted once, plus a labelled evaluation set and a field-data set that overflows the int8
    input range: {"float", "int8", "eval", "field", "field_x"}."""
    from tflc.tf_env import import_tensorflow, import_tf_keras, quiet_native_output

    out = tmp_path_factory.mktemp("bench_models")
    tf, keras = import_tensorflow(), import_tf_keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    samples = np.random.default_rng(0).random((48, 8, 8, 1), dtype=np.float32)
    with quiet_native_output():
        (out / "float.tflite").write_bytes(
            tf.lite.TFLiteConverter.from_keras_model(model).convert())
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([samples[i:i + 1]] for i in range(32))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        (out / "int8.tflite").write_bytes(converter.convert())
    labels = model.predict(samples, verbose=0).argmax(axis=1)
    np.savez(out / "eval.npz", x=samples, y=labels)
    field = samples * 3.0 - 1.0  # calibrated on [0, 1): about two thirds fall outside
    np.savez(out / "field.npz", x=field)
    return {"float": out / "float.tflite", "int8": out / "int8.tflite", "eval": out / "eval.npz",
            "field": out / "field.npz", "field_x": field}


# ----------------------------------------------------------------------- device Pythons
def _cached_venv(name: str, packages: list[str], *, with_pip: bool = True) -> Path:
    """A virtual environment under the cache, built once (under a lock, then renamed into
    place); returns its python, or skips the test with pip's own reason."""
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    final = VENV_CACHE / f"{name}-{PY_TAG}"
    python = final / "bin" / "python"
    with open(VENV_CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / ".ready").exists():
            return python
        building = VENV_CACHE / f".{name}-{PY_TAG}.building"
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        steps = [[base, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(building)]]
        if packages:
            steps.append([str(building / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", *packages])
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                shutil.rmtree(building, ignore_errors=True)
                reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
                pytest.skip(f"cannot build the {name} environment ({' '.join(step[2:])}): {reason}")
        (building / ".ready").write_text(" ".join(packages) + "\n")
        building.rename(final)
    return python


@pytest.fixture(scope="session")
def tflite_runtime_python() -> Path:
    """Python with tflite-runtime 2.14 and numpy<2: what many Raspberry Pis run."""
    return _cached_venv("tflite-runtime-2.14", ["tflite-runtime==2.14.0", "numpy<2"])


@pytest.fixture(scope="session")
def numpy_only_python() -> Path:
    """Python with numpy but no TFLite runtime at all."""
    return _cached_venv("numpy-only", ["numpy<2"])


@pytest.fixture(scope="session")
def bare_python() -> Path:
    """A virtual environment with nothing installed: no numpy, no TFLite."""
    return _cached_venv("bare", [], with_pip=False)


# --------------------------------------------------------------------------------- sshd
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tflc-test", "-f",
                    str(path)], check=True, capture_output=True)
    return path


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), children before their own children."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


@dataclass
class SshServer:
    """One sshd on 127.0.0.1 with its own keys and config, and client configs to reach it."""

    root: Path
    port: int
    user: str
    process: subprocess.Popen | None = None

    @property
    def host_key(self) -> Path:
        return self.root / "host_ed25519"

    @property
    def client_key(self) -> Path:
        return self.root / "client_ed25519"

    @property
    def log(self) -> Path:
        return self.root / "sshd.log"

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def known_hosts_line(self) -> str:
        key = (self.host_key.with_suffix(".pub")).read_text().split()
        return f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n"

    def client_config(self, name: str = "ssh_config", *, key: Path | None = None,
                      known_hosts: str | None = None) -> Path:
        """An ssh_config with the alias `tflc-test-device`; `known_hosts` overrides the
        trusted keys ("" trusts nothing), `key` the client key."""
        known = self.root / f"{name}.known_hosts"
        known.write_text(self.known_hosts_line() if known_hosts is None else known_hosts)
        config = self.root / name
        config.write_text(
            f"Host tflc-test-device\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
            f"Host *\n  IdentityFile {key or self.client_key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n"
            "  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n")
        return config

    def start(self) -> None:
        config = self.root / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PermitRootLogin prohibit-password\nPrintMotd no\nLogLevel VERBOSE\n"
            "MaxStartups 100\nMaxSessions 100\n")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation folder
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            pytest.skip(f"sshd rejects the test configuration: {check.stderr.strip()}")
        self.process = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(self.log)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        log = self.log.read_text() if self.log.exists() else ""
        self.stop()
        pytest.skip(f"sshd did not start on port {self.port}: {log.strip()[-300:]}")

    def kill_sessions(self) -> None:
        """Kill every connection's processes (and what they run), as a crashing device would."""
        if self.process:
            for pid in descendants(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill_sessions()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def accepted_logins(self) -> int:
        return self.log.read_text().count("Accepted publickey") if self.log.exists() else 0


def _make_server(root: Path) -> SshServer:
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server "
                    "openssh-client; .ci/run does this)")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    server = SshServer(root, free_port(), getpass.getuser())
    keygen(server.host_key)
    keygen(server.client_key)
    (root / "authorized_keys").write_text(server.client_key.with_suffix(".pub").read_text())
    server.start()
    return server


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """The shared SSH server for the session."""
    server = _make_server(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def own_sshd(tmp_path):
    """A private SSH server for tests that stop it."""
    server = _make_server(tmp_path / "sshd")
    yield server
    server.stop()


@pytest.fixture
def remote_tmp(tmp_path) -> Path:
    """The folder the 'device' keeps its temporary files in, to check it is left empty."""
    folder = tmp_path / "device-tmp"
    folder.mkdir()
    return folder
