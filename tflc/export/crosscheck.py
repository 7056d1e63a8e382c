"""Can the exported package be trusted? Two checks that need no device.

1. The C array is the .tflite byte for byte (parsed back out of the generated source).
2. TFLite Micro computes what LiteRT computes: on seeded sample inputs, the tflite-micro
   interpreter (reference kernels, in the exported arena size) and LiteRT with its reference
   kernels and no default delegates (no XNNPACK) must give bit-identical outputs. Both run the
   same integer reference arithmetic, so any difference points at a kernel or conversion problem;
   the report shows the largest one.

TFLite Micro is the judge: when LiteRT refuses a model TFLite Micro runs (a rule only LiteRT
has), or crashes on it, TFLite Micro's run of the samples stands and the notes say why nothing
was compared. Both interpreters run in child processes (`_arena_probe.py`), so neither's crash
takes tflc down or prints glibc's text.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tflc.errors import BadInput, PipelineError


@dataclass
class Verification:
    array_identical: bool
    compared: bool                          # False when an interpreter is missing
    samples: int = 0
    outputs_identical: bool | None = None
    max_abs_difference: float | None = None
    tflm: str = ""
    litert: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if not self.compared:
            return "TFLite Micro vs LiteRT not compared (" + "; ".join(self.notes) + ")"
        if self.outputs_identical:
            return f"TFLite Micro and LiteRT reference kernels bit-identical on {self.samples} samples"
        return (f"TFLite Micro and LiteRT differ on {self.samples} samples: largest difference "
                f"{self.max_abs_difference:g}")


def sample_inputs(details: list[dict], samples: int, seed: int) -> list[list[np.ndarray]]:
    """Seeded inputs covering each input's full integer range (normal values for floats)."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(samples):
        arrays = []
        for d in details:
            shape, dtype = tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"])
            if dtype.kind == "f":
                arrays.append(rng.standard_normal(shape).astype(dtype))
            elif dtype.kind == "b":
                arrays.append(rng.integers(0, 2, shape).astype(dtype))
            elif dtype in (np.int32, np.int64):
                arrays.append(rng.integers(0, 10, shape).astype(dtype))
            else:
                info = np.iinfo(dtype)
                arrays.append(rng.integers(info.min, info.max + 1, shape, endpoint=False).astype(dtype))
        batches.append(arrays)
    return batches


@dataclass
class _ChildRun:
    """What one interpreter child did with the sample inputs."""

    outputs: list[list[np.ndarray]] | None   # None when it refused or crashed
    last: dict                               # its last JSON answer
    returncode: int
    log: list[str]


def _run_child(mode: list[str], model: bytes, batches: list[list[np.ndarray]], name: str,
               timeout: float) -> _ChildRun:
    """`_arena_probe.py MODEL MODE... INPUTS OUTPUTS` in a session of its own (see arena.py)."""
    from tflc.export.arena import read_log, start_tflm_child

    with tempfile.TemporaryDirectory(prefix="tflc-micro-") as work, \
            tempfile.TemporaryFile(prefix="tflc-micro-log-") as log:
        folder = Path(work)
        (folder / "model.tflite").write_bytes(model)
        np.savez(folder / "inputs.npz", **{f"s{k}_i{i}": array for k, batch in enumerate(batches)
                                           for i, array in enumerate(batch)})
        child = start_tflm_child([str(folder / "model.tflite"), *mode,
                                  str(folder / "inputs.npz"), str(folder / "outputs.npz")], log)
        answers = _wait(child, timeout, name)
        lines = read_log(log, 0)
        states = [json.loads(line) for line in answers.splitlines() if line.startswith("{")]
        last = states[-1] if states else {}
        outputs = None
        if child.returncode == 0 and last.get("ok"):
            with np.load(folder / "outputs.npz", allow_pickle=False) as saved:
                outputs = [[saved[f"s{k}_o{o}"] for o in range(sum(
                    1 for key in saved.files if key.startswith(f"s{k}_o")))]
                    for k in range(len(batches))]
        return _ChildRun(outputs, last, child.returncode, lines)


def run_micro(model: bytes, arena_size: int, batches: list[list[np.ndarray]],
              name: str = "the model", timeout: float = 900) -> list[list[np.ndarray]]:
    """TFLite Micro's outputs for each batch of inputs, computed in a child process.

    A malformed model can make a kernel read past its buffers and kill the process; in the
    child that death becomes one PipelineError line naming the signal and the sample.
    """
    from tflc.export.arena import _reason, crash_site, death_text

    run = _run_child(["--invoke", str(arena_size)], model, batches, name, timeout)
    last = run.last
    if run.returncode != 0 or "ok" not in last:
        where = f"sample {last['sample']}" if "sample" in last else "setting it up"
        sample = batches[last["sample"]] if "sample" in last else batches[0]
        site = crash_site(run.log) or crashing_op(model, arena_size, sample, name, timeout)
        raise PipelineError(f"{name}: TFLite Micro crashed ({death_text(run.returncode)}"
                            f"{site}) on {where} in a {arena_size}-byte arena")
    if not last["ok"]:
        what = ("allocate the model in the exported arena of" if last["stage"] == "allocate"
                else f"run sample {last.get('sample')} in an arena of")
        raise PipelineError(f"{name}: TFLite Micro cannot {what} {arena_size} B: {_reason(run.log)}")
    return run.outputs


MAX_BISECTION_RUNS = 12


def crashing_op(model: bytes, arena_size: int, batch: list[np.ndarray], name: str,
                timeout: float) -> str:
    """' at op 7 (CONV_2D, output tensor 'conv1')': the first operator whose prefix of the model
    (ops 0..k, tflc.profile.cut) also kills TFLite Micro, found by bisection in child processes;
    '' when the graph cannot be cut (subgraph calls) or the prefixes do not crash.

    TFLite Micro's kernels often die without a word (a failed DCHECK aborts): naming the op is
    what lets a user replace a layer or report the bug.
    """
    from tflc.profile import cut

    try:
        unpacked = cut.unpack(model)
        operators = unpacked.subgraphs[0].operators or []
    except Exception:  # noqa: BLE001 - a model the object API cannot read is not bisected
        return ""
    low, high, runs = 1, len(operators), 0  # the whole model (all ops) crashes
    while low < high and runs < MAX_BISECTION_RUNS:
        middle = (low + high) // 2
        prefix = cut.prefix_model(unpacked, middle)
        if prefix is None:
            return ""
        runs += 1
        try:
            crashed = _run_child(["--invoke", str(arena_size)], prefix, [batch], name,
                                 timeout).returncode != 0
        except PipelineError:  # a prefix that hangs tells nothing
            return ""
        low, high = (low, middle) if crashed else (middle + 1, high)
    if low != high:
        return ""
    op = operators[low - 1]
    graph = unpacked.subgraphs[0]
    outputs = [int(t) for t in (op.outputs if op.outputs is not None else []) if t >= 0]
    label = ""
    if outputs and graph.tensors[outputs[0]].name:
        tensor = graph.tensors[outputs[0]].name
        tensor = tensor.decode("utf-8", "replace") if isinstance(tensor, bytes) else str(tensor)
        label = f", output tensor {tensor[:80]!r}"
    return f" at op {low - 1} ({cut.op_name(unpacked, op)}{label})"


def run_litert(model: bytes, batches: list[list[np.ndarray]], name: str = "the model",
               timeout: float = 900) -> tuple[list[list[np.ndarray]] | None, str]:
    """LiteRT's outputs (reference kernels, no delegates) in a child process, or (None, why not):
    LiteRT refused the model, failed on a sample, or crashed (heap corruption in its kernels
    aborts the process; glibc's text stays in the child's log)."""
    from tflc.export.arena import death_text

    run = _run_child(["--litert"], model, batches, name, timeout)
    last = run.last
    if run.returncode != 0:
        where = f" on sample {last['sample']}" if "sample" in last else ""
        return None, f"LiteRT crashed ({death_text(run.returncode)}){where}"
    if not last.get("ok"):
        if last.get("stage") == "allocate":
            reason = last.get("reason", "no message")
            reason = reason if len(reason) <= 120 else reason[:117].rstrip() + "..."
            return None, f"LiteRT refuses this model ({reason})"
        return None, f"LiteRT fails on sample {last.get('sample')}"
    return run.outputs, ""


def input_details(model: bytes, name: str = "the model") -> list[dict]:
    """Shape and dtype of each subgraph input, from tflc's reader (TFLite Micro's rules).

    The reader's refusal (BadInput naming `name`) comes before either interpreter runs: its
    rules (e.g. a constant shorter than its shape) keep kernels from reading past buffers."""
    from tflc.tflite.reader import read_model

    try:
        view = read_model(model, judge="tflite-micro")
    except BadInput as exc:
        raise BadInput(exc.message.replace("<bytes>", name, 1)) from None
    return [{"shape": [max(1, int(d)) for d in t.shape], "dtype": t.dtype}
            for t in view.input_tensors()]


def _wait(child, timeout: float, name: str) -> str:
    """The child's stdout once it ends; it is killed on a time-out or when tflc is interrupted
    (in a session of its own, it does not get the terminal's Ctrl-C)."""
    try:
        return child.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise PipelineError(f"{name}: TFLite Micro did not finish the sample inputs in "
                            f"{timeout:g} s; rerun with --no-verify") from None
    except BaseException:
        child.kill()
        child.communicate()
        raise


def compare_interpreters(model: bytes, arena_size: int, samples: int = 4, seed: int = 0,
                         name: str = "the model") -> Verification:
    """Run TFLite Micro and LiteRT (reference kernels) on the same seeded inputs.

    TFLite Micro is the judge: a model LiteRT refuses or crashes on, but TFLite Micro runs, is
    verified by TFLite Micro alone and the notes say why there is no comparison. A model both
    refuse is BadInput naming LiteRT's reason; one TFLite Micro alone fails on, a PipelineError.
    """
    from tflc.export.arena import tflm_runtime, tflm_version

    result = Verification(array_identical=True, compared=False)
    if tflm_runtime() is None:
        result.notes.append("tflite-micro is not installed")
        return result
    try:
        from importlib.metadata import version

        litert_version = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - any reason LiteRT's metadata is missing means no LiteRT
        litert_version = None
    batches = sample_inputs(input_details(model, name), samples, seed)
    expected, why = (run_litert(model, batches, name) if litert_version
                     else (None, "ai-edge-litert is not installed"))
    try:
        micro_outputs = run_micro(model, arena_size, batches, name)
    except PipelineError as exc:
        if expected is None and litert_version:
            raise BadInput(f"{name}: {why} and {exc.message.removeprefix(name + ': ')}") from None
        raise
    result.tflm = f"{tflm_version()}, reference kernels, arena {arena_size} B"
    if expected is None:
        result.notes.append(f"{why}; TFLite Micro, the judge for microcontrollers, ran all "
                            f"{samples} samples")
        return result
    result.litert = f"ai-edge-litert {litert_version}, BUILTIN_REF kernels, no delegates"
    largest = 0.0
    for micro, reference in zip(micro_outputs, expected, strict=True):
        for got, want in zip(micro, reference, strict=True):
            diff = np.abs(got.reshape(want.shape).astype(np.float64) - want.astype(np.float64))
            largest = max(largest, float(diff.max()) if diff.size else 0.0)
    result.compared = True
    result.samples = samples
    result.outputs_identical = largest == 0.0
    result.max_abs_difference = largest
    return result
