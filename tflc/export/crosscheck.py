"""Can the exported package be trusted? Two checks that need no device.

1. The C array is the .tflite byte for byte (parsed back out of the generated source).
2. TFLite Micro computes what LiteRT computes: on seeded sample inputs, the tflite-micro
   interpreter (reference kernels, in the exported arena size) and LiteRT with its reference
   kernels and no default delegates (no XNNPACK) must give bit-identical outputs. Both run the
   same integer reference arithmetic, so any difference points at a kernel or conversion problem;
   the report shows the largest one.
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


def _litert(model: bytes, name: str):
    """LiteRT with reference kernels, tensors allocated; BadInput when it refuses the model.

    LiteRT checks what TFLite Micro does not (e.g. that a tensor's buffer holds its shape), so
    it runs first: a model it refuses never reaches TFLite Micro's kernels.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        return None, "ai-edge-litert is not installed"
    try:
        interpreter = Interpreter(model_content=model,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise BadInput(f"{name}: LiteRT refuses this model ({_first_line(exc)}); "
                       "re-export it from the converter") from None
    return interpreter, ""


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def run_micro(model: bytes, arena_size: int, batches: list[list[np.ndarray]],
              name: str = "the model", timeout: float = 900) -> list[list[np.ndarray]]:
    """TFLite Micro's outputs for each batch of inputs, computed in a child process.

    A malformed model can make a kernel read past its buffers and kill the process; in the
    child that death becomes one PipelineError line naming the signal and the sample.
    """
    from tflc.export.arena import _reason, crash_site, death_text, read_log, start_tflm_child

    with tempfile.TemporaryDirectory(prefix="tflc-micro-") as work, \
            tempfile.TemporaryFile(prefix="tflc-micro-log-") as log:
        folder = Path(work)
        (folder / "model.tflite").write_bytes(model)
        np.savez(folder / "inputs.npz", **{f"s{k}_i{i}": array for k, batch in enumerate(batches)
                                           for i, array in enumerate(batch)})
        child = start_tflm_child([str(folder / "model.tflite"), "--invoke", str(arena_size),
                                  str(folder / "inputs.npz"), str(folder / "outputs.npz")], log)
        answers = _wait(child, timeout, name)
        lines = read_log(log, 0)
        states = [json.loads(line) for line in answers.splitlines() if line.startswith("{")]
        last = states[-1] if states else {}
        if child.returncode != 0 or "ok" not in last:
            where = f"sample {last['sample']}" if "sample" in last else "setting it up"
            raise PipelineError(f"{name}: TFLite Micro crashed ({death_text(child.returncode)}"
                                f"{crash_site(lines)}) on {where} in a {arena_size}-byte arena")
        if not last["ok"]:
            what = ("allocate the model in the exported arena of" if last["stage"] == "allocate"
                    else f"run sample {last.get('sample')} in an arena of")
            raise PipelineError(f"{name}: TFLite Micro cannot {what} {arena_size} B: {_reason(lines)}")
        with np.load(folder / "outputs.npz", allow_pickle=False) as saved:
            return [[saved[f"s{k}_o{o}"] for o in range(sum(1 for key in saved.files
                                                             if key.startswith(f"s{k}_o")))]
                    for k in range(len(batches))]


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
    """Run TFLite Micro and LiteRT (reference kernels) on the same seeded inputs."""
    from tflc.export.arena import tflm_runtime, tflm_version

    result = Verification(array_identical=True, compared=False)
    runtime = tflm_runtime()
    litert, why = _litert(model, name)
    if runtime is None or litert is None:
        result.notes.append(why or "tflite-micro is not installed")
        return result
    from importlib.metadata import version

    result.tflm = f"{tflm_version()}, reference kernels, arena {arena_size} B"
    result.litert = f"ai-edge-litert {version('ai-edge-litert')}, BUILTIN_REF kernels, no delegates"
    inputs = litert.get_input_details()
    outputs = litert.get_output_details()
    batches = sample_inputs(inputs, samples, seed)
    micro_outputs = run_micro(model, arena_size, batches, name)
    largest = 0.0
    for batch, micro in zip(batches, micro_outputs, strict=True):
        for detail, array in zip(inputs, batch, strict=True):
            litert.set_tensor(detail["index"], array)
        litert.invoke()
        for detail, got in zip(outputs, micro, strict=True):
            expected = litert.get_tensor(detail["index"])
            diff = np.abs(got.reshape(expected.shape).astype(np.float64) - expected.astype(np.float64))
            largest = max(largest, float(diff.max()) if diff.size else 0.0)
    result.compared = True
    result.samples = samples
    result.outputs_identical = largest == 0.0
    result.max_abs_difference = largest
    return result
