"""Single-operator and prefix models cut from a .tflite flatbuffer, for per-op timing.

Why cut models: LiteRT's Python API has no op profiler (`benchmark_model
--enable_op_profiling` is C++ only), so the only way to time one operator with the same runner
and interpreter `tflc bench` uses is to give the interpreter a model holding just that operator:
its real tensors (shapes, types, quantization) and its real constants (weights, biases), with
its activation inputs turned into model inputs. Prefix models (operators 0..k of the main
graph) are the other classic way; `benchmarks/profile_fidelity.py` measures both.

The object API comes from `ai_edge_litert.schema_py_generated` (LiteRT's own generated schema
code, shipped in the core install): the `tflite` package that `tflc.tflite.reader` uses has
accessors only. No TensorFlow is imported.
"""

from __future__ import annotations

import copy

import flatbuffers

# Operators that call other subgraphs: a single-op model would need those subgraphs too.
CALLS_SUBGRAPHS = frozenset({"WHILE", "IF", "CALL_ONCE", "CALL", "STABLEHLO_WHILE",
                             "STABLEHLO_CASE", "STABLEHLO_REDUCE", "STABLEHLO_SCATTER",
                             "STABLEHLO_SORT", "STABLEHLO_COMPOSITE"})


def schema():
    """LiteRT's generated schema module (object API), imported when a cut is needed."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def unpack(data: bytes):
    """The whole model as mutable objects (`ModelT`); buffers stay numpy views of `data`."""
    return schema().ModelT.InitFromPackedBuf(bytearray(data), 0)


def _is_constant(model, tensor) -> bool:
    buffer = model.buffers[tensor.buffer] if 0 <= tensor.buffer < len(model.buffers) else None
    data = getattr(buffer, "data", None)
    return buffer is not None and ((data is not None and len(data) > 0) or buffer.offset > 1)


def _pack(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _model_of(model, operators: list, tensor_ids: list[int], sg, outputs: list[int]) -> bytes:
    """A one-subgraph model with `operators` (of subgraph `sg`) over the tensors `tensor_ids`.

    Constants keep their data (a new buffer each); every other tensor that no kept operator
    writes becomes a model input, so the interpreter feeds it as the runner feeds any input.
    """
    s = schema()
    new = s.ModelT()
    new.version = model.version or 3
    new.description = b"tflc profile cut"
    new.buffers = [s.BufferT()]
    codes, code_of = [], {}
    remap = {old: pos for pos, old in enumerate(tensor_ids)}
    tensors, inputs = [], []
    written = {t for op in operators for t in (op.outputs if op.outputs is not None else [])}
    for old in tensor_ids:
        tensor = copy.copy(sg.tensors[old])
        if _is_constant(model, tensor):
            new.buffers.append(model.buffers[tensor.buffer])
            tensor.buffer = len(new.buffers) - 1
        else:
            tensor.buffer = 0
            if old not in written and not tensor.isVariable:
                inputs.append(remap[old])
        tensors.append(tensor)
    ops = []
    for op in operators:
        op = copy.copy(op)
        if op.opcodeIndex not in code_of:
            code_of[op.opcodeIndex] = len(codes)
            codes.append(model.operatorCodes[op.opcodeIndex])
        op.opcodeIndex = code_of[op.opcodeIndex]
        op.inputs = [remap[t] if t >= 0 else -1 for t in (op.inputs if op.inputs is not None else [])]
        op.outputs = [remap[t] for t in (op.outputs if op.outputs is not None else [])]
        if op.intermediates is not None:
            op.intermediates = [remap[t] for t in op.intermediates]
        ops.append(op)
    graph = s.SubGraphT()
    graph.tensors, graph.operators = tensors, ops
    graph.inputs, graph.outputs = inputs, [remap[t] for t in outputs]
    graph.name = b"main"
    new.subgraphs, new.operatorCodes = [graph], codes
    return _pack(new)


def _tensors_of(operators: list) -> list[int]:
    seen: dict[int, None] = {}
    for op in operators:
        for group in (op.inputs, op.outputs, op.intermediates):
            for t in (group if group is not None else []):
                if t >= 0:
                    seen.setdefault(int(t), None)
    return list(seen)


def op_name(model, op) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    number = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
    return names.get(number, f"OP_{number}")


def single_op_model(model, subgraph: int, index: int) -> bytes | None:
    """Operator `index` of `subgraph` alone, as .tflite bytes; None where it calls subgraphs."""
    sg = model.subgraphs[subgraph]
    op = sg.operators[index]
    if op_name(model, op) in CALLS_SUBGRAPHS:
        return None
    outputs = [int(t) for t in (op.outputs if op.outputs is not None else []) if t >= 0]
    return _model_of(model, [op], _tensors_of([op]), sg, outputs)


def prefix_model(model, count: int) -> bytes | None:
    """Operators 0..count-1 of the main graph; outputs: what later ops or the model read."""
    sg = model.subgraphs[0]
    kept = sg.operators[:count]
    if any(op_name(model, op) in CALLS_SUBGRAPHS for op in kept):
        return None
    later = {int(t) for op in sg.operators[count:] for t in (op.inputs if op.inputs is not None else [])}
    later |= {int(t) for t in sg.outputs}
    produced = [int(t) for op in kept for t in (op.outputs if op.outputs is not None else []) if t >= 0]
    outputs = [t for t in produced if t in later] or produced[-1:]
    return _model_of(model, kept, _tensors_of(kept), sg, outputs)


def empty_model(model) -> bytes | None:
    """A model with no operators whose output is its input: the cost of `invoke()` alone
    (None for a model without inputs: then nothing is subtracted)."""
    sg = model.subgraphs[0]
    if sg.inputs is None or len(sg.inputs) == 0:
        return None
    first = int(sg.inputs[0])
    return _model_of(model, [], [first], sg, [first])
