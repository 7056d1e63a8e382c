"""The core install, `pip install tflc` without the `compile` extra, in a fresh virtual environment.

`tflc check`, `export`, `bench` and the device runner need no TensorFlow. This builds tflc's wheel
from the working tree, installs it with its core dependencies only into a new venv (so TensorFlow
is truly absent there, not hidden), and runs those commands on a real int8 model (MLPerf Tiny's
keyword-spotting model). Their results must equal the full install's. A command that needs the
extra must say so in one line and exit 2.

Speed: the venv is created without pip and filled by this interpreter's pip (`pip --python`);
the core's dependency wheels are downloaded once into a wheelhouse under ~/.cache/tflc-test-venvs
(or $TFLC_TEST_VENVS), keyed by the wheel's requirements, and installed from it with
`--no-index`. A changed requirement makes a new wheelhouse.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MLPERF, MLPERF_INT8, REPO, need_mlperf

pytestmark = pytest.mark.slow

VENV_CACHE = Path(os.environ.get("TFLC_TEST_VENVS", Path.home() / ".cache" / "tflc-test-venvs"))
PY_TAG = f"py{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}"
HINT = "tflc: error: {command} needs TensorFlow, which is not installed: pip install 'tflc[compile]'"
# What only the compile extra brings; none of it may be importable in the core install.
COMPILE_ONLY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "h5py",
                "PIL", "matplotlib", "sklearn", "scipy")


def _run(args, *, cwd: Path, env: dict | None = None, timeout: float = 300):
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _checked(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done


def _build_wheel(out: Path) -> Path:
    """tflc's wheel, built from a copy of the working tree (a build in place would write
    build/ and egg-info into the repository while other runs use it). The copy follows the
    tflc/targets symlink, as a build from a checkout does."""
    src = out / "src"
    shutil.copytree(REPO / "tflc", src / "tflc", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    # Without build isolation (no download) when this environment has the build backend.
    try:
        import setuptools
        import wheel  # noqa: F401

        flags = ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 64 else []
    except ImportError:
        flags = []
    _checked(_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *flags,
                   "-w", out / "dist", src], cwd=out), "building tflc's wheel")
    (wheel_file,) = (out / "dist").glob("tflc-*.whl")
    return wheel_file


def _requirements(wheel_file: Path) -> tuple[list[str], list[str]]:
    """(core requirements, all requirements) as the wheel's METADATA declares them."""
    with zipfile.ZipFile(wheel_file) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(name).decode().splitlines()
    every = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in every if "extra ==" not in r], every


def _wheelhouse(wheel_file: Path, core: list[str]) -> Path:
    """The core's dependency wheels, downloaded once per requirement set (under a lock)."""
    key = hashlib.sha256("\n".join(sorted(core)).encode()).hexdigest()[:12]
    final = VENV_CACHE / f"core-wheels-{key}-{PY_TAG}"
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    with open(VENV_CACHE / ".core-wheels.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / ".ready").exists():
            building = final.with_name(final.name + ".building")
            shutil.rmtree(building, ignore_errors=True)
            _checked(_run([sys.executable, "-m", "pip", "download", "-q", "-d", building,
                           wheel_file], cwd=VENV_CACHE), "downloading the core's dependencies")
            for own in building.glob("tflc-*.whl"):
                own.unlink()
            (building / ".ready").write_text("\n".join(core) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            building.rename(final)
    return final


def _fresh_venv(path: Path) -> Path:
    base = getattr(sys, "_base_executable", sys.executable)
    _checked(_run([base, "-m", "venv", "--without-pip", path], cwd=path.parent),
             "creating a virtual environment")
    return path / "bin" / "python"


@dataclass
class CoreInstall:
    python: Path
    tflc: Path
    wheel: Path
    requirements: list[str]  # every Requires-Dist of the wheel, extras included
    env: dict
    work: Path
    install_seconds: float  # building the wheel, creating the venv, installing

    def run(self, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        return _run([self.tflc, *args], cwd=self.work, env=self.env, timeout=timeout)


@pytest.fixture(scope="session")
def core(tmp_path_factory) -> CoreInstall:
    """tflc installed without the compile extra in a new virtual environment."""
    root = tmp_path_factory.mktemp("core_install")
    started = time.perf_counter()
    wheel_file = _build_wheel(root)
    core_requirements, every = _requirements(wheel_file)
    wheels = _wheelhouse(wheel_file, core_requirements)
    python = _fresh_venv(root / "venv")
    _checked(_run([sys.executable, "-m", "pip", "--python", python, "install", "-q",
                   "--no-index", "--find-links", wheels, wheel_file], cwd=root),
             "installing tflc's core")
    seconds = time.perf_counter() - started
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TFLC_DEBUG")}
    env["TFLC_REGISTRY"] = str(root / "registry")
    work = root / "work"
    work.mkdir()
    return CoreInstall(python, python.parent / "tflc", wheel_file, every, env, work, seconds)


def full_tflc(core: CoreInstall, *args) -> subprocess.CompletedProcess:
    """The same command in this test run's own environment: the full install."""
    env = dict(core.env, TFLC_REGISTRY=str(core.work / "full_registry"))
    return _checked(_run([sys.executable, "-m", "tflc", *args], cwd=core.work, env=env),
                    f"full install: tflc {' '.join(map(str, args))}")


def kws() -> Path:
    return need_mlperf(MLPERF_INT8["kws"])


# -------------------------------------------------------------------------------- the install
def test_the_core_install_has_no_tensorflow_and_runs_its_own_tflc(core):
    probe = _checked(_run([core.python, "-c", (
        "import importlib.metadata as m, importlib.util, json, tflc\n"
        f"names = {COMPILE_ONLY!r}\n"
        "found = [n for n in names if importlib.util.find_spec(n) is not None]\n"
        "dists = [d.metadata['Name'] for d in m.distributions()]\n"
        "print(json.dumps({'found': found, 'dists': dists, 'tflc': tflc.__file__}))\n"
    )], cwd=core.work, env=core.env), "probing the core install")
    facts = json.loads(probe.stdout)
    assert facts["found"] == [], f"the core install can import {facts['found']}"
    assert not [d for d in facts["dists"] if d.lower().startswith("tensorflow")]
    assert Path(facts["tflc"]).is_relative_to(core.python.parent.parent), facts["tflc"]
    failed = _run([core.python, "-c", "import tensorflow"], cwd=core.work, env=core.env)
    assert failed.returncode == 1
    assert "No module named 'tensorflow'" in failed.stderr


def test_help_and_every_shipped_target_in_the_core_install(core):
    helped = _checked(core.run("--help"), "tflc --help")
    for command in ("compile", "check", "export", "bench", "runs"):
        assert f"  {command} " in helped.stdout
    listed = _checked(core.run("targets"), "tflc targets").stdout
    shipped = sorted(p.stem for p in (REPO / "targets").glob("*.yaml"))
    assert shipped and all(name in listed for name in shipped), listed


# ------------------------------------------------------------------------- check, export, bench
def test_check_in_the_core_install_equals_the_full_install(core):
    done = _checked(core.run("check", kws(), "--target", "cortex-m4", "--format", "json"),
                    "tflc check")
    result = json.loads(done.stdout)
    assert result["summary"]["runs"] is True and result["summary"]["ops_total"] == 13
    table = _checked(core.run("check", kws(), "--target", "cortex-m4"), "tflc check (table)")
    assert "CONV_2D" in table.stdout and "cortex-m4" in table.stdout
    full = json.loads(full_tflc(core, "check", kws(), "--target", "cortex-m4", "--format",
                                "json").stdout)
    for record in (result, full):
        record.pop("artifact_id", None)
    assert result == full


def test_export_in_the_core_install_equals_the_full_install(core):
    out, full = core.work / "core" / "kws_c", core.work / "full" / "kws_c"
    _checked(core.run("export", kws(), "-o", out, "--target", "cortex-m4"), "tflc export")
    readme = (out / "README.md").read_text()
    assert "measured in the tflite-micro interpreter" in readme  # TFLite Micro ran, not a guess
    full_tflc(core, "export", kws(), "-o", full, "--target", "cortex-m4")
    # The package itself (C++ sources, headers, README), byte for byte; a report beside it
    # names its own output folder.
    package = sorted(p.name for p in out.iterdir() if p.suffix != ".json")
    assert package == sorted(p.name for p in full.iterdir() if p.suffix != ".json")
    assert "model_model_data.cc" in package and "model_arena.h" in package
    for name in package:
        assert (out / name).read_bytes() == (full / name).read_bytes(), name


def test_bench_runs_on_litert_in_the_core_install(core):
    done = _checked(core.run("bench", kws(), "--device", "local", "--runs", "3", "--format",
                             "json"), "tflc bench")
    record = json.loads(done.stdout)
    assert record["runtime"]["name"] == "ai_edge_litert"
    assert record["device_facts"]["python_executable"] == str(core.python)
    (model,) = record["models"]
    assert model["latency_ms"]["count"] == 3 and model["latency_ms"]["p50"] > 0
    table = _checked(core.run("bench", kws(), "--device", "local", "--runs", "3"), "tflc bench")
    assert "p50 [ms]" in table.stdout


def test_the_registry_works_in_the_core_install(core, tmp_path):
    env = dict(core.env, TFLC_REGISTRY=str(tmp_path / "registry"))
    tflc = [core.tflc]
    _checked(_run([*tflc, "check", kws(), "--target", "cortex-m4"], cwd=core.work, env=env), "check")
    listed = json.loads(_checked(_run([*tflc, "runs", "list", "--format", "json"], cwd=core.work,
                                      env=env), "tflc runs list").stdout)
    assert [record["kind"] for record in listed] == ["check"]
    shown = json.loads(_checked(_run([*tflc, "runs", "show", listed[0]["id"], "--format", "json"],
                                     cwd=core.work, env=env), "tflc runs show").stdout)
    versions = shown["manifest"]["versions"]
    assert versions["tensorflow"] is None and versions["ai_edge_litert"]  # what ran, recorded
    _checked(_run([*tflc, "runs", "verify"], cwd=core.work, env=env), "tflc runs verify")


# -------------------------------------------------------------- what needs the compile extra
def keras_model() -> Path:
    return need_mlperf(MLPERF / "kws" / "kws_ref_model_savedmodel")


def test_compile_says_to_install_the_extra(core):
    done = core.run("compile", keras_model(), "-o", core.work / "out", "--calibration", "random",
                    "--format", "json")
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", HINT.format(command="tflc compile") + "\n")
    # With the table output, progress lines ("... loading MODEL") may come first; the error is
    # the one line that is not progress.
    done = core.run("compile", keras_model(), "-o", core.work / "out", "--calibration", "random")
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [line for line in lines if not line.startswith("... ")] == [
        HINT.format(command="tflc compile")]


def test_sensitivity_says_to_install_the_extra(core):
    import numpy as np

    eval_data = core.work / "eval.npz"
    np.savez(eval_data, x=np.zeros((2, 49, 10, 1), np.float32), y=np.zeros(2, np.int64))
    done = core.run("sensitivity", keras_model(), "--eval-data", eval_data)
    assert (done.returncode, done.stderr) == (2, HINT.format(command="tflc sensitivity") + "\n")


def test_the_python_api_says_to_install_the_extra(core):
    done = _run([core.python, "-c", (
        "import sys, tflc\n"
        "from tflc.errors import BadInput\n"
        "try:\n"
        f"    tflc.compile({str(keras_model())!r}, 'out', calibration='random')\n"
        "except BadInput as exc:\n"
        "    print(exc.exit_code, exc.message)\n"
    )], cwd=core.work, env=core.env)
    assert done.stdout == ("2 this part of tflc needs TensorFlow, which is not installed: "
                           "pip install 'tflc[compile]'\n"), done.stderr


def _linked_install(root: Path, leave_out: tuple[str, ...]) -> Path:
    """Python with this run's full install less the named packages: a new venv whose
    site-packages links every other entry of ours, so what is left out is truly not installed
    (no files, no metadata). Returns its python."""
    python = _fresh_venv(root / "venv")
    (site,) = (root / "venv" / "lib").glob("python*/site-packages")
    ours = dict.fromkeys(Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib"))
    for entry in (entry for folder in ours for entry in folder.iterdir()):
        if not entry.name.lower().startswith(leave_out) and not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry)
    return python


@pytest.fixture(scope="session")
def without_tf_keras(tmp_path_factory) -> Path:
    """TensorFlow imports; tf_keras and TF-MOT are not installed."""
    return _linked_install(tmp_path_factory.mktemp("without_tf_keras"),
                           ("tf_keras", "tensorflow_model_optimization"))


def test_compile_without_tf_keras_says_to_install_the_extra(without_tf_keras, tmp_path):
    model = need_mlperf(MLPERF / "vww" / "vww_96.h5")  # a tf_keras model
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TFLC_DEBUG")}
    env["TFLC_REGISTRY"] = str(tmp_path / "registry")
    probe = _run([without_tf_keras, "-c", "import importlib.util as u; "
                  "print([bool(u.find_spec(n)) for n in ('tensorflow', 'tf_keras')])"],
                 cwd=tmp_path, env=env)
    assert probe.stdout == "[True, False]\n", probe.stderr
    done = _run([without_tf_keras, "-m", "tflc", "compile", model, "-o", tmp_path / "out",
                 "--calibration", "random", "--format", "json"], cwd=tmp_path, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", (
        "tflc: error: tflc compile needs tf_keras, which is not installed: "
        "pip install 'tflc[compile]'\n"))


def test_tf_env_without_tf_mot_says_to_install_the_extra(tmp_path):
    python = _linked_install(tmp_path, ("tensorflow_model_optimization",))
    done = _run([python, "-c", (
        "from tflc.errors import BadInput\n"
        "from tflc.tf_env import import_tf_keras, import_tfmot\n"
        "import_tf_keras()\n"
        "try:\n"
        "    import_tfmot()\n"
        "except BadInput as exc:\n"
        "    print(exc.exit_code, exc.message)\n"
    )], cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.stdout == ("2 this part of tflc needs TF-MOT (tensorflow-model-optimization), "
                           "which is not installed: pip install 'tflc[compile]'\n"), done.stderr


# ---------------------------------------------------------------------- the extra resolves
def test_the_compile_extra_resolves_to_one_tensorflow(core, tmp_path):
    """`pip install 'tflc[compile]'` as a user runs it: one TensorFlow (the `tensorflow`
    distribution tf-keras and TF-MOT ask for), nothing in conflict. Resolved with
    --dry-run, which reads the packages' metadata without downloading TensorFlow."""
    assert "tensorflow==2.21.*; extra == \"compile\"" in core.requirements
    python = _fresh_venv(tmp_path / "venv")
    done = _run([sys.executable, "-m", "pip", "--python", python, "install", "--dry-run", "-q",
                 "--report", "-", f"tflc[compile] @ {core.wheel.as_uri()}"], cwd=tmp_path,
                timeout=600)
    if done.returncode != 0 and any(word in done.stderr for word in (
            "NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")):
        pytest.skip(f"no package index reachable: {done.stderr.strip().splitlines()[-1]}")
    _checked(done, "pip install --dry-run 'tflc[compile]'")
    names = {item["metadata"]["name"].lower().replace("_", "-")
             for item in json.loads(done.stdout)["install"]}
    assert {"tensorflow", "tf-keras", "tensorflow-model-optimization", "h5py", "pillow",
            "matplotlib", "scikit-learn", "ai-edge-litert", "tflite-micro"} <= names
    assert not {"tensorflow-cpu", "tensorflow-intel", "tf-nightly"} & names
