"""Calibrate the arena planner's per-kernel costs against the real TFLite Micro interpreter.

tflc.tflite.planner.KERNEL_COSTS says, per builtin op, how many bytes TFLite Micro's persistent
tail spends on the op's parsed options and the kernel's own data. This script converts one tiny
int8 Keras model per op (TensorFlow needed), reads what TFLite Micro's RecordingMicroAllocator
reports (kernel data requested), fits the options' size and alignment to the tail it measures at
16 consecutive arena sizes, and checks that the planner then predicts the minimum arena exactly.
Ops already in the table are only verified (minimum arena).
Rerun it after upgrading tflite-micro and copy the printed entries into KERNEL_COSTS. Results:
benchmarks/results/planner_kernel_costs.md.

    python benchmarks/planner_kernel_costs.py
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def models(keras, tf):
    """op name -> (keras model, inputs are float?) exercising that op once."""
    L = keras.layers
    shape = (8, 8, 4)

    def one(layer_fn, n_inputs=1, in_shape=shape):
        inputs = [keras.Input(in_shape, batch_size=1) for _ in range(n_inputs)]
        out = layer_fn(inputs if n_inputs > 1 else inputs[0])
        return keras.Model(inputs, out)

    return {
        "MEAN": one(L.GlobalAveragePooling2D()),
        "MUL": one(L.Multiply(), 2),
        "SUB": one(L.Subtract(), 2),
        "CONCATENATION": one(L.Concatenate(), 2),
        "PAD": one(L.ZeroPadding2D(1)),
        "LOGISTIC": one(L.Activation("sigmoid")),
        "TANH": one(L.Activation("tanh")),
        "LEAKY_RELU": one(L.LeakyReLU(0.1)),
        "RELU": one(L.ReLU()),
        "RELU6": one(L.ReLU(6.0)),
        "HARD_SWISH": one(L.Lambda(lambda x: x * tf.nn.relu6(x + 3.0) / 6.0)),
        "RESIZE_NEAREST_NEIGHBOR": one(L.UpSampling2D(2)),
        "RESIZE_BILINEAR": one(L.UpSampling2D(2, interpolation="bilinear")),
        "TRANSPOSE": one(L.Permute((2, 1, 3))),
        "STRIDED_SLICE": one(L.Lambda(lambda x: x[:, 1:5, :, :])),
        "MAXIMUM": one(L.Maximum(), 2),
        "MINIMUM": one(L.Minimum(), 2),
        "TRANSPOSE_CONV": one(L.Conv2DTranspose(4, 3, strides=2, padding="same")),
        "MEAN_KEEPDIMS": one(L.GlobalAveragePooling2D(keepdims=True)),
        "SUM": one(L.Lambda(lambda x: tf.reduce_sum(x, axis=[1, 2]))),
        "QUANTIZE": one(L.ReLU()),          # float input, int8 output
        "DEQUANTIZE": one(L.ReLU()),        # int8 input, float output
    }


def convert(tf, model, float_in: bool = False, float_out: bool = False) -> bytes:
    rng = np.random.default_rng(0)

    def data():
        for _ in range(20):
            yield [rng.uniform(-1, 1, (1, *i.shape[1:])).astype(np.float32) for i in model.inputs]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = data
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_in:
        converter.inference_input_type = tf.int8
    if not float_out:
        converter.inference_output_type = tf.int8
    return converter.convert()


def recording(model: bytes, size: int) -> dict:
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model, arena_size=size)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            interpreter.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode()
    out = {}
    for line in text.splitlines():
        if m := re.search(r"Arena allocation (\w+) (\d+)", line):
            out[m.group(1)] = int(m.group(2))
        if m := re.search(r"'(.*)' used (\d+) bytes .*requested (\d+) bytes for (\d+)", line):
            out[m.group(1)] = (int(m.group(3)), int(m.group(4)))
    return out


def fit(op: str, model: bytes) -> dict:
    """Fit (or, for ops already in the table, verify) the op's entry against TFLite Micro.

    A candidate must reproduce the recorded tail at 16 consecutive arena sizes (every residue
    modulo the 16-byte alignment) and the measured minimum arena.
    """
    import tflc.tflite.planner as P
    from tflc.export.arena import measure_arena
    from tflc.tflite.reader import read_model

    view = read_model(model)
    big = 1 << 22
    sizes = range(big, big + 16)
    tails = [recording(model, n)["tail"] for n in sizes]
    rec = recording(model, big)
    measured = measure_arena(model).minimum_bytes

    def matches(tails_too: bool = True) -> bool:
        plan = P.plan_memory(view)
        setups = [P._op_setup(view, view.main, o)[0] for o in view.main.operators]
        sim = [P._replay(view, setups, len(plan.buffers), plan.head_bytes, n) for n in sizes]
        return (sim == tails or not tails_too) and plan.arena_bytes == measured

    instances = sum(o.op == op for o in view.main.operators)
    known = P.KERNEL_COSTS.get(op)
    found = []
    if known is not None:
        op_data = known.op_data
        if matches(tails_too=False):
            found = [(known.params, known.params_align)]
    else:
        others = [o for o in view.main.operators if o.op != op]
        requested, _ = rec.get("Persistent buffer data", (0, 0))
        io = len(view.main.inputs) + len(view.main.outputs)
        op_data = (requested - 8 * io - sum(P.KERNEL_COSTS.get(o.op, P.DEFAULT_COST).op_data
                                            for o in others)) // max(instances, 1)
        for align in (1, 4, 8):
            for params in range(0, 129, 4 if align > 1 else 1):
                P.KERNEL_COSTS[op] = P.KernelCost(params=params, params_align=align, op_data=op_data)
                if matches():
                    found.append((params, align))
        P.KERNEL_COSTS.pop(op, None)
    plan = P.plan_memory(view)
    return {"op": op, "op_data": op_data, "candidates": found, "known": known is not None,
            "tails": known is None or matches(),
            "head_real": rec["head"], "head_plan": plan.head_bytes, "measured": measured}


def main() -> None:
    from tflc.tf_env import import_tensorflow, import_tf_keras, quiet_native_output

    tf = import_tensorflow()
    keras = import_tf_keras()
    rows, entries = [], []
    for op, model in models(keras, tf).items():
        with quiet_native_output():
            data = convert(tf, model, float_in=op == "QUANTIZE", float_out=op == "DEQUANTIZE")
        try:
            result = fit(op.split("_KEEPDIMS")[0], data)
        except Exception as exc:  # one op failing must not lose the rest
            rows.append([op, "-", "-", "-", "-", f"error: {type(exc).__name__}: {exc}"[:80]])
            continue
        note = []
        if result["candidates"] and not result["tails"]:
            note.append("minimum exact, tail differs at some arena sizes mod 16")
        if result["head_real"] != result["head_plan"]:
            note.append(f"scratch: head {result['head_real']} vs planned {result['head_plan']}")
        shown = ", ".join(f"{p}@{a}" for p, a in result["candidates"][:6]) or "none"
        rows.append([op, str(result["op_data"]), shown, "table" if result["known"] else "fitted",
                     "yes" if result["candidates"] else "no", "; ".join(note) or "-"])
        if result["candidates"] and not result["known"]:
            params, align = result["candidates"][0]
            entries.append(f'    "{op}": KernelCost(params={params}, params_align={align}, '
                           f'op_data={result["op_data"]}),')
    headers = ["op", "op data B", "options B@align that fit", "entry", "minimum exact", "notes"]
    table = "\n".join("| " + " | ".join(r) + " |" for r in [headers, ["---"] * 6, *rows])
    print(table)
    print("\nKERNEL_COSTS entries:\n" + "\n".join(entries))
    from tflc.export.arena import tflm_version
    from tflc.fileio import atomic_write_text

    out = HERE / "results" / "planner_kernel_costs.md"
    atomic_write_text(out, f"# Planner kernel costs fitted against {tflm_version()}\n\n"
                      f"{time.strftime('%Y-%m-%d')}; `python benchmarks/planner_kernel_costs.py`.\n\n"
                      + table + "\n\n```python\n" + "\n".join(entries) + "\n```\n")


if __name__ == "__main__":
    main()
