#!/usr/bin/env python3
"""tflc's benchmark runner: the one file that travels to the device and measures there.

Why one file, importing nothing of tflc: the device (a Raspberry Pi, a dev board, this very
machine) has a Python, numpy and some TFLite interpreter, and nothing else of ours. The host copies
this file, the models and a JSON request into a private temporary folder on the device, runs it
with the device's Python, and reads one JSON response from its standard output. It runs on
Python 3.8 and newer with numpy 1.x or 2.x and whichever interpreter the device has:
`ai_edge_litert`, `tflite_runtime` (2.14 on many Pis, with numpy<2) or `tensorflow.lite`.

Why the work is split over processes: the orchestrator (this file run as a script) records the
device and its conditions with the standard library alone, and starts one worker process per
model (this file with `--worker`). Each worker imports numpy and the interpreter, loads one model
and times it on request. So several models run interleaved (A B A B ...), each in its own clean
process as it would be deployed, drift and heat affect them alike, each model's peak memory is its
own, and a worker killed by the out-of-memory killer is reported by name instead of taking the
whole run with it.

Usage (the host writes the request; people rarely call this by hand):

    python3 runner.py REQUEST.json    run the benchmark; one JSON response on stdout
    python3 runner.py --probe         the device facts and which TFLite runtime imports
    python3 runner.py --version

Protocol 1. The request is a JSON object:

    protocol        1
    models          [{"id": "m0", "path": "m0.tflite"}, ...]  (paths relative to the request file)
    runtime         "auto" | "ai_edge_litert" | "tflite_runtime" | "tensorflow"
    threads         interpreter threads (null: the runtime's default)
    delegate        {"kind": "none"} (builtin kernels only), {"kind": "default"} (the runtime's
                    default delegate, XNNPACK) or {"kind": "external", "library": "libedgetpu.so.1",
                    "options": {"device": "usb"}}
    warmup          untimed runs after the first inference
    runs            timed runs per model and trial (at least)
    min_duration_s  keep timing until this much time passed (per model and trial)
    max_runs        but never more timed runs than this per model and trial (100000), so that
                    a tiny model under a long minimum duration cannot fill the memory
    repeat          trials: each starts fresh processes (load, warm-up, timed runs)
    rounds          slices the timed runs are cut into when several models interleave (default 10)
    inputs          {"kind": "random", "seed": 0} or {"kind": "npz", "path": "inputs.npz"}
    eval            null or {"path": "eval.npz"}: run every sample once, return the outputs
    return_outputs  include the outputs for the first input batch
    deadline_s      the runner gives up (kind "timeout") after this many seconds
    busy_load_per_core  load average per core above which the device counts as busy (0.5)
    remove_dir_on_exit  delete the folder holding this file when done (the host's temp folder)
    stop_when_stdin_closes  the host holds stdin open while it listens; its end means the host
                    is gone: stop the workers, answer "host_gone", clean up, exit
    one_process     (optional, default false; `tflc profile`) all models load into ONE worker,
                    one after the other, and are timed interleaved there: hundreds of single-op
                    models cost one process start, not hundreds. A model that cannot load is
                    answered as {"id", "error": {"kind", "message"}} and not timed; the others run

The response is one JSON object on one line: {"protocol": 1, "ok": true, "device": {...},
"runtime": {...}, "trials": [{"trial": 0, "conditions_before": {...}, "conditions_after": {...},
"models": [{"id", "load_ms", "allocate_ms", "first_inference_ms", "warmup_ms", "latencies_ms",
"baseline_rss_bytes", "peak_rss_bytes", "output_sha256", "tensors", ...}]}], "warnings": [...]}, or
{"protocol": 1, "ok": false, "error": {"kind", "message", ...}}. Exit status 0 when ok, 3 when
the response is an error, 2 for a request that cannot be read. Progress goes to stderr as lines
starting with "@@tflc " followed by a JSON event: {"event": "start", "pid"},
{"event": "worker", "model", "pid"}, {"event": "progress", "done", "total", "trial", "model"}.
"""

# This file must run on Python 3.8, so zip() cannot take strict= (3.10+).
# ruff: noqa: B905

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time

PROTOCOL = 1
RUNNER_VERSION = "1.0"
EVENT_PREFIX = "@@tflc "
EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 2, 3
RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
TEMP_DIR_PREFIX = "tflc-bench."

# What `vcgencmd get_throttled` bits mean (Raspberry Pi firmware documentation).
THROTTLE_BITS = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage has occurred",
    17: "ARM frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}

# ARM's CPU part numbers, for boards whose /proc/cpuinfo names no model (64-bit Raspberry Pi OS).
ARM_CPU_PARTS = {
    0xC07: "Cortex-A7", 0xC08: "Cortex-A8", 0xC09: "Cortex-A9", 0xC0F: "Cortex-A15",
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57",
    0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76",
    0xD0D: "Cortex-A77", 0xD41: "Cortex-A78", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710",
}


class RunnerError(Exception):
    """A failure the host turns into one clear line: `kind` says which, `extra` adds facts."""

    def __init__(self, kind: str, message: str, **extra):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.extra = extra

    def to_dict(self) -> dict:
        return dict(self.extra, kind=self.kind, message=self.message)


def emit_event(**event) -> None:
    """A progress line on stderr; the host reads these to drive its progress bar.

    A closed stderr means the host went away (the SSH connection dropped): stop measuring for
    nobody and let the exit path remove our folder.
    """
    try:
        sys.stderr.write(EVENT_PREFIX + json.dumps(event) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        raise RunnerError("host_gone", "the host stopped listening; giving up") from None


# ------------------------------------------------------------------------------- device facts
def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace").strip("\0\n ")
    except OSError:
        return None


def _command(argv: list, timeout: float = 5.0) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode("utf-8", "replace").strip() if done.returncode == 0 else None


def cpu_model() -> str | None:
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Processor", "cpu model"):
        match = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", info, re.MULTILINE)
        if match:
            return match.group(1).strip()
    match = re.search(r"^CPU part\s*:\s*(0x[0-9a-fA-F]+)", info, re.MULTILINE)
    if match:
        part = int(match.group(1), 16)
        return ARM_CPU_PARTS.get(part, f"ARM CPU part 0x{part:x}")
    return _command(["sysctl", "-n", "machdep.cpu.brand_string"]) or platform.processor() or None


def os_release() -> str | None:
    text = _read("/etc/os-release") or ""
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.MULTILINE)
    return match.group(1) if match else None


def meminfo_bytes(field: str) -> int | None:
    match = re.search(rf"^{field}:\s*(\d+) kB", _read("/proc/meminfo") or "", re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


# Words naming an architecture in /proc/cpuinfo, the kernel's arch or its release string.
_ARCH_FAMILIES = {"x86": ("x86_64", "amd64", "i386", "i686"), "arm": ("aarch64", "arm64")}


def _family(name: str | None) -> str | None:
    name = (name or "").lower()
    for family, words in _ARCH_FAMILIES.items():
        if any(word in name for word in words) or (family == "arm" and name.startswith("arm")):
            return family
    return None


def _cpuinfo_family(info: str) -> str | None:
    """Which architecture /proc/cpuinfo describes: x86 lists vendor_id and flags, Arm lists
    CPU implementer and Features."""
    if re.search(r"^(vendor_id|flags)\s*:", info, re.MULTILINE):
        return "x86"
    if re.search(r"^(CPU implementer|Features)\s*:", info, re.MULTILINE):
        return "arm"
    return None


def emulation() -> dict:
    """Signs that this Python runs under a user-mode emulator (qemu-user via binfmt_misc).

    qemu-user answers `uname -m` (aarch64) and fakes the process's own /proc/self (exe, maps,
    auxv), but the kernel underneath is the host's and other processes are not disguised:
    /proc/sys/kernel/arch, the kernel release and (qemu before 8.1) /proc/cpuinfo name the
    host's architecture, the parent process's executable is the qemu binary, and where
    binfmt_misc is visible (not inside a chroot) it holds a qemu handler for this very
    architecture, which no native machine needs."""
    machine = platform.machine()
    mine = _family(machine)
    signs = []
    kernel_arch = _read("/proc/sys/kernel/arch")
    if kernel_arch and mine and _family(kernel_arch) not in (None, mine):
        signs.append(f"/proc/sys/kernel/arch is {kernel_arch}, uname -m {machine}")
    cpuinfo = _cpuinfo_family(_read("/proc/cpuinfo") or "")
    if cpuinfo and mine and cpuinfo != mine:
        signs.append(f"/proc/cpuinfo describes an {cpuinfo} CPU")
    release = platform.release()
    if mine and _family(release) not in (None, mine):
        signs.append(f"kernel {release} is built for another architecture")
    try:
        parent = os.readlink(f"/proc/{os.getppid()}/exe")
    except OSError:
        parent = ""
    if "qemu" in parent:  # qemu-aarch64-static, or Debian's /usr/libexec/qemu-binfmt/ wrapper
        signs.append(f"the parent process runs under {parent}")
    handler = f"/proc/sys/fs/binfmt_misc/qemu-{machine}"
    if (_read(handler) or "").startswith("enabled"):
        signs.append(f"{handler} is registered and enabled")
    return {"emulated": bool(signs), "signs": signs}


def device_facts() -> dict:
    """What the device is: recorded once per run, the same for every trial."""
    return {
        "hostname": platform.node(),
        "os": platform.system(),
        "os_release": os_release(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "board": _read("/proc/device-tree/model"),
        "memory_total_bytes": meminfo_bytes("MemTotal"),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "emulation": emulation(),
    }


def cpu_temperature_c() -> float | None:
    """The SoC temperature from the first thermal zone that looks like the CPU's."""
    base = "/sys/class/thermal"
    try:
        zones = sorted(name for name in os.listdir(base) if name.startswith("thermal_zone"))
    except OSError:
        return None
    readings = []
    for zone in zones:
        kind = (_read(os.path.join(base, zone, "type")) or "").lower()
        raw = _read(os.path.join(base, zone, "temp"))
        if raw and raw.lstrip("-").isdigit():
            readings.append((not any(word in kind for word in ("cpu", "soc", "x86_pkg")), int(raw)))
    if not readings:
        return None
    return round(sorted(readings)[0][1] / 1000.0, 1)


def throttling() -> dict | None:
    """`vcgencmd get_throttled`, decoded; None where the tool does not exist (not a Pi)."""
    text = _command(["vcgencmd", "get_throttled"])
    match = re.search(r"throttled=(0x[0-9a-fA-F]+)", text or "")
    if not match:
        return None
    value = int(match.group(1), 16)
    flags = [name for bit, name in sorted(THROTTLE_BITS.items()) if value & (1 << bit)]
    return {"raw": match.group(1), "flags": flags}


def conditions() -> dict:
    """What may change during a run: heat, throttling, clock, governor, load."""
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq/"
    cur, top = _read(cpufreq + "scaling_cur_freq"), _read(cpufreq + "scaling_max_freq")
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {
        "time": round(time.time(), 3),
        "temperature_c": cpu_temperature_c(),
        "throttled": throttling(),
        "governor": _read(cpufreq + "scaling_governor"),
        "clock_mhz": int(cur) // 1000 if cur and cur.isdigit() else None,
        "max_clock_mhz": int(top) // 1000 if top and top.isdigit() else None,
        "load_average": load,
        "memory_available_bytes": meminfo_bytes("MemAvailable"),
    }


def condition_warnings(before: dict, after: dict, cores: int, busy_per_core: float) -> list:
    """Plain-language reasons the figures may not be trustworthy."""
    warnings = []
    load = before.get("load_average")
    if load and cores and load[0] > busy_per_core * cores:
        warnings.append(
            f"device busy: load average {load[0]:.2f} on {cores} cores before the run; other "
            "work competes for the CPU and inflates latency")
    for label, snap in (("before", before), ("after", after)):
        flags = (snap.get("throttled") or {}).get("flags") or []
        if flags:
            warnings.append(f"throttling {label} the run: " + ", ".join(flags))
    governor = before.get("governor")
    if governor and governor not in ("performance",):
        warnings.append(
            f"CPU governor is '{governor}': the clock follows the load; set 'performance' for "
            "steadier figures")
    hot = [s.get("temperature_c") for s in (before, after) if s.get("temperature_c") is not None]
    if hot and max(hot) >= 80.0:
        warnings.append(f"CPU at {max(hot):.1f} C: close to thermal throttling")
    return warnings


def pip_command(python: str | None = None) -> str:
    """The install command that fits this device's Python and architecture."""
    python = shlex.quote(python or sys.executable or "python3")
    machine = platform.machine().lower()
    version = sys.version_info[:2]
    wheels = machine in ("x86_64", "amd64", "aarch64", "arm64")
    if wheels and version >= (3, 9):
        return f"{python} -m pip install ai-edge-litert"
    if wheels and (3, 8) <= version <= (3, 11):
        return f"{python} -m pip install tflite-runtime==2.14.0 'numpy<2'"
    return (f"{python} -m pip install tflite-runtime  (PyPI may have no wheel for {machine} with "
            f"Python {version[0]}.{version[1]}; a 64-bit OS with Python 3.9+ can use "
            "ai-edge-litert)")


# ------------------------------------------------------------------------------------ runtimes
class Runtime:
    """The parts of an interpreter package the runner uses, whichever package it came from."""

    def __init__(self, name, version, interpreter, load_delegate, resolver_types):
        self.name = name
        self.version = version
        self.Interpreter = interpreter
        self.load_delegate = load_delegate
        self.OpResolverType = resolver_types

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version}


def _package_version(distribution: str, module) -> str | None:
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        return None
    try:
        return metadata.version(distribution)
    except Exception:  # noqa: BLE001 - any metadata problem just means "unknown"
        return None


def _import_runtime(name: str) -> Runtime:
    if name == "ai_edge_litert":
        import ai_edge_litert
        from ai_edge_litert import interpreter as mod

        version = _package_version("ai-edge-litert", ai_edge_litert)
        return Runtime(name, version, mod.Interpreter, mod.load_delegate, mod.OpResolverType)
    if name == "tflite_runtime":
        import tflite_runtime
        from tflite_runtime import interpreter as mod

        version = _package_version("tflite-runtime", tflite_runtime)
        return Runtime(name, version, mod.Interpreter, mod.load_delegate, mod.OpResolverType)
    if name == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        lite = tf.lite
        return Runtime(name, tf.__version__, lite.Interpreter, lite.experimental.load_delegate,
                       lite.experimental.OpResolverType)
    raise RunnerError("protocol", f"unknown runtime {name!r}; use one of auto, "
                      + ", ".join(RUNTIMES))


def load_runtime(preferred: str = "auto") -> Runtime:
    """The first interpreter that imports, or a `no_runtime` error with the pip command."""
    try:
        import numpy  # noqa: F401 - every interpreter needs it
    except Exception as exc:  # noqa: BLE001 - a broken numpy is as useless as none
        raise RunnerError(
            "no_numpy", f"numpy cannot be imported by {sys.executable} ({exc}); install it "
            f"with: {pip_command()}", pip_command=pip_command()) from None
    names = RUNTIMES if preferred in (None, "", "auto") else (preferred,)
    problems = []
    for name in names:
        try:
            return _import_runtime(name)
        except RunnerError:
            raise
        except Exception as exc:  # noqa: BLE001 - ImportError, or numpy ABI errors from old wheels
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problems.append(f"{name}: {first_line}")
    wanted = f"the requested runtime {preferred}" if len(names) == 1 else "no TFLite runtime"
    raise RunnerError(
        "no_runtime",
        f"{wanted} can be imported by {sys.executable} (Python {platform.python_version()}, "
        f"{platform.machine()}) [" + "; ".join(problems) + f"]; install one with: {pip_command()}",
        pip_command=pip_command(), python=sys.executable, arch=platform.machine())


# ------------------------------------------------------------------------------------- tensors
def tensor_info(detail: dict) -> dict:
    """An interpreter's tensor details as plain JSON data."""
    import numpy as np

    scale, zero_point = detail.get("quantization") or (0.0, 0)
    return {
        "name": detail["name"],
        "index": int(detail["index"]),
        "shape": [int(v) for v in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def _short_name(name: str) -> str:
    """'serving_default_image:0' -> 'image': how a Keras input name shows up in TFLite."""
    name = name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def random_inputs(infos: list, seed: int) -> list:
    """One batch of inputs spanning each input's range, the same on every device.

    The bytes come from SHAKE-256 of the seed, not from numpy's generators, so host and device
    feed identical inputs whatever their numpy versions, and output checksums can be compared.
    Integer inputs cover their type's whole (quantized) range; float inputs lie in [-1, 1).
    """
    import numpy as np

    batch = []
    for position, info in enumerate(infos):
        dtype = np.dtype(info["dtype"])
        count = 1
        for dim in info["shape"]:
            count *= max(int(dim), 1)
        shape = [max(int(dim), 1) for dim in info["shape"]]
        stream = hashlib.shake_256(f"tflc-bench:{seed}:{position}".encode())
        if dtype.kind == "f":
            raw = np.frombuffer(stream.digest(4 * count), dtype="<u4").astype(np.float64)
            values = (raw / 2.0 ** 32 * 2.0 - 1.0).astype(dtype)
        elif dtype.kind in "iu" and dtype.itemsize <= 2:
            little = dtype.newbyteorder("<")
            values = np.frombuffer(stream.digest(dtype.itemsize * count), dtype=little)
            values = values.astype(dtype)
        elif dtype.kind in "iu":  # int32/int64 inputs are usually indices: keep them small
            values = (np.frombuffer(stream.digest(count), dtype=np.uint8) % 2).astype(dtype)
        else:
            values = (np.frombuffer(stream.digest(count), dtype=np.uint8) % 2).astype(dtype)
        batch.append(values.reshape(shape))
    return batch


def read_npz_inputs(path: str, infos: list) -> tuple:
    """The samples for each input from an .npz: `x` for a one-input model, else one array per
    input name; returns (arrays, labels or None)."""
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
        arrays = {key: data[key] for key in data.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise RunnerError("inputs", f"{os.path.basename(path)}: cannot read as .npz ({exc})") \
            from None
    labels = arrays.pop("y", None)
    names = [_short_name(info["name"]) for info in infos]
    chosen = []
    for info, short in zip(infos, names):
        for key in (info["name"], short):
            if key in arrays:
                chosen.append(arrays[key])
                break
        else:
            if len(infos) == 1 and ("x" in arrays or len(arrays) == 1):
                chosen.append(arrays["x"] if "x" in arrays else next(iter(arrays.values())))
            else:
                found = ", ".join(sorted(arrays)) or "none"
                raise RunnerError(
                    "inputs", f"{os.path.basename(path)}: no array for input '{short}'; expected "
                    "`x` (one input) or arrays named " + ", ".join(names) + f" (found {found})")
    counts = {len(array) for array in chosen}
    if len(counts) != 1 or 0 in counts:
        raise RunnerError("inputs", f"{os.path.basename(path)}: the input arrays hold different "
                          f"or zero sample counts {sorted(counts)}")
    for array, info, short in zip(chosen, infos, names):
        sample = [max(int(d), 1) for d in info["shape"][1:]]
        size = 1
        for dim in sample:
            size *= dim
        if int(np.prod(array.shape[1:], dtype=np.int64)) != size:
            raise RunnerError(
                "inputs", f"{os.path.basename(path)}: samples of '{short}' have shape "
                f"{list(array.shape[1:])}, the model expects {sample}")
    return chosen, labels


def quantize(values, info: dict):
    """Float samples to the input tensor's type: affine quantization for integer tensors."""
    import numpy as np

    dtype = np.dtype(info["dtype"])
    values = np.asarray(values)
    if dtype.kind in "iu" and values.dtype.kind == "f":
        limits = np.iinfo(dtype)
        scale = info["scale"] or 1.0
        q = np.round(values.astype(np.float64) / scale) + info["zero_point"]
        return np.clip(q, limits.min, limits.max).astype(dtype)
    return values.astype(dtype)


def saturation(arrays: list, infos: list) -> list:
    """Per input, the share of values outside (float data) or at the limits of (integer data)
    the model's integer input range: a first sign that field data left the calibration range."""
    import numpy as np

    shares = []
    for values, info in zip(arrays, infos):
        dtype = np.dtype(info["dtype"])
        entry = {"input": _short_name(info["name"]), "dtype": dtype.name,
                 "values": int(values.size)}
        if dtype.kind not in "iu" or values.size == 0:
            entry.update(saturated_fraction=None, below=None, above=None,
                         note="not an integer input: nothing saturates")
            shares.append(entry)
            continue
        limits = np.iinfo(dtype)
        if values.dtype.kind == "f":
            q = np.round(values.astype(np.float64) / (info["scale"] or 1.0)) + info["zero_point"]
            below, above = int((q < limits.min).sum()), int((q > limits.max).sum())
            entry["rule"] = f"quantized value outside [{limits.min}, {limits.max}]"
        else:
            below, above = int((values <= limits.min).sum()), int((values >= limits.max).sum())
            entry["rule"] = f"integer value at {limits.min} or {limits.max}"
        entry.update(below=below, above=above,
                     saturated_fraction=round((below + above) / float(values.size), 6))
        shares.append(entry)
    return shares


def batches(arrays: list, infos: list) -> tuple:
    """Cut per-input sample arrays into model-sized batches (the last one padded by repeating
    its final sample); returns (list of batches, number of real samples)."""
    import numpy as np

    total = len(arrays[0])
    size = max(int(infos[0]["shape"][0]), 1) if infos[0]["shape"] else 1
    prepared = [quantize(a, info).reshape([len(a)] + [max(int(d), 1) for d in info["shape"][1:]])
                for a, info in zip(arrays, infos)]
    out = []
    for start in range(0, total, size):
        batch = []
        for array in prepared:
            chunk = array[start:start + size]
            if len(chunk) < size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
            batch.append(np.ascontiguousarray(chunk))
        out.append(batch)
    return out, total


def peak_rss_bytes() -> int | None:
    """The process's peak resident memory (VmHWM), or getrusage's maximum where /proc is absent."""
    match = re.search(r"^VmHWM:\s*(\d+) kB", _read("/proc/self/status") or "", re.MULTILINE)
    if match:
        return int(match.group(1)) * 1024
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int | None:
    match = re.search(r"^VmRSS:\s*(\d+) kB", _read("/proc/self/status") or "", re.MULTILINE)
    return int(match.group(1)) * 1024 if match else peak_rss_bytes()


# ----------------------------------------------------------------------------- model sessions
class ModelSession:
    """One loaded model: its interpreter, its inputs, and the timed loop.

    The host uses this class too (imported as a module) to compute its own reference outputs, so
    device and host prepare inputs in exactly the same way.
    """

    def __init__(self, runtime: Runtime, path: str, threads=None, delegate=None):
        delegate = delegate or {"kind": "default"}
        kind = delegate.get("kind", "default")
        kwargs = {"model_path": path}
        if threads:
            kwargs["num_threads"] = int(threads)
        if kind == "none":
            kwargs["experimental_op_resolver_type"] = \
                runtime.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        elif kind == "external":
            library = delegate.get("library")
            options = {str(k): str(v) for k, v in (delegate.get("options") or {}).items()}
            try:
                kwargs["experimental_delegates"] = [runtime.load_delegate(library, options)]
            except Exception as exc:  # noqa: BLE001 - ValueError/OSError/RuntimeError by runtime
                reason = str(exc).strip() or type(exc).__name__
                raise RunnerError("delegate", f"cannot load the delegate library {library}: "
                                  f"{reason}") from None
        elif kind != "default":
            raise RunnerError("protocol", f"unknown delegate kind {kind!r}")
        self.runtime = runtime
        self.baseline_rss_bytes = current_rss_bytes()
        start = time.perf_counter()
        try:
            self.interpreter = runtime.Interpreter(**kwargs)
        except Exception as exc:  # noqa: BLE001 - the runtime raises ValueError or RuntimeError
            reason = str(exc).strip() or type(exc).__name__
            raise RunnerError("model_load", f"{runtime.name} cannot load "
                              f"{os.path.basename(path)}: {reason}") from None
        self.load_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        try:
            self.interpreter.allocate_tensors()
        except Exception as exc:  # noqa: BLE001
            reason = str(exc).strip() or type(exc).__name__
            raise RunnerError("model_load", f"{runtime.name} cannot allocate tensors for "
                              f"{os.path.basename(path)}: {reason}") from None
        self.allocate_ms = (time.perf_counter() - start) * 1e3
        self.inputs = [tensor_info(d) for d in self.interpreter.get_input_details()]
        self.outputs = [tensor_info(d) for d in self.interpreter.get_output_details()]
        self.batches = [random_inputs(self.inputs, 0)]

    def use_random_inputs(self, seed: int) -> None:
        self.batches = [random_inputs(self.inputs, seed)]

    def use_npz_inputs(self, path: str) -> list:
        """Feed the file's samples in turn; returns their saturation per input."""
        arrays, _ = read_npz_inputs(path, self.inputs)
        self.batches, _ = batches(arrays, self.inputs)
        return saturation(arrays, self.inputs)

    def _feed(self, batch: list) -> None:
        for info, values in zip(self.inputs, batch):
            self.interpreter.set_tensor(info["index"], values)

    def invoke_once_ms(self, batch_index: int = 0) -> float:
        self._feed(self.batches[batch_index % len(self.batches)])
        start = time.perf_counter_ns()
        self.interpreter.invoke()
        return (time.perf_counter_ns() - start) / 1e6

    def timed_runs(self, count: int, min_seconds: float = 0.0, cap: int = 100000) -> list:
        """Time `count` invocations (and more until `min_seconds` passed, but never more than
        `cap`), inputs set outside the timed region; returns each time in milliseconds."""
        clock = time.perf_counter_ns
        invoke = self.interpreter.invoke
        feeds = self.batches
        several = len(feeds) > 1
        if not several:
            self._feed(feeds[0])
        limit = int(min_seconds * 1e9)
        samples = []
        append = samples.append
        start = clock()
        done = 0
        while (done < count or clock() - start < limit) and done < cap:
            if several:
                self._feed(feeds[done % len(feeds)])
            t0 = clock()
            invoke()
            append(clock() - t0)
            done += 1
        return [ns / 1e6 for ns in samples]

    def output_arrays(self) -> list:
        return [self.interpreter.get_tensor(info["index"]).copy() for info in self.outputs]

    def first_batch_outputs(self) -> list:
        """The outputs for the first input batch: what the checksum and `outputs` describe."""
        self._feed(self.batches[0])
        self.interpreter.invoke()
        return self.output_arrays()

    def evaluate(self, path: str) -> dict:
        """Run every sample of a labelled .npz once; the first output per sample and its top-1."""
        import numpy as np

        arrays, _ = read_npz_inputs(path, self.inputs)
        feeds, total = batches(arrays, self.inputs)
        first = self.outputs[0]
        collected = []
        for batch in feeds:
            self._feed(batch)
            self.interpreter.invoke()
            collected.append(self.interpreter.get_tensor(first["index"]).copy())
        values = np.concatenate(collected)[:total].reshape(total, -1)
        return {"count": int(total), "output": dict(first, values=values.tolist()),
                "top1": predicted_classes(values, first)}


def predicted_classes(values, info: dict) -> list | None:
    """Each sample's class: the arg-max of several scores; for one score (a binary classifier)
    class 1 above 0.5 when the scores read as probabilities, above 0 when they read as logits
    (on the dequantized value: an int8 0 is not a probability of 0)."""
    import numpy as np

    if values.shape[1] > 1:
        return values.argmax(axis=1).tolist()
    if values.shape[1] == 0:
        return None
    scores = values[:, 0].astype(np.float64)
    if info.get("scale"):
        scores = (scores - info.get("zero_point", 0)) * info["scale"]
    cut = 0.5 if bool(np.all((scores >= 0) & (scores <= 1))) else 0.0
    return (scores > cut).astype(np.int64).tolist()


def output_digest(arrays: list) -> str:
    """SHA-256 over each output's dtype, shape and bytes: equal digests, identical outputs."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update((f"{array.dtype.str}{list(array.shape)}").encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def outputs_as_json(arrays: list, infos: list) -> list:
    return [dict(info, values=array.tolist()) for array, info in zip(arrays, infos)]


# ------------------------------------------------------------------------------------ worker
def _worker_reply(state: dict, command: dict) -> dict:
    name = command.get("cmd")
    session = state.get("session")
    if command.get("id") is not None and name != "load":  # one_process: pick the model by id
        session = state.setdefault("sessions", {}).get(command["id"])
    if name == "load":
        runtime = load_runtime(command.get("runtime") or "auto")
        import numpy as np

        session = ModelSession(runtime, command["path"], command.get("threads"),
                               command.get("delegate"))
        state["session"] = session
        if command.get("id") is not None:
            state.setdefault("sessions", {})[command["id"]] = session
        inputs = command.get("inputs") or {"kind": "random", "seed": 0}
        shares = None
        if inputs.get("kind") == "npz":
            shares = session.use_npz_inputs(inputs["path"])
        else:
            session.use_random_inputs(int(inputs.get("seed", 0)))
        return {"runtime": runtime.describe(), "numpy": np.__version__,
                "load_ms": session.load_ms, "allocate_ms": session.allocate_ms,
                "baseline_rss_bytes": session.baseline_rss_bytes,
                "tensors": {"inputs": session.inputs, "outputs": session.outputs},
                "saturation": shares}
    if session is None:
        raise RunnerError("protocol", f"worker got {name!r} before a model was loaded")
    if name == "warmup":
        first = session.invoke_once_ms()
        rest = [session.invoke_once_ms(i + 1) for i in range(int(command.get("count", 0)))]
        return {"first_inference_ms": first, "warmup_ms": rest}
    if name == "run":
        return {"latencies_ms": session.timed_runs(int(command["count"]),
                                                   float(command.get("min_seconds", 0.0)),
                                                   int(command.get("cap", 100000)))}
    if name == "finish":
        peak = peak_rss_bytes()
        arrays = session.first_batch_outputs()
        reply = {"peak_rss_bytes": peak, "output_sha256": output_digest(arrays)}
        if command.get("return_outputs"):
            reply["outputs"] = outputs_as_json(arrays, session.outputs)
        return reply
    if name == "eval":
        return {"eval": session.evaluate(command["path"])}
    raise RunnerError("protocol", f"unknown worker command {name!r}")


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when the orchestrator dies (say, killed for
    memory), so no worker keeps timing, or keeps the SSH session open, for nobody."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the orchestrator died before prctl took effect
        os._exit(EXIT_FAILED)


def worker_main() -> int:
    """Serve one model: read a JSON command per line from stdin, answer one JSON line each.

    The answers go to a private copy of the original stdout, and file descriptor 1 is pointed at
    stderr, so whatever native code prints can never corrupt the protocol.
    """
    _die_with_parent()
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    state = {"session": None}
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if command.get("cmd") == "exit":
            break
        try:
            reply = _worker_reply(state, command)
            reply["ok"] = True
        except RunnerError as exc:
            reply = {"ok": False, "error": exc.to_dict()}
        except Exception as exc:  # noqa: BLE001 - reported to the host, never a silent hang
            reply = {"ok": False, "error": {"kind": "internal",
                                            "message": f"{type(exc).__name__}: {exc}"}}
        answers.write(json.dumps(reply) + "\n")
        answers.flush()
    return 0


class Worker:
    """The orchestrator's handle on one worker process."""

    live = []  # every running worker, so the deadline can stop them all

    def __init__(self, model_id: str):
        self.model_id = model_id
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        Worker.live.append(self)
        emit_event(event="worker", model=model_id, pid=self.process.pid)

    def call(self, command: dict) -> dict:
        try:
            self.process.stdin.write((json.dumps(command) + "\n").encode())
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = b""
        if not line:
            code = self.process.wait()
            if code in (-9, 137):
                raise RunnerError(
                    "killed", f"the process running model {self.model_id} was killed (SIGKILL), "
                    "most often by the out-of-memory killer: check `dmesg` and free memory on the "
                    "device", model=self.model_id, signal=9)
            raise RunnerError(
                "worker_crashed", f"the process running model {self.model_id} exited with status "
                f"{code} during '{command.get('cmd')}' (its messages are above)",
                model=self.model_id)
        reply = json.loads(line.decode())
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise RunnerError(error.pop("kind", "internal"), error.pop("message", "unknown error"),
                              model=self.model_id, **error)
        return reply

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(b'{"cmd": "exit"}\n')
                self.process.stdin.flush()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        if self in Worker.live:
            Worker.live.remove(self)

    @classmethod
    def kill_all(cls) -> None:
        for worker in list(cls.live):
            if worker.process.poll() is None:
                worker.process.kill()


# ------------------------------------------------------------------------------ orchestrator
def _split(total: int, parts: int) -> list:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def trial_settings(request: dict, base: str):
    """(models, runs, min_seconds, rounds, inputs) of a trial, as both ways of running read it."""
    models = request["models"]
    runs, min_seconds = int(request.get("runs", 50)), float(request.get("min_duration_s", 0.0))
    rounds = 1 if len(models) == 1 else max(1, int(request.get("rounds") or 10))
    inputs = dict(request.get("inputs") or {"kind": "random", "seed": 0})
    if inputs.get("kind") == "npz":
        inputs["path"] = os.path.join(base, inputs["path"])
    return models, runs, min_seconds, rounds, inputs


def run_trial(request: dict, trial: int, base: str, progress: dict) -> dict:
    """Fresh workers, load and warm up each model, then timed slices A B A B ..."""
    if request.get("one_process"):
        return run_trial_one_process(request, trial, base, progress)
    models, runs, min_seconds, rounds, inputs = trial_settings(request, base)
    before = conditions()
    workers, entries = [], []
    try:
        for model in models:
            worker = Worker(model["id"])
            workers.append(worker)
            loaded = worker.call({
                "cmd": "load", "path": os.path.join(base, model["path"]),
                "runtime": request.get("runtime", "auto"), "threads": request.get("threads"),
                "delegate": request.get("delegate"), "inputs": inputs})
            loaded.pop("ok", None)
            warm = worker.call({"cmd": "warmup", "count": int(request.get("warmup", 5))})
            entry = {"id": model["id"], "trial": trial, "latencies_ms": []}
            entry.update(loaded)
            entry.update(first_inference_ms=warm["first_inference_ms"],
                         warmup_ms=warm["warmup_ms"])
            entries.append(entry)
        cap = max(runs, int(request.get("max_runs") or 100000))
        for count, most in zip(_split(runs, rounds), _split(cap, rounds)):
            for worker, entry in zip(workers, entries):
                reply = worker.call({"cmd": "run", "count": count, "cap": most,
                                     "min_seconds": min_seconds / rounds})
                entry["latencies_ms"].extend(reply["latencies_ms"])
                progress["done"] += 1
                emit_event(event="progress", done=progress["done"], total=progress["total"],
                           trial=trial, model=entry["id"])
        for worker, entry in zip(workers, entries):
            reply = worker.call({"cmd": "finish",
                                 "return_outputs": bool(request.get("return_outputs"))})
            reply.pop("ok", None)
            entry.update(reply)
        after = conditions()
        if trial == 0 and request.get("eval"):
            path = os.path.join(base, request["eval"]["path"])
            for worker, entry in zip(workers, entries):
                entry["eval"] = worker.call({"cmd": "eval", "path": path})["eval"]
    finally:
        for worker in workers:
            worker.stop()
    return {"trial": trial, "conditions_before": before, "conditions_after": after,
            "models": entries}


def _load_in_one(worker: Worker, request: dict, model: dict, base: str, inputs: dict,
                 trial: int) -> dict:
    """Load and warm up one model in the shared worker; a model that fails is an entry with
    `error`, so one unloadable single-op model does not sink a whole profile."""
    entry = {"id": model["id"], "trial": trial, "latencies_ms": []}
    try:
        loaded = worker.call({
            "cmd": "load", "id": model["id"], "path": os.path.join(base, model["path"]),
            "runtime": request.get("runtime", "auto"), "threads": request.get("threads"),
            "delegate": request.get("delegate"), "inputs": inputs})
        loaded.pop("ok", None)
        entry.update(loaded)
        warm = worker.call({"cmd": "warmup", "id": model["id"],
                            "count": int(request.get("warmup", 5))})
    except RunnerError as exc:
        if exc.kind in ("killed", "worker_crashed", "host_gone"):
            raise
        entry["error"] = {"kind": exc.kind, "message": exc.message}
        return entry
    entry.update(first_inference_ms=warm["first_inference_ms"], warmup_ms=warm["warmup_ms"])
    return entry


def run_trial_one_process(request: dict, trial: int, base: str, progress: dict) -> dict:
    """`one_process`: every model in one worker, timed in interleaved slices as run_trial does."""
    models, runs, min_seconds, rounds, inputs = trial_settings(request, base)
    before = conditions()
    worker = Worker("all models")
    try:
        entries = [_load_in_one(worker, request, model, base, inputs, trial) for model in models]
        live = [entry for entry in entries if "error" not in entry]
        cap = max(runs, int(request.get("max_runs") or 100000))
        for count, most in zip(_split(runs, rounds), _split(cap, rounds)):
            for entry in live:
                reply = worker.call({"cmd": "run", "id": entry["id"], "count": count,
                                     "cap": most, "min_seconds": min_seconds / rounds})
                entry["latencies_ms"].extend(reply["latencies_ms"])
            progress["done"] += len(models)
            emit_event(event="progress", done=progress["done"], total=progress["total"],
                       trial=trial, model=None)
        for entry in live:
            reply = worker.call({"cmd": "finish", "id": entry["id"],
                                 "return_outputs": bool(request.get("return_outputs"))})
            reply.pop("ok", None)
            entry.update(reply)
        after = conditions()
    finally:
        worker.stop()
    return {"trial": trial, "conditions_before": before, "conditions_after": after,
            "models": entries}


def run_request(request: dict, base: str) -> dict:
    """The whole benchmark a request describes, as the response object."""
    if request.get("protocol") != PROTOCOL:
        raise RunnerError("protocol", f"this runner speaks protocol {PROTOCOL}, the request "
                          f"protocol {request.get('protocol')!r}; use the runner that ships with "
                          "the same tflc")
    if not request.get("models"):
        raise RunnerError("protocol", "the request names no models")
    for model in request["models"]:
        if not os.path.isfile(os.path.join(base, model["path"])):
            raise RunnerError("protocol", f"model file {model['path']} is missing on the device")
    emit_event(event="start", pid=os.getpid())
    facts = device_facts()
    repeat = max(1, int(request.get("repeat", 1)))
    rounds = 1 if len(request["models"]) == 1 else max(1, int(request.get("rounds") or 10))
    progress = {"done": 0, "total": repeat * rounds * len(request["models"])}
    trials = [run_trial(request, trial, base, progress) for trial in range(repeat)]
    loaded = [entry for entry in trials[0]["models"] if "error" not in entry]
    first = loaded[0] if loaded else trials[0]["models"][0]
    facts["numpy"] = first.get("numpy")
    warnings = []
    for trial in trials:
        for text in condition_warnings(trial["conditions_before"], trial["conditions_after"],
                                       facts["cores"] or 1,
                                       float(request.get("busy_load_per_core", 0.5))):
            if text not in warnings:
                warnings.append(text)
    return {"protocol": PROTOCOL, "ok": True,
            "runner": {"version": RUNNER_VERSION, "python": platform.python_version()},
            "device": facts, "runtime": first.get("runtime"), "trials": trials,
            "warnings": warnings}


class _Once:
    """Exactly one response is printed, by the main thread or by the deadline, never both."""

    lock = threading.Lock()
    done = False

    @classmethod
    def respond(cls, response: dict, code: int, cleanup: str | None) -> bool:
        with cls.lock:
            if cls.done:
                return False
            cls.done = True
            try:
                sys.stdout.write(json.dumps(response) + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass  # nobody is listening any more; still clean up
            finally:
                if cleanup:
                    shutil.rmtree(cleanup, ignore_errors=True)
            return True


def _error_response(error: RunnerError) -> dict:
    return {"protocol": PROTOCOL, "ok": False, "error": error.to_dict()}


def _stop_when_stdin_closes(cleanup) -> None:
    """Watch stdin, which the host holds open for as long as it listens. Its end means the host
    was killed, interrupted or cut off, and nobody can stop us from that side: kill the
    workers, remove our folder and exit, instead of timing for nobody until the deadline."""
    def watch():
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        Worker.kill_all()
        _Once.respond(_error_response(RunnerError(
            "host_gone", "the host closed the connection; giving up")), EXIT_FAILED, cleanup)
        os._exit(EXIT_FAILED)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list) -> int:
    if len(argv) > 1 and argv[1] == "--worker":
        return worker_main()
    if len(argv) > 1 and argv[1] == "--version":
        print(f"tflc bench runner {RUNNER_VERSION} (protocol {PROTOCOL})")
        return EXIT_OK
    if len(argv) > 1 and argv[1] == "--probe":
        facts = device_facts()
        try:
            facts["runtime"] = load_runtime().describe()
        except RunnerError as exc:
            facts["runtime"] = None
            facts["problem"] = exc.message
        print(json.dumps(facts))
        return EXIT_OK
    if len(argv) != 2:
        sys.stderr.write("usage: runner.py REQUEST.json | --probe | --version\n")
        return EXIT_USAGE
    try:
        with open(argv[1], "rb") as handle:
            request = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"runner.py: cannot read the request {argv[1]}: {exc}\n")
        return EXIT_USAGE
    base = os.path.dirname(os.path.abspath(argv[1]))
    here = os.path.dirname(os.path.abspath(__file__))
    cleanup = None
    if request.get("remove_dir_on_exit") and os.path.basename(here).startswith(TEMP_DIR_PREFIX):
        cleanup = here
    if request.get("pgid_file"):  # lets the host stop everything we started, by group id
        try:
            with open(os.path.join(base, request["pgid_file"]), "w") as handle:
                handle.write(f"{os.getpgrp()}\n")
        except OSError:
            pass
    if request.get("stop_when_stdin_closes"):
        _stop_when_stdin_closes(cleanup)
    deadline = float(request.get("deadline_s") or 0)
    if deadline > 0:
        def expire():
            Worker.kill_all()
            _Once.respond(_error_response(RunnerError(
                "timeout", f"the runner stopped itself after its deadline of {deadline:g} s")),
                EXIT_FAILED, cleanup)
            os._exit(EXIT_FAILED)

        timer = threading.Timer(deadline, expire)
        timer.daemon = True
        timer.start()
    try:
        response, code = run_request(request, base), EXIT_OK
    except RunnerError as exc:
        response, code = _error_response(exc), EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - one JSON error, never a bare traceback to parse
        response = _error_response(RunnerError("internal", f"{type(exc).__name__}: {exc}"))
        code = EXIT_FAILED
    finally:
        Worker.kill_all()
    _Once.respond(response, code, cleanup)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
