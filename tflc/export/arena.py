"""How big the tensor arena must be: measured in TFLite Micro, estimated statically, plus a margin.

"How do I choose kTensorArenaSize?" has one reliable answer: try it. `measure_arena` creates the
model in the tflite-micro Python interpreter (the reference kernels, x86-64 host build) with
decreasing `arena_size` and returns the smallest size for which AllocateTensors succeeds. The
search starts at tflc's static estimate (`tflc.tflite.planner`), which is usually exact, so it
typically costs two interpreter constructions (the estimate works, one byte less does not). The
probes run in a child process (`_arena_probe.py`): a too-small arena can crash TFLite Micro.

The device differs from the host: 32-bit pointers make TFLite Micro's bookkeeping smaller, but
optimized kernels (CMSIS-NN on Cortex-M) ask for scratch buffers the reference kernels do not.
`arena_figures` therefore adds a stated margin and reports measured, estimated and recommended
sizes side by side.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tflc.errors import BadInput, PipelineError
from tflc.tflite.planner import MemoryPlan, align_up

MARGIN_FRACTION = 0.10
MARGIN_MIN_BYTES = 1024
MARGIN_RULE = (
    "10% of the measured size, at least 1 KiB, rounded up to 16 bytes: room for the scratch "
    "buffers optimized kernels (e.g. CMSIS-NN) request beyond the reference kernels, and for "
    "build differences; the host build's 64-bit bookkeeping already exceeds a 32-bit MCU's"
)
_MAX_ARENA = 1 << 28  # no microcontroller model needs more; beyond it, report why
# TFLite Micro's messages when the arena is too small (anything else is a real failure).
_SHORT_OF_MEMORY = re.compile(
    r"allocate|Requested|available|missing|Too many buffers|resize|crashed", re.I)


@dataclass
class ArenaMeasurement:
    """The smallest arena the tflite-micro Python interpreter accepts for the model."""

    minimum_bytes: int
    probes: int                # interpreter constructions the search took
    interpreter: str           # package and version


@dataclass
class ArenaFigures:
    """Measured, estimated and recommended arena sizes (the recommendation goes in NAME_arena.h)."""

    recommended_bytes: int
    basis: str                        # "measured" or "estimated" (tflite-micro not installed)
    measured_bytes: int | None
    estimated_bytes: int | None       # None when the static planner failed (see notes)
    estimate_error: float | None      # estimated / measured - 1
    margin_bytes: int
    margin_rule: str
    peak_activation_bytes: int | None
    persistent_bytes: int | None
    limited_by: str | None
    measurement: ArenaMeasurement | None = None
    notes: list[str] = field(default_factory=list)
    # Every figure above is the 64-bit host's arena (what the tflite-micro Python interpreter
    # allocates); a 32-bit Cortex-M's bookkeeping structs are smaller: the static planner's
    # figure for that ABI (None without a plan).
    cortex_m_estimated_bytes: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def tflm_runtime():
    """The tflite-micro Python runtime module, or None when the package is not installed."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        return None
    return runtime


def tflm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"tflite_micro {version('tflite_micro')}"
    except PackageNotFoundError:
        return "tflite_micro (version unknown)"


PROBE_SCRIPT = Path(__file__).with_name("_arena_probe.py")
# What TFLite Micro prints that locates a failure: "Node CONV_2D (number 3) failed to prepare",
# "Failed to initialize tensor 7".
_NODE = re.compile(r"Node (\w+) \(number (\d+)\)")
_TENSOR = re.compile(r"tensor (\d+)", re.I)


def start_tflm_child(args: list[str], log) -> subprocess.Popen:
    """`_arena_probe.py ARGS` with its stderr going to the file `log`, in a session of its own.

    Without a controlling terminal (and with LIBC_FATAL_STDERR_), glibc's fatal messages such
    as "double free or corruption" go to `log` too, never to the user's terminal; the parent
    reports a death as one line of its own (`death_text`).
    """
    env = {**os.environ, "LIBC_FATAL_STDERR_": "1"}
    return subprocess.Popen([sys.executable, str(PROBE_SCRIPT), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                            start_new_session=True)


def death_text(returncode: int) -> str:
    """'SIGSEGV' for a child killed by a signal, else 'exit status N'."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def crash_site(log: list[str]) -> str:
    """' at op 3 (CONV_2D)' or ' at tensor 7' from TFLite Micro's last messages, else ''.

    Only these recognised facts are quoted: the raw log may hold glibc's or the kernel's text.
    """
    for line in reversed(log):
        if match := _NODE.search(line):
            return f" at op {match.group(2)} ({match.group(1)})"
        if match := _TENSOR.search(line):
            return f" at tensor {match.group(1)}"
    return ""


def read_log(log, start: int) -> list[str]:
    """Lines the child wrote to `log` (an open binary file) since offset `start`."""
    log.flush()
    log.seek(start)
    lines = log.read().decode("utf-8", "replace").splitlines()
    log.seek(0, os.SEEK_END)
    return lines[-20:]


class ArenaProber:
    """Asks TFLite Micro, in a child process, whether the model fits in a given arena size.

    Some TFLite Micro kernels dereference a failed allocation when the arena is too small and
    crash the process (MEAN does in tflite-micro 0.dev20261023), so probes never run in tflc's
    own process: a crash answers "no" (`last_crash` says how it died) and the next probe starts
    a fresh child. Use as a context manager, or call `close()`.
    """

    def __init__(self, model: bytes):
        self._model = tempfile.NamedTemporaryFile(prefix="tflc-arena-", suffix=".tflite",
                                                  delete=False)
        self._model.write(model)
        self._model.close()
        self._log = tempfile.TemporaryFile(prefix="tflc-arena-log-")
        self._child: subprocess.Popen | None = None
        self.probes = 0
        self.crashes = 0
        self.last_crash: str | None = None   # e.g. "SIGSEGV at tensor 0", for the last probe

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __call__(self, size: int) -> tuple[bool, list[str]]:
        """(allocates, what TFLite Micro printed) for an arena of `size` bytes."""
        self.probes += 1
        self.last_crash = None
        if self._child is None or self._child.poll() is not None:
            self._child = start_tflm_child([self._model.name], self._log)
        start = self._log.seek(0, os.SEEK_END)
        try:
            self._child.stdin.write(f"{size}\n")
            self._child.stdin.flush()
            answer = self._child.stdout.readline()
        except (BrokenPipeError, OSError):
            answer = ""
        log = read_log(self._log, start)
        if not answer:
            returncode = self._child.wait()
            self._child = None
            self.crashes += 1
            self.last_crash = death_text(returncode) + crash_site(log)
            return False, [f"TFLite Micro crashed ({self.last_crash}) in a {size}-byte arena"]
        return json.loads(answer)["ok"], log

    def close(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.stdin.close()
            try:
                self._child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
        self._child = None
        self._log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._model.name)


def allocates(model: bytes, arena_size: int) -> tuple[bool, list[str]]:
    """Whether TFLite Micro can set the model up in `arena_size` bytes, and what it printed."""
    with ArenaProber(model) as probe:
        return probe(arena_size)


def measure_arena(model: bytes, hint: int | None = None, name: str = "the model") -> ArenaMeasurement:
    """Smallest `arena_size` for which the tflite-micro interpreter allocates `model`.

    Starts at `hint` (the static estimate): if it works and one byte less does not, that is the
    answer; otherwise gallops towards the boundary and bisects. Raises BadInput naming `name`
    when TFLite Micro refuses the model at any size (unsupported op, bad model, quoting TFLite
    Micro's message), PipelineError when tflite-micro is missing or crashes at every size.
    """
    if tflm_runtime() is None:
        raise PipelineError("the tflite-micro package is not installed (pip install tflite-micro); "
                            "only the static arena estimate is available")
    with ArenaProber(model) as probe:
        return _search(probe, hint or len(model), max(_MAX_ARENA, 16 * (hint or 0)), name)


def _search(probe: ArenaProber, hint: int, limit: int, name: str) -> ArenaMeasurement:
    crash_checked = False

    def fits(size: int) -> bool:
        nonlocal crash_checked
        ok, log = probe(size)
        if not ok and probe.last_crash and not crash_checked:
            # A crash may mean "too small" (some kernels crash then) or a malformed model:
            # one probe at the limit tells which, instead of a search up to the limit.
            crash_checked, first = True, probe.last_crash
            if not probe(limit)[0] and probe.last_crash:
                raise PipelineError(
                    f"{name}: TFLite Micro crashed ({first}) setting it up in a {size}-byte "
                    f"arena and in a {limit // (1 << 20)} MiB one alike, so not for lack of memory:"
                    f" the model is malformed or hits a TFLite Micro bug (see `tflc check {name}`)")
        elif not ok and not any(_SHORT_OF_MEMORY.search(line) for line in log):
            raise BadInput(f"{name}: TFLite Micro cannot set up this model: {_reason(log)}")
        return ok

    start = max(16, hint)
    if fits(start):
        high = start
        if not fits(start - 1):
            return ArenaMeasurement(start, probe.probes, tflm_version())
        step, low = 16, start - 16
        while low > 0 and fits(low):
            high, step = low, step * 2
            low = high - step
        low = max(low, 0)
    else:
        low, step = start, max(64, start // 8)
        high = low + step
        while not fits(high):
            if high >= limit:
                _, log = probe(high)
                raise BadInput(
                    f"{name}: TFLite Micro cannot set up this model even in a "
                    f"{high // (1 << 20)} MiB arena: {_reason(log)}")
            low, step = high, step * 2
            high = min(low + step, limit)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return ArenaMeasurement(high, probe.probes, tflm_version())


def _reason(log: list[str]) -> str:
    """TFLite Micro's most telling lines (it prints several per failure)."""
    lines = [line.strip() for line in log if line.strip()]
    telling = [line for line in lines if "Failed to allocate" not in line] or lines
    return "; ".join(dict.fromkeys(telling[:3])) or "no message from TFLite Micro"


def margin_for(size: int) -> int:
    return align_up(max(math.ceil(size * MARGIN_FRACTION), MARGIN_MIN_BYTES))


def arena_figures(model: bytes, plan: MemoryPlan | None, measure: bool = True,
                  name: str = "the model") -> ArenaFigures:
    """Measure (when tflite-micro is installed and `measure`), compare with the plan, add margin.

    `plan` is None when the static planner failed: the measurement alone then sizes the arena,
    and without one there is no size to write (PipelineError).
    """
    notes = []
    measurement = None
    if measure and tflm_runtime() is not None:
        measurement = measure_arena(model, hint=plan.arena_bytes if plan else None, name=name)
    elif measure:
        notes.append("tflite-micro is not installed: the arena size is tflc's static estimate")
    if plan is None and measurement is None:
        raise PipelineError(f"{name}: no arena size: tflc's static planner failed on this model "
                            "and TFLite Micro did not measure it (drop --no-measure, or pip "
                            "install tflite-micro)")
    if plan is not None and plan.approximate_ops:
        notes.append("static estimate uses default kernel sizes for " + ", ".join(plan.approximate_ops))
    base = measurement.minimum_bytes if measurement else plan.arena_bytes
    margin = margin_for(base)
    return ArenaFigures(
        recommended_bytes=align_up(base + margin),
        basis="measured" if measurement else "estimated",
        measured_bytes=measurement.minimum_bytes if measurement else None,
        estimated_bytes=plan.arena_bytes if plan else None,
        estimate_error=(round(plan.arena_bytes / measurement.minimum_bytes - 1, 6)
                        if measurement and plan else None),
        margin_bytes=margin,
        margin_rule=MARGIN_RULE,
        peak_activation_bytes=plan.peak_activation_bytes if plan else None,
        persistent_bytes=plan.persistent_bytes if plan else None,
        limited_by=plan.limited_by if plan else None,
        measurement=measurement,
        notes=notes,
    )


def render_arena_header(figures: ArenaFigures, name: str) -> str:
    """C/C++ header with the arena size constant and how it was obtained."""
    upper = name.upper()
    guard = f"{upper}_ARENA_H_"
    measured = (f"{figures.measured_bytes} bytes measured in TFLite Micro (reference kernels, "
                "x86-64 host build)" if figures.measured_bytes is not None
                else "not measured (tflite-micro not installed)")
    return "\n".join([
        "// Generated by tflc: the tensor arena TFLite Micro needs for this model.",
        f"//   minimum: {measured}",
        (f"//   static estimate: {figures.estimated_bytes} bytes (activations "
         f"{figures.peak_activation_bytes}, bookkeeping {figures.persistent_bytes})"
         if figures.estimated_bytes is not None else "//   static estimate: none (planner failed)"),
        f"//   margin: {figures.margin_bytes} bytes ({MARGIN_FRACTION:.0%}, at least "
        f"{MARGIN_MIN_BYTES} B) for optimized kernels' scratch buffers and build differences",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        f"#define {upper}_TENSOR_ARENA_SIZE {figures.recommended_bytes}",
        "",
        "// Declare the arena 16-byte aligned, e.g.:",
        f"//   alignas(16) static uint8_t tensor_arena[{upper}_TENSOR_ARENA_SIZE];",
        "",
        f"#endif  // {guard}",
        "",
    ])
