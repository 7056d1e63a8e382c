"""A static estimate of TensorFlow Lite Micro's tensor arena, without running TFLite Micro.

TFLite Micro places every tensor that is neither a weight nor a variable in one "head" region
planned ahead of time by its GreedyMemoryPlanner, and keeps interpreter bookkeeping (one
TfLiteEvalTensor per tensor, one node/registration struct per operator, kernels' op data) in a
persistent "tail". `plan_memory` reproduces that layout: tensor lifetimes counted the way TFLite
Micro counts them, the same greedy placement (largest first, first gap that fits), 16-byte
aligned sizes, plus the persistent bookkeeping sized for the x86-64 host build, so the figure
is comparable with a measurement in the tflite-micro Python interpreter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tflc.tflite.reader import ModelView, SubgraphInfo

ALIGNMENT = 16  # MicroArenaBufferAlignment()

# Persistent bookkeeping per item on the x86-64 host build (bytes).
EVAL_TENSOR_BYTES = 24
NODE_AND_REGISTRATION_BYTES = 64
PERSISTENT_TENSOR_BYTES = 64
FIXED_OVERHEAD_BYTES = 808


def align_up(value: int, alignment: int = ALIGNMENT) -> int:
    return (value + alignment - 1) // alignment * alignment


@dataclass
class PlannedBuffer:
    """One tensor in the non-persistent region: its bytes, lifetime and planned offset."""

    tensor: int
    name: str
    size: int
    first_used: int
    last_used: int
    offset: int = -1


@dataclass
class MemoryPlan:
    """Where activations go and how big TFLite Micro's arena must be."""

    arena_bytes: int
    peak_activation_bytes: int
    head_bytes: int
    persistent_bytes: int
    buffers: list[PlannedBuffer] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def tensor_lifetimes(sg: SubgraphInfo) -> list[PlannedBuffer]:
    """Buffers TFLite Micro must plan, with first/last use counted in its allocation scopes.

    Scope 0 is the subgraph's start (inputs are created there); operator i is scope i+1; outputs
    of the subgraph live to the last scope.
    """
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in sg.inputs:
        first.setdefault(t, 0)
        last[t] = 0
    scope = 0
    for op in sg.operators:
        scope += 1
        for t in op.outputs:
            if t >= 0:
                first.setdefault(t, scope)
        for t in op.inputs:
            if t >= 0:
                last[t] = scope
        for t in op.outputs:
            if t >= 0:
                last[t] = scope
    for t in sg.outputs:
        first.setdefault(t, scope)
        last[t] = scope
    buffers = []
    for t in sg.tensors:
        if t.is_constant or t.is_variable or t.nbytes == 0 or t.index not in first:
            continue
        buffers.append(PlannedBuffer(t.index, t.name, align_up(t.nbytes), first[t.index],
                                     last.get(t.index, first[t.index])))
    return buffers


def greedy_plan(buffers: list[PlannedBuffer]) -> int:
    """Place buffers like TFLite Micro's GreedyMemoryPlanner; set offsets, return the peak."""
    if not buffers:
        return 0
    # TFLite Micro fills its sort array from the back and bubble-sorts it by size, descending
    # and stable, so among equal sizes the buffer added last is placed first.
    order = sorted(reversed(range(len(buffers))), key=lambda i: -buffers[i].size)
    placed: list[PlannedBuffer] = []  # kept sorted by offset
    for i in order:
        want = buffers[i]
        candidate = 0
        for other in placed:
            if other.first_used > want.last_used or want.first_used > other.last_used:
                continue
            if other.offset - candidate >= want.size:
                break
            candidate = max(candidate, other.offset + other.size)
        want.offset = candidate
        pos = 0
        while pos < len(placed) and placed[pos].offset <= candidate:
            pos += 1
        placed.insert(pos, want)
    return max(b.offset + b.size for b in buffers)


def plan_memory(view: ModelView, subgraph: int = 0) -> MemoryPlan:
    """Static estimate of the tensor arena TFLite Micro needs for `view` (subgraph `subgraph`)."""
    sg = view.subgraphs[subgraph]
    buffers = tensor_lifetimes(sg)
    head = greedy_plan(buffers)
    persistent = (
        EVAL_TENSOR_BYTES * sum(len(s.tensors) for s in view.subgraphs)
        + NODE_AND_REGISTRATION_BYTES * sum(len(s.operators) for s in view.subgraphs)
        + PERSISTENT_TENSOR_BYTES * (len(sg.inputs) + len(sg.outputs))
        + FIXED_OVERHEAD_BYTES
    )
    return MemoryPlan(
        arena_bytes=align_up(head) + align_up(persistent),
        peak_activation_bytes=head,
        head_bytes=head,
        persistent_bytes=persistent,
        buffers=buffers,
    )
