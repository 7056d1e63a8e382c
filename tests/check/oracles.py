"""The real backends, asked which operators they take: the ground truth tflc's descriptors are
compared with. Each function takes .tflite bytes and returns {op index in subgraph 0: bool}
(True: the backend runs the op itself), or None for ops it says nothing about.

- XNNPACK: ai-edge-litert's interpreter with its default delegate. The delegate replaces the
  nodes it takes by DELEGATE nodes whose inputs and outputs bound each partition; walking back
  from a partition's outputs to its inputs recovers the original nodes inside it.
- TFLite Micro: the tflite-micro Python interpreter (every builtin kernel registered). It
  accepts a model or names the first operator it cannot register or prepare.
- Ethos-U: `vela --show-cpu-operations`, which lists the operators left on the CPU by their
  output tensor's name.
- GPU: tf.lite.experimental.Analyzer(gpu_compatibility=True), which prints one warning per
  incompatible node, when the installed build has the GPU compatibility checker compiled in.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tflc.tflite.reader import read_model


@contextmanager
def captured_fd2():
    """Collect what native code writes to file descriptor 2 (TFLM's MicroPrintf, LiteRT logs)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        box = {"text": ""}
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            box["text"] = sink.read().decode("utf-8", "replace")


# ----------------------------------------------------------------------------------- XNNPACK


def xnnpack_partitions(model: bytes) -> int:
    """How many partitions (DELEGATE nodes) the default XNNPACK delegate created."""
    from ai_edge_litert import interpreter as litert

    with captured_fd2():
        interp = litert.Interpreter(model_content=model, num_threads=1)
        interp.allocate_tensors()
        nodes = interp._get_ops_details()  # noqa: SLF001
    return sum(1 for node in nodes if node["op_name"] == "DELEGATE")


def xnnpack_placement(model: bytes) -> dict[int, bool | None]:
    """Op index -> whether ai-edge-litert's default XNNPACK delegate took it (None: unknowable).

    A DELEGATE node shows only its partition's boundary, so an op whose outputs reach neither a
    partition output nor a CPU op (a STRIDED_SLICE feeding only an ASSIGN_VARIABLE) is invisible
    to the walk back from the boundary. Such ops are asked again in a copy of the model whose
    outputs include theirs: a delegated op's output then leaves the partition. An op with no
    output at all (ASSIGN_VARIABLE) can never be seen this way and is None.
    """
    view = read_model(model)
    sg = view.main
    taken = _delegated_ops(model, sg)
    consumers = sg.consumers()
    unseen = [op for op in sg.operators
              if op.index not in taken and _outputs_unseen(sg, op, consumers)]
    exposed = [t for op in unseen for t in op.outputs
               if t >= 0 and sg.tensors[t].dtype != "resource"]
    if exposed:
        taken |= _delegated_ops(_with_outputs(model, exposed), sg) & {op.index for op in unseen}
    truth: dict[int, bool | None] = {op.index: op.index in taken for op in sg.operators}
    for op in sg.operators:
        if op.index not in taken and not any(t >= 0 for t in op.outputs):
            truth[op.index] = None
    return truth


def _delegated_ops(model: bytes, sg) -> set[int]:
    """The ops inside the default delegate's partitions, walked back from each boundary."""
    from ai_edge_litert import interpreter as litert

    with captured_fd2():
        interp = litert.Interpreter(model_content=model, num_threads=1,
                                    experimental_op_resolver_type=litert.OpResolverType.AUTO)
        interp.allocate_tensors()
        nodes = interp._get_ops_details()  # noqa: SLF001 - the only view of the execution plan
    producers = sg.producers()
    taken: set[int] = set()
    for node in nodes:
        if node["op_name"] != "DELEGATE":
            continue
        boundary = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        while stack:
            t = stack.pop()
            if t in boundary or t not in producers:
                continue
            op = producers[t]
            if op in taken:
                continue
            taken.add(op)
            stack.extend(i for i in sg.operators[op].inputs if i >= 0)
    return taken


def _outputs_unseen(sg, op, consumers: dict[int, list[int]]) -> bool:
    """No output of `op` is a model output or read by an op that has outputs of its own."""
    outputs = [t for t in op.outputs if t >= 0]
    readers = {r for t in outputs for r in consumers.get(t, [])}
    return not (set(outputs) & set(sg.outputs)) and all(
        not any(t >= 0 for t in sg.operators[r].outputs) for r in readers)


def _with_outputs(model: bytes, tensors: list[int]) -> bytes:
    """A copy of the model whose subgraph 0 also outputs `tensors`."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python.schema_py_generated import Model, ModelT

    obj = ModelT.InitFromObj(Model.GetRootAsModel(model, 0))
    graph = obj.subgraphs[0]
    graph.outputs = list(graph.outputs) + [t for t in tensors if t not in list(graph.outputs)]
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ------------------------------------------------------------------------------ TFLite Micro


_TFLM_MISSING = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_TFLM_NODE = re.compile(r"Node (\S+) \(number (\d+)\) failed to (prepare|invoke)")


def tflm_verdict(model: bytes) -> tuple[bool, int | None, str]:
    """(accepted, index of the op TFLite Micro rejected or None, its message)."""
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime

    with captured_fd2() as log:
        try:
            interp = runtime.Interpreter.from_bytes(model)
            for i in range(len(read_model(model).main.inputs)):
                detail = interp.get_input_details(i)
                interp.set_input(np.zeros(detail["shape"], dtype=detail["dtype"]), i)
            interp.invoke()
            failure = None
        except Exception as exc:  # the interpreter raises RuntimeError with a generic message
            failure = str(exc)
    if failure is None:
        return True, None, ""
    text = log["text"]
    view = read_model(model)
    missing = _TFLM_MISSING.search(text)
    if missing:
        index = next((op.index for op in view.main.operators if op.op == missing.group(1)), None)
        return False, index, missing.group(0)
    node = _TFLM_NODE.search(text)
    if node:
        return False, int(node.group(2)), node.group(0)
    return False, None, (text.strip() or failure)[:300]


# ----------------------------------------------------------------------------------- Ethos-U


class VelaRejected(RuntimeError):
    """vela refused the model as a whole (for example a float op it cannot parse)."""


_VELA_CPU = re.compile(r"^\s*CPU: \S+ = (.+?) \(outputs \[")
_VELA_WARNING = re.compile(r"^Warning \(supported operators\) operator: [A-Z0-9_]+, ofm: '(.+)'$")


def vela_placement(model: bytes, workdir: Path, accelerator: str = "ethos-u55-128") -> dict[int, bool]:
    """Op index -> whether vela places it on the NPU (False: left on the CPU).

    The CPU list of `--show-cpu-operations` and the per-operator "supported operators" warnings
    both name an op by its output tensor; vela 5.2.0's summary printer crashes on some graphs
    (ARG_MAX) after the warnings are out, so the run is repeated without the summary then.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "model.tflite"
    path.write_bytes(model)
    vela = Path(sys.executable).with_name("vela")
    base = [str(vela), "--accelerator-config", accelerator, "--output-dir", str(workdir / "out")]
    proc = subprocess.run([*base, "--show-cpu-operations", str(path)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        proc = subprocess.run([*base, str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        reason = next((line.strip() for line in proc.stderr.splitlines()
                       if "Compilation failed" in line), proc.stderr.strip()[-300:])
        raise VelaRejected(reason)
    cpu_names = set()
    for line in proc.stdout.splitlines():
        match = _VELA_CPU.match(line) or _VELA_WARNING.match(line.strip())
        if match:
            cpu_names.add(match.group(1))
    sg = read_model(model).main
    return {
        op.index: not any(sg.tensors[t].name in cpu_names for t in op.outputs if t >= 0)
        for op in sg.operators
    }


# ---------------------------------------------------------------------------------------- GPU


_GPU_NODES = re.compile(r"has GPU delegate compatibility issues at nodes ([\d, ]+)")


def gpu_analyzer(model: bytes) -> dict[int, bool]:
    """Op index -> whether the Analyzer finds the op compatible with the GPU delegate."""
    import io
    from contextlib import redirect_stdout

    from tflc.tf_env import import_tensorflow

    tf = import_tensorflow()
    out = io.StringIO()
    with redirect_stdout(out), captured_fd2():
        tf.lite.experimental.Analyzer.analyze(model_content=model, gpu_compatibility=True)
    text = out.getvalue()
    bad: set[int] = set()
    for match in _GPU_NODES.finditer(text.split("Subgraph#1")[0]):
        bad |= {int(n) for n in match.group(1).replace(" ", "").split(",") if n}
    sg = read_model(model).main
    return {op.index: op.index not in bad for op in sg.operators}


def gpu_analyzer_works(canary: bytes) -> bool:
    """Whether this build's Analyzer really checks GPU compatibility: it must flag ARG_MAX."""
    verdict = gpu_analyzer(canary)
    ops = read_model(canary).main.operators
    return any(op.op == "ARG_MAX" and not verdict[op.index] for op in ops)
