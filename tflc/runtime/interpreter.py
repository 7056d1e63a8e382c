"""Finding a TFLite interpreter on the device and running one model on it.

Standard library and numpy only, plus whichever interpreter package imports first:
`ai_edge_litert`, `tflite_runtime` (2.14 on many Pis, with numpy<2) or `tensorflow.lite`, the
same order as the bench runner's. Nothing here imports tflc, so the `tflc.runtime` folder can be
copied to a device on its own (`tflc deploy` copies it as `tflc_runtime`).
"""

from __future__ import annotations

import os
import time

import numpy as np

RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")


class NoInterpreter(ImportError):
    """No TFLite interpreter package can be imported by this Python."""


def interpreter_class(preferred: str = "auto"):
    """(runtime name, Interpreter class) of the first package that imports."""
    names = RUNTIMES if preferred in (None, "", "auto") else (preferred,)
    problems = []
    for name in names:
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert.interpreter import Interpreter
            elif name == "tflite_runtime":
                from tflite_runtime.interpreter import Interpreter
            elif name == "tensorflow":
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
                import tensorflow as tf

                Interpreter = tf.lite.Interpreter  # noqa: N806 - a class
            else:
                raise ImportError(f"unknown runtime {name!r}; use one of auto, " + ", ".join(RUNTIMES))
            return name, Interpreter
        except Exception as exc:  # noqa: BLE001 - ImportError, or numpy ABI errors of old wheels
            problems.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise NoInterpreter("no TFLite interpreter can be imported (" + "; ".join(problems)
                        + "); install one: pip install ai-edge-litert (or tflite-runtime)")


class Model:
    """One .tflite model in an interpreter, fed one sample at a time (batch 1).

    `inputs`/`outputs` are plain dicts (name, index, shape, dtype, scale, zero_point);
    `run(arrays)` takes arrays already in each input's dtype and returns the raw outputs and the
    invoke time in milliseconds.
    """

    def __init__(self, path, threads: int | None = 1, runtime: str = "auto"):
        self.path = os.fspath(path)
        self.runtime, interpreter = interpreter_class(runtime)
        kwargs = {"model_path": self.path}
        if threads:
            kwargs["num_threads"] = int(threads)
        self.interpreter = interpreter(**kwargs)
        self.inputs = [_info(d) for d in self.interpreter.get_input_details()]
        for info in self.inputs:  # a free batch dimension: run one sample at a time
            shape = list(info["shape"])
            if shape and shape[0] != 1:
                shape[0] = 1
                self.interpreter.resize_tensor_input(info["index"], shape)
                info["shape"] = shape
        self.interpreter.allocate_tensors()
        self.outputs = [_info(d) for d in self.interpreter.get_output_details()]
        self._set = self.interpreter.set_tensor
        self._get = self.interpreter.get_tensor
        self._invoke = self.interpreter.invoke
        self._in = [(i["index"], tuple(i["shape"])) for i in self.inputs]
        self._out = [o["index"] for o in self.outputs]

    def run(self, arrays) -> tuple:
        for (index, shape), values in zip(self._in, arrays):
            self._set(index, values.reshape(shape))
        start = time.perf_counter()
        self._invoke()
        elapsed = (time.perf_counter() - start) * 1e3
        return [self._get(index) for index in self._out], elapsed

    def reset(self) -> None:
        """Forget the state a stateful op (a fused LSTM) keeps between invocations."""
        self.interpreter.reset_all_variables()

    def quantize(self, values, k: int = 0):
        """Float values to input `k`'s dtype (affine quantization, clipped), as LiteRT users do."""
        return quantize(values, self.inputs[k])

    def dequantize_output(self, values, k: int = 0):
        return dequantize(values, self.outputs[k])


def _info(detail: dict) -> dict:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {"name": detail["name"], "index": detail["index"],
            "shape": [int(v) for v in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero_point)}


def integer_limits(info: dict):
    dtype = np.dtype(info["dtype"])
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        return int(limits.min), int(limits.max)
    return None


def quantize(values, info: dict):
    dtype = np.dtype(info["dtype"])
    values = np.asarray(values)
    if dtype.kind in "iu" and values.dtype.kind == "f":
        lo, hi = integer_limits(info)
        q = np.round(values.astype(np.float64) / (info["scale"] or 1.0)) + info["zero_point"]
        return np.clip(q, lo, hi).astype(dtype)
    return values.astype(dtype)


def dequantize(values, info: dict):
    """Integer outputs to float32 with the tensor's scale and zero point."""
    result = np.asarray(values).astype(np.float32)
    if info["scale"] and np.asarray(values).dtype.kind in "iu":
        result -= info["zero_point"]
        result *= info["scale"]
    return result
