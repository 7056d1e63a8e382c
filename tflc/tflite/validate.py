"""The rules a .tflite model must keep before anything reads it further, as LiteRT enforces them.

LiteRT's interpreter builder, its allocator and its C++ verifier (`tflite::Verify`) refuse a model
whose indices point nowhere (buffers, tensors, operator codes, subgraphs), whose operator codes
name no kernel (a negative builtin code, version 0), whose buffers reach past the file,
whose tensors have negative or overflowing shapes, unknown types, constants shorter than their
shape or inconsistent quantization, and whose operators do not form a graph that runs in file
order. Every tflc command reads models through `read_model`, so checking the same rules here once
means no later stage meets a dangling index or a cycle and fails with an internal error; the user
gets one line naming the file and the place instead.

The functions take plain numbers and the reader's dataclasses (duck-typed, so this module imports
nothing of the reader) and raise `BadInput`.
"""

from __future__ import annotations

from tflc.errors import BadInput

SCHEMA_VERSION = 3
_MAX_BYTES = (1 << 63) - 1  # LiteRT counts bytes in a 64-bit size_t; more cannot be allocated


def refuse(name: str, what: str) -> BadInput:
    """The one-line error for a model that breaks a rule of LiteRT's: where, what, what to do."""
    return BadInput(f"{name}: invalid TFLite model: {what}; re-export it from the converter")


def check_version(name: str, version: int) -> None:
    """LiteRT reads only schema version 3 and refuses the rest before looking further."""
    if version != SCHEMA_VERSION:
        raise refuse(name, f"schema version {version}, but LiteRT reads only version {SCHEMA_VERSION}")


def check_buffer_extent(name: str, index: int, offset: int, size: int, file_size: int) -> None:
    """Large models keep buffers behind the flatbuffer, addressed by offset: it must lie in the file."""
    if offset + size > file_size:
        raise refuse(name, f"buffer {index} (offset {offset}, {size} bytes) reaches beyond the end "
                           f"of the file ({file_size} bytes)")


def check_tensor(name: str, sg: int, tensor, n_buffers: int, buffer_bytes: int | None,
                 sparse: bool) -> None:
    """A tensor's type, buffer index, shape and constant size, as LiteRT's builder checks them.

    `buffer_bytes` is the length of the tensor's buffer when it holds data (the tensor is then a
    constant); `sparse` tensors store fewer bytes than their dense shape and are not measured.
    """
    where = f"subgraph {sg} tensor {tensor.index}"
    if tensor.dtype.startswith("type"):
        raise refuse(name, f"{where} has unknown type {tensor.dtype[4:]}")
    if not 0 <= tensor.buffer < n_buffers:
        raise refuse(name, f"{where} names buffer {tensor.buffer}, but the model has {n_buffers} buffers")
    if any(d < 0 for d in tensor.shape):
        raise refuse(name, f"{where} has a negative dimension in its shape {list(tensor.shape)}")
    count = _element_count(tensor.shape)
    bits = DTYPE_BITS.get(tensor.dtype)
    need = None if bits is None else (count * bits + 7) // 8
    if count > _MAX_BYTES or (need or 0) > _MAX_BYTES:
        raise refuse(name, f"{where} has shape {list(tensor.shape)}, more bytes than a 64-bit size can count")
    if buffer_bytes is not None and not sparse and need is not None and buffer_bytes < need:
        raise refuse(name, f"{where} ({tensor.dtype} {list(tensor.shape)}) needs {need} bytes, "
                           f"but buffer {tensor.buffer} holds {buffer_bytes}")


def _element_count(shape) -> int:
    """The product of the dimensions in Python integers: no wrap-around, however large."""
    count = 1
    for d in shape:
        count *= d
    return count


# Bits per element of the types with a fixed width (strings, resources and variants have none).
DTYPE_BITS = {
    "float32": 32, "float16": 16, "float64": 64, "bfloat16": 16, "int8": 8, "uint8": 8,
    "int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64, "bool": 8,
    "complex64": 64, "complex128": 128, "int4": 4, "uint4": 4, "int2": 2,
    "float8_e4m3fn": 8, "float8_e5m2": 8,
}


# The runtimes whose rules `read_model(judge=...)` applies. LiteRT's are the default; TFLite
# Micro (the judge for microcontroller targets) copies a tensor's quantized dimension without
# checking it (micro_allocator.cc, InitializeTfLiteTensorFromFlatbuffer): its kernels use
# their own fixed channel axes, so a dimension outside the shape (old converters wrote the
# filter's axis 3 onto 1-D biases) is harmless there, and recorded instead of refused.
JUDGES = ("litert", "tflite-micro")


def waived_note(waived: list[str]) -> str:
    """The sentence check and export print when TFLite Micro accepted what LiteRT would refuse."""
    more = f"; {len(waived) - 3} more like it" if len(waived) > 3 else ""
    return ("LiteRT would refuse this model (" + "; ".join(waived[:3]) + more
            + "), a rule TFLite Micro, the judge here, does not have")


def check_quantization(name: str, sg: int, tensor, n_scales: int, n_zero_points: int, axis: int,
                       waived: list[str] | None = None) -> None:
    """Scales and zero points pair up, and per-axis scales match the quantized dimension's size.

    `waived` (a list) is given when TFLite Micro judges: a rule only LiteRT enforces then
    appends its text to the list instead of refusing.
    """
    if n_scales == 0:
        return
    where = f"subgraph {sg} tensor {tensor.index}"
    if n_zero_points != n_scales:
        raise refuse(name, f"{where} has {n_scales} scales but {n_zero_points} zero points")
    rank = len(tensor.shape)
    if axis < 0 or (rank and axis >= rank):
        what = f"{where} has quantized dimension {axis}, outside its {rank} dimensions"
        if waived is None or axis < 0:
            raise refuse(name, what)
        waived.append(what)
        return
    if n_scales != 1 and not rank:
        raise refuse(name, f"{where} has {n_scales} scales but no dimension to spread them over")
    if n_scales != 1 and tensor.shape[axis] != n_scales:
        raise refuse(name, f"{where} has {n_scales} scales, but dimension {axis} of its shape "
                           f"{list(tensor.shape)} needs 1 or {tensor.shape[axis]}")


def check_operator_code(name: str, index: int, builtin: int, op: str, version: int) -> None:
    """Builtin codes are not negative and builtin operators' versions start at 1: LiteRT finds
    no kernel otherwise. (Custom operators' versions are their own business.)"""
    if builtin < 0:
        raise refuse(name, f"operator code {index} has builtin code {builtin}")
    if op != "CUSTOM" and version < 1:
        raise refuse(name, f"operator code {index} ({op}) has version {version}; versions start at 1")


def check_operator(name: str, sg: int, index: int, opcode: int, n_opcodes: int) -> None:
    """The operator names one of the model's operator codes."""
    if not 0 <= opcode < n_opcodes:
        raise refuse(name, f"subgraph {sg} operator {index} names operator code {opcode}, "
                           f"but the model has {n_opcodes}")


def check_operator_tensors(name: str, sg: int, op, n_tensors: int) -> None:
    """Inputs and outputs are tensors of the subgraph or -1 (an optional input left out), and an
    operator never writes what it reads."""
    for role, indices in (("input", op.inputs), ("output", op.outputs)):
        for k, t in enumerate(indices):
            if not -1 <= t < n_tensors:
                raise refuse(name, f"subgraph {sg} operator {op.index} ({op.op}) {role} {k} names "
                                   f"tensor {t}, but the subgraph has {n_tensors} tensors")
    both = set(op.inputs) & set(op.outputs) - {-1}
    if both:
        raise refuse(name, f"subgraph {sg} operator {op.index} ({op.op}) reads and writes tensor {min(both)}")


def check_subgraph_ends(name: str, sg: int, role: str, indices, n_tensors: int) -> None:
    """A subgraph's inputs and outputs are real tensors (-1 is only for operators' optional inputs)."""
    for k, t in enumerate(indices):
        if not 0 <= t < n_tensors:
            raise refuse(name, f"subgraph {sg} {role} {k} names tensor {t}, but the subgraph has "
                               f"{n_tensors} tensors")


def check_dataflow(name: str, subgraph) -> None:
    """Operators run in file order: each reads only tensors that exist by then (constants,
    variables, the subgraph's inputs, or what an earlier operator wrote), and each tensor is
    written once, never a constant or an input. A cycle always breaks this, so none can pass.
    One pass over the operators, with sets: linear in the graph's size."""
    sg, tensors = subgraph.index, subgraph.tensors
    inputs = set(subgraph.inputs)
    writer: dict[int, int] = {}
    first_writer: dict[int, int] = {}
    for op in subgraph.operators:
        for t in op.outputs:
            first_writer.setdefault(t, op.index)
    for op in subgraph.operators:
        for t in op.inputs:
            if t >= 0 and t not in writer and t not in inputs and _needs_a_writer(tensors[t]):
                raise refuse(name, _read_too_early(sg, op, t, first_writer.get(t)))
        for t in op.outputs:
            if t < 0:
                continue
            if t in writer:
                raise refuse(name, f"subgraph {sg} operator {op.index} ({op.op}) writes tensor {t}, "
                                   f"which operator {writer[t]} already wrote")
            if t in inputs or tensors[t].is_constant:
                kind = "an input of the subgraph" if t in inputs else "a constant"
                raise refuse(name, f"subgraph {sg} operator {op.index} ({op.op}) writes tensor {t}, {kind}")
            writer[t] = op.index


def _needs_a_writer(tensor) -> bool:
    """Whether a tensor gets its value only from an operator (not a constant, variable or empty tensor)."""
    return not (tensor.is_constant or tensor.is_variable or 0 in tensor.shape)


def _read_too_early(sg: int, op, t: int, producer: int | None) -> str:
    head = f"subgraph {sg} operator {op.index} ({op.op}) reads tensor {t}"
    if producer is not None:
        return f"{head} before operator {producer} writes it (operators run in the file's order)"
    return f"{head}, which no operator writes and which is no constant, variable or subgraph input"


def check_calls(name: str, subgraphs) -> None:
    """Control-flow operators (IF, WHILE, CALL_ONCE: every `*_subgraph_index` option) name
    existing subgraphs, and no subgraph calls itself, directly or through others: LiteRT recurses
    into such a call until it crashes, and so would any walk of the call graph."""
    calls: dict[int, list[tuple[int, object]]] = {}
    for sg in subgraphs:
        for op in sg.operators:
            for key, callee in op.options.items():
                if not key.endswith("subgraph_index") or not isinstance(callee, int):
                    continue
                if not 0 <= callee < len(subgraphs):
                    raise refuse(name, f"subgraph {sg.index} operator {op.index} ({op.op}) {key} names "
                                       f"subgraph {callee}, but the model has {len(subgraphs)} subgraphs")
                calls.setdefault(sg.index, []).append((callee, op))
    cycle = _call_cycle(calls, len(subgraphs))
    if cycle:
        path, op = cycle
        raise refuse(name, f"subgraph {op.subgraph} operator {op.index} ({op.op}) calls subgraph {path[-1]}: "
                           f"subgraph {path[-1]} calls itself ({' -> '.join(map(str, path))})")


def _call_cycle(calls: dict, n_subgraphs: int):
    """The first call cycle as (subgraph path, the operator closing it), or None. Iterative depth-
    first search (a hostile file may chain thousands of subgraphs), each subgraph visited once."""
    state = [0] * n_subgraphs  # 0 unseen, 1 on the current path, 2 done
    for root in range(n_subgraphs):
        if state[root]:
            continue
        path, stack = [root], [iter(calls.get(root, ()))]
        state[root] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            callee, op = step
            if state[callee] == 1:
                return path[path.index(callee):] + [callee], op
            if state[callee] == 0:
                state[callee] = 1
                path.append(callee)
                stack.append(iter(calls.get(callee, ())))
    return None
