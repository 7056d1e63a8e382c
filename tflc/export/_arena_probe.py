"""Child process that runs TFLite Micro for tflc, so that its crashes never take tflc down.

    python _arena_probe.py MODEL.tflite
        reads one arena size per line on stdin and answers one JSON line per size on stdout:
        {"ok": bool}, whether TFLite Micro can set the model up in that many bytes.
    python _arena_probe.py MODEL.tflite --invoke ARENA INPUTS.npz OUTPUTS.npz
        runs every sample of INPUTS.npz (arrays "s<sample>_i<input>") and saves the outputs
        ("s<sample>_o<output>"); prints {"sample": k} before each sample and {"ok": ...} last.
    python _arena_probe.py MODEL.tflite --litert INPUTS.npz OUTPUTS.npz
        the same with LiteRT (reference kernels, no delegates), the cross-check's other side: its
        kernels can corrupt the heap on models TFLite Micro runs (an int8 SVDF in ai-edge-litert
        2.3), so it never runs in tflc's process either. A refusal answers {"ok": false,
        "stage": "allocate", "reason": LiteRT's first line}.

Some TFLite Micro kernels dereference a failed allocation when the arena is too small, and a
malformed model can make any kernel read past its buffers: the process dies of a signal, not an
error. The parent reads what TFLite Micro printed from the stderr file it gave this process and
turns a death into one line. Imports nothing from tflc, so it starts quickly.
"""

import json
import sys


def probe(model: bytes) -> None:
    from tflite_micro.python.tflite_micro import runtime

    for line in sys.stdin:
        try:
            runtime.Interpreter.from_bytes(model, arena_size=int(line))
            ok = True
        except (RuntimeError, ValueError):
            ok = False
        _answer({"ok": ok})


def invoke(model: bytes, arena_size: int, inputs_path: str, outputs_path: str) -> None:
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime

    with np.load(inputs_path, allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in saved.files}
    samples = sorted({int(key.split("_")[0][1:]) for key in arrays})
    try:
        micro = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
    except (RuntimeError, ValueError):
        _answer({"ok": False, "stage": "allocate"})
        return
    outputs = {}
    for k in samples:
        _answer({"sample": k})
        micro.reset()
        for i in range(sum(1 for key in arrays if key.startswith(f"s{k}_i"))):
            micro.set_input(arrays[f"s{k}_i{i}"], i)
        try:
            micro.invoke()
        except RuntimeError:
            _answer({"ok": False, "stage": "invoke", "sample": k})
            return
        for o in range(_output_count(micro)):
            outputs[f"s{k}_o{o}"] = np.asarray(micro.get_output(o))
    np.savez(outputs_path, **outputs)
    _answer({"ok": True})


def invoke_litert(model: bytes, inputs_path: str, outputs_path: str) -> None:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with np.load(inputs_path, allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in saved.files}
    samples = sorted({int(key.split("_")[0][1:]) for key in arrays})
    try:
        litert = Interpreter(model_content=model,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        litert.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        _answer({"ok": False, "stage": "allocate",
                 "reason": lines[0] if lines else type(exc).__name__})
        return
    inputs, outputs = litert.get_input_details(), litert.get_output_details()
    results = {}
    for k in samples:
        _answer({"sample": k})
        for i, detail in enumerate(inputs):
            litert.set_tensor(detail["index"], arrays[f"s{k}_i{i}"])
        try:
            litert.invoke()
        except (RuntimeError, ValueError) as exc:
            _answer({"ok": False, "stage": "invoke", "sample": k, "reason": str(exc)[-200:]})
            return
        for o, detail in enumerate(outputs):
            results[f"s{k}_o{o}"] = np.array(litert.get_tensor(detail["index"]))
    np.savez(outputs_path, **results)
    _answer({"ok": True})


def _output_count(micro) -> int:
    """The Python wrapper states no output count: ask for outputs until one is out of range."""
    count = 0
    while True:
        try:
            micro.get_output_details(count)
        except (IndexError, RuntimeError, ValueError):
            return count
        count += 1


def _answer(data: dict) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def main() -> None:
    with open(sys.argv[1], "rb") as handle:
        model = handle.read()
    if len(sys.argv) == 6 and sys.argv[2] == "--invoke":
        invoke(model, int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif len(sys.argv) == 5 and sys.argv[2] == "--litert":
        invoke_litert(model, sys.argv[3], sys.argv[4])
    else:
        probe(model)


if __name__ == "__main__":
    main()
