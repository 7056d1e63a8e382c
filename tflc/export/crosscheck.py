"""Can the exported package be trusted? Two checks that need no device.

1. The C array is the .tflite byte for byte (parsed back out of the generated source).
2. TFLite Micro computes what LiteRT computes: on seeded sample inputs, the tflite-micro
   interpreter (reference kernels, in the exported arena size) and LiteRT with its reference
   kernels and no default delegates (no XNNPACK) must give bit-identical outputs. Both run the
   same integer reference arithmetic, so any difference points at a kernel or conversion problem;
   the report shows the largest one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from tflc.errors import PipelineError


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


def _litert(model: bytes):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        return None, "ai-edge-litert is not installed"
    interpreter = Interpreter(model_content=model,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    return interpreter, ""


def compare_interpreters(model: bytes, arena_size: int, samples: int = 4, seed: int = 0) -> Verification:
    """Run TFLite Micro and LiteRT (reference kernels) on the same seeded inputs."""
    from tflc.export.arena import _reason, allocates, tflm_runtime, tflm_version

    result = Verification(array_identical=True, compared=False)
    runtime = tflm_runtime()
    litert, why = _litert(model)
    if runtime is None or litert is None:
        result.notes.append(why or "tflite-micro is not installed")
        return result
    from importlib.metadata import version

    result.tflm = f"{tflm_version()}, reference kernels, arena {arena_size} B"
    result.litert = f"ai-edge-litert {version('ai-edge-litert')}, BUILTIN_REF kernels, no delegates"
    ok, log = allocates(model, arena_size)
    if not ok:
        raise PipelineError(f"TFLite Micro cannot allocate the model in the exported arena of "
                            f"{arena_size} B: {_reason(log)}")
    micro = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
    inputs = litert.get_input_details()
    outputs = litert.get_output_details()
    largest = 0.0
    for batch in sample_inputs(inputs, samples, seed):
        for detail, array in zip(inputs, batch, strict=True):
            litert.set_tensor(detail["index"], array)
        litert.invoke()
        micro.reset()
        for i, array in enumerate(batch):
            micro.set_input(array, i)
        micro.invoke()
        for i, detail in enumerate(outputs):
            expected = litert.get_tensor(detail["index"])
            got = np.asarray(micro.get_output(i)).reshape(expected.shape)
            diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
            largest = max(largest, float(diff.max()) if diff.size else 0.0)
    result.compared = True
    result.samples = samples
    result.outputs_identical = largest == 0.0
    result.max_abs_difference = largest
    return result
