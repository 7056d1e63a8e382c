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
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tflc.errors import PipelineError
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
    estimated_bytes: int
    estimate_error: float | None      # estimated / measured - 1
    margin_bytes: int
    margin_rule: str
    peak_activation_bytes: int
    persistent_bytes: int
    limited_by: str
    measurement: ArenaMeasurement | None = None
    notes: list[str] = field(default_factory=list)

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


class ArenaProber:
    """Asks TFLite Micro, in a child process, whether the model fits in a given arena size.

    Some TFLite Micro kernels dereference a failed allocation when the arena is too small and
    crash the process (MEAN does in tflite-micro 0.dev20261023), so probes never run in tflc's
    own process: a crash counts as "too small" and the next probe starts a fresh child. Use as a
    context manager, or call `close()`.
    """

    def __init__(self, model: bytes):
        self._model = tempfile.NamedTemporaryFile(prefix="tflc-arena-", suffix=".tflite",
                                                  delete=False)
        self._model.write(model)
        self._model.close()
        self._child: subprocess.Popen | None = None
        self.probes = 0
        self.crashes = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_arena_probe.py")), self._model.name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def __call__(self, size: int) -> tuple[bool, list[str]]:
        """(allocates, what TFLite Micro printed) for an arena of `size` bytes."""
        self.probes += 1
        if self._child is None or self._child.poll() is not None:
            self._child = self._start()
        try:
            self._child.stdin.write(f"{size}\n")
            self._child.stdin.flush()
            answer = self._child.stdout.readline()
        except (BrokenPipeError, OSError):
            answer = ""
        if not answer:
            self._child.wait()
            self._child = None
            self.crashes += 1
            return False, [f"TFLite Micro crashed in a {size}-byte arena (too small)"]
        data = json.loads(answer)
        return data["ok"], data["log"]

    def close(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.stdin.close()
            self._child.wait(timeout=30)
        self._child = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._model.name)


def allocates(model: bytes, arena_size: int) -> tuple[bool, list[str]]:
    """Whether TFLite Micro can set the model up in `arena_size` bytes, and what it printed."""
    with ArenaProber(model) as probe:
        return probe(arena_size)


def measure_arena(model: bytes, hint: int | None = None) -> ArenaMeasurement:
    """Smallest `arena_size` for which the tflite-micro interpreter allocates `model`.

    Starts at `hint` (the static estimate): if it works and one byte less does not, that is the
    answer; otherwise gallops towards the boundary and bisects. Raises PipelineError when
    tflite-micro is missing or cannot allocate the model at any size (unsupported op, bad
    model), quoting TFLite Micro's own message.
    """
    if tflm_runtime() is None:
        raise PipelineError("the tflite-micro package is not installed (pip install tflite-micro); "
                            "only the static arena estimate is available")
    with ArenaProber(model) as probe:
        return _search(probe, hint or len(model), max(_MAX_ARENA, 16 * (hint or 0)))


def _search(probe: ArenaProber, hint: int, limit: int) -> ArenaMeasurement:
    def fits(size: int) -> bool:
        ok, log = probe(size)
        if not ok and not any(_SHORT_OF_MEMORY.search(line) for line in log):
            raise PipelineError(f"TFLite Micro cannot set up this model: {_reason(log)}")
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
                raise PipelineError(
                    "TFLite Micro cannot set up this model even in a "
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


def arena_figures(model: bytes, plan: MemoryPlan, measure: bool = True) -> ArenaFigures:
    """Measure (when tflite-micro is installed and `measure`), compare with the plan, add margin."""
    notes = []
    measurement = None
    if measure and tflm_runtime() is not None:
        measurement = measure_arena(model, hint=plan.arena_bytes)
    elif measure:
        notes.append("tflite-micro is not installed: the arena size is tflc's static estimate")
    if plan.approximate_ops:
        notes.append("static estimate uses default kernel sizes for " + ", ".join(plan.approximate_ops))
    base = measurement.minimum_bytes if measurement else plan.arena_bytes
    margin = margin_for(base)
    return ArenaFigures(
        recommended_bytes=align_up(base + margin),
        basis="measured" if measurement else "estimated",
        measured_bytes=measurement.minimum_bytes if measurement else None,
        estimated_bytes=plan.arena_bytes,
        estimate_error=(round(plan.arena_bytes / measurement.minimum_bytes - 1, 6)
                        if measurement else None),
        margin_bytes=margin,
        margin_rule=MARGIN_RULE,
        peak_activation_bytes=plan.peak_activation_bytes,
        persistent_bytes=plan.persistent_bytes,
        limited_by=plan.limited_by,
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
        f"//   static estimate: {figures.estimated_bytes} bytes "
        f"(activations {figures.peak_activation_bytes}, bookkeeping {figures.persistent_bytes})",
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
